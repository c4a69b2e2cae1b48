"""Surface distances, Dice and the original-spacing metrics on shapes whose distances are known analytically."""
import itertools
import math

import numpy as np
import pytest

from nnunetv2_scdl.evaluation.original_spacing import class_metrics_original_spacing, worst_case_distance_mm
from nnunetv2_scdl.evaluation.overlap import dice_coefficient
from nnunetv2_scdl.evaluation.surface_distance import surface_distances


def centred_cube(size: int, half_width: int) -> np.ndarray:
    """Boolean cube of side 2*half_width+1 voxels centred in a size**3 array (size odd)."""
    mask = np.zeros((size,) * 3, bool)
    c = size // 2
    mask[c - half_width:c + half_width + 1, c - half_width:c + half_width + 1, c - half_width:c + half_width + 1] = True
    return mask


def cube_surface_offsets(half_width: int):
    """Integer offsets from the centre of the surface voxels of a centred cube: max-norm equal to half_width."""
    r = range(-half_width, half_width + 1)
    return [p for p in itertools.product(r, r, r) if max(abs(v) for v in p) == half_width]


# Concentric cubes, outer half-width a, inner half-width b. Analytic nearest surface points:
# - an outer-surface voxel p is outside the inner cube, so its nearest inner-surface voxel is its projection onto the
#   inner cube (clamp each coordinate to [-b, b]); distance sqrt(sum_i (max(|p_i| - b, 0) * s_i)^2);
# - an inner-surface voxel q is inside the outer cube; its nearest outer-surface voxel is the foot on the closest face:
#   distance min_i (a - |q_i|) * s_i.
def outer_to_inner(a, b, spacing):
    return [math.sqrt(sum((max(abs(v) - b, 0) * s) ** 2 for v, s in zip(p, spacing))) for p in cube_surface_offsets(a)]


def inner_to_outer(a, b, spacing):
    return [min((a - abs(v)) * s for v, s in zip(q, spacing)) for q in cube_surface_offsets(b)]


A, B, SIZE = 6, 3, 17


def test_surface_voxel_count_matches_cube_surface():
    # (2a+1)^3 - (2a-1)^3 surface voxels: the one-directional distance array has one entry per surface voxel
    d = surface_distances(centred_cube(SIZE, A), centred_cube(SIZE, B))
    assert len(d.pred_to_ref) == (2 * A + 1) ** 3 - (2 * A - 1) ** 3
    assert len(d.ref_to_pred) == (2 * B + 1) ** 3 - (2 * B - 1) ** 3


def test_concentric_cubes_in_voxels():
    d = surface_distances(centred_cube(SIZE, B), centred_cube(SIZE, A))  # prediction = inner, reference = outer
    np.testing.assert_allclose(d.pred_to_ref, A - B)  # every inner surface voxel is exactly a - b from a face
    assert d.one_directional_mean() == pytest.approx(A - B)
    expected_outer = outer_to_inner(A, B, (1, 1, 1))
    assert np.mean(d.ref_to_pred) == pytest.approx(np.mean(expected_outer), rel=1e-6)
    assert d.percentile_95() == pytest.approx(np.percentile(expected_outer + [A - B] * len(d.pred_to_ref), 95),
                                              rel=1e-6)


@pytest.mark.parametrize("spacing", [(2.0, 1.0, 0.5), (0.7, 3.0, 1.3)])
def test_concentric_cubes_anisotropic_mm(spacing):
    d = surface_distances(centred_cube(SIZE, A), centred_cube(SIZE, B), spacing)  # prediction = outer
    expected_p2r = outer_to_inner(A, B, spacing)
    expected_r2p = inner_to_outer(A, B, spacing)
    assert d.one_directional_mean() == pytest.approx(np.mean(expected_p2r), rel=1e-6)
    assert np.mean(d.ref_to_pred) == pytest.approx(np.mean(expected_r2p), rel=1e-6)
    pooled = expected_p2r + expected_r2p
    assert d.symmetric_mean() == pytest.approx(np.mean(pooled), rel=1e-6)
    assert d.percentile_95() == pytest.approx(np.percentile(pooled, 95), rel=1e-6)


@pytest.mark.parametrize("offset,spacing", [((0, 0, 3), (1.0, 1.0, 1.0)), ((2, 1, -4), (3.0, 0.8, 1.5))])
def test_single_voxels_distance_is_their_offset_in_mm(offset, spacing):
    pred, ref = np.zeros((9, 9, 9), bool), np.zeros((9, 9, 9), bool)
    pred[4, 4, 4] = True
    ref[4 + offset[0], 4 + offset[1], 4 + offset[2]] = True
    expected = math.sqrt(sum((o * s) ** 2 for o, s in zip(offset, spacing)))
    d = surface_distances(pred, ref, spacing)
    assert d.one_directional_mean() == pytest.approx(expected, rel=1e-6)
    assert d.symmetric_mean() == pytest.approx(expected, rel=1e-6)
    assert d.percentile_95() == pytest.approx(expected, rel=1e-6)


def test_single_pixels_2d():
    pred, ref = np.zeros((6, 6), bool), np.zeros((6, 6), bool)
    pred[1, 1], ref[4, 5] = True, True
    assert surface_distances(pred, ref, (2.0, 1.0)).one_directional_mean() == pytest.approx(math.hypot(6, 4))


def test_concentric_spheres_mm():
    # Spheres of physical radius 12 mm and 8 mm on an anisotropic grid: the surfaces are 4 mm apart everywhere, up to
    # the discretisation (surface voxels lie within one voxel inside the continuous sphere).
    spacing = (2.0, 1.0, 0.8)
    shape = (17, 33, 41)
    z, y, x = np.meshgrid(*[(np.arange(n) - n // 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    radius = np.sqrt(z ** 2 + y ** 2 + x ** 2)
    d = surface_distances(radius <= 12.0, radius <= 8.0, spacing)
    assert d.symmetric_mean() == pytest.approx(4.0, abs=0.5)
    assert 3.5 <= d.percentile_95() <= 5.0
    # the same masks with the spacing given in the wrong axis order are no longer concentric spheres in mm: the
    # largest gap grows beyond the 4 mm (+ one voxel) of the correct geometry
    wrong = surface_distances(radius <= 12.0, radius <= 8.0, tuple(reversed(spacing)))
    assert wrong.percentile_95() > 6.0


def test_dice_of_shifted_boxes():
    # box of side L shifted by s along one axis: overlap L*L*(L-s), so Dice = (L - s) / L
    length, shift = 8, 3
    pred, ref = np.zeros((16, 12, 12), bool), np.zeros((16, 12, 12), bool)
    pred[2:2 + length, 2:2 + length, 2:2 + length] = True
    ref[2 + shift:2 + shift + length, 2:2 + length, 2:2 + length] = True
    assert dice_coefficient(pred, ref) == pytest.approx((length - shift) / length)
    assert dice_coefficient(pred, pred) == 1.0


def test_empty_masks_are_rejected_by_the_primitives():
    empty, full = np.zeros((4, 4, 4), bool), np.ones((4, 4, 4), bool)
    with pytest.raises(ValueError, match="empty"):
        surface_distances(empty, full)
    with pytest.raises(ValueError, match="both masks are empty"):
        dice_coefficient(empty, empty)
    with pytest.raises(ValueError, match="shape"):
        surface_distances(full, np.ones((4, 4, 5), bool))


def test_original_spacing_edge_cases():
    spacing = (3.0, 1.0, 2.0)
    shape = (5, 6, 7)
    empty, some = np.zeros(shape, bool), np.zeros(shape, bool)
    some[2, 3, 3] = True
    absent = class_metrics_original_spacing(empty, empty, spacing)
    assert all(math.isnan(v) for v in absent.values())
    worst = math.sqrt((4 * 3.0) ** 2 + (5 * 1.0) ** 2 + (6 * 2.0) ** 2)
    assert worst_case_distance_mm(shape, spacing) == pytest.approx(worst)
    for pred, ref in ((empty, some), (some, empty)):
        metrics = class_metrics_original_spacing(pred, ref, spacing)
        assert metrics == {"dice": 0.0, "assd_mm": pytest.approx(worst), "hd95_mm": pytest.approx(worst)}
    assert class_metrics_original_spacing(some, some, spacing) == {"dice": 1.0, "assd_mm": 0.0, "hd95_mm": 0.0}
