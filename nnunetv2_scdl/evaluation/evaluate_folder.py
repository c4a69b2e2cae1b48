"""Evaluate a folder of predicted label maps against a folder of reference label maps.

Two protocols side by side, per foreground class:
- "original": Dice, symmetric ASD (mm) and HD95 (mm) on the original voxel grid and spacing (``original_spacing``);
- "paper": Dice and one-directional ASD in voxels after the papers' nearest resize (``paper_protocol``).
Both are summarised per class, as the mean over classes, and over head and tail classes (``class_groups``).
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from nnunetv2_scdl.evaluation.aggregate import summarize
from nnunetv2_scdl.evaluation.case_files import (CasePair, check_same_grid, pair_prediction_and_reference_files,
                                                 read_label_map)
from nnunetv2_scdl.evaluation.class_groups import ClassGroups
from nnunetv2_scdl.evaluation.original_spacing import ORIGINAL_METRICS, case_metrics_original_spacing
from nnunetv2_scdl.evaluation.paper_protocol import PAPER_GRID_ZYX, PAPER_METRICS, case_metrics_paper


@dataclass(frozen=True)
class EvaluationSettings:
    """paper_grid_zyx: protocol grid in (z, y, x) array order, or None to skip the paper protocol.
    fix_empty_volume_bug: see ``paper_protocol`` (False reproduces the papers)."""
    paper_grid_zyx: Optional[Tuple[int, ...]] = PAPER_GRID_ZYX
    fix_empty_volume_bug: bool = False


@dataclass
class EvaluationResult:
    dataset_name: Optional[str]
    pred_dir: Path
    ref_dir: Path
    class_names: Dict[int, str]
    groups: ClassGroups
    settings: EvaluationSettings
    per_case: List[dict] = field(default_factory=list)
    summary: Dict[str, dict] = field(default_factory=dict)

    @property
    def class_labels(self) -> List[int]:
        return sorted(self.class_names)


def _check_label_values(labels: np.ndarray, known_labels: Sequence[int], path: Path) -> None:
    unknown = sorted(set(np.unique(labels).tolist()) - set(known_labels) - {0})
    if unknown:
        raise ValueError(f"{path} contains label values {unknown} that are not classes of the dataset "
                         f"(foreground labels: {list(known_labels)}).")


def evaluate_case(pair: CasePair, class_labels: Sequence[int], settings: EvaluationSettings) -> dict:
    """Metrics of one prediction/reference pair (see module docstring); raises ValueError naming the files."""
    pred, ref = read_label_map(pair.pred_file), read_label_map(pair.ref_file)
    check_same_grid(pred, ref, pair.pred_file, pair.ref_file)
    _check_label_values(pred.labels, class_labels, pair.pred_file)
    _check_label_values(ref.labels, class_labels, pair.ref_file)
    record = {"case": pair.case_id, "pred_file": str(pair.pred_file), "ref_file": str(pair.ref_file),
              "shape_zyx": list(ref.labels.shape), "spacing_mm_zyx": list(ref.spacing_mm),
              "original": case_metrics_original_spacing(pred.labels, ref.labels, ref.spacing_mm, class_labels)}
    if settings.paper_grid_zyx is not None:
        if ref.labels.ndim != len(settings.paper_grid_zyx):
            raise ValueError(f"{pair.ref_file} is {ref.labels.ndim}D but the paper grid "
                             f"{settings.paper_grid_zyx} is {len(settings.paper_grid_zyx)}D.")
        record["paper"], record["paper_empty_prediction_volume"] = case_metrics_paper(
            pred.labels, ref.labels, class_labels, settings.paper_grid_zyx, settings.fix_empty_volume_bug)
    return record


def evaluate_folders(pred_dir: Path, ref_dir: Path, class_names: Dict[int, str], groups: ClassGroups,
                     file_ending: str = ".nii.gz", settings: EvaluationSettings = EvaluationSettings(),
                     dataset_name: Optional[str] = None, show_progress: bool = True) -> EvaluationResult:
    """Evaluate every prediction file in ``pred_dir`` (each needs a same-named reference in ``ref_dir``)."""
    from tqdm import tqdm

    pairs = pair_prediction_and_reference_files(Path(pred_dir), Path(ref_dir), file_ending)
    class_labels = sorted(class_names)
    result = EvaluationResult(dataset_name, Path(pred_dir), Path(ref_dir), dict(class_names), groups, settings)
    for pair in tqdm(pairs, desc="Evaluating cases", unit="case", disable=not show_progress):
        result.per_case.append(evaluate_case(pair, class_labels, settings))
    result.summary["original"] = summarize([case["original"] for case in result.per_case], class_labels, groups,
                                           ORIGINAL_METRICS)
    if settings.paper_grid_zyx is not None:
        result.summary["paper"] = summarize([case["paper"] for case in result.per_case], class_labels, groups,
                                            PAPER_METRICS)
        result.summary["paper"]["n_empty_prediction_volumes"] = sum(
            bool(case["paper_empty_prediction_volume"]) for case in result.per_case)
    return result
