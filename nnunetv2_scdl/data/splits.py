"""Benchmark splits: use only some labels of a fully labeled nnU-Net dataset.

A benchmark split divides the cases of ``imagesTr`` into three disjoint lists:

- ``labeled``: cases whose labels training may use (nnU-Net's ``train``);
- ``unlabeled``: cases used as images only. Their label files exist on disk but nothing in this package opens them;
- ``val``: held-out cases for nnU-Net's validation (nnU-Net's ``val``).

It is stored as nnU-Net's own ``nnUNet_preprocessed/DatasetX/splits_final.json``, as a one-fold list::

    [{"train": [...labeled], "val": [...], "unlabeled": [...]}]

nnU-Net's trainer reads only ``train`` and ``val``; ``unlabeled`` is ours (read by
:mod:`nnunetv2_scdl.data.unlabeled_preprocessing` and the semi-supervised trainers).

Split files as in ``shared/data/splits/*.json`` hold the keys ``labeled``, ``unlabeled`` and ``val`` (plus optional
``dataset`` and ``protocol`` descriptions). Only file names and ``dataset.json`` are read here, never label contents.
"""
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

SPLITS_FILENAME = "splits_final.json"
SPLIT_KEYS = ("labeled", "unlabeled", "val")


class SplitError(ValueError):
    """A split that cannot be used: unknown or duplicated cases, overlapping lists, bad counts, protected files."""


@dataclass
class BenchmarkSplit:
    """Three disjoint case lists; see the module docstring."""
    labeled: List[str]
    unlabeled: List[str]
    val: List[str]
    description: Dict[str, str] = field(default_factory=dict)  # e.g. {"dataset": ..., "protocol": ...}

    def to_nnunet_splits(self) -> List[dict]:
        """The content of ``splits_final.json``: a one-fold nnU-Net split with our extra ``unlabeled`` key."""
        return [{"train": sorted(self.labeled), "val": sorted(self.val), "unlabeled": sorted(self.unlabeled)}]


def raw_case_files(raw_dataset_folder: str) -> Dict[str, dict]:
    """``{case_id: {"has_image": bool, "has_label": bool}}`` for the training cases of a raw dataset.

    Reads ``dataset.json`` and lists ``imagesTr``/``labelsTr`` (or the ``dataset`` key of ``dataset.json``, where
    nnU-Net allows it); never opens an image or label file.
    """
    dataset_json_file = os.path.join(raw_dataset_folder, "dataset.json")
    if not os.path.isfile(dataset_json_file):
        raise SplitError(f"{dataset_json_file} not found. Is {raw_dataset_folder} an nnU-Net raw dataset?")
    dataset_json = load_json(dataset_json_file)
    if "dataset" in dataset_json:  # nnU-Net's explicit file list
        cases = {}
        for case_id, entry in dataset_json["dataset"].items():
            images = [_resolve(raw_dataset_folder, i) for i in entry.get("images", [])]
            label = entry.get("label")
            cases[case_id] = {"has_image": bool(images) and all(os.path.isfile(i) for i in images),
                              "has_label": label is not None and os.path.isfile(_resolve(raw_dataset_folder, label))}
        return cases

    file_ending = dataset_json["file_ending"]
    images_folder = os.path.join(raw_dataset_folder, "imagesTr")
    if not os.path.isdir(images_folder):
        raise SplitError(f"{images_folder} not found: the raw dataset has no training images.")
    pattern = re.compile(r"(.+)_\d{4}" + re.escape(file_ending))
    image_ids = {m.group(1) for m in map(pattern.fullmatch, os.listdir(images_folder)) if m}
    labels_folder = os.path.join(raw_dataset_folder, "labelsTr")
    label_files = set(os.listdir(labels_folder)) if os.path.isdir(labels_folder) else set()
    label_ids = {f[:-len(file_ending)] for f in label_files if f.endswith(file_ending)}
    return {i: {"has_image": i in image_ids, "has_label": i in label_ids} for i in sorted(image_ids | label_ids)}


def _resolve(raw_dataset_folder: str, path: str) -> str:
    path = os.path.expandvars(path)
    return path if os.path.isabs(path) else os.path.join(raw_dataset_folder, path)


def load_split_file(split_file: str) -> BenchmarkSplit:
    """Read a split file with the keys ``labeled``, ``unlabeled`` and ``val`` (lists of case IDs)."""
    try:
        content = load_json(split_file)
    except FileNotFoundError:
        raise SplitError(f"Split file {split_file} not found.") from None
    except json.JSONDecodeError as e:
        raise SplitError(f"Split file {split_file} is not valid JSON: {e}") from None
    if not isinstance(content, dict):
        raise SplitError(f"Split file {split_file} must hold a JSON object with the keys {list(SPLIT_KEYS)}; "
                         f"found a {type(content).__name__}.")
    missing = [k for k in SPLIT_KEYS if k not in content]
    if missing:
        raise SplitError(f"Split file {split_file} lacks the key(s) {missing}; expected {list(SPLIT_KEYS)}.")
    for key in SPLIT_KEYS:
        if not isinstance(content[key], list) or not all(isinstance(i, str) for i in content[key]):
            raise SplitError(f"Split file {split_file}: '{key}' must be a list of case IDs (strings).")
    description = {k: str(v) for k, v in content.items() if k not in SPLIT_KEYS}
    return BenchmarkSplit(list(content["labeled"]), list(content["unlabeled"]), list(content["val"]), description)


def _count(total: int, number: Optional[int], fraction: Optional[float], what: str) -> int:
    if number is not None:
        if number < 0:
            raise SplitError(f"The number of {what} cases must not be negative (got {number}).")
        return number
    if not 0 < fraction <= 1:
        raise SplitError(f"The {what} fraction must be in (0, 1] (got {fraction}).")
    return max(1, int(round(fraction * total)))


def random_split(cases: Sequence[str], n_labeled: Optional[int] = None, labeled_fraction: Optional[float] = None,
                 n_val: Optional[int] = None, val_fraction: Optional[float] = 0.2, seed: int = 0) -> BenchmarkSplit:
    """Draw a split of ``cases``, reproducible for a given seed and case set.

    ``val`` is drawn first (``n_val`` cases, or ``val_fraction`` of all cases, at least one); ``labeled`` is then
    ``n_labeled`` cases or ``labeled_fraction`` of the remaining (non-validation) cases, at least one; every other case
    is ``unlabeled``. Give exactly one of ``n_labeled`` and ``labeled_fraction``.
    """
    if (n_labeled is None) == (labeled_fraction is None):
        raise SplitError("Give exactly one of the number of labeled cases and the labeled fraction.")
    if n_val is None and val_fraction is None:
        raise SplitError("Give the number or the fraction of validation cases.")
    ordered = sorted(set(cases))
    num_val = _count(len(ordered), n_val, val_fraction, "validation")
    if num_val < 1:
        raise SplitError("nnU-Net needs at least one validation case.")
    num_labeled = _count(len(ordered) - num_val, n_labeled, labeled_fraction, "labeled")
    if num_labeled < 1:
        raise SplitError("A split needs at least one labeled case.")
    if num_val + num_labeled > len(ordered):
        raise SplitError(f"Cannot take {num_val} validation and {num_labeled} labeled cases from "
                         f"{len(ordered)} cases.")
    permuted = [ordered[i] for i in np.random.RandomState(seed).permutation(len(ordered))]
    val, labeled, unlabeled = (permuted[:num_val], permuted[num_val:num_val + num_labeled],
                               permuted[num_val + num_labeled:])
    return BenchmarkSplit(sorted(labeled), sorted(unlabeled), sorted(val),
                          {"protocol": f"random split, seed {seed}: {len(labeled)} labeled, {len(unlabeled)} "
                                       f"unlabeled, {len(val)} validation cases"})


def validate_split(split: BenchmarkSplit, cases: Dict[str, dict], dataset_name: Optional[str] = None) -> None:
    """Raise :class:`SplitError` unless the split fits the raw dataset described by ``cases`` (see raw_case_files).

    Checks: no duplicates within a list, no case in two lists, at least one labeled and one validation case, every case
    has its images in the raw dataset, and every labeled/validation case has a label file (unlabeled cases need none).
    If the split names its dataset, it must be ``dataset_name``.
    """
    named = split.description.get("dataset")
    if dataset_name is not None and named and named != dataset_name:
        raise SplitError(f"The split is for {named}, not for {dataset_name}.")
    lists = {"labeled": split.labeled, "unlabeled": split.unlabeled, "val": split.val}
    for key, ids in lists.items():
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise SplitError(f"The '{key}' list names these cases more than once: {duplicates}")
    for a, b in (("labeled", "unlabeled"), ("labeled", "val"), ("unlabeled", "val")):
        overlap = sorted(set(lists[a]) & set(lists[b]))
        if overlap:
            raise SplitError(f"The lists '{a}' and '{b}' overlap; these cases are in both: {overlap}")
    if not split.labeled:
        raise SplitError("The split has no labeled cases.")
    if not split.val:
        raise SplitError("The split has no validation cases; nnU-Net needs at least one.")
    unknown = sorted(i for ids in lists.values() for i in ids if not cases.get(i, {}).get("has_image"))
    if unknown:
        raise SplitError(f"These cases of the split are not in imagesTr of the raw dataset: {unknown}")
    without_label = sorted(i for i in split.labeled + split.val if not cases[i]["has_label"])
    if without_label:
        raise SplitError(f"These labeled/validation cases have no label file in labelsTr: {without_label}")


def write_splits_final(preprocessed_dataset_folder: str, split: BenchmarkSplit, overwrite: bool = False) -> str:
    """Write ``splits_final.json``; return ``"written"``, ``"unchanged"`` or ``"overwritten (backup: FILE)"``.

    An existing file with a different content is only replaced with ``overwrite=True``, and then kept as
    ``splits_final.backup-<timestamp>.json`` next to it. Creates the preprocessed dataset folder if needed.
    """
    os.makedirs(preprocessed_dataset_folder, exist_ok=True)
    target = os.path.join(preprocessed_dataset_folder, SPLITS_FILENAME)
    new_content = split.to_nnunet_splits()
    if os.path.isfile(target):
        try:
            existing = load_json(target)
        except json.JSONDecodeError:
            existing = None
        if existing == new_content:
            return "unchanged"
        if not overwrite:
            raise SplitError(f"{target} already exists with a different split. Pass --overwrite to replace it "
                             f"(the old file is kept as a backup).")
        backup = _free_backup_name(preprocessed_dataset_folder)
        shutil.copy2(target, backup)
        _atomic_save_json(new_content, target)
        return f"overwritten (backup: {backup})"
    _atomic_save_json(new_content, target)
    return "written"


def _free_backup_name(folder: str) -> str:
    stem = f"splits_final.backup-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, counter = os.path.join(folder, stem + ".json"), 1
    while os.path.exists(candidate):
        candidate, counter = os.path.join(folder, f"{stem}-{counter}.json"), counter + 1
    return candidate


def _atomic_save_json(content, target: str) -> None:
    tmp = target + f".tmp-{os.getpid()}"
    save_json(content, tmp, sort_keys=False)
    os.replace(tmp, target)


def read_benchmark_split(preprocessed_dataset_folder: str) -> Optional[List[dict]]:
    """The entries of ``splits_final.json`` (None if there is none). Each has ``train``/``val``, ours ``unlabeled``."""
    target = os.path.join(preprocessed_dataset_folder, SPLITS_FILENAME)
    if not os.path.isfile(target):
        return None
    try:
        content = load_json(target)
    except json.JSONDecodeError as e:
        raise SplitError(f"{target} is not valid JSON: {e}") from None
    if not isinstance(content, list) or not all(isinstance(e, dict) for e in content):
        raise SplitError(f"{target} is not an nnU-Net split file (a list of {{'train': [...], 'val': [...]}}).")
    return content


def benchmark_unlabeled_cases(preprocessed_dataset_folder: str, fold: Optional[int] = None) -> List[str]:
    """The ``unlabeled`` cases of ``splits_final.json``: of one fold, or (``fold=None``) of all folds together.

    Empty if there is no split file or it has no ``unlabeled`` lists (a plain nnU-Net split). Raises
    :class:`SplitError` if an entry's unlabeled case is also in that entry's ``train`` or ``val``.
    """
    entries = read_benchmark_split(preprocessed_dataset_folder) or []
    if fold is not None:
        if not 0 <= fold < len(entries):
            return []
        entries = [entries[fold]]
    cases = set()
    for index, entry in enumerate(entries):
        unlabeled = entry.get("unlabeled", [])
        leaked = sorted(set(unlabeled) & (set(entry.get("train", [])) | set(entry.get("val", []))))
        if leaked:
            raise SplitError(f"{os.path.join(preprocessed_dataset_folder, SPLITS_FILENAME)}, entry {index}: these "
                             f"'unlabeled' cases are also in 'train' or 'val': {leaked}")
        cases.update(unlabeled)
    return sorted(cases)
