"""Metrics on the original voxel grid: Dice, symmetric ASD (mm) and HD95 (mm), per foreground class.

Edge-case policy (ours, not the papers'; the papers' protocol lives in ``paper_protocol``):
- class absent from both prediction and reference: every metric is NaN ("absent"); class means skip NaNs, so a
  correctly empty prediction is neither rewarded nor punished.
- class present in exactly one of them: Dice 0, and ASSD = HD95 = the worst possible distance in the image, the
  distance between opposite corner voxel centres, sqrt(sum(((n_i - 1) * spacing_i) ** 2)) in mm.
- otherwise: Dice; ASSD = mean, over the surface voxels of both masks, of the distance to the other mask's surface
  (both directions pooled); HD95 = 95th percentile of those pooled distances (see ``surface_distance``).
"""
import math
from typing import Dict, Iterable, Sequence

import numpy as np

from nnunetv2_scdl.evaluation.overlap import dice_coefficient
from nnunetv2_scdl.evaluation.surface_distance import surface_distances

ORIGINAL_METRICS = ("dice", "assd_mm", "hd95_mm")


def worst_case_distance_mm(shape: Sequence[int], spacing_mm: Sequence[float]) -> float:
    """Distance (mm) between the centres of two opposite corner voxels of an image of ``shape`` and ``spacing_mm``."""
    if len(shape) != len(spacing_mm):
        raise ValueError(f"shape {tuple(shape)} and spacing {tuple(spacing_mm)} have different lengths.")
    return math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, spacing_mm)))


def class_metrics_original_spacing(pred_mask: np.ndarray, ref_mask: np.ndarray,
                                   spacing_mm: Sequence[float]) -> Dict[str, float]:
    """{'dice', 'assd_mm', 'hd95_mm'} for one class; masks are same-shape binary arrays, spacing in array axis order."""
    pred_present, ref_present = bool(np.any(pred_mask)), bool(np.any(ref_mask))
    if not pred_present and not ref_present:
        return {name: float("nan") for name in ORIGINAL_METRICS}
    if pred_present != ref_present:
        worst = worst_case_distance_mm(np.shape(ref_mask), spacing_mm)
        return {"dice": 0.0, "assd_mm": worst, "hd95_mm": worst}
    distances = surface_distances(pred_mask, ref_mask, spacing_mm)
    return {"dice": dice_coefficient(pred_mask, ref_mask), "assd_mm": distances.symmetric_mean(),
            "hd95_mm": distances.percentile_95()}


def case_metrics_original_spacing(pred_labels: np.ndarray, ref_labels: np.ndarray, spacing_mm: Sequence[float],
                                  class_labels: Iterable[int]) -> Dict[int, Dict[str, float]]:
    """Per-class metrics of one case. pred_labels/ref_labels: integer label maps of equal shape (array axis order,
    e.g. (z, y, x)); spacing_mm: voxel size in mm in the same axis order; class_labels: foreground label values."""
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"Prediction and reference differ in shape: {pred_labels.shape} vs {ref_labels.shape}.")
    return {label: class_metrics_original_spacing(pred_labels == label, ref_labels == label, spacing_mm)
            for label in class_labels}
