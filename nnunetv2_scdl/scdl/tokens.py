"""Token grid, tokenisation and per-token class proportions. Works for 2-D and 3-D maps.

A token covers a block of ``token_strides`` voxels (e.g. 8×8×8, or 4×8×8 on an anisotropic grid). Tokens are ordered
by flattening the grid (D, H, W) row-major, and every [B, L, ·] tensor in SCDL uses that order.
"""
import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

_HAS_FP32_OUT_BMM = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 8)  # torch.bmm(out_dtype=)

__all__ = ["token_strides_from_stage_strides", "token_grid_shape", "pool_to_grid", "features_to_tokens",
           "tokens_to_map", "linear_interpolation_matrix", "resize_linear", "prepare_labels", "class_one_hot",
           "class_proportions_per_token", "class_region_sums"]


def token_strides_from_stage_strides(stage_strides: Sequence[Sequence[int]], token_stride: int = 8
                                     ) -> Tuple[int, Tuple[int, ...]]:
    """Pick the encoder stage whose cumulative stride first reaches ``token_stride`` along some axis.

    Args:
        stage_strides: per-stage strides as in nnU-Net plans, e.g. ``[[1,1,1],[2,2,2],[2,2,2],[1,2,2]]``.
        token_stride: the target token size along the most downsampled axis (8 in the released code, as 96³ → 12³).
    Returns:
        (stage index, cumulative strides of that stage). If no stage reaches ``token_stride``, the deepest stage.
        Example: the strides above give (3, (4, 8, 8)); isotropic ``[1,2,2,2,...]`` gives (3, (8, 8, 8)).
    """
    if token_stride < 1:
        raise ValueError(f"token_stride must be >= 1, got {token_stride}.")
    if len(stage_strides) == 0:
        raise ValueError("stage_strides is empty.")
    cumulative = np.ones(len(stage_strides[0]), dtype=np.int64)
    for index, stride in enumerate(stage_strides):
        if len(stride) != len(cumulative):
            raise ValueError(f"all stage strides must have the same length, got {list(stage_strides)}.")
        cumulative = cumulative * np.asarray(stride, dtype=np.int64)
        if cumulative.max() >= token_stride:
            return index, tuple(int(s) for s in cumulative)
    return len(stage_strides) - 1, tuple(int(s) for s in cumulative)


def token_grid_shape(spatial_shape: Sequence[int], token_strides: Sequence[int]) -> Tuple[int, ...]:
    """Grid = spatial // strides per axis; the spatial shape must be divisible (nnU-Net patches always are, since
    they are divisible by the network's total stride)."""
    if len(spatial_shape) != len(token_strides):
        raise ValueError(f"spatial shape {tuple(spatial_shape)} and token strides {tuple(token_strides)} differ in "
                         f"dimensionality.")
    if any(int(s) % int(t) for s, t in zip(spatial_shape, token_strides)):
        raise ValueError(f"spatial shape {tuple(spatial_shape)} is not divisible by the token strides "
                         f"{tuple(token_strides)}.")
    return tuple(int(s) // int(t) for s, t in zip(spatial_shape, token_strides))


def pool_to_grid(maps: Tensor, pool_strides: Sequence[int]) -> Tensor:
    """Non-overlapping average pooling, kernel = stride: [B, K, *S] → [B, K, *S/strides] (2-D or 3-D)."""
    if maps.dim() not in (4, 5) or maps.dim() != len(pool_strides) + 2:
        raise ValueError(f"maps must be [B, K, *S] with 2 or 3 spatial dims matching pool_strides "
                         f"{tuple(pool_strides)}, got shape {tuple(maps.shape)}.")
    token_grid_shape(maps.shape[2:], pool_strides)  # validates divisibility
    if all(int(s) == 1 for s in pool_strides):
        return maps
    pool = F.avg_pool3d if maps.dim() == 5 else F.avg_pool2d
    return pool(maps, kernel_size=tuple(pool_strides), stride=tuple(pool_strides))


def features_to_tokens(features: Tensor, pool_strides: Sequence[int]) -> Tensor:
    """Average-pool a feature map into tokens: [B, D_x, *S] → [B, L, D_x] with L = Π (S / pool_strides)."""
    if features.dim() not in (4, 5) or len(pool_strides) != features.dim() - 2:
        raise ValueError(f"features must be [B, D_x, *S] with 2 or 3 spatial dims matching pool_strides "
                         f"{tuple(pool_strides)}, got shape {tuple(features.shape)}.")
    return pool_to_grid(features, pool_strides).flatten(2).transpose(1, 2)


def tokens_to_map(tokens: Tensor, grid: Sequence[int]) -> Tensor:
    """Inverse of the flattening: [B, L, K] → [B, K, *grid]."""
    if tokens.dim() != 3 or tokens.shape[1] != math.prod(grid):
        raise ValueError(f"tokens must be [B, L, K] with L = {math.prod(grid)} for grid {tuple(grid)}, got "
                         f"shape {tuple(tokens.shape)}.")
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


def linear_interpolation_matrix(size_in: int, size_out: int, device=None, dtype=torch.float32) -> Tensor:
    """[size_out, size_in] matrix of 1-D linear interpolation with ``align_corners=False`` (PyTorch's convention:
    source coordinate (i + ½)·in/out − ½, clamped to [0, in − 1]); entry (i, j) = max(0, 1 − |src_i − j|).
    Elementwise only, so building it on a GPU needs no host synchronisation."""
    target = torch.arange(size_out, device=device, dtype=torch.float64)
    source = ((target + 0.5) * (size_in / size_out) - 0.5).clamp(0.0, size_in - 1)
    columns = torch.arange(size_in, device=device, dtype=torch.float64)
    return (1.0 - (source.unsqueeze(1) - columns.unsqueeze(0)).abs()).clamp_min(0.0).to(dtype)


def resize_linear(maps: Tensor, size: Sequence[int], cache: Optional[dict] = None) -> Tensor:
    """Bi-/trilinear resize of [B, K, *S] to [B, K, *size], equal to ``F.interpolate(mode="(bi|tri)linear",
    align_corners=False)`` but computed axis by axis as small matrix products, which is several times faster on CPU
    and has a cheap backward. ``cache`` (a dict) keeps the interpolation matrices between calls."""
    if maps.dim() != len(size) + 2:
        raise ValueError(f"maps must be [B, K, *S] with {len(size)} spatial dims, got {tuple(maps.shape)}.")
    if torch.compiler.is_compiling():
        cache = None  # a dict filled while tracing fails dynamo's guards on the next call: one needless recompile
    for axis, size_out in enumerate(size):
        dim = axis + 2
        size_in = maps.shape[dim]
        if size_in == size_out:
            continue
        key = (size_in, int(size_out), maps.device, maps.dtype)
        matrix = cache.get(key) if cache is not None else None
        if matrix is None:
            matrix = linear_interpolation_matrix(size_in, int(size_out), maps.device, maps.dtype)
            if cache is not None:
                cache[key] = matrix
        maps = torch.movedim(torch.movedim(maps, dim, -1) @ matrix.transpose(0, 1), -1, dim)
    return maps


def prepare_labels(labels: Tensor, num_classes: int, ignore_label: Optional[int] = None,
                   spatial_dims: Optional[int] = None) -> Tensor:
    """Validate an integer label map and return it as [B, *S] int64 with ignored voxels set to ``num_classes``.

    Accepts [B, 1, *S] (nnU-Net's target layout) or [B, *S]; float tensors holding integers are accepted.
    Raises ValueError for values outside [0, C) that are not the ignore label.
    """
    if spatial_dims is not None and labels.dim() == spatial_dims + 2:
        if labels.shape[1] != 1:
            raise ValueError(f"labels must be [B, 1, *S] or [B, *S], got shape {tuple(labels.shape)}.")
        labels = labels[:, 0]
    elif spatial_dims is not None and labels.dim() != spatial_dims + 1:
        raise ValueError(f"labels must be [B, 1, *S] or [B, *S] with {spatial_dims} spatial dims, got shape "
                         f"{tuple(labels.shape)}.")
    labels = labels.long()
    checked = labels
    if ignore_label is not None:
        ignored = labels == ignore_label
        labels = labels.masked_fill(ignored, num_classes)
        checked = labels.masked_fill(ignored, 0)
    if labels.numel():
        low, high = torch.aminmax(checked)
        if labels.is_cuda:  # no host sync in the training step; a bad label stops the CUDA context instead
            torch._assert_async((low >= 0) & (high < num_classes),
                                f"labels must lie in [0, {num_classes}) (or equal ignore_label={ignore_label})")
        elif int(low) < 0 or int(high) >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}) (or equal ignore_label={ignore_label}); found "
                             f"values in [{int(low)}, {int(high)}].")
    return labels


def class_one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """[B, *S] int64 labels from ``prepare_labels`` → one-hot [B, C + 1, *S] (fp32 by default); channel C marks
    ignored voxels. fp16 halves the memory traffic and is still exact for the token fractions k/N of power-of-two
    token volumes N ≤ 2048 (``class_proportions_per_token``)."""
    one_hot = torch.zeros(labels.shape[0], num_classes + 1, *labels.shape[1:], device=labels.device, dtype=dtype)
    return one_hot.scatter_(1, labels.unsqueeze(1), 1.0)


def class_proportions_per_token(one_hot: Tensor, token_strides: Sequence[int]) -> Tuple[Tensor, Tensor]:
    """GT class proportions per token: the area-pooled one-hot, renormalised over the non-ignored voxels.

    Args:
        one_hot: [B, C + 1, *S] from ``class_one_hot`` (the last channel = ignored voxels).
        token_strides: voxels per token along each axis.
    Returns:
        proportions w [B, L, C] (rows sum to 1; rows of fully ignored tokens are 0) and valid [B, L] bool (the token
        has at least one non-ignored voxel).
    """
    fractions = pool_to_grid(one_hot, token_strides).flatten(2).transpose(1, 2)[..., :-1].float()  # [B, L, C]
    labeled_fraction = fractions.sum(dim=-1, keepdim=True)
    proportions = fractions / labeled_fraction.clamp_min(1e-12)
    return proportions, labeled_fraction[..., 0] > 0


def class_region_sums(features: Tensor, one_hot: Tensor, chunk: int = 8192) -> Tuple[Tensor, Tensor]:
    """Per image and class, the sum of the feature vectors over the voxels of that class (voxel-level masking).

    Args:
        features: [B, D_x, *S] (any float dtype; summed in fp32).
        one_hot: [B, C + 1, *S] from ``class_one_hot`` at the same spatial size (any float dtype).
        chunk: voxels per partial product (see below).
    Returns:
        sums [B, C, D_x] and voxel counts [B, C], fp32. Computed as matrix products over chunks of ``chunk`` voxels
        whose partial sums are then added: one product with a reduction length of millions of voxels parallelises
        badly on GPUs, and a scatter onto C rows would serialise on atomics. fp16/bf16 features on a GPU are
        multiplied in their own dtype with fp32 accumulation and output, so the feature map is never copied to fp32.
    """
    if features.shape[0] != one_hot.shape[0] or features.shape[2:] != one_hot.shape[2:]:
        raise ValueError(f"features [B, D_x, *S] and one_hot [B, C+1, *S] must agree, got {tuple(features.shape)} "
                         f"and {tuple(one_hot.shape)}.")
    batch, channels = features.shape[:2]
    classes = one_hot.shape[1] - 1
    voxels = one_hot[0, 0].numel()
    low_precision = features.is_cuda and features.dtype in (torch.float16, torch.bfloat16) and _HAS_FP32_OUT_BMM
    dtype = features.dtype if low_precision else torch.float32
    flat_one_hot = one_hot.flatten(2).to(dtype)  # [B, C + 1, V]
    flat_features = features.flatten(2).to(dtype)  # [B, D_x, V]
    if voxels % chunk:
        chunk = voxels  # a single product; nnU-Net patches are divisible by 8192 unless they are tiny
    n = voxels // chunk
    # [B·n, C+1, chunk] @ [B·n, chunk, D_x] as strided views, then the n partial sums are added
    left = flat_one_hot.unflatten(2, (n, chunk)).transpose(1, 2).reshape(batch * n, classes + 1, chunk)
    right = flat_features.unflatten(2, (n, chunk)).permute(0, 2, 3, 1).reshape(batch * n, chunk, channels)
    partial = torch.bmm(left, right, out_dtype=torch.float32) if low_precision else left @ right
    sums = partial.view(batch, n, classes + 1, channels).sum(dim=1)[:, :classes]
    return sums, one_hot.flatten(2)[:, :classes].sum(dim=-1, dtype=torch.float32)  # no fp32 copy of the map
