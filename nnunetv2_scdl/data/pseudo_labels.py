"""Per-case confidence of a teacher's prediction, and the choice of the cases kept as pseudo-labels.

Used by self-training (see docs/self_training.md). The teacher's ``nnUNetv2_predict --save_probabilities`` writes,
per case, the segmentation ``{ID}{file_ending}``, the class probabilities ``{ID}.npz`` (key ``probabilities``, shape
``(classes, *image shape)``) and ``{ID}.pkl``.

Confidence of a case: the mean, over the voxels the teacher labels as foreground (argmax not background), of the
teacher's probability for the label it chose (its top-class probability). Background voxels are left out because they
dominate most scans and are almost always predicted with a probability near 1, which would make every case look
confident. A case without any predicted foreground has no confidence and is never kept.

Selection: a case is kept when its confidence is at least ``min_confidence`` (default
:data:`DEFAULT_MIN_CONFIDENCE`) and it is among the ``keep_fraction`` (default :data:`DEFAULT_KEEP_FRACTION`) most
confident of all unlabeled cases.
"""
import math
import os
import zipfile
import zlib
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

#: default minimum case confidence; the same value as the mean teacher's per-voxel ``confidence_threshold``
DEFAULT_MIN_CONFIDENCE = 0.8
#: default share of all unlabeled cases that may be kept (1.0: every case above the threshold)
DEFAULT_KEEP_FRACTION = 1.0
PREDICTION_SUFFIXES = (".npz", ".pkl")  # besides the segmentation itself


class PredictionFileError(ValueError):
    """A case's prediction files are missing, truncated or inconsistent."""


@dataclass(frozen=True)
class CaseConfidence:
    """The teacher's confidence on one case (``confidence`` is None when it predicted no foreground)."""
    confidence: Optional[float]
    foreground_voxels: int
    voxels: int

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, content: dict) -> "CaseConfidence":
        return cls(content["confidence"], int(content["foreground_voxels"]), int(content["voxels"]))


@dataclass(frozen=True)
class Selection:
    """The cases kept as pseudo-labels (most confident first) and, for every other case, why it was left out."""
    selected: List[str]
    rejected: Dict[str, str]


def case_confidence(probabilities: np.ndarray) -> CaseConfidence:
    """Confidence of one case from its softmax probabilities ``(classes, *spatial)`` (see the module docstring)."""
    if probabilities.ndim < 2 or probabilities.shape[0] < 2:
        raise ValueError(f"Expected class probabilities of shape (classes >= 2, ...), got {probabilities.shape}.")
    top_probability = probabilities.max(axis=0)
    foreground = probabilities.argmax(axis=0) != 0
    count = int(foreground.sum())
    confidence = float(top_probability[foreground].astype(np.float64).mean()) if count else None
    return CaseConfidence(confidence, count, int(foreground.size))


def select_confident_cases(confidences: Dict[str, CaseConfidence], min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                           keep_fraction: float = DEFAULT_KEEP_FRACTION) -> Selection:
    """Keep the cases with confidence >= ``min_confidence``, at most ``ceil(keep_fraction * len(confidences))`` of
    them, the most confident first (ties broken by case ID)."""
    check_selection_settings(min_confidence, keep_fraction)
    rejected = {}
    eligible = []
    for case, score in sorted(confidences.items()):
        if score.confidence is None:
            rejected[case] = "no foreground predicted"
        elif score.confidence < min_confidence:
            rejected[case] = f"confidence {score.confidence:.4f} < {min_confidence:g}"
        else:
            eligible.append(case)
    eligible.sort(key=lambda c: (-confidences[c].confidence, c))
    limit = math.ceil(keep_fraction * len(confidences) - 1e-9)
    for case in eligible[limit:]:
        rejected[case] = (f"confidence {confidences[case].confidence:.4f} passes, but only the {limit} most confident "
                          f"cases are kept (keep fraction {keep_fraction:g})")
    return Selection(eligible[:limit], dict(sorted(rejected.items())))


def check_selection_settings(min_confidence: float, keep_fraction: float) -> None:
    if not 0 <= min_confidence <= 1:
        raise ValueError(f"The minimum confidence must be in [0, 1] (got {min_confidence}).")
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"The keep fraction must be in (0, 1] (got {keep_fraction}).")


def prediction_files(folder: str, case: str, file_ending: str) -> List[str]:
    """The files ``nnUNetv2_predict --save_probabilities`` writes for ``case``: segmentation, .npz, .pkl."""
    return [os.path.join(folder, case + file_ending)] + [os.path.join(folder, case + s) for s in PREDICTION_SUFFIXES]


def missing_predictions(folder: str, cases: Sequence[str], file_ending: str) -> List[str]:
    """Cases of which at least one prediction file is absent."""
    return [c for c in cases if not all(os.path.isfile(f) for f in prediction_files(folder, c, file_ending))]


def read_case_confidence(folder: str, case: str, file_ending: str, read_segmentation) -> CaseConfidence:
    """Check one case's prediction files and return its confidence.

    ``read_segmentation(file)`` returns the segmentation as an array with a leading channel axis (an nnU-Net reader's
    ``read_seg``). Raises :class:`PredictionFileError` when a file is missing or unreadable (e.g. truncated by an
    interrupted prediction), or the segmentation does not match the probabilities.
    """
    segmentation_file, probabilities_file, _ = prediction_files(folder, case, file_ending)
    missing = [f for f in prediction_files(folder, case, file_ending) if not os.path.isfile(f)]
    if missing:
        raise PredictionFileError(f"{case}: missing {', '.join(os.path.basename(f) for f in missing)}")
    try:
        with np.load(probabilities_file) as content:
            probabilities = content["probabilities"]
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise PredictionFileError(f"{case}: unreadable {os.path.basename(probabilities_file)} "
                                  f"({type(e).__name__}: {e})") from None
    try:
        segmentation = np.asarray(read_segmentation(segmentation_file))
    except Exception as e:  # readers raise their own types (RuntimeError for SimpleITK)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or ["unknown error"]
        reason = next((line for line in lines if "ERROR" in line), lines[-1])  # SimpleITK: the line saying what
        raise PredictionFileError(f"{case}: unreadable {os.path.basename(segmentation_file)} "
                                  f"({type(e).__name__}: {reason})") from None
    if segmentation.shape[-probabilities.ndim + 1:] != probabilities.shape[1:]:
        raise PredictionFileError(f"{case}: segmentation shape {segmentation.shape} does not match the probabilities' "
                                  f"{probabilities.shape}")
    return case_confidence(probabilities)
