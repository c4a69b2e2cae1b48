"""GADiceLoss against hand computations."""
import pytest
import torch

from nnunetv2_scdl.losses import GADiceLoss

# Four voxels, C=3. Class 2 is absent from the target.
#            p0   p1   p2     target
VOXELS = [(0.7, 0.2, 0.1, 0),
          (0.6, 0.1, 0.3, 0),
          (0.1, 0.8, 0.1, 1),
          (0.2, 0.6, 0.2, 1)]


def _probs_and_target(shape_2d=(2, 2)):
    probs = torch.tensor([v[:3] for v in VOXELS], dtype=torch.float64).T.reshape(1, 3, *shape_2d)
    target = torch.tensor([v[3] for v in VOXELS], dtype=torch.float32).reshape(1, 1, *shape_2d)
    return probs, target


# By hand: class 0: Σpt = 0.7+0.6 = 1.3, Σp² = .49+.36+.01+.04 = 0.90, Σt = 2 → ℓ0 = 1 − 2.6/2.9 = 0.3/2.9
#          class 1: Σpt = 0.8+0.6 = 1.4, Σp² = .04+.01+.64+.36 = 1.05, Σt = 2 → ℓ1 = 1 − 2.8/3.05 = 0.25/3.05
#          class 2 (absent): Σp²/N = (.01+.09+.01+.04)/4 = 0.15/4
EXPECTED = (0.3 / 2.9 + 0.25 / 3.05 + 0.15 / 4) / 3


def test_value_with_absent_class():
    probs, target = _probs_and_target()
    loss = GADiceLoss(softmax=False)(probs, target)
    assert loss.item() == pytest.approx(EXPECTED, rel=1e-9)


def test_absent_class_gradient_is_p_over_n():
    probs, target = _probs_and_target()
    probs.requires_grad_(True)
    GADiceLoss(softmax=False)(probs, target).backward()
    # absent class: ∂ℓ2/∂p = p/N, and the mean over C=3 classes divides by 3
    expected_grad_class2 = torch.tensor([0.1, 0.3, 0.1, 0.2], dtype=torch.float64) / (4 * 3)
    assert torch.allclose(probs.grad[0, 2].reshape(-1), expected_grad_class2, rtol=1e-9, atol=0)
    # present class 0, voxel 0 (t=1, p=0.7): ∂ℓ0/∂p = −(2t·S − (2Σpt)·2p)/S², S = Σp² + Σt = 2.9
    expected_grad_00 = -(2 * 2.9 - 2.6 * 2 * 0.7) / 2.9 ** 2 / 3
    assert probs.grad[0, 0, 0, 0].item() == pytest.approx(expected_grad_00, rel=1e-9)


def test_softmax_input_matches_probability_input():
    probs, target = _probs_and_target()
    logits = probs.log()  # softmax(log p) = p because each voxel's p sums to 1
    loss = GADiceLoss(softmax=True)(logits.float(), target)
    assert loss.item() == pytest.approx(EXPECTED, rel=1e-5)


def test_presence_is_decided_over_the_batch_3d():
    # B=2, C=2, 3d spatial [1,1,2]. Class 1 appears only in the second image, so it takes the Dice branch.
    p1 = torch.tensor([[0.2, 0.4], [0.9, 0.3]], dtype=torch.float64)
    probs = torch.stack([1 - p1, p1], dim=1).reshape(2, 2, 1, 1, 2)
    target = torch.tensor([[0, 0], [1, 0]]).reshape(2, 1, 1, 2)  # [B, *spatial] layout
    # class 1: Σpt = 0.9, Σp² = .04+.16+.81+.09 = 1.10, Σt = 1 → 1 − 1.8/2.1
    # class 0: p0 = .8,.6,.1,.7; t0 = 1,1,0,1 → Σpt = 2.1, Σp² = .64+.36+.01+.49 = 1.5, Σt = 3 → 1 − 4.2/4.5
    expected = ((1 - 1.8 / 2.1) + (1 - 4.2 / 4.5)) / 2
    assert GADiceLoss(softmax=False)(probs, target).item() == pytest.approx(expected, rel=1e-9)


def test_perfect_prediction_without_absent_class_is_zero():
    target = torch.tensor([[0, 1], [1, 0]]).reshape(1, 1, 2, 2)
    probs = torch.nn.functional.one_hot(target[:, 0], 2).permute(0, 3, 1, 2).double()
    assert GADiceLoss(softmax=False)(probs, target).item() == pytest.approx(0.0, abs=1e-12)


def test_ignored_voxels_enter_no_sum_and_not_n():
    probs, target = _probs_and_target(shape_2d=(1, 4))
    # a fifth voxel with the ignore label 3 (= C, as in nnU-Net) and probabilities that would change every sum
    probs = torch.cat([probs, torch.tensor([0.1, 0.1, 0.8], dtype=torch.float64).reshape(1, 3, 1, 1)], dim=3)
    target = torch.cat([target, torch.full((1, 1, 1, 1), 3.0)], dim=3)
    loss = GADiceLoss(softmax=False, ignore_index=3)(probs, target)
    assert loss.item() == pytest.approx(EXPECTED, rel=1e-9)


@pytest.mark.parametrize("bad_target, message", [
    (torch.full((1, 1, 2, 2), 3.0), "must lie in"),  # class 3 with C=3 and no ignore_index
    (torch.full((1, 1, 2, 2), 0.5), "non-integer"),
    (torch.zeros(1, 3, 2, 2), "class indices, not one-hot"),
    (torch.zeros(1, 1, 2, 3), "does not match"),
])
def test_invalid_targets_raise(bad_target, message):
    probs, _ = _probs_and_target()
    with pytest.raises(ValueError, match=message):
        GADiceLoss(softmax=False)(probs, bad_target)


def test_invalid_prediction_raises():
    with pytest.raises(ValueError, match="floating"):
        GADiceLoss()(torch.zeros(1, 3, 2, 2, dtype=torch.long), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="at least 3 dims"):
        GADiceLoss()(torch.zeros(1, 3), torch.zeros(1))
