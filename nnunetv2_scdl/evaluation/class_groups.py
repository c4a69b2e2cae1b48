"""Head and tail classes, grouped by how many voxels each class has in the labeled training cases.

Rule (``HEAD_TAIL_RULE``): the voxel frequency of a foreground class is its voxel count summed over the labeled
cases' label maps divided by the total number of voxels of those maps (background included; voxels, not mm³, so
every voxel counts once whatever its spacing). A class is *tail* when its frequency is strictly below the median of
the foreground classes' frequencies, *head* otherwise. With C foreground classes this makes floor(C/2) tail classes
when the frequencies are distinct (BTCV/Synapse: 6 of 13; AMOS: 7 of 15). An explicit tail list overrides the rule.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from nnunetv2_scdl.evaluation.case_files import read_label_map

HEAD_TAIL_RULE = ("tail = foreground classes whose voxel frequency in the labeled cases is strictly below the median "
                  "frequency of all foreground classes; head = the other foreground classes")
OVERRIDE_RULE = "tail classes given explicitly (--tail-classes); head = the other foreground classes"


@dataclass(frozen=True)
class ClassGroups:
    """head/tail: foreground label values. voxel_counts/frequencies: per label (None with an explicit override)."""
    head: Tuple[int, ...]
    tail: Tuple[int, ...]
    rule: str
    labeled_cases: Tuple[str, ...] = ()
    voxel_counts: Optional[Dict[int, int]] = None
    frequencies: Optional[Dict[int, float]] = None
    total_voxels: Optional[int] = field(default=None)

    def group_of(self, label: int) -> str:
        return "head" if label in self.head else "tail"


def count_class_voxels(label_files: Iterable[Path], class_labels: Sequence[int]) -> Tuple[Dict[int, int], int]:
    """({label: voxel count summed over the files}, total voxel count of the files) for the given labels."""
    counts = {label: 0 for label in class_labels}
    total = 0
    for label_file in label_files:
        labels = read_label_map(label_file).labels
        histogram = np.bincount(labels.ravel())
        for label in class_labels:
            counts[label] += int(histogram[label]) if label < len(histogram) else 0
        total += labels.size
    if total == 0:
        raise ValueError("No labeled voxels to count: the list of labeled label files is empty.")
    return counts, total


def split_head_tail(frequencies: Dict[int, float]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(head, tail) label tuples from {label: voxel frequency} by the median rule (see module docstring)."""
    if not frequencies:
        raise ValueError("Cannot group classes: no foreground classes given.")
    median = float(np.median(list(frequencies.values())))
    tail = tuple(sorted(label for label, f in frequencies.items() if f < median))
    head = tuple(sorted(label for label in frequencies if label not in tail))
    return head, tail


def groups_from_labeled_files(label_files: Dict[str, Path], class_labels: Sequence[int]) -> ClassGroups:
    """Head/tail groups from the labeled cases' label files ({case_id: path})."""
    counts, total = count_class_voxels(label_files.values(), class_labels)
    frequencies = {label: counts[label] / total for label in class_labels}
    head, tail = split_head_tail(frequencies)
    return ClassGroups(head, tail, HEAD_TAIL_RULE, tuple(sorted(label_files)), counts, frequencies, total)


def groups_from_tail_override(class_labels: Sequence[int], tail_classes: Iterable[int]) -> ClassGroups:
    """Head/tail groups from an explicit list of tail label values."""
    tail = tuple(sorted(set(tail_classes)))
    unknown = [label for label in tail if label not in class_labels]
    if unknown:
        raise ValueError(f"Tail classes {unknown} are not foreground classes of this dataset "
                         f"(foreground labels: {list(class_labels)}).")
    head = tuple(label for label in sorted(class_labels) if label not in tail)
    return ClassGroups(head, tail, OVERRIDE_RULE)


def labeled_label_files(labels_dir: Path, file_ending: str,
                        labeled_cases: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """{case_id: label file} in ``labels_dir``, restricted to ``labeled_cases`` when given (each must exist)."""
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise FileNotFoundError(f"Labels folder not found: {labels_dir}")
    if labeled_cases is None:
        files = {p.name[:-len(file_ending)]: p for p in sorted(labels_dir.iterdir())
                 if p.is_file() and p.name.endswith(file_ending)}
        if not files:
            raise ValueError(f"No label files ending with {file_ending!r} in {labels_dir}.")
        return files
    files: Dict[str, Path] = {}
    missing: List[str] = []
    for case_id in labeled_cases:
        path = labels_dir / f"{case_id}{file_ending}"
        if path.is_file():
            files[case_id] = path
        else:
            missing.append(str(path))
    if missing:
        raise FileNotFoundError(f"Label files of labeled cases not found: {', '.join(missing)}")
    if not files:
        raise ValueError("The list of labeled cases is empty.")
    return files
