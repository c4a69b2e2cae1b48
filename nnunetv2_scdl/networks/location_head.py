"""Magic-cube location head (MagicNet's ``FcLayer``; docs/magicnet.md).

Each cube of an image goes through the shared encoder on its own; its features at one encoder stage (MagicNet: the
bottleneck [C_b, *(c / s)]) are flattened and the head predicts which of the K cube positions it came from. Train it
with ``F.cross_entropy(logits, location_labels(...))`` (the released code applies NLL to log-softmax outputs, which is
the same loss).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["location_head_in_features", "LocationHead", "PerProcessBatchNorm1d"]


class PerProcessBatchNorm1d(nn.Module):
    """``nn.BatchNorm1d(num_features)``: the same computation (``F.batch_norm``, momentum 0.1, running statistics),
    initialisation and state-dict keys, but not a torch BatchNorm class, so that nnU-Net's SyncBatchNorm conversion
    under multi-GPU training leaves it alone. MagicNet normalises the K cubes of one image at a time; SyncBatchNorm
    would pool one image per GPU into each batch (and hang when GPUs hold different numbers of images)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


def location_head_in_features(bottleneck_channels: int, cube_size: Sequence[int], total_stride: Sequence[int]) -> int:
    """Flattened size of one cube's bottleneck: C_b · ∏_a (c_a / s_a).

    MagicNet's 32³ VNet cube: 256 · 2³ = 2048. nnU-Net 3-D fullres (320 channels, stride (16, 32, 32)):
    320 · 2·1·1 = 640.
    """
    if bottleneck_channels < 1:
        raise ValueError(f"bottleneck_channels must be >= 1, got {bottleneck_channels}.")
    if len(cube_size) != len(total_stride):
        raise ValueError(f"cube_size {tuple(cube_size)} and total_stride {tuple(total_stride)} differ in length.")
    for a, (c, s) in enumerate(zip(cube_size, total_stride)):
        if s < 1 or c % s != 0:
            raise ValueError(f"Axis {a}: cube size {c} is not a multiple of the encoder's total stride {s}.")
    return bottleneck_channels * math.prod(c // s for c, s in zip(cube_size, total_stride))


class LocationHead(nn.Module):
    """FcLayer: Linear(F → H) → BatchNorm1d(H) → LeakyReLU(0.2) → Linear(H → K), the BatchNorm as
    :class:`PerProcessBatchNorm1d`.

    Args:
        in_features: F, the flattened cube bottleneck (see ``location_head_in_features``).
        n_cubes: K, the number of cube positions (classes).
        hidden_features: H, 4096 in the released code.
        negative_slope: LeakyReLU slope, 0.2 in the released code.

    Input: [N, C_b, *b] (flattened here) or [N, F], with N ≥ 2 in train mode (BatchNorm1d); N = K cubes of one image in
    MagicNet. Output: location logits [N, K].
    """

    def __init__(self, in_features: int, n_cubes: int, hidden_features: int = 4096, negative_slope: float = 0.2):
        super().__init__()
        if in_features < 1 or hidden_features < 1:
            raise ValueError(f"in_features and hidden_features must be >= 1, got {in_features}, {hidden_features}.")
        if n_cubes < 2:
            raise ValueError(f"n_cubes must be >= 2 for a location task, got {n_cubes}.")
        self.in_features, self.n_cubes = in_features, n_cubes
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden_features),
            PerProcessBatchNorm1d(hidden_features),
            nn.LeakyReLU(negative_slope),
            nn.Linear(hidden_features, n_cubes),
        )

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        if bottleneck.dim() < 2:
            raise ValueError(f"Expected [N, C_b, *spatial] or [N, F], got shape {tuple(bottleneck.shape)}.")
        flat = bottleneck.flatten(1)
        if flat.shape[1] != self.in_features:
            raise ValueError(f"Cube bottleneck of shape {tuple(bottleneck.shape[1:])} flattens to {flat.shape[1]} "
                             f"features, but the head expects {self.in_features}; check the cube size and strides.")
        return self.layers(flat)
