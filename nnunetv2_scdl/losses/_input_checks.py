"""Input validation shared by the segmentation losses in this package.

Conventions (the same for every loss here):
- ``prediction``: floating tensor [B, C, *spatial] (logits or probabilities), with 1 or more spatial dims
  (2d: [B,C,X,Y], 3d: [B,C,X,Y,Z]). C counts the background class.
- ``target``: class indices, either [B, 1, *spatial] (nnU-Net's layout, often a float tensor holding integers) or
  [B, *spatial]. Values must lie in [0, C), except voxels equal to ``ignore_index`` (nnU-Net's ignore label), which
  are excluded from the loss.
- Classes are mutually exclusive (softmax). nnU-Net's region-based (sigmoid) training is not supported by these losses;
  a trainer using them must reject ``label_manager.has_regions``.
"""
from typing import Optional, Tuple

import torch


def check_prediction(prediction: torch.Tensor, loss_name: str) -> None:
    """Raise ValueError unless ``prediction`` is a floating tensor [B, C, *spatial] with C >= 1 and a spatial dim."""
    if not isinstance(prediction, torch.Tensor):
        raise ValueError(f"{loss_name}: prediction must be a torch.Tensor, got {type(prediction).__name__}.")
    if prediction.ndim < 3:
        raise ValueError(f"{loss_name}: prediction must have shape [B, C, *spatial] (at least 3 dims), "
                         f"got shape {tuple(prediction.shape)}.")
    if not prediction.is_floating_point():
        raise ValueError(f"{loss_name}: prediction must be a floating tensor (logits or probabilities), "
                         f"got dtype {prediction.dtype}.")


def target_as_class_indices(target: torch.Tensor, prediction: torch.Tensor, ignore_index: Optional[int],
                            loss_name: str) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Turn ``target`` into a long tensor [B, *spatial] of class indices in [0, C), and a mask of voxels to use.

    Returns ``(labels, valid)``. ``valid`` is a bool tensor [B, *spatial] that is False on ignored voxels, or None
    when ``ignore_index`` is None. Ignored voxels get label 0 in ``labels`` so that indexing stays in range; callers
    must exclude them with ``valid``.
    """
    if not isinstance(target, torch.Tensor):
        raise ValueError(f"{loss_name}: target must be a torch.Tensor, got {type(target).__name__}.")
    num_classes = prediction.shape[1]
    batch, spatial = prediction.shape[0], tuple(prediction.shape[2:])
    if target.ndim == prediction.ndim:
        if target.shape[1] != 1:
            raise ValueError(f"{loss_name}: a target with as many dims as the prediction must be [B, 1, *spatial] "
                             f"(class indices, not one-hot); got shape {tuple(target.shape)} for prediction shape "
                             f"{tuple(prediction.shape)}.")
        target = target[:, 0]
    elif target.ndim != prediction.ndim - 1:
        raise ValueError(f"{loss_name}: target must be [B, 1, *spatial] or [B, *spatial]; got shape "
                         f"{tuple(target.shape)} for prediction shape {tuple(prediction.shape)}.")
    if target.shape[0] != batch or tuple(target.shape[1:]) != spatial:
        raise ValueError(f"{loss_name}: target batch/spatial shape {tuple(target.shape)} does not match the "
                         f"prediction's {(batch,) + spatial}.")
    if target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"{loss_name}: target must hold integer class indices, got dtype {target.dtype}.")

    # One host sync for all value checks: range, and integrality of float targets (nnU-Net stores segs as float).
    if target.is_floating_point():
        stats = torch.stack([target.min(), target.max(), (target - target.round()).abs().max()]).tolist()
        if stats[2] != 0:
            raise ValueError(f"{loss_name}: target holds non-integer values; it must hold class indices.")
    else:
        stats = torch.stack([target.min(), target.max()]).tolist()
    target = target.long()
    valid = None
    if ignore_index is not None:
        valid = target != ignore_index
        in_range = (target >= 0) & (target < num_classes)
        if not bool((in_range | ~valid).all()):
            raise ValueError(f"{loss_name}: target values must lie in [0, {num_classes}) or equal ignore_index="
                             f"{ignore_index}; found min {stats[0]:g}, max {stats[1]:g}.")
        target = torch.where(valid, target, torch.zeros_like(target))
    elif stats[0] < 0 or stats[1] >= num_classes:
        raise ValueError(f"{loss_name}: target values must lie in [0, {num_classes}) (C={num_classes} prediction "
                         f"channels); found min {stats[0]:g}, max {stats[1]:g}. If this is nnU-Net's ignore label, "
                         f"pass ignore_index.")
    return target, valid


def check_ignore_index(ignore_index: Optional[int], loss_name: str) -> None:
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise ValueError(f"{loss_name}: ignore_index must be an int or None, got {ignore_index!r}.")


def at_least_float32(prediction: torch.Tensor) -> torch.Tensor:
    """Upcast fp16/bf16 (AMP) to fp32 for the loss arithmetic; keep fp32/fp64 as they are."""
    return prediction if prediction.dtype in (torch.float32, torch.float64) else prediction.float()
