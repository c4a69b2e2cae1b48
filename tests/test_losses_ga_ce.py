"""GACELoss: top-k selection and γ normalisation against hand computations."""
import math

import pytest
import torch

from nnunetv2_scdl.losses import GACELoss

# Ten voxels, C=2, listed in a scrambled order so that "top-k" is not "first k".
# Each voxel's softmax probability of its target class p_y is chosen, so its CE is v = −ln p_y.
#                 p_y    y
VOXELS = [(0.60, 1), (0.10, 0), (0.95, 0), (0.50, 0), (0.05, 1),
          (0.80, 0), (0.30, 0), (0.90, 1), (0.20, 1), (0.70, 0)]


def _ce(p):
    return -math.log(p)


def _logits_and_target(spatial=(2, 5)):
    p_target = torch.tensor([p for p, _ in VOXELS], dtype=torch.float64)
    target = torch.tensor([y for _, y in VOXELS])
    p_class1 = torch.where(target == 1, p_target, 1 - p_target)
    logits = torch.stack([(1 - p_class1).log(), p_class1.log()])  # softmax(log p) = p
    return logits.reshape(1, 2, *spatial), target.reshape(1, 1, *spatial).float()


# k=50 → K = ⌊10·50/100⌋ = 5 kept voxels, the five largest CE = the five smallest p_y:
#   0.05 (y=1), 0.10 (y=0), 0.20 (y=1), 0.30 (y=0), 0.50 (y=0)  →  n_0 = 3, n_1 = 2
KEPT_CLASS0 = _ce(0.10) + _ce(0.30) + _ce(0.50)
KEPT_CLASS1 = _ce(0.05) + _ce(0.20)


@pytest.mark.parametrize("gamma, expected", [
    (0.0, KEPT_CLASS0 / 3 + KEPT_CLASS1 / 2),  # Σ_i of per-class means
    (0.5, KEPT_CLASS0 / math.sqrt(3 * 5) + KEPT_CLASS1 / math.sqrt(2 * 5)),  # Σ_i Σv / √(n_i·K)
    (1.0, (KEPT_CLASS0 + KEPT_CLASS1) / 5),  # mean over the K kept voxels
])
def test_top_k_and_gamma_normalisation(gamma, expected):
    logits, target = _logits_and_target()
    loss = GACELoss(k=50, gamma=gamma)(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_only_kept_voxels_get_gradient():
    logits, target = _logits_and_target()
    logits.requires_grad_(True)
    GACELoss(k=50, gamma=0.5)(logits, target).backward()
    has_grad = logits.grad.abs().sum(dim=1).reshape(-1) > 0
    kept = torch.tensor([p in (0.05, 0.10, 0.20, 0.30, 0.50) for p, _ in VOXELS])
    assert torch.equal(has_grad, kept)


def test_k100_gamma1_is_the_plain_mean_ce():
    logits, target = _logits_and_target()
    expected = sum(_ce(p) for p, _ in VOXELS) / len(VOXELS)
    assert GACELoss(k=100, gamma=1.0)(logits, target).item() == pytest.approx(expected, rel=1e-9)


def test_k100_gamma0_sums_the_per_class_means():
    logits, target = _logits_and_target()
    class0 = [_ce(p) for p, y in VOXELS if y == 0]
    class1 = [_ce(p) for p, y in VOXELS if y == 1]
    expected = sum(class0) / len(class0) + sum(class1) / len(class1)
    assert GACELoss(k=100, gamma=0.0)(logits, target).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("k", [10, 5])
def test_k_is_floored_and_at_least_one(k):
    # k=10: K = ⌊1.0⌋ = 1; k=5: K = ⌊0.5⌋ = 0 → 1. Either way only the hardest voxel (p_y=0.05, y=1) is kept.
    logits, target = _logits_and_target()
    assert GACELoss(k=k, gamma=0.5)(logits, target).item() == pytest.approx(_ce(0.05), rel=1e-9)


def test_3d_and_squeezed_target_give_the_same_value():
    logits, target = _logits_and_target(spatial=(1, 2, 5))
    expected = KEPT_CLASS0 / math.sqrt(3 * 5) + KEPT_CLASS1 / math.sqrt(2 * 5)
    assert GACELoss(k=50)(logits, target).item() == pytest.approx(expected, rel=1e-9)
    assert GACELoss(k=50)(logits, target[:, 0].long()).item() == pytest.approx(expected, rel=1e-9)


def test_ignored_voxels_are_excluded_before_top_k():
    logits, target = _logits_and_target(spatial=(1, 10))
    # two extra voxels with huge CE (p_y = 1e-6), labelled with the ignore label 2 (= C): they must not be kept,
    # and N stays 10, so K stays 5
    extra_logits = torch.tensor([[0.0, 0.0], [math.log(1e-6), 0.0]], dtype=torch.float64).T.reshape(1, 2, 1, 2)
    logits = torch.cat([logits, extra_logits], dim=3)
    target = torch.cat([target, torch.full((1, 1, 1, 2), 2.0)], dim=3)
    expected = KEPT_CLASS0 / math.sqrt(3 * 5) + KEPT_CLASS1 / math.sqrt(2 * 5)
    assert GACELoss(k=50, ignore_index=2)(logits, target).item() == pytest.approx(expected, rel=1e-9)


def test_all_ignored_gives_zero_with_a_graph():
    logits, _ = _logits_and_target()
    logits.requires_grad_(True)
    loss = GACELoss(k=10, ignore_index=7)(logits, torch.full((1, 1, 2, 5), 7.0))
    loss.backward()
    assert loss.item() == 0.0


@pytest.mark.parametrize("kwargs", [dict(k=0), dict(k=101), dict(gamma=-0.1), dict(gamma=1.5), dict(ignore_index=1.5)])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        GACELoss(**kwargs)


def test_out_of_range_target_raises():
    logits, target = _logits_and_target()
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        GACELoss()(logits, target + 1)
