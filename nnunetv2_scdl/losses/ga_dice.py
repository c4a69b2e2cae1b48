"""GADice: batch V-Net Dice with a gradient-aware term for classes absent from the batch (GALoss, ECCV'24).

GALoss (ECCV'24). For each class i (background included), over the whole batch:

- class present (Σ t_i > 0):  ℓ_i = 1 − (2 Σ p_i t_i + ε) / (Σ p_i² + Σ t_i² + ε),  ε = 1e-10 (squared denominator);
- class absent  (Σ t_i = 0):  ℓ_i = Σ sg(p_i / N) · p_i,  N = number of voxels in the batch, sg = stop-gradient.
  Its value is Σ p_i² / N and its gradient w.r.t. p_i is p_i / N: a gentle push to suppress the class, instead of
  the 0/ε Dice a plain batch Dice would give.

L = (1/C) Σ_i ℓ_i.
"""
from typing import Optional

import torch
from torch import nn

from nnunetv2_scdl.losses._input_checks import (at_least_float32, check_ignore_index, check_prediction,
                                                target_as_class_indices)


class GADiceLoss(nn.Module):
    """Gradient-aware batch Dice loss, background included, mean over the C classes.

    Args:
        softmax: apply softmax over the class dim to ``prediction`` (True for logits, as nnU-Net's network outputs
            and ``DeepSupervisionWrapper`` pass them). Set False to pass probabilities p directly.
        epsilon: the ε of the present-class Dice (1e-10 in the reference).
        ignore_index: target value to exclude (nnU-Net's ignore label). Ignored voxels enter no sum, and N counts only
            the voxels that are not ignored. None: every target value must be a class index.

    Shapes:
        prediction: [B, C, *spatial] logits (softmax=True) or probabilities (softmax=False), 2d or 3d.
        target: [B, 1, *spatial] or [B, *spatial] integer class indices (a float tensor holding integers is fine).
        returns: a scalar tensor.
    """

    def __init__(self, softmax: bool = True, epsilon: float = 1e-10, ignore_index: Optional[int] = None):
        super().__init__()
        if epsilon < 0:
            raise ValueError(f"GADiceLoss: epsilon must be >= 0, got {epsilon}.")
        check_ignore_index(ignore_index, "GADiceLoss")
        self.softmax = softmax
        self.epsilon = epsilon
        self.ignore_index = ignore_index

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_prediction(prediction, "GADiceLoss")
        labels, valid = target_as_class_indices(target, prediction, self.ignore_index, "GADiceLoss")
        # fp32 sums at least: under AMP the logits are fp16, and Σp² over a 3d batch loses precision in fp16.
        prediction = at_least_float32(prediction)
        probs = torch.softmax(prediction, dim=1) if self.softmax else prediction

        one_hot = torch.zeros(probs.shape, dtype=torch.bool, device=probs.device)
        one_hot.scatter_(1, labels.unsqueeze(1), True)
        if valid is not None:
            valid_c = valid.unsqueeze(1)
            one_hot &= valid_c
            probs = probs * valid_c  # ignored voxels contribute to no sum below
            # N; clamping only matters when every voxel is ignored (then every sum is 0 anyway)
            num_voxels = valid.sum().clamp_min(1).to(probs.dtype)
        else:
            num_voxels = float(labels.numel())

        reduce_dims = [0] + list(range(2, probs.ndim))  # batch Dice: sum over batch and space, keep classes
        intersection = (probs * one_hot).sum(reduce_dims)  # Σ p_i t_i
        prob_sq_sum = (probs * probs).sum(reduce_dims)  # Σ p_i²
        target_sum = one_hot.sum(reduce_dims).to(probs.dtype)  # Σ t_i² = Σ t_i for a one-hot t

        present = target_sum > 0
        dice_loss = 1 - (2 * intersection + self.epsilon) / (prob_sq_sum + target_sum + self.epsilon)
        # Absent class: Σ sg(p/N)·p. Value Σp²/N, gradient p/N (the stop-gradient halves the gradient of Σp²/N).
        absent_loss = ((probs.detach() / num_voxels) * probs).sum(reduce_dims)
        per_class = torch.where(present, dice_loss, absent_loss)
        return per_class.mean()
