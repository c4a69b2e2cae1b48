"""The papers' protocol (resize, edge cases, voxel ASD), head/tail grouping and aggregation."""
import math

import numpy as np
import pytest

from nnunetv2_scdl.evaluation.aggregate import mean_ignoring_nan, summarize
from nnunetv2_scdl.evaluation.class_groups import (ClassGroups, groups_from_tail_override, split_head_tail)
from nnunetv2_scdl.evaluation.paper_protocol import (PAPER_MISSING_ASD_VOXELS, case_metrics_paper, class_metrics_paper,
                                                     nearest_resize)


def test_nearest_resize_reads_floor_of_scaled_index():
    # output index i reads input index floor(i * n_in / n_out)
    row = np.arange(4).reshape(1, 1, 4)
    np.testing.assert_array_equal(nearest_resize(row, (1, 1, 8))[0, 0], [0, 0, 1, 1, 2, 2, 3, 3])
    row = np.arange(8).reshape(1, 1, 8)
    np.testing.assert_array_equal(nearest_resize(row, (1, 1, 3))[0, 0], [0, 2, 5])
    volume = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    resized = nearest_resize(volume, (4, 3, 5))
    np.testing.assert_array_equal(resized[0], volume[0])
    np.testing.assert_array_equal(resized[3], volume[1])


def test_paper_class_edge_cases():
    empty, some = np.zeros((6, 6, 6), bool), np.zeros((6, 6, 6), bool)
    some[2:4, 2:4, 2:4] = True
    assert class_metrics_paper(empty, empty) == {"dice": 1.0, "asd_voxels": 0.0}
    assert class_metrics_paper(empty, some) == {"dice": 0.0, "asd_voxels": PAPER_MISSING_ASD_VOXELS}
    assert class_metrics_paper(some, empty) == {"dice": 0.0, "asd_voxels": 128.0}
    assert class_metrics_paper(some, some) == {"dice": 1.0, "asd_voxels": 0.0}


def test_paper_asd_is_one_directional_in_voxels_of_the_grid():
    # reference: 9^3 cube; prediction: 3^3 cube at its centre (half-widths 4 and 1). Every inner surface voxel is
    # 4 - 1 = 3 voxels from the outer surface, so asd(pred, ref) = 3 exactly; the reverse direction would be larger.
    ref = np.zeros((11, 11, 11), np.int32)
    ref[1:10, 1:10, 1:10] = 1
    pred = np.zeros_like(ref)
    pred[4:7, 4:7, 4:7] = 1
    metrics, empty_volume = case_metrics_paper(pred, ref, [1], grid_shape=(11, 11, 11))
    assert not empty_volume
    assert metrics[1]["asd_voxels"] == pytest.approx(3.0)
    assert metrics[1]["dice"] == pytest.approx(2 * 27 / (27 + 729))
    # Resized to 22^3, output index i reads input floor(i / 2): the reference spans 2..19 and the prediction 8..13 on
    # every axis, so each prediction surface voxel is 8 - 2 = 19 - 13 = 6 voxels from the nearest reference face.
    metrics_up, _ = case_metrics_paper(pred, ref, [1], grid_shape=(22, 22, 22))
    assert metrics_up[1]["asd_voxels"] == pytest.approx(6.0)


def test_entirely_empty_prediction_gives_zeros_unless_fixed():
    ref = np.zeros((8, 8, 8), np.int32)
    ref[2:5, 2:5, 2:5] = 1
    pred = np.zeros_like(ref)
    metrics, empty_volume = case_metrics_paper(pred, ref, [1, 2], grid_shape=(8, 8, 8))
    assert empty_volume
    assert metrics == {1: {"dice": 0.0, "asd_voxels": 0.0}, 2: {"dice": 0.0, "asd_voxels": 0.0}}
    fixed, empty_volume = case_metrics_paper(pred, ref, [1, 2], grid_shape=(8, 8, 8), fix_empty_volume_bug=True)
    assert empty_volume
    assert fixed == {1: {"dice": 0.0, "asd_voxels": 128.0}, 2: {"dice": 1.0, "asd_voxels": 0.0}}


def test_prediction_that_vanishes_in_the_resize_counts_as_empty_volume():
    # a single foreground slice at an odd index disappears when 8 slices become 4 (indices 0, 2, 4, 6 are kept)
    ref = np.zeros((8, 4, 4), np.int32)
    ref[3] = 1
    metrics, empty_volume = case_metrics_paper(ref.copy(), ref, [1], grid_shape=(4, 4, 4))
    assert empty_volume and metrics[1] == {"dice": 0.0, "asd_voxels": 0.0}


def test_median_rule_for_head_and_tail():
    # frequencies 0.4, 0.3, 0.2, 0.01, 0.001: median 0.2, strictly below -> tail = {4, 5}
    head, tail = split_head_tail({1: 0.4, 2: 0.3, 3: 0.2, 4: 0.01, 5: 0.001})
    assert head == (1, 2, 3) and tail == (4, 5)
    # even count: median is the mean of the middle two (0.25), so 3 and 4 are tail
    head, tail = split_head_tail({1: 0.4, 2: 0.3, 3: 0.2, 4: 0.0})
    assert head == (1, 2) and tail == (3, 4)


def test_tail_override():
    groups = groups_from_tail_override([1, 2, 3, 4], [4, 2])
    assert groups.head == (1, 3) and groups.tail == (2, 4) and groups.voxel_counts is None
    with pytest.raises(ValueError, match=r"\[7\]"):
        groups_from_tail_override([1, 2, 3], [7])


def test_summary_skips_nan_and_groups_classes():
    nan = float("nan")
    per_case = [{1: {"m": 1.0}, 2: {"m": 0.0}, 3: {"m": nan}},
                {1: {"m": 0.5}, 2: {"m": 1.0}, 3: {"m": 0.2}}]
    groups = ClassGroups(head=(1,), tail=(2, 3), rule="test")
    summary = summarize(per_case, [1, 2, 3], groups, ["m"])
    assert summary["per_class"][1]["m"] == pytest.approx(0.75)
    assert summary["per_class"][2]["m"] == pytest.approx(0.5)
    assert summary["per_class"][3]["m"] == pytest.approx(0.2)
    assert summary["mean"]["m"] == pytest.approx((0.75 + 0.5 + 0.2) / 3)
    assert summary["head"]["m"] == pytest.approx(0.75)
    assert summary["tail"]["m"] == pytest.approx(0.35)
    # case means: 0.5 (class 3 skipped) and 1.7/3; population std of two values = half their difference
    assert summary["case_mean_std"]["m"] == pytest.approx(abs(0.5 - 1.7 / 3) / 2)
    assert math.isnan(mean_ignoring_nan([nan, nan]))
