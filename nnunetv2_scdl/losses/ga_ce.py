"""GACE(k, γ): cross-entropy with top-k % hard-voxel mining and class-balanced normalisation (GALoss, ECCV'24).

GALoss (ECCV'24). Over the flattened batch of N voxels with per-voxel CE v_j:

1. OHEM: keep the K = ⌊N·k/100⌋ voxels with the largest v_j.
2. For each class i, let n_i be the number of kept voxels with target i. The class term is
       Σ_{j kept, y_j = i} v_j / ((n_i + ε)^{1−γ} · K^γ).
3. L = Σ_i (a sum, not a mean, over classes).

γ interpolates between a class-balanced loss (γ=0: the sum over classes of each class's mean CE) and the plain mean
over the kept voxels (γ=1). The reference uses γ=0.5 (denominator √(n_i·K)); k=10 for supervision, k=100 for CPS.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_scdl.losses._input_checks import (at_least_float32, check_ignore_index, check_prediction,
                                                target_as_class_indices)


class GACELoss(nn.Module):
    """Top-k % OHEM cross-entropy with per-class γ normalisation, summed over classes.

    Args:
        k: percentage (0, 100] of voxels kept, the largest per-voxel CE first. K = ⌊N·k/100⌋, at least 1 (so a tiny
            deep-supervision output or a mostly-ignored batch still yields a loss).
        gamma: γ in [0, 1]; see the module docstring.
        epsilon: the ε in (n_i + ε)^{1−γ}. It only keeps 0/0 away for classes with no kept voxel (their numerator is 0).
        ignore_index: target value to exclude (nnU-Net's ignore label). Ignored voxels are removed before the top-k
            selection, and N counts only the others. None: every target value must be a class index.

    Shapes:
        prediction: [B, C, *spatial] logits (not probabilities), 2d or 3d.
        target: [B, 1, *spatial] or [B, *spatial] integer class indices (a float tensor holding integers is fine).
        returns: a scalar tensor.
    """

    def __init__(self, k: float = 10.0, gamma: float = 0.5, epsilon: float = 1e-10,
                 ignore_index: Optional[int] = None):
        super().__init__()
        if not 0 < k <= 100:
            raise ValueError(f"GACELoss: k is a percentage in (0, 100], got {k}.")
        if not 0 <= gamma <= 1:
            raise ValueError(f"GACELoss: gamma must lie in [0, 1], got {gamma}.")
        if epsilon < 0:
            raise ValueError(f"GACELoss: epsilon must be >= 0, got {epsilon}.")
        check_ignore_index(ignore_index, "GACELoss")
        self.k = k
        self.gamma = gamma
        self.epsilon = epsilon
        self.ignore_index = ignore_index

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_prediction(prediction, "GACELoss")
        labels, valid = target_as_class_indices(target, prediction, self.ignore_index, "GACELoss")
        num_classes = prediction.shape[1]
        voxel_ce = F.cross_entropy(at_least_float32(prediction), labels, reduction="none").reshape(-1)
        labels = labels.reshape(-1)
        if valid is not None:
            keep = valid.reshape(-1)
            voxel_ce, labels = voxel_ce[keep], labels[keep]
        num_voxels = voxel_ce.numel()
        if num_voxels == 0:  # everything ignored: no signal, but keep the graph so backward() still works
            return prediction.sum() * 0.0

        num_kept = max(1, int(num_voxels * self.k // 100))  # K = ⌊N·k/100⌋
        if num_kept < num_voxels:
            kept_ce, kept_idx = torch.topk(voxel_ce, num_kept, sorted=False)
            kept_labels = labels[kept_idx]
        else:  # k=100 (CPS): no selection needed
            kept_ce, kept_labels = voxel_ce, labels

        class_ce_sum = torch.zeros(num_classes, dtype=kept_ce.dtype, device=kept_ce.device)
        class_ce_sum = class_ce_sum.index_add(0, kept_labels, kept_ce)  # Σ_{kept, y=i} v_j
        class_count = torch.bincount(kept_labels, minlength=num_classes).to(kept_ce.dtype)  # n_i
        denominator = (class_count + self.epsilon) ** (1 - self.gamma) * float(num_kept) ** self.gamma
        return (class_ce_sum / denominator).sum()
