"""Consistency losses between a student's logits and a teacher's prediction on the same voxels.

Shapes: logits are [B, C, *spatial] (2d or 3d), C = number of softmax classes including background.
"""
from typing import Tuple

import torch
import torch.nn.functional as F


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits must have the same shape, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    if student_logits.ndim < 3:
        raise ValueError(f"expected logits [B, C, *spatial], got shape {tuple(student_logits.shape)}")


def confident_pseudo_label_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                                threshold: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the student against the teacher's argmax, on voxels where the teacher's max probability
    is at least ``threshold``.

    The sum over confident voxels is divided by *all* voxels, so the term grows as the teacher becomes confident
    instead of jumping to full strength on the first few confident voxels.

    Returns ``(loss, coverage)``; coverage is the fraction of voxels above the threshold (no gradient).
    """
    _check_pair(student_logits, teacher_logits)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    with torch.no_grad():
        confidence, pseudo_label = torch.softmax(teacher_logits.float(), 1).max(1)
        confident = (confidence >= threshold).float()
    voxel_ce = F.cross_entropy(student_logits.float(), pseudo_label, reduction="none")
    return (voxel_ce * confident).mean(), confident.mean()


def softmax_mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the softmax probabilities (the original mean-teacher consistency)."""
    _check_pair(student_logits, teacher_logits)
    teacher_probabilities = torch.softmax(teacher_logits.float(), 1).detach()
    return F.mse_loss(torch.softmax(student_logits.float(), 1), teacher_probabilities)
