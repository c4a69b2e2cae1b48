"""Distances between the surfaces of two binary masks (a thin wrapper around MONAI's metric utilities).

Surface definition (the one medpy uses, and so the one the papers' ASD uses): a surface voxel is a foreground voxel
that a single binary erosion with the 1-connectivity structuring element (6-neighbourhood in 3D, 4 in 2D) removes; voxels
outside the array count as background. Distances are Euclidean between voxel centres.

Units: with ``spacing=None`` distances are in voxels; with ``spacing`` (one value per array axis, in the array's axis
order, e.g. (z, y, x) for arrays read with SimpleITK) they are in the unit of the spacing, i.e. millimetres for
medical images.

MONAI is imported lazily, so importing this module (and the package) stays cheap.
"""
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class SurfaceDistances:
    """Per-surface-voxel distances to the nearest surface voxel of the other mask.

    ``pred_to_ref[i]``: distance from the i-th prediction surface voxel to the nearest reference surface voxel.
    ``ref_to_pred[j]``: distance from the j-th reference surface voxel to the nearest prediction surface voxel.
    Both are 1D float64 arrays; units as described in the module docstring.
    """
    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray

    def one_directional_mean(self) -> float:
        """Mean distance from the prediction surface to the reference surface (medpy ``asd(pred, ref)``)."""
        return float(np.mean(self.pred_to_ref))

    def symmetric_mean(self) -> float:
        """Mean over the surface voxels of both masks of the distance to the other surface, i.e. both directions'
        distances pooled (medpy 0.5 ``assd``, MONAI ``symmetric=True``)."""
        return float(np.mean(np.concatenate([self.pred_to_ref, self.ref_to_pred])))

    def percentile_95(self) -> float:
        """95th percentile (linear interpolation) of both directions' distances pooled (medpy ``hd95``)."""
        return float(np.percentile(np.concatenate([self.pred_to_ref, self.ref_to_pred]), 95))


def _import_monai_metrics_utils():
    try:
        from monai.metrics import utils as monai_metrics_utils
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("nnunetv2_scdl's evaluator computes surface distances with MONAI, which is not installed. "
                          "Run: pip install 'monai>=1.3'") from error
    return monai_metrics_utils


def _check_masks(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Optional[Sequence[float]]) -> None:
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"Prediction and reference masks differ in shape: {pred_mask.shape} vs {ref_mask.shape}.")
    if pred_mask.ndim not in (2, 3):
        raise ValueError(f"Surface distances need 2D or 3D masks, got {pred_mask.ndim} dimensions.")
    if not pred_mask.any() or not ref_mask.any():
        raise ValueError("Surface distances are undefined when a mask is empty; handle that case before calling.")
    if spacing is not None:
        if len(spacing) != pred_mask.ndim:
            raise ValueError(f"spacing has {len(spacing)} values but the masks have {pred_mask.ndim} axes.")
        if any(not np.isfinite(s) or s <= 0 for s in spacing):
            raise ValueError(f"spacing must be positive and finite, got {tuple(spacing)}.")


def surface_distances(pred_mask: np.ndarray, ref_mask: np.ndarray,
                      spacing: Optional[Sequence[float]] = None) -> SurfaceDistances:
    """Distances between the surfaces of two non-empty binary masks of equal shape.

    pred_mask, ref_mask: boolean (or 0/1) arrays, 2D or 3D, same shape, both with at least one foreground voxel.
    spacing: voxel size per array axis (same order as the array axes), or None for distances in voxels.
    """
    pred_mask = np.asarray(pred_mask).astype(bool, copy=False)
    ref_mask = np.asarray(ref_mask).astype(bool, copy=False)
    _check_masks(pred_mask, ref_mask, spacing)
    monai_utils = _import_monai_metrics_utils()
    pred_edges, ref_edges = monai_utils.get_mask_edges(pred_mask, ref_mask, crop=True)
    sampling = None if spacing is None else [float(s) for s in spacing]
    pred_to_ref = monai_utils.get_surface_distance(pred_edges, ref_edges, distance_metric="euclidean",
                                                   spacing=sampling)
    ref_to_pred = monai_utils.get_surface_distance(ref_edges, pred_edges, distance_metric="euclidean",
                                                   spacing=sampling)
    return SurfaceDistances(np.asarray(pred_to_ref, dtype=np.float64), np.asarray(ref_to_pred, dtype=np.float64))

