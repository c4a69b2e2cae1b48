"""Class-weighted CE + class-weighted soft Dice (DHC) against a manual computation."""
import math

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_scdl.losses import DistDW, WeightedCrossEntropyLoss, WeightedDiceCELoss, WeightedSoftDiceLoss

# Four voxels, C=3, class weights w = (0.5, 2, 1).
#            p0   p1   p2   target
VOXELS = [(0.7, 0.2, 0.1, 0),
          (0.1, 0.6, 0.3, 1),
          (0.2, 0.2, 0.6, 2),
          (0.3, 0.5, 0.2, 1)]
WEIGHTS = torch.tensor([0.5, 2.0, 1.0])

# CE: v = −ln p_y = (−ln .7, −ln .6, −ln .6, −ln .5), voxel weights w_y = (0.5, 2, 1, 2), Σ w_y = 5.5
EXPECTED_CE = (0.5 * -math.log(0.7) + 2 * -math.log(0.6) + 1 * -math.log(0.6) + 2 * -math.log(0.5)) / 5.5
# Dice (batch, no background, smooth 1):
#   class 1: Σpt = .6+.5 = 1.1, Σp = .2+.6+.2+.5 = 1.5, Σt = 2 → dc1 = (2.2+1)/(3.5+1) = 3.2/4.5
#   class 2: Σpt = .6,         Σp = .1+.3+.6+.2 = 1.2, Σt = 1 → dc2 = (1.2+1)/(2.2+1) = 2.2/3.2
EXPECTED_DICE = (2.0 * (1 - 3.2 / 4.5) + 1.0 * (1 - 2.2 / 3.2)) / 2


def _logits_and_target(layout="2d"):
    probs = torch.tensor([v[:3] for v in VOXELS], dtype=torch.float64).T  # [C, 4]
    target = torch.tensor([v[3] for v in VOXELS], dtype=torch.float32)
    if layout == "2d":  # one image of 2×2
        return probs.log().reshape(1, 3, 2, 2), target.reshape(1, 1, 2, 2)
    # two 3d images of 1×1×2: batch Dice must pool them into the same sums
    return probs.log().reshape(3, 2, 1, 1, 2).transpose(0, 1).contiguous(), target.reshape(2, 1, 1, 1, 2)


def test_weighted_ce_by_hand_and_against_torch():
    logits, target = _logits_and_target()
    loss = WeightedCrossEntropyLoss(WEIGHTS)(logits, target)
    assert loss.item() == pytest.approx(EXPECTED_CE, rel=1e-9)
    reference = F.cross_entropy(logits, target[:, 0].long(), weight=WEIGHTS.double())
    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)


@pytest.mark.parametrize("layout", ["2d", "3d_batch2"])
def test_weighted_soft_dice_by_hand(layout):
    logits, target = _logits_and_target(layout)
    assert WeightedSoftDiceLoss(WEIGHTS)(logits, target).item() == pytest.approx(EXPECTED_DICE, rel=1e-9)


def test_dice_ignores_the_background_weight():
    logits, target = _logits_and_target()
    other_background_weight = torch.tensor([123.0, 2.0, 1.0])
    assert WeightedSoftDiceLoss(other_background_weight)(logits, target).item() == pytest.approx(EXPECTED_DICE,
                                                                                                rel=1e-9)


@pytest.mark.parametrize("weight_ce, weight_dice", [(1.0, 1.0), (0.5, 2.0)])
def test_dice_ce_combination(weight_ce, weight_dice):
    logits, target = _logits_and_target()
    loss = WeightedDiceCELoss(WEIGHTS, weight_ce=weight_ce, weight_dice=weight_dice)(logits, target)
    assert loss.item() == pytest.approx(weight_ce * EXPECTED_CE + weight_dice * EXPECTED_DICE, rel=1e-9)


def test_weights_can_be_updated_between_calls_and_come_from_dist_dw():
    logits, target = _logits_and_target()
    loss_fn = WeightedDiceCELoss()
    with pytest.raises(RuntimeError, match="set_class_weights"):
        loss_fn(logits, target)
    loss_fn.set_class_weights(WEIGHTS)
    assert loss_fn(logits, target).item() == pytest.approx(EXPECTED_CE + EXPECTED_DICE, rel=1e-9)

    dist_dw = DistDW(3)
    dist_dw.init_from_counts(torch.tensor([100.0, 10.0, 1.0]))  # float64 CPU weights ≈ (0, 1.5, 3)
    loss_fn.set_class_weights(dist_dw.weights)
    # background weight 0: CE only over voxels 1..3 with weights (1.5, 3, 1.5) (to ~1e-9, DistDW's 1e-8 terms)
    expected_ce = (1.5 * -math.log(0.6) + 3 * -math.log(0.6) + 1.5 * -math.log(0.5)) / 6
    expected_dice = (1.5 * (1 - 3.2 / 4.5) + 3 * (1 - 2.2 / 3.2)) / 2
    assert loss_fn(logits, target).item() == pytest.approx(expected_ce + expected_dice, rel=1e-7)


def test_all_zero_weight_voxels_give_zero_ce_not_nan():
    logits, _ = _logits_and_target()
    all_background = torch.zeros(1, 1, 2, 2)
    loss = WeightedCrossEntropyLoss(torch.tensor([0.0, 1.0, 1.0]))(logits, all_background)
    assert loss.item() == 0.0


def test_ignore_label_is_excluded_from_both_terms():
    logits, target = _logits_and_target()
    logits = torch.cat([logits.reshape(1, 3, 1, 4), torch.zeros(1, 3, 1, 1, dtype=torch.float64)], dim=3)
    target = torch.cat([target.reshape(1, 1, 1, 4), torch.full((1, 1, 1, 1), 3.0)], dim=3)
    loss = WeightedDiceCELoss(WEIGHTS, ignore_index=3)(logits, target)
    assert loss.item() == pytest.approx(EXPECTED_CE + EXPECTED_DICE, rel=1e-9)


def test_gradient_flows_and_dtype_follows_input():
    logits, target = _logits_and_target()
    logits = logits.float().requires_grad_(True)
    loss = WeightedDiceCELoss(WEIGHTS)(logits, target)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("bad_weights, message", [
    (torch.tensor([1.0, 2.0]), "2 class weights"),  # wrong length for C=3, detected at call time
])
def test_wrong_number_of_weights_raises(bad_weights, message):
    logits, target = _logits_and_target()
    with pytest.raises(ValueError, match=message):
        WeightedCrossEntropyLoss(bad_weights)(logits, target)


@pytest.mark.parametrize("bad_weights", [torch.tensor([1.0, -1.0]), torch.tensor([1.0, float("nan")]),
                                         torch.tensor([[1.0, 2.0]]), torch.tensor([1.0])])
def test_invalid_weights_raise(bad_weights):
    with pytest.raises(ValueError):
        WeightedSoftDiceLoss(bad_weights)
