"""Synthetic, class-imbalanced 3D phantoms written as an nnU-Net v2 raw dataset.

Each case holds three foreground structures, each a randomly placed, sized and rotated ellipsoid:

=====  ========  ============================
label  name      share of the volume's voxels
=====  ========  ============================
1      large     15-25 %
2      medium    2-4 %
3      tiny      0.1-0.3 %
=====  ========  ============================

Structures are carved out smallest first (tiny, then medium among the voxels tiny left free, then large), each as the
voxels closest to its ellipsoid centre in the ellipsoid's own metric, so every label gets exactly its drawn voxel count
even when it overlaps another structure or the volume border. The image is a class-dependent intensity map, slightly
blurred (partial volume), times a smooth multiplicative bias field, plus Gaussian noise: learnable, but not by a single
threshold.

Every case is generated from ``(seed, global case index)`` alone, so the same seed always gives the same files, and
growing one of the subsets does not change the cases already in the others.

Layout written by :func:`make_phantom_dataset` (``{ID}`` is ``phantom_NNN``)::

    Dataset{id:03d}_{name}/
        dataset.json
        imagesTr/{ID}_0000.nii.gz         labelsTr/{ID}.nii.gz           labeled cases
        imagesUnlabeled/{ID}_0000.nii.gz                                 unlabeled cases (no label written at all)
        imagesTs/{ID}_0000.nii.gz         labelsTs/{ID}.nii.gz           held-out test cases
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

PHANTOM_LABELS = {"background": 0, "large": 1, "medium": 2, "tiny": 3}
# Not "CT" (nor any other name in nnU-Net's channel-name mapping), so nnU-Net normalises with z-score.
PHANTOM_CHANNEL_NAME = "synthetic_MRI"
FILE_ENDING = ".nii.gz"
UNLABELED_FOLDER = "imagesUnlabeled"


@dataclass(frozen=True)
class StructureSpec:
    """How one foreground class is drawn: its label, voxel share range, centre placement and mean intensity."""
    label: int
    fraction_range: Tuple[float, float]
    # the centre is drawn uniformly in [margin, 1 - margin] of each axis (relative coordinates)
    centre_margin: float
    # ratio between the longest and shortest semi-axis is at most this
    max_elongation: float
    mean_intensity: float


# Smallest first: that is the order in which structures are carved out of the volume.
STRUCTURES: Tuple[StructureSpec, ...] = (
    StructureSpec(label=3, fraction_range=(0.001, 0.003), centre_margin=0.15, max_elongation=1.5, mean_intensity=190.),
    StructureSpec(label=2, fraction_range=(0.02, 0.04), centre_margin=0.2, max_elongation=2.0, mean_intensity=55.),
    StructureSpec(label=1, fraction_range=(0.15, 0.25), centre_margin=0.4, max_elongation=1.8, mean_intensity=135.),
)
BACKGROUND_INTENSITY = 90.


@dataclass
class PhantomDataset:
    """What :func:`make_phantom_dataset` wrote."""
    dataset_folder: str
    dataset_id: int
    dataset_name: str  # full nnU-Net name, e.g. Dataset990_Phantom
    labeled: List[str] = field(default_factory=list)
    unlabeled: List[str] = field(default_factory=list)
    test: List[str] = field(default_factory=list)


def _ellipsoid_metric(shape: Sequence[int], spacing: Sequence[float], centre_mm: np.ndarray,
                      semi_axes_mm: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Squared normalised distance of each voxel centre from the ellipsoid centre (1 on the ellipsoid surface)."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) * s for n, s in zip(shape, spacing)], indexing="ij")
    offsets = np.stack([g - c for g, c in zip(grids, centre_mm)], axis=-1)  # (z, y, x, 3) in mm
    local = offsets @ rotation.astype(np.float32)  # coordinates along the ellipsoid's own axes
    return np.sum((local / semi_axes_mm.astype(np.float32)) ** 2, axis=-1)


def _draw_structure(rng: np.random.Generator, spec: StructureSpec, shape: Sequence[int],
                    spacing: Sequence[float], free: np.ndarray) -> np.ndarray:
    """Boolean mask of exactly round(fraction * volume) voxels among ``free``, shaped like a rotated ellipsoid."""
    n_voxels = int(np.prod(shape))
    target = max(1, int(round(rng.uniform(*spec.fraction_range) * n_voxels)))
    extent_mm = np.array(shape) * np.array(spacing)
    centre_mm = rng.uniform(spec.centre_margin, 1 - spec.centre_margin, size=3) * extent_mm
    semi_axes = rng.uniform(1.0, spec.max_elongation, size=3)  # only the ratios matter: the count sets the size
    rotation = Rotation.random(random_state=rng).as_matrix()
    metric = _ellipsoid_metric(shape, spacing, centre_mm, semi_axes, rotation)
    metric = np.where(free, metric, np.inf).ravel()
    chosen = np.argpartition(metric, target - 1)[:target]
    mask = np.zeros(n_voxels, dtype=bool)
    mask[chosen] = True
    return mask.reshape(shape)


def generate_phantom_case(seed: int, case_index: int, shape: Sequence[int] = (32, 48, 48),
                          spacing: Sequence[float] = (2.0, 1.0, 1.0)) -> Tuple[np.ndarray, np.ndarray]:
    """One phantom: ``(image float32, label uint8)``, both of ``shape`` (z, y, x). Deterministic in (seed, index)."""
    rng = np.random.default_rng([int(seed), int(case_index)])
    shape = tuple(int(i) for i in shape)
    label = np.zeros(shape, dtype=np.uint8)
    free = np.ones(shape, dtype=bool)
    for spec in STRUCTURES:
        mask = _draw_structure(rng, spec, shape, spacing, free)
        label[mask] = spec.label
        free &= ~mask

    # per-case contrast jitter so the intensities of a class are not identical across cases
    class_means = np.full(len(PHANTOM_LABELS), BACKGROUND_INTENSITY, dtype=np.float32)
    for spec in STRUCTURES:
        class_means[spec.label] = spec.mean_intensity + rng.normal(0, 8)
    image = class_means[label]
    image = gaussian_filter(image, sigma=[0.6 / s for s in spacing])  # partial-volume blur, ~0.6 mm

    # smooth multiplicative bias: a low-frequency random field in [0.8, 1.2]
    field_ = gaussian_filter(rng.normal(size=shape), sigma=[n / 4 for n in shape], mode="reflect")
    bias = 1 + 0.2 * field_ / (np.abs(field_).max() + 1e-8)
    image = image * bias + rng.normal(0, 22, size=shape)
    return image.astype(np.float32), label


def _write_nifti(array: np.ndarray, spacing_zyx: Sequence[float], filename: str) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))  # SimpleITK wants x, y, z
    sitk.WriteImage(image, filename, useCompression=True)


def make_phantom_dataset(raw_root: str, dataset_id: int, dataset_name: str = "Phantom", n_labeled: int = 8,
                         n_unlabeled: int = 24, n_test: int = 8, shape: Sequence[int] = (32, 48, 48),
                         spacing: Sequence[float] = (2.0, 1.0, 1.0), seed: int = 0) -> PhantomDataset:
    """Write the nnU-Net raw dataset ``raw_root/Dataset{dataset_id:03d}_{dataset_name}`` (see the module docstring).

    ``shape`` and ``spacing`` are (z, y, x), spacing in mm. Case IDs are ``phantom_NNN`` with one running index over
    labeled, then unlabeled, then test cases, so no ID appears in two subsets. Refuses to write into an existing
    dataset folder.
    """
    if n_labeled < 1:
        raise ValueError("A phantom dataset needs at least one labeled case (n_labeled >= 1).")
    if min(n_unlabeled, n_test) < 0:
        raise ValueError("n_unlabeled and n_test must not be negative.")
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"shape and spacing must be (z, y, x); got shape={shape}, spacing={spacing}.")
    if min(shape) < 8:
        raise ValueError(f"Every axis needs at least 8 voxels; got shape={shape}.")
    full_name = f"Dataset{int(dataset_id):03d}_{dataset_name}"
    folder = os.path.join(raw_root, full_name)
    if os.path.exists(folder):
        raise FileExistsError(f"{folder} already exists; remove it or use another dataset id.")

    subsets = (("labeled", n_labeled, "imagesTr", "labelsTr"),
               ("unlabeled", n_unlabeled, UNLABELED_FOLDER, None),
               ("test", n_test, "imagesTs", "labelsTs"))
    result = PhantomDataset(dataset_folder=folder, dataset_id=int(dataset_id), dataset_name=full_name)
    case_index = 0
    for subset, count, image_folder, label_folder in subsets:
        for _ in range(count):
            case_id = f"phantom_{case_index:03d}"
            image, label = generate_phantom_case(seed, case_index, shape, spacing)
            os.makedirs(os.path.join(folder, image_folder), exist_ok=True)
            _write_nifti(image, spacing, os.path.join(folder, image_folder, f"{case_id}_0000{FILE_ENDING}"))
            if label_folder is not None:
                os.makedirs(os.path.join(folder, label_folder), exist_ok=True)
                _write_nifti(label, spacing, os.path.join(folder, label_folder, case_id + FILE_ENDING))
            getattr(result, subset).append(case_id)
            case_index += 1

    generate_dataset_json(folder, channel_names={0: PHANTOM_CHANNEL_NAME}, labels=dict(PHANTOM_LABELS),
                          num_training_cases=n_labeled, file_ending=FILE_ENDING, dataset_name=full_name,
                          description=f"Synthetic class-imbalanced phantoms (nnunetv2_scdl), seed {seed}. "
                                      f"Unlabeled images are in {UNLABELED_FOLDER}/.",
                          license="CC0 (synthetic)", converted_by="nnunetv2_scdl.data.phantoms")
    return result


def label_fractions(label: np.ndarray) -> Dict[str, float]:
    """Share of voxels per phantom class name (background included)."""
    n = label.size
    return {name: float(np.count_nonzero(label == value)) / n for name, value in PHANTOM_LABELS.items()}
