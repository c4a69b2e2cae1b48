"""The three proxy-derived priors and their lightweight projections (paper "proxy-sampled feature augmentation").

Per token l (all priors are unit vectors in the embedding space, [B, L, D]):
- distribution-weighted  r^dist_l = n(Σ_{c,s} α_{l,c,s} p̂_{c,s}),  α_l = softmax_{(c,s)}(⟨ẑ_l, p̂_{c,s}⟩ / τ):
  a similarity-weighted mean over the S samples of every proxy, so it reflects each proxy's spread σ_c, not just μ_c.
- centre-similarity      r^center_l = n(Σ_c Q[l,c] μ̂_c): the proxy means weighted by the joint assignment Q
  (variance ignored).
- token-sampled          r^tok_l = n(mean_e n(z_l + σ_emb ⊙ ε_e)),  ε_e ~ N(0, I), e = 1..E: the token's own
  embedding, locally perturbed. In eval mode ε = 0, so r^tok = ẑ_l.
They are concatenated to [B, L, 3D] and mapped by one bias-free 1×1 projection per injection site
(``PriorProjections``); the projections are zero-initialised so the host network's function is unchanged at init.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["distribution_weighted_prior", "centre_similarity_prior", "token_sampled_prior", "PriorProjections"]


def distribution_weighted_prior(sample_similarity: Tensor, unit_samples: Tensor, tau: float) -> Tensor:
    """r^dist. ``sample_similarity``: [B, L, C, S] cosines ⟨ẑ, p̂_{c,s}⟩; ``unit_samples`` p̂: [C, S, D] → [B, L, D]."""
    batch, tokens, classes, samples = sample_similarity.shape
    if unit_samples.shape[:2] != (classes, samples):
        raise ValueError(f"unit_samples must be [C={classes}, S={samples}, D], got {tuple(unit_samples.shape)}.")
    weights = torch.softmax(sample_similarity.reshape(batch, tokens, classes * samples) / tau, dim=-1)
    return F.normalize(weights @ unit_samples.reshape(classes * samples, -1), dim=-1)


def centre_similarity_prior(assignment: Tensor, unit_proxy_means: Tensor) -> Tensor:
    """r^center. ``assignment`` Q: [B, L, C] (rows sum to 1); ``unit_proxy_means`` μ̂: [C, D], unit rows → [B, L, D]."""
    if assignment.shape[-1] != unit_proxy_means.shape[0]:
        raise ValueError(f"assignment has {assignment.shape[-1]} classes, unit_proxy_means "
                         f"{unit_proxy_means.shape[0]}.")
    return F.normalize(assignment @ unit_proxy_means, dim=-1)


def token_sampled_prior(embeddings: Tensor, sigma_emb: Tensor, num_samples: int, stochastic: bool) -> Tensor:
    """r^tok. ``embeddings`` z: [B, L, D] (not normalised); ``sigma_emb``: [D] noise scale (unconstrained, as in
    the released code: the noise is symmetric, so its sign is irrelevant) → [B, L, D]."""
    if not stochastic or num_samples == 0:
        return F.normalize(embeddings, dim=-1)
    noise = torch.randn(num_samples, *embeddings.shape, device=embeddings.device, dtype=embeddings.dtype)
    samples = F.normalize(embeddings.unsqueeze(0) + sigma_emb * noise, dim=-1)
    return F.normalize(samples.mean(dim=0), dim=-1)


class PriorProjections(nn.Module):
    """One bias-free linear map 3D → C_k per injection site k (a 1×1 convolution applied on the token grid).

    Args:
        prior_channels: 3D, the channel count of the concatenated priors.
        out_channels: C_k for each injection site (e.g. the decoder stage widths).
    """

    def __init__(self, prior_channels: int, out_channels: Sequence[int]):
        super().__init__()
        self.prior_channels = prior_channels
        self.maps = nn.ModuleList(nn.Linear(prior_channels, int(c), bias=False) for c in out_channels)
        for linear in self.maps:
            nn.init.zeros_(linear.weight)

    def __len__(self) -> int:
        return len(self.maps)

    def forward(self, priors: Tensor, site: int) -> Tensor:
        """``priors``: [B, L, 3D] → [B, L, C_site]."""
        return self.maps[site](priors)

    def weight(self, site: int) -> Tensor:
        """The [C_site, 3D] matrix of a site (used to fold it into a following linear head)."""
        return self.maps[site].weight
