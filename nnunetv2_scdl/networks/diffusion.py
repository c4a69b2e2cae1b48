"""Label diffusion for GenericSSL (docs/generic_ssl.md): schedule, forward noising, DDIM sampler, time embedding.

Symbols: T = 1000 steps, β_t linear in [1e-4, 0.02], α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s (t is 0-based: ᾱ_0 = α_0).
The diffused variable is the label map x₀ = 2·onehot(y) − 1 ∈ {−1, 1}^{C×spatial}; the denoiser D_ξ predicts x₀ logits
(it is trained with a segmentation loss, not an ε-MSE), and DDIM (η = 0) turns those predictions into a sample.

Everything random takes a ``torch.Generator`` (or an int seed), so sampling is reproducible.
"""
from __future__ import annotations

import math
from typing import Callable, List, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NUM_TIMESTEPS",
    "linear_beta_schedule",
    "DiffusionSchedule",
    "labels_to_x0",
    "ddim_timesteps",
    "DDIMOutput",
    "ddim_sample",
    "sinusoidal_time_embedding",
    "TimeEmbedding",
]

NUM_TIMESTEPS = 1000
GeneratorLike = Union[torch.Generator, int, None]


def linear_beta_schedule(num_timesteps: int = NUM_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02
                         ) -> torch.Tensor:
    """β_t = beta_start + t·(beta_end − beta_start)/(T − 1), t = 0..T−1, float64 (DDPM's linear schedule)."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}.")
    if not (0.0 < beta_start <= beta_end < 1.0):
        raise ValueError(f"Need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}.")
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def _make_generator(generator: GeneratorLike, device) -> Optional[torch.Generator]:
    """An int becomes a fresh generator seeded with it, on ``device``."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int):
        g = torch.Generator(device=device)
        g.manual_seed(generator)
        return g
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}.")


def _randn(shape, generator: Optional[torch.Generator], device, dtype) -> torch.Tensor:
    if generator is not None and torch.device(generator.device).type != torch.device(device).type:
        raise ValueError(f"The generator lives on {generator.device} but the noise is needed on {device}; create the "
                         f"generator on the same device (or pass an int seed).")
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


class DiffusionSchedule:
    """Precomputed DDPM quantities (float64, CPU; cast on use).

    Attributes: ``betas`` β [T], ``alphas`` α [T], ``alphas_cumprod`` ᾱ [T].
    """

    def __init__(self, num_timesteps: int = NUM_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.num_timesteps = num_timesteps
        self.betas = linear_beta_schedule(num_timesteps, beta_start, beta_end)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    def _check_t(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"t must be an integer tensor, got {t.dtype}.")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ValueError(f"t must lie in [0, {self.num_timesteps - 1}], got range "
                             f"[{int(t.min())}, {int(t.max())}].")
        return t

    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """ᾱ_t per sample, shaped [B, 1, ..., 1] to broadcast against ``like`` [B, ...], in like's dtype/device."""
        t = self._check_t(t)
        if t.dim() != 1 or t.shape[0] != like.shape[0]:
            raise ValueError(f"t must be [B] with B = {like.shape[0]}, got shape {tuple(t.shape)}.")
        ab = self.alphas_cumprod[t.cpu()].to(device=like.device, dtype=like.dtype)
        return ab.reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: Optional[torch.Tensor] = None,
                 generator: GeneratorLike = None) -> torch.Tensor:
        """Forward process q(x_t | x₀): x_t = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε, ε ~ N(0, I).

        Args:
            x0: [B, C, *spatial] (typically ``labels_to_x0(y)``).
            t: LongTensor [B] in [0, T−1].
            noise: ε with x0's shape; drawn from ``generator`` when None.
        """
        if noise is None:
            noise = _randn(x0.shape, _make_generator(generator, x0.device), x0.device, x0.dtype)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}.")
        ab = self.alpha_bar(t, x0)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise

    def sample_timesteps(self, batch_size: int, generator: GeneratorLike = None, device=None) -> torch.Tensor:
        """Training timesteps t ~ U{0, …, T−1}, LongTensor [B]."""
        device = torch.device("cpu") if device is None else torch.device(device)
        gen = _make_generator(generator, device)
        gen_device = gen.device if gen is not None else device
        t = torch.randint(0, self.num_timesteps, (batch_size,), generator=gen, device=gen_device)
        return t.to(device)


def labels_to_x0(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """x₀ = 2·onehot(y) − 1.

    Args:
        labels: integer map [B, *spatial] or [B, 1, *spatial] (nnU-Net targets) with values in [0, C−1]. Ignore labels
            must be removed (mapped to a class) by the caller.
        num_classes: C.
    Returns:
        [B, C, *spatial] with entries in {−1, +1}.
    """
    if labels.dtype.is_floating_point:
        if not torch.equal(labels, labels.round()):
            raise ValueError("labels must hold integer class indices.")
        labels = labels.long()
    if labels.dim() >= 3 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got range [{int(labels.min())}, "
                         f"{int(labels.max())}] (map ignore labels before diffusing).")
    onehot = F.one_hot(labels.long(), num_classes).movedim(-1, 1)
    return (2.0 * onehot - 1.0).to(dtype)


def ddim_timesteps(num_steps: int = 10, num_timesteps: int = NUM_TIMESTEPS) -> List[int]:
    """The DDIM sub-sequence, in sampling (descending) order, spaced as GenericSSL spaces it
    (guided-diffusion's ``space_timesteps(T, [S])``): S steps evenly over [0, T − 1], both ends included, each
    rounded to the nearest integer (ties to even, as Python's ``round``), with the stride (T − 1)/(S − 1) added up
    step by step; S = 1 gives [0].

    T = 1000, S = 10 → [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]; S = 3 → [999, 500, 0].
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must lie in [1, {num_timesteps}], got {num_steps}.")
    stride = (num_timesteps - 1) / (num_steps - 1) if num_steps > 1 else 1
    steps, position = [], 0.0
    for _ in range(num_steps):
        steps.append(round(position))
        position += stride
    return steps[::-1]


class DDIMOutput(NamedTuple):
    """``sample``: the final x₀ sample in [−1, 1] (η = 0: the clipped last prediction), [B, C, *spatial].
    ``x0_logits``: the denoiser's raw output at the last step (t = 0), same shape."""
    sample: torch.Tensor
    x0_logits: torch.Tensor


@torch.no_grad()
def ddim_sample(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: Sequence[int],
                schedule: Optional[DiffusionSchedule] = None, num_steps: int = 10, generator: GeneratorLike = None,
                eta: float = 0.0, clip_x0: bool = True, x_T: Optional[torch.Tensor] = None, device=None,
                dtype: torch.dtype = torch.float32) -> DDIMOutput:
    """DDIM sampling of a label map with an x₀-predicting denoiser.

    Each step (t → t'), with x̂₀ = clip(model(x_t, t), −1, 1) and ε̂ = (x_t − √ᾱ_t x̂₀)/√(1 − ᾱ_t):
        x_{t'} = √ᾱ_{t'} x̂₀ + √(1 − ᾱ_{t'} − σ²) ε̂ + σ z,  σ = η √((1 − ᾱ_{t'})/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'}),
    and after the last step (t = 0) the sample is x̂₀. η = 0 (default) is deterministic given x_T, so the whole
    call is reproducible from ``generator`` as long as the denoiser itself is (eval mode or no dropout).

    Args:
        model: the denoiser, ``model(x_t [B,C,*spatial], t LongTensor [B]) -> x₀ logits [B,C,*spatial]`` (a list/tuple,
            e.g. deep-supervision outputs, is reduced to its first, full-resolution element). Condition it on the image
            with a closure, e.g. ``GenericSSLNet.denoiser(image)``.
        shape: [B, C, *spatial] of the sample.
        schedule: defaults to ``DiffusionSchedule()`` (1000 linear steps).
        num_steps: S, number of denoiser calls (10 in GenericSSL).
        generator: torch.Generator or int seed for x_T (and for z when η > 0).
        clip_x0: clip x̂₀ to [−1, 1] (GenericSSL: yes). The model output itself is used as x̂₀ (its "logits" live in the
            x₀ space because D_ξ is trained to output x₀ logits).
        x_T: optional starting noise (overrides the generator draw).
    """
    schedule = DiffusionSchedule() if schedule is None else schedule
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}.")
    shape = tuple(int(s) for s in shape)
    if x_T is not None:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T shape {tuple(x_T.shape)} differs from the requested shape {shape}.")
        device = x_T.device if device is None else torch.device(device)
        x = x_T.to(device=device, dtype=dtype)
    else:
        device = torch.device("cpu") if device is None else torch.device(device)
    gen = _make_generator(generator, device)
    if x_T is None:
        x = _randn(shape, gen, device, dtype)

    steps = ddim_timesteps(num_steps, schedule.num_timesteps)
    ab = schedule.alphas_cumprod
    logits = x
    for i, t in enumerate(steps):
        t_prev = steps[i + 1] if i + 1 < len(steps) else -1
        t_batch = torch.full((shape[0],), t, dtype=torch.long, device=device)
        out = model(x, t_batch)
        if isinstance(out, (list, tuple)):
            out = out[0]
        if tuple(out.shape) != shape:
            raise ValueError(f"The denoiser returned shape {tuple(out.shape)}, expected {shape}.")
        logits = out.to(dtype)
        x0 = logits.clamp(-1.0, 1.0) if clip_x0 else logits
        if t_prev < 0:
            x = x0
            break
        a_t, a_prev = float(ab[t]), float(ab[t_prev])
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)
        sigma = eta * math.sqrt((1.0 - a_prev) / (1.0 - a_t)) * math.sqrt(1.0 - a_t / a_prev)
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma ** 2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * _randn(shape, gen, device, dtype)
    return DDIMOutput(sample=x, x0_logits=logits)


def sinusoidal_time_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style embedding of (integer or real) timesteps.

    emb[b] = [cos(t_b ω_0), …, cos(t_b ω_{h−1}), sin(t_b ω_0), …, sin(t_b ω_{h−1})],
    ω_j = max_period^{−j/h}, h = ⌊dim/2⌋, zero-padded to ``dim`` when dim is odd. Input t: [B]; output [B, dim] float32.
    """
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}.")
    t = torch.as_tensor(t)
    if t.dim() != 1:
        raise ValueError(f"t must be [B], got shape {tuple(t.shape)}.")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimeEmbedding(nn.Module):
    """τ(t) = Linear(H → H)(SiLU(Linear(D → H)(sinusoid_D(t)))); D = 128, H = 512.

    Input: t [B] (LongTensor). Output: [B, H]. Per-stage projections to channel counts live in the networks using it.
    """

    def __init__(self, embed_dim: int = 128, hidden_dim: int = 512, max_period: float = 10000.0):
        super().__init__()
        self.embed_dim, self.hidden_dim, self.max_period = embed_dim, hidden_dim, max_period
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = sinusoidal_time_embedding(t, self.embed_dim, self.max_period)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
