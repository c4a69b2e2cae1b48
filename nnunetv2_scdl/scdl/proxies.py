"""Per-class Gaussian proxy distributions N(μ_c, diag σ_c²) in the embedding space (paper: CDBA).

Each class c owns a learnable mean μ_c ∈ R^D and a raw scale ρ_c ∈ R^D with σ_c = softplus(ρ_c) > 0. Proxy samples are
p_{c,s} = μ_c + σ_c ⊙ ε_{c,s} with ε ~ N(0, I) (reparameterised, so gradients reach μ and ρ).
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ClassProxies", "proxy_mean_cosines", "proxy_separation"]


class ClassProxies(nn.Module):
    """The C class proxies N(μ_c, diag σ_c²).

    μ is Xavier-uniform as in the released code: every entry is drawn from U(−a, a) with a = sqrt(6 / (C + 2D)), so
    ‖μ_c‖ ≈ 1 for D = 256. ρ is either drawn the same way (``initial_sigma <= 0``, the released code's joint
    Xavier-uniform [μ | ρ], σ ≈ softplus(0) ≈ 0.69) or set so that σ_c = ``initial_sigma`` in every dimension.

    μ, ρ (and SCDL's σ_emb) are distribution parameters, not weights: ``no_weight_decay_parameters`` lists them so
    that optimisers can exempt them from weight decay, which would otherwise shrink the proxies towards the origin.

    Args:
        num_classes: C, background included.
        embed_dim: D.
        initial_sigma: σ_c at initialisation; ≤ 0 keeps the released Xavier-uniform ρ.
        eval_samples: number of fixed noise vectors kept for eval mode (see ``sample``).
        eval_noise_seed: seed of those fixed noise vectors. They are a non-persistent buffer, regenerated identically
            whenever the module is built, so they are not in the state_dict and checkpoints stay small.
    """

    def __init__(self, num_classes: int, embed_dim: int, eval_samples: int = 50, eval_noise_seed: int = 0,
                 initial_sigma: float = 0.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"SCDL needs at least 2 classes (background included), got num_classes={num_classes}.")
        if embed_dim < 1 or eval_samples < 1:
            raise ValueError(f"embed_dim and eval_samples must be positive, got {embed_dim} and {eval_samples}.")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        bound = math.sqrt(6.0 / (num_classes + 2 * embed_dim))
        self.mu = nn.Parameter(torch.empty(num_classes, embed_dim).uniform_(-bound, bound))
        rho = torch.empty(num_classes, embed_dim)
        if initial_sigma > 0:
            rho.fill_(math.log(math.expm1(initial_sigma)))  # softplus⁻¹(σ₀)
        else:
            rho.uniform_(-bound, bound)
        self.rho = nn.Parameter(rho)
        generator = torch.Generator().manual_seed(eval_noise_seed)
        self.register_buffer("eval_noise", torch.randn(num_classes, eval_samples, embed_dim, generator=generator),
                             persistent=False)

    @property
    def sigma(self) -> Tensor:
        """σ_c = softplus(ρ_c), shape [C, D]."""
        return F.softplus(self.rho)

    def sample(self, num_samples: int, noise: Optional[Tensor] = None) -> Tensor:
        """Draw p_{c,s} = μ_c + σ_c ⊙ ε_{c,s}; returns [C, S, D].

        In train mode ε is fresh N(0, I) noise on every call (released behaviour). In eval mode ε is the first S rows
        of the fixed ``eval_noise`` buffer, so inference is deterministic yet still reflects σ. ``noise`` ([C, S, D])
        overrides both (for tests).
        """
        if noise is None:
            if self.training:
                noise = torch.randn(self.num_classes, num_samples, self.embed_dim,
                                    device=self.mu.device, dtype=self.mu.dtype)
            else:
                if num_samples > self.eval_noise.shape[1]:
                    raise ValueError(f"eval mode keeps {self.eval_noise.shape[1]} fixed noise vectors per class, "
                                     f"but {num_samples} samples were requested.")
                noise = self.eval_noise[:, :num_samples]
        elif noise.shape != (self.num_classes, num_samples, self.embed_dim):
            raise ValueError(f"noise must have shape {(self.num_classes, num_samples, self.embed_dim)}, "
                             f"got {tuple(noise.shape)}.")
        return self.mu.unsqueeze(1) + self.sigma.unsqueeze(1) * noise.to(self.mu.dtype)


def proxy_mean_cosines(mu: Tensor) -> Tensor:
    """Cosine similarity cos(μ_a, μ_b) of every pair of proxy means; ``mu`` [C, D] → [C, C]."""
    if mu.dim() != 2 or mu.shape[0] < 2:
        raise ValueError(f"mu must have shape [C, D] with C >= 2, got {tuple(mu.shape)}.")
    unit = F.normalize(mu.detach().float(), dim=-1)
    return unit @ unit.T


def proxy_separation(mu: Tensor, rho: Tensor) -> dict:
    """How far apart the class proxies are: a summary of ``mu`` [C, D] and ``rho`` [C, D] (σ = softplus(ρ)).

    Returns ``max_cosine``, the largest cos(μ_a, μ_b) over pairs a ≠ b (near 1: two classes share a direction, so
    their priors and proxy similarities cannot tell them apart), ``max_pair`` (a, b), ``sigma_mean``, ``sigma_min``,
    ``sigma_max`` over all entries of σ, and ``norm_mean``, the mean ‖μ_c‖.
    """
    if rho.shape != mu.shape:
        raise ValueError(f"rho must have the shape of mu {tuple(mu.shape)}, got {tuple(rho.shape)}.")
    cosines = proxy_mean_cosines(mu)
    off_diagonal = cosines.masked_fill(torch.eye(len(cosines), dtype=torch.bool, device=cosines.device), float("-inf"))
    flat = int(off_diagonal.argmax())
    sigma = F.softplus(rho.detach().float())
    return {"max_cosine": float(off_diagonal.max()), "max_pair": divmod(flat, len(cosines)),
            "sigma_mean": float(sigma.mean()), "sigma_min": float(sigma.min()), "sigma_max": float(sigma.max()),
            "norm_mean": float(mu.detach().float().norm(dim=-1).mean())}
