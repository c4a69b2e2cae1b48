"""The GA/SCDL papers' evaluation protocol (see docs/benchmark.md), reproduced with its edge cases made explicit.

Per case:
1. Prediction and reference label maps are both resized with nearest-neighbour interpolation to a fixed grid, exactly
   as the papers do it (``torch.nn.functional.interpolate(mode='nearest')``: output index i reads input index
   floor(i * n_in / n_out)). The papers' grid is (160, 160, 80) on arrays in nibabel (x, y, z) order, i.e.
   ``PAPER_GRID_ZYX = (80, 160, 160)`` on the (z, y, x) arrays SimpleITK/nnU-Net use. For AMOS the papers applied
   (160, 160, 80) to (z, y, x) arrays (a 2x stretch of z and a squeeze of x, which distorts ASD); use
   ``PAPER_GRID_ZYX_AMOS_AS_PUBLISHED`` to reproduce those numbers.
2. If the resized prediction has no foreground voxel at all, every metric of every class is 0 (Dice 0 and ASD 0;
   ASD 0 reads as "perfect": a bug in the papers' code, kept by default and flagged per case;
   ``fix_empty_volume_bug=True`` treats such a case like any other).
3. Otherwise, per foreground class on the resized grid:
   - present in both: Dice, and ASD = one-directional mean distance from prediction surface voxels to the nearest
     reference surface voxel, in voxels of the resized grid (medpy ``asd(pred, ref)`` without spacing);
   - present in exactly one: Dice 0, ASD 128 (``PAPER_MISSING_ASD_VOXELS``);
   - absent from both: Dice 1, ASD 0.
Case scores are then averaged over classes and cases (see ``aggregate``).
"""
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np

from nnunetv2_scdl.evaluation.overlap import dice_coefficient
from nnunetv2_scdl.evaluation.surface_distance import surface_distances

PAPER_GRID_ZYX: Tuple[int, int, int] = (80, 160, 160)
PAPER_GRID_ZYX_AMOS_AS_PUBLISHED: Tuple[int, int, int] = (160, 160, 80)
PAPER_MISSING_ASD_VOXELS = 128.0
PAPER_METRICS = ("dice", "asd_voxels")


def nearest_resize(labels: np.ndarray, grid_shape: Sequence[int]) -> np.ndarray:
    """Resize an integer label map to ``grid_shape`` (same axis order) the way the papers did, returning int32."""
    import torch  # lazy: only this protocol needs it

    labels = np.asarray(labels)
    if labels.ndim != len(grid_shape):
        raise ValueError(f"Cannot resize a {labels.ndim}D label map to the {len(grid_shape)}D grid "
                         f"{tuple(grid_shape)}.")
    if labels.size and (labels.min() < 0 or labels.max() > 2 ** 24):
        raise ValueError("Label values must lie in [0, 2**24] to survive the float32 round trip of the resize.")
    as_float = torch.from_numpy(labels.astype(np.float32))[None, None]
    resized = torch.nn.functional.interpolate(as_float, size=tuple(int(n) for n in grid_shape), mode="nearest")
    return resized[0, 0].numpy().astype(np.int32)


def class_metrics_paper(pred_mask: np.ndarray, ref_mask: np.ndarray) -> Dict[str, float]:
    """{'dice', 'asd_voxels'} for one class on the protocol grid, with the papers' per-class edge cases."""
    pred_present, ref_present = bool(np.any(pred_mask)), bool(np.any(ref_mask))
    if not pred_present and not ref_present:
        return {"dice": 1.0, "asd_voxels": 0.0}
    if pred_present != ref_present:
        return {"dice": 0.0, "asd_voxels": PAPER_MISSING_ASD_VOXELS}
    return {"dice": dice_coefficient(pred_mask, ref_mask),
            "asd_voxels": surface_distances(pred_mask, ref_mask, spacing=None).one_directional_mean()}


def case_metrics_paper(pred_labels: np.ndarray, ref_labels: np.ndarray, class_labels: Iterable[int],
                       grid_shape: Sequence[int] = PAPER_GRID_ZYX,
                       fix_empty_volume_bug: bool = False) -> Tuple[Dict[int, Dict[str, float]], bool]:
    """Per-class paper metrics of one case and whether the resized prediction was entirely empty.

    pred_labels/ref_labels: integer label maps of equal shape on the original grid (axis order as ``grid_shape``).
    Returns ({label: {'dice', 'asd_voxels'}}, empty_prediction_volume).
    """
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"Prediction and reference differ in shape: {pred_labels.shape} vs {ref_labels.shape}.")
    class_labels = list(class_labels)
    pred_resized = nearest_resize(pred_labels, grid_shape)
    ref_resized = nearest_resize(ref_labels, grid_shape)
    empty_prediction_volume = not bool(np.any(pred_resized))
    if empty_prediction_volume and not fix_empty_volume_bug:
        return {label: {"dice": 0.0, "asd_voxels": 0.0} for label in class_labels}, True
    return ({label: class_metrics_paper(pred_resized == label, ref_resized == label) for label in class_labels},
            empty_prediction_volume)
