"""DistDW / DiffDW (DHC): hand-computed weights, updates and exact checkpoint round-trips."""
import io
import math

import pytest
import torch

from nnunetv2_scdl.losses import DiffDW, DistDW, class_voxel_counts, dist_dw_weights_from_counts, hard_dice_per_class
from nnunetv2_scdl.losses.class_weighting import hard_dice_statistics

EPS = 1e-8


def _dist_dw_by_hand(counts):
    """w_c = C · log P_c / max log P, P_c = (max n + 1e-8)/(n_c + 1e-8), written out with math.log."""
    top = max(counts)
    log_p = [math.log((top + EPS) / (n + EPS)) for n in counts]
    return [len(counts) * lp / max(log_p) for lp in log_p]


def _round_trip(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ---------------------------------------------------------------------------------------------------------- DistDW

def test_dist_dw_weights_background_exactly_zero():
    weights = dist_dw_weights_from_counts(torch.tensor([100.0, 10.0, 1.0]))
    assert weights[0].item() == 0.0  # exactly, not approximately
    # P ≈ (1, 10, 100) → log P ∝ (0, 1, 2) → w ≈ 3·(0, 1/2, 1)
    assert weights[1].item() == pytest.approx(1.5, rel=1e-8)
    assert weights[2].item() == pytest.approx(3.0, rel=1e-12)


def test_dist_dw_init_from_labels_counts_voxels():
    labels = torch.tensor([0] * 100 + [1] * 10 + [2] * 1).reshape(1, 1, 111)  # nnU-Net's [B, 1, ...] seg layout
    assert class_voxel_counts(labels, 3).tolist() == [100.0, 10.0, 1.0]
    dist_dw = DistDW(num_classes=3)
    weights = dist_dw.init_from_labels(labels)
    assert weights[0].item() == 0.0
    assert weights.tolist() == pytest.approx(_dist_dw_by_hand([100, 10, 1]), rel=1e-12)


def test_dist_dw_ema_update():
    dist_dw = DistDW(num_classes=3, momentum=0.99)
    dist_dw.init_from_counts(torch.tensor([100.0, 10.0, 1.0]))
    predicted = torch.tensor([0] * 60 + [1] * 30 + [2] * 10).reshape(2, 50)  # argmax of net B on unlabeled
    weights = dist_dw.update_from_labels(predicted)
    # w_cur ≈ 3·(0, log 2, log 6)/log 6;  w = 0.99·w_init + 0.01·w_cur
    expected = [0.99 * a + 0.01 * b for a, b in zip(_dist_dw_by_hand([100, 10, 1]), _dist_dw_by_hand([60, 30, 10]))]
    assert weights.tolist() == pytest.approx(expected, rel=1e-12)
    assert weights[0].item() == 0.0
    assert _dist_dw_by_hand([60, 30, 10])[1] == pytest.approx(3 * math.log(2) / math.log(6), rel=1e-8)


def test_dist_dw_equal_counts_give_uniform_weights():
    assert dist_dw_weights_from_counts(torch.tensor([5.0, 5.0, 5.0, 5.0])).tolist() == [4.0] * 4


def test_dist_dw_needs_initialisation():
    with pytest.raises(RuntimeError, match="not initialised"):
        DistDW(3).update_from_counts(torch.tensor([3.0, 2.0, 1.0]))


def test_dist_dw_invalid_inputs_raise():
    with pytest.raises(ValueError):
        DistDW(1)
    with pytest.raises(ValueError, match="shape"):
        DistDW(3).init_from_counts(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=">= 0"):
        dist_dw_weights_from_counts(torch.tensor([1.0, -2.0]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        class_voxel_counts(torch.tensor([0, 3]), 3)


def test_dist_dw_state_dict_round_trip_is_exact():
    original = DistDW(num_classes=4, momentum=0.99)
    original.init_from_counts(torch.tensor([1000.0, 37.0, 5.0, 120.0]))
    original.update_from_counts(torch.tensor([900.0, 50.0, 1.0, 100.0]))
    original.update_from_counts(torch.tensor([800.0, 0.0, 20.0, 300.0]))

    restored = DistDW(num_classes=4)
    restored.load_state_dict(_round_trip(original.state_dict()))
    assert torch.equal(restored.weights, original.weights)
    next_counts = torch.tensor([700.0, 80.0, 3.0, 250.0])
    assert torch.equal(restored.update_from_counts(next_counts), original.update_from_counts(next_counts))


def test_dist_dw_state_dict_is_a_snapshot():
    dist_dw = DistDW(3)
    dist_dw.init_from_counts(torch.tensor([10.0, 5.0, 1.0]))
    saved = dist_dw.state_dict()
    before = saved["weights"].clone()
    dist_dw.update_from_counts(torch.tensor([1.0, 5.0, 10.0]))
    assert torch.equal(saved["weights"], before)


def test_dist_dw_load_rejects_other_class_count():
    source = DistDW(3)
    source.init_from_counts(torch.tensor([3.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="3 classes"):
        DistDW(4).load_state_dict(source.state_dict())


# ---------------------------------------------------------------------------------------------------------- DiffDW

def test_hard_dice_per_class_by_hand():
    target = torch.tensor([0, 0, 1, 1, 2, 2]).reshape(1, 1, 2, 3)
    prediction = torch.tensor([0, 0, 1, 2, 2, 2]).reshape(1, 2, 3)
    dice = hard_dice_per_class(prediction, target, num_classes=4)
    # class 0: 2·2/(2+2); class 1: 2·1/(1+2); class 2: 2·2/(3+2); class 3 absent from both → 1
    assert dice.tolist() == pytest.approx([1.0, 2 / 3, 4 / 5, 1.0], rel=1e-8)
    # a missed class gets a tiny positive Dice (ε/|G|), so log(d/d_prev) stays finite
    missed = hard_dice_per_class(torch.zeros(6, dtype=torch.long), target, num_classes=3)
    assert 0 < missed[1].item() < 1e-8


def test_hard_dice_ignores_the_ignore_label():
    target = torch.tensor([0, 1, 5, 5])
    prediction = torch.tensor([0, 1, 1, 0])
    assert hard_dice_per_class(prediction, target, 2, ignore_index=5).tolist() == pytest.approx([1.0, 1.0])


def test_diff_dw_initial_weights():
    assert DiffDW(num_classes=3).weights.tolist() == [3.0, 3.0, 3.0]


def test_diff_dw_two_step_sequence_by_hand():
    """C=3, target [0,0,1,1,2,2]; step 1 predicts [0,0,1,2,2,2], step 2 predicts [0,1,1,1,2,0].

    Hard Dice as DHC computes it (ε=1e-8 in the numerator, 2ε in the denominator):
        step 1: d¹ = ((4+ε)/(4+2ε), (2+ε)/(3+2ε), (4+ε)/(5+2ε)) ≈ (1, 2/3, 4/5)
        step 2: d² = ((2+ε)/(4+2ε), (4+ε)/(5+2ε), (2+ε)/(3+2ε)) ≈ (1/2, 4/5, 2/3)
    Step 1 (d_prev = 1e-8): every Δ > 0, so learn¹ = 0.02·Δ·ln(d¹/1e-8), unlearn¹ = 0, dw¹ = 0.98 + 0.02·(1−d¹).
    Step 2: Δ = d² − d¹ ≈ (−1/2, +2/15, −2/15): classes 0 and 2 unlearn, class 1 learns.
    """
    m = 0.98
    d1 = [(4 + EPS) / (4 + 2 * EPS), (2 + EPS) / (3 + 2 * EPS), (4 + EPS) / (5 + 2 * EPS)]
    d2 = [(2 + EPS) / (4 + 2 * EPS), (4 + EPS) / (5 + 2 * EPS), (2 + EPS) / (3 + 2 * EPS)]

    learn1 = [(1 - m) * (d - EPS) * math.log(d / EPS) for d in d1]
    unlearn1 = [0.0, 0.0, 0.0]
    dw1 = [m * 1.0 + (1 - m) * (1 - d) for d in d1]
    raw1 = [((u + EPS) / (l + EPS)) ** 0.2 * w for u, l, w in zip(unlearn1, learn1, dw1)]
    expected_w1 = [3 * r / max(raw1) for r in raw1]

    delta = [b - a for a, b in zip(d1, d2)]
    learn2 = [m * learn1[0] + 0.0,
              m * learn1[1] + (1 - m) * delta[1] * math.log(d2[1] / d1[1]),
              m * learn1[2] + 0.0]
    unlearn2 = [(1 - m) * delta[0] * math.log(d2[0] / d1[0]),
                0.0,
                (1 - m) * delta[2] * math.log(d2[2] / d1[2])]
    dw2 = [m * w + (1 - m) * (1 - d) for w, d in zip(dw1, d2)]
    raw2 = [((u + EPS) / (l + EPS)) ** 0.2 * w for u, l, w in zip(unlearn2, learn2, dw2)]
    expected_w2 = [3 * r / max(raw2) for r in raw2]

    target = torch.tensor([0, 0, 1, 1, 2, 2]).reshape(1, 1, 6)
    diff_dw = DiffDW(num_classes=3)
    w1 = diff_dw.update_from_labels(torch.tensor([0, 0, 1, 2, 2, 2]).reshape(1, 6), target)
    assert w1.tolist() == pytest.approx(expected_w1, rel=1e-10)
    w2 = diff_dw.update_from_labels(torch.tensor([0, 1, 1, 1, 2, 0]).reshape(1, 6), target)
    assert w2.tolist() == pytest.approx(expected_w2, rel=1e-10)
    # sanity of the hand numbers: class 0 dropped from Dice 1 to 1/2, so it is now the hardest class (weight C)
    assert expected_w2[0] == pytest.approx(3.0) and expected_w2[1] < expected_w2[2] < expected_w2[0]


@pytest.mark.parametrize("normalise_by_max", [True, False], ids=["DHC", "GenericSSL"])
def test_diff_dw_gives_a_class_absent_from_prediction_and_target_dice_one_half(normalise_by_max):
    """DHC's soft Dice (smooth 1e-8, plus 1e-8 in the denominator) gives 1e-8/2e-8 = 0.5 to a class that neither the
    prediction nor the GT contains, not 1: its dw = EMA(1 − d) then stays at 0.5 instead of decaying to 0."""
    target = torch.tensor([0, 0, 1, 1, 1, 0])  # class 2 absent from target and prediction
    prediction = torch.tensor([0, 1, 1, 1, 0, 0])
    assert hard_dice_per_class(prediction, target, 3, denominator_epsilon=2 * EPS)[2].item() == pytest.approx(0.5)
    diff_dw = DiffDW(3, normalise_by_max=normalise_by_max)
    for _ in range(3):
        diff_dw.update_from_labels(prediction, target)
    state = diff_dw.state_dict()
    assert state["previous_dice"][2].item() == pytest.approx(0.5)
    assert state["dice_weight"][2].item() == pytest.approx(0.98 ** 3 + (1 - 0.98 ** 3) * 0.5)


def test_settings_are_not_restored_from_a_state_dict():
    """Momentum, exponent and epsilon come from the constructor (the trainer's hyperparameters), not the checkpoint."""
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    saved = DiffDW(3, momentum=0.98)
    saved.update_from_labels(torch.tensor([0, 1, 1, 1, 2, 0]), target)
    resumed = DiffDW(3, momentum=0.5, exponent=0.25)
    resumed.load_state_dict(saved.state_dict())
    assert (resumed.momentum, resumed.exponent) == (0.5, 0.25)
    assert torch.equal(resumed.weights, saved.weights)
    dist = DistDW(3, momentum=0.99)
    dist.init_from_counts(torch.tensor([10.0, 2.0, 1.0]))
    resumed_dist = DistDW(3, momentum=0.9)
    resumed_dist.load_state_dict(dist.state_dict())
    assert resumed_dist.momentum == 0.9 and torch.equal(resumed_dist.weights, dist.weights)


def test_diff_dw_without_max_normalisation_is_generic_ssl_difficulty():
    # GenericSSL's "Difficulty" weights: w = C·diff⊙dw
    weights = DiffDW(3, momentum=0.5, normalise_by_max=False)
    assert torch.equal(weights.weights, torch.full((3,), 3.0, dtype=torch.float64))
    weights.update_from_dice(torch.tensor([0.9, 0.5, 0.2]))
    w = weights.update_from_dice(torch.tensor([0.8, 0.6, 0.2]))
    state = weights.state_dict()
    difficulty = ((state["unlearn"] + 1e-8) / (state["learn"] + 1e-8)) ** 0.2
    assert torch.allclose(w, 3 * difficulty * state["dice_weight"])
    assert w.max() != pytest.approx(3.0)  # the default would scale the largest weight to C
    normalised = DiffDW(3, momentum=0.5)
    normalised.load_state_dict(state)  # the setting is not state: same statistics, DHC's normalisation on update
    assert torch.allclose(normalised.update_from_dice(torch.tensor([0.8, 0.6, 0.2])).max(),
                          torch.tensor(3.0, dtype=torch.float64))


def test_diff_dw_rejects_non_positive_dice():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        DiffDW(2).update_from_dice(torch.tensor([0.0, 0.5]))


def test_diff_dw_state_dict_round_trip_is_exact():
    target = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    predictions = [torch.tensor([0, 0, 1, 2, 2, 2, 3, 0]), torch.tensor([0, 1, 1, 1, 2, 0, 3, 3]),
                   torch.tensor([0, 0, 0, 1, 2, 2, 3, 3])]
    original = DiffDW(num_classes=4)
    for prediction in predictions[:2]:
        original.update_from_labels(prediction, target)

    restored = DiffDW(num_classes=4)
    restored.load_state_dict(_round_trip(original.state_dict()))
    assert torch.equal(restored.weights, original.weights)
    # the hidden state (d_prev, learn/unlearn, dw) must be restored too, not just w
    assert torch.equal(restored.update_from_labels(predictions[2], target),
                       original.update_from_labels(predictions[2], target))


def test_diff_dw_load_rejects_bad_state():
    state = DiffDW(3).state_dict()
    with pytest.raises(ValueError, match="missing"):
        DiffDW(3).load_state_dict({k: v for k, v in state.items() if k != "learn"})
    with pytest.raises(ValueError, match="3 classes"):
        DiffDW(4).load_state_dict(state)


def test_reduced_counts_give_the_update_of_the_joined_batch():
    """Multi-GPU training sums the per-rank counts (``reduce_counts``): the update must then equal the update from
    the two ranks' batches joined, for DistDW's class counts and DiffDW's hard-Dice counts."""
    generator = torch.Generator().manual_seed(3)
    labels = [torch.randint(0, 4, (1, 6, 6, 6), generator=generator) for _ in range(4)]
    prediction_a, prediction_b, target_a, target_b = labels

    def plus_other_rank(other):
        return lambda counts: counts + other

    joined, reduced = DistDW(4), DistDW(4)
    for weights in (joined, reduced):
        weights.init_from_counts(torch.tensor([100.0, 10.0, 5.0, 1.0]))
    joined.update_from_labels(torch.cat((prediction_a, prediction_b)))
    reduced.update_from_labels(prediction_a, reduce_counts=plus_other_rank(class_voxel_counts(prediction_b, 4)))
    assert torch.equal(joined.weights, reduced.weights)

    joined, reduced, local = DiffDW(4), DiffDW(4), DiffDW(4)
    joined.update_from_labels(torch.cat((prediction_a, prediction_b)), torch.cat((target_a, target_b)))
    reduced.update_from_labels(prediction_a, target_a,
                               reduce_counts=plus_other_rank(hard_dice_statistics(prediction_b, target_b, 4)))
    local.update_from_labels(prediction_a, target_a)
    assert torch.equal(joined.state_dict()["previous_dice"], reduced.state_dict()["previous_dice"])
    assert torch.equal(joined.weights, reduced.weights)
    assert not torch.equal(local.weights, reduced.weights)
