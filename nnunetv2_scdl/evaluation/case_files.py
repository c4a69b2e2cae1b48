"""Finding, pairing and reading the label files of an evaluation (prediction folder vs reference folder).

Arrays are returned in SimpleITK's numpy order, (z, y, x) for 3D images, and spacings in the same order, in mm.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

SPACING_RTOL = 1e-3      # relative tolerance when comparing voxel sizes
ORIGIN_ATOL_MM = 1e-2    # absolute tolerance (mm) when comparing image origins
DIRECTION_ATOL = 1e-3    # absolute tolerance when comparing direction cosines


@dataclass(frozen=True)
class CasePair:
    case_id: str
    pred_file: Path
    ref_file: Path


@dataclass(frozen=True)
class LabelMap:
    """An integer label map with its geometry. labels: int array in (z, y, x) order; spacing_mm/origin_mm in the same
    order; direction: the flattened direction-cosine matrix as SimpleITK reports it."""
    labels: np.ndarray
    spacing_mm: Tuple[float, ...]
    origin_mm: Tuple[float, ...]
    direction: Tuple[float, ...]


def case_ids_in_folder(folder: Path, file_ending: str) -> List[str]:
    """Sorted case identifiers of the files in ``folder`` whose names end with ``file_ending`` (e.g. '.nii.gz')."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder not found: {folder}")
    return sorted(p.name[:-len(file_ending)] for p in folder.iterdir()
                  if p.is_file() and p.name.endswith(file_ending) and len(p.name) > len(file_ending))


def pair_prediction_and_reference_files(pred_dir: Path, ref_dir: Path, file_ending: str) -> List[CasePair]:
    """One CasePair per prediction file; every prediction needs a reference file of the same name.

    Raises FileNotFoundError naming the folder or the missing reference file, ValueError when there is nothing to
    evaluate.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    case_ids = case_ids_in_folder(pred_dir, file_ending)
    if not ref_dir.is_dir():
        raise FileNotFoundError(f"Reference folder not found: {ref_dir}")
    if not case_ids:
        raise ValueError(f"No prediction files ending with {file_ending!r} in {pred_dir}.")
    pairs = []
    for case_id in case_ids:
        ref_file = ref_dir / f"{case_id}{file_ending}"
        if not ref_file.is_file():
            raise FileNotFoundError(f"No reference for prediction {pred_dir / (case_id + file_ending)}: expected "
                                    f"{ref_file}")
        pairs.append(CasePair(case_id, pred_dir / f"{case_id}{file_ending}", ref_file))
    return pairs


def read_label_map(path: Path) -> LabelMap:
    """Read an integer label image with SimpleITK. Raises FileNotFoundError / ValueError naming the file."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Label file not found: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise ValueError(f"Cannot read {path} as an image: {error}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; a label map has 1.")
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"{path} holds non-integer values; expected an integer label map.")
    if array.size and array.min() < 0:
        raise ValueError(f"{path} holds negative values; expected label values >= 0.")
    return LabelMap(array.astype(np.int32), tuple(reversed(image.GetSpacing())), tuple(reversed(image.GetOrigin())),
                    tuple(image.GetDirection()))


def _differs(a: Sequence[float], b: Sequence[float], rtol: float = 0.0, atol: float = 0.0) -> bool:
    return len(a) != len(b) or not np.allclose(a, b, rtol=rtol, atol=atol)


def check_same_grid(pred: LabelMap, ref: LabelMap, pred_file: Path, ref_file: Path) -> None:
    """Raise ValueError naming both files unless prediction and reference share shape, spacing, origin, direction."""
    problems = []
    if pred.labels.shape != ref.labels.shape:
        problems.append(f"shape (z, y, x) {pred.labels.shape} vs {ref.labels.shape}")
    if _differs(pred.spacing_mm, ref.spacing_mm, rtol=SPACING_RTOL):
        problems.append(f"spacing (z, y, x) mm {pred.spacing_mm} vs {ref.spacing_mm}")
    if _differs(pred.origin_mm, ref.origin_mm, atol=ORIGIN_ATOL_MM):
        problems.append(f"origin (z, y, x) mm {pred.origin_mm} vs {ref.origin_mm}")
    if _differs(pred.direction, ref.direction, atol=DIRECTION_ATOL):
        problems.append(f"direction {pred.direction} vs {ref.direction}")
    if problems:
        raise ValueError(f"Prediction {pred_file} and reference {ref_file} are not on the same voxel grid: "
                         + "; ".join(problems))
