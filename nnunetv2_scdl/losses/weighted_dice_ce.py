"""Class-weighted cross-entropy and class-weighted soft Dice, as DHC uses them with DistDW/DiffDW weights.

DHC's class-weighted losses. nnU-Net's MemoryEfficientSoftDiceLoss has no class weights, hence this module.
With class weights w_c (c = 0..C−1, background included; e.g. ``DistDW.weights`` or ``DiffDW.weights``):

- Weighted CE (PyTorch's weighted mean):  L_ce = Σ_j w_{y_j}·v_j / Σ_j w_{y_j},  v_j = −log softmax(x_j)_{y_j}.
- Weighted soft Dice (batch Dice, background excluded, smooth s = 1):
      dc_c = (2 Σ p_c t_c + s) / (Σ p_c + Σ t_c + s),   L_dice = (1/(C−1)) Σ_{c≥1} w_c · (1 − dc_c).
  (nnU-Net's Dice losses return −dc instead of 1 − dc; the two differ by a constant with no gradient. 1 − dc keeps
  the value >= 0 and 0 for a perfect prediction.)
- L = λ_ce·L_ce + λ_dice·L_dice.

The weights change every iteration, so they are not constructor constants: set them with ``set_class_weights(w)``
before each call (the loss is typically wrapped in nnU-Net's DeepSupervisionWrapper, which only passes
(prediction, target) pairs). They are stored as a plain attribute, not a buffer, so they stay out of state_dicts.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_scdl.losses._input_checks import (at_least_float32, check_ignore_index, check_prediction,
                                                target_as_class_indices)


class _ClassWeighted(nn.Module):
    """Holds the current class weights w [C] and hands them out on the prediction's device/dtype."""

    def __init__(self, class_weights: Optional[torch.Tensor], name: str):
        super().__init__()
        self._name = name
        self.class_weights: Optional[torch.Tensor] = None
        if class_weights is not None:
            self.set_class_weights(class_weights)

    def set_class_weights(self, class_weights: torch.Tensor) -> None:
        """Set w [C] (background included; any float dtype/device). Must be finite and >= 0."""
        weights = torch.as_tensor(class_weights).detach()
        if weights.ndim != 1 or weights.numel() < 2:
            raise ValueError(f"{self._name}: class_weights must be a 1-d tensor [C] with C >= 2, got shape "
                             f"{tuple(weights.shape)}.")
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError(f"{self._name}: class_weights must be finite and >= 0, got {weights.tolist()}.")
        self.class_weights = weights.clone()

    def _weights_for(self, prediction: torch.Tensor) -> torch.Tensor:
        if self.class_weights is None:
            raise RuntimeError(f"{self._name}: no class weights set; call set_class_weights(w) first.")
        if self.class_weights.numel() != prediction.shape[1]:
            raise ValueError(f"{self._name}: {self.class_weights.numel()} class weights for a prediction with "
                             f"{prediction.shape[1]} channels.")
        return self.class_weights.to(device=prediction.device, dtype=at_least_float32(prediction).dtype)


class WeightedCrossEntropyLoss(_ClassWeighted):
    """Class-weighted CE, weighted mean over voxels: Σ_j w_{y_j} v_j / Σ_j w_{y_j}.

    If every (non-ignored) voxel belongs to a class of weight 0 (e.g. an all-background patch under DistDW), the
    weighted mean is 0/0; we return 0 there instead of NaN.

    Args:
        class_weights: w [C], or None to set it later with ``set_class_weights``.
        ignore_index: target value to exclude (nnU-Net's ignore label); None: no ignore label.

    Shapes:
        prediction: [B, C, *spatial] logits, 2d or 3d.
        target: [B, 1, *spatial] or [B, *spatial] integer class indices (float tensors holding integers are fine).
        returns: a scalar tensor.
    """

    def __init__(self, class_weights: Optional[torch.Tensor] = None, ignore_index: Optional[int] = None):
        super().__init__(class_weights, "WeightedCrossEntropyLoss")
        check_ignore_index(ignore_index, self._name)
        self.ignore_index = ignore_index

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_prediction(prediction, self._name)
        labels, valid = target_as_class_indices(target, prediction, self.ignore_index, self._name)
        weights = self._weights_for(prediction)
        prediction = at_least_float32(prediction)
        voxel_ce = F.cross_entropy(prediction, labels, reduction="none")
        voxel_weight = weights[labels]
        if valid is not None:
            voxel_weight = voxel_weight * valid
        # clamp: an all-zero-weight batch gives 0 (numerator is 0 too) rather than NaN
        return (voxel_weight * voxel_ce).sum() / voxel_weight.sum().clamp_min(torch.finfo(voxel_ce.dtype).tiny)


class WeightedSoftDiceLoss(_ClassWeighted):
    """Class-weighted soft batch Dice over the foreground classes: (1/(C−1)) Σ_{c≥1} w_c (1 − dc_c).

    Args:
        class_weights: w [C] (background included; w_0 is not used), or None to set it later.
        smooth: s in dc_c (1 in DHC).
        softmax: apply softmax over C (True for logits); False to pass probabilities.
        ignore_index: target value to exclude (nnU-Net's ignore label); ignored voxels enter no sum.

    Shapes:
        prediction: [B, C, *spatial] logits (softmax=True) or probabilities, 2d or 3d, C >= 2.
        target: [B, 1, *spatial] or [B, *spatial] integer class indices.
        returns: a scalar tensor.
    """

    def __init__(self, class_weights: Optional[torch.Tensor] = None, smooth: float = 1.0, softmax: bool = True,
                 ignore_index: Optional[int] = None):
        super().__init__(class_weights, "WeightedSoftDiceLoss")
        if smooth < 0:
            raise ValueError(f"{self._name}: smooth must be >= 0, got {smooth}.")
        check_ignore_index(ignore_index, self._name)
        self.smooth = smooth
        self.softmax = softmax
        self.ignore_index = ignore_index

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_prediction(prediction, self._name)
        if prediction.shape[1] < 2:
            raise ValueError(f"{self._name}: needs C >= 2 channels (background + foreground), got "
                             f"{prediction.shape[1]}.")
        labels, valid = target_as_class_indices(target, prediction, self.ignore_index, self._name)
        weights = self._weights_for(prediction)
        prediction = at_least_float32(prediction)
        probs = torch.softmax(prediction, dim=1) if self.softmax else prediction

        one_hot = torch.zeros(probs.shape, dtype=torch.bool, device=probs.device)
        one_hot.scatter_(1, labels.unsqueeze(1), True)
        if valid is not None:
            one_hot &= valid.unsqueeze(1)
            probs = probs * valid.unsqueeze(1)
        # Background is dropped before summing: it is not part of the loss.
        probs, one_hot = probs[:, 1:], one_hot[:, 1:]
        reduce_dims = [0] + list(range(2, probs.ndim))  # batch Dice
        intersection = (probs * one_hot).sum(reduce_dims)
        prob_sum = probs.sum(reduce_dims)
        target_sum = one_hot.sum(reduce_dims).to(probs.dtype)
        dice = (2 * intersection + self.smooth) / (prob_sum + target_sum + self.smooth)
        return (weights[1:] * (1 - dice)).mean()


class WeightedDiceCELoss(nn.Module):
    """λ_ce · weighted CE + λ_dice · weighted soft Dice (DHC's supervised loss), sharing one weight vector w.

    Args:
        class_weights: w [C], or None to set it later with ``set_class_weights``.
        weight_ce: λ_ce.  weight_dice: λ_dice.  smooth: the Dice's s (1).
        ignore_index: target value to exclude from both terms (nnU-Net's ignore label).

    Shapes:
        prediction: [B, C, *spatial] logits, 2d or 3d.
        target: [B, 1, *spatial] or [B, *spatial] integer class indices.
        returns: a scalar tensor.
    """

    def __init__(self, class_weights: Optional[torch.Tensor] = None, weight_ce: float = 1.0,
                 weight_dice: float = 1.0, smooth: float = 1.0, ignore_index: Optional[int] = None):
        super().__init__()
        self.weight_ce = weight_ce
        self.weight_dice = weight_dice
        self.ce = WeightedCrossEntropyLoss(class_weights, ignore_index=ignore_index)
        self.dice = WeightedSoftDiceLoss(class_weights, smooth=smooth, softmax=True, ignore_index=ignore_index)

    @property
    def class_weights(self) -> Optional[torch.Tensor]:
        return self.ce.class_weights

    def set_class_weights(self, class_weights: torch.Tensor) -> None:
        self.ce.set_class_weights(class_weights)
        self.dice.set_class_weights(class_weights)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.weight_ce * self.ce(prediction, target) + self.weight_dice * self.dice(prediction, target)
