"""The derived dataset of a self-training round: the labeled cases plus the pseudo-labeled ones, as an nnU-Net raw
dataset under a new dataset ID (see docs/self_training.md).

Layout written by :func:`write_derived_raw_dataset`::

    nnUNet_raw/Dataset{NNN}_{source name}_selftrain{round}/
        self_training.json                 what this round is made of and which stages are done (written first: it
                                           marks the ID as this round's)
        imagesTr/{ID}_{XXXX}{ending}       symbolic links to the source images (labeled and unlabeled cases)
        labelsTr/{ID}{ending}              labeled cases: symbolic links to the source labels;
                                           pseudo-labeled cases: copies of the teacher's segmentations
        dataset.json                       the source's, with the new name and case count (written last)

Nothing of the source dataset is written or opened here except file names and ``dataset.json``; the label files of
cases the split calls ``unlabeled`` are not even linked.
"""
import copy
import json
import os
import re
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

STATE_FILENAME = "self_training.json"
STATE_TOOL = "nnUNetv2_scdl_self_train"
PSEUDO_LABELED_KEY = "pseudo_labeled"  # extra key of the derived splits_final.json entries


class DerivedDatasetError(ValueError):
    """A derived dataset that cannot be written: its ID is taken, or its inputs are inconsistent."""


def derived_dataset_name(source_dataset_name: str, derived_id: int, round_index: int) -> str:
    """``Dataset004_Hippocampus``, 500, 1 → ``Dataset500_Hippocampus_selftrain1``."""
    if not 1 <= derived_id <= 999:
        raise DerivedDatasetError(f"Dataset IDs have three digits: {derived_id} is not in 1..999.")
    short_name = re.sub(r"^Dataset\d{3}_", "", source_dataset_name)
    return f"Dataset{derived_id:03d}_{short_name}_selftrain{round_index}"


def folders_with_id(dataset_id: int, roots: Sequence[str]) -> List[str]:
    """Every ``Dataset{id:03d}_*`` folder in the given nnU-Net roots (raw, preprocessed, results), as nnU-Net's own
    ID lookup finds them."""
    prefix = f"Dataset{dataset_id:03d}_"
    found = []
    for root in roots:
        if root and os.path.isdir(root):
            found += [os.path.join(root, n) for n in sorted(os.listdir(root))
                      if n.startswith(prefix) and os.path.isdir(os.path.join(root, n))]
    return found


def read_state(raw_folder: str) -> Optional[dict]:
    """The ``self_training.json`` of a derived raw folder, or None if the folder is not a self-training round's."""
    state_file = os.path.join(raw_folder, STATE_FILENAME)
    if not os.path.isfile(state_file):
        return None
    try:
        state = load_json(state_file)
    except json.JSONDecodeError:
        return None
    return state if isinstance(state, dict) and state.get("tool") == STATE_TOOL else None


def write_state(raw_folder: str, state: dict) -> None:
    """Write ``self_training.json`` atomically (an interrupted write leaves the previous state)."""
    os.makedirs(raw_folder, exist_ok=True)
    target = os.path.join(raw_folder, STATE_FILENAME)
    tmp = target + f".tmp-{os.getpid()}"
    save_json(dict(state, tool=STATE_TOOL), tmp, sort_keys=False)
    os.replace(tmp, target)


def training_case_files(raw_dataset_folder: str, dataset_json: dict) -> Dict[str, dict]:
    """``{ID: {"images": [...], "label": path}}`` of the raw dataset's training cases (file names only)."""
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    return get_filenames_of_train_images_and_targets(raw_dataset_folder, copy.deepcopy(dataset_json))


def carried_labeled_cases(source_splits: List[dict], fold: int) -> List[str]:
    """The cases whose true labels the derived dataset keeps: the ``train`` and ``val`` cases of the fold, except
    any case the fold lists as ``unlabeled``."""
    entry = source_splits[fold]
    return sorted((set(entry["train"]) | set(entry["val"])) - set(entry.get("unlabeled", [])))


def derived_splits(source_splits: List[dict], fold: int, pseudo_labeled: Sequence[str]) -> List[dict]:
    """The derived ``splits_final.json``: each source entry restricted to the cases the derived dataset has (see
    :func:`carried_labeled_cases`), with the pseudo-labeled cases added to ``train`` and listed under
    ``pseudo_labeled``; ``val`` keeps real labels only, and the source's ``unlabeled`` lists are dropped. Only entry
    ``fold`` is the fold the teacher was trained on; the others are kept so that fold numbers stay the same."""
    carried = set(carried_labeled_cases(source_splits, fold))
    clash = sorted(set(pseudo_labeled) & carried)
    if clash:
        raise DerivedDatasetError(f"Pseudo-labeled cases may not be training or validation cases of the source split: "
                                  f"{clash}")
    return [{"train": sorted((set(entry["train"]) & carried) | set(pseudo_labeled)),
             "val": sorted(set(entry["val"]) & carried), PSEUDO_LABELED_KEY: sorted(pseudo_labeled)}
            for entry in source_splits]


def _link(source: str, target: str) -> None:
    os.symlink(os.path.realpath(source), target)


def write_derived_raw_dataset(target_folder: str, dataset_name: str, source_dataset_json: dict,
                              labeled: Dict[str, Tuple[Sequence[str], str]],
                              pseudo_labeled: Dict[str, Tuple[Sequence[str], str]], description: str) -> None:
    """Write ``imagesTr``, ``labelsTr`` and ``dataset.json`` of a derived dataset into ``target_folder``.

    ``labeled`` and ``pseudo_labeled`` map case IDs to ``(image files in channel order, label file)``; labeled cases'
    files and every image are linked, pseudo-labels are copied. Any ``imagesTr``/``labelsTr``/``dataset.json`` left in
    ``target_folder`` by an interrupted earlier write is replaced; ``dataset.json`` is written last, so its presence
    means the dataset is complete.
    """
    clash = sorted(set(labeled) & set(pseudo_labeled))
    if clash:
        raise DerivedDatasetError(f"Cases cannot be both labeled and pseudo-labeled: {clash}")
    file_ending = source_dataset_json["file_ending"]
    num_channels = len(source_dataset_json.get("channel_names", source_dataset_json.get("modality", {})))
    for case, (images, label) in list(labeled.items()) + list(pseudo_labeled.items()):
        if len(images) != num_channels:
            raise DerivedDatasetError(f"{case}: {len(images)} image file(s), dataset.json has {num_channels} "
                                      f"channel(s).")
        missing = [f for f in list(images) + [label] if not os.path.isfile(f)]
        if missing:
            raise DerivedDatasetError(f"{case}: file(s) not found: {missing}")

    dataset_json_file = os.path.join(target_folder, "dataset.json")
    if os.path.exists(dataset_json_file):
        os.remove(dataset_json_file)
    images_folder, labels_folder = os.path.join(target_folder, "imagesTr"), os.path.join(target_folder, "labelsTr")
    for folder in (images_folder, labels_folder):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
    for case, (images, label) in sorted(labeled.items()) + sorted(pseudo_labeled.items()):
        for channel, image in enumerate(images):
            _link(image, os.path.join(images_folder, f"{case}_{channel:04d}{file_ending}"))
    for case, (_, label) in sorted(labeled.items()):
        _link(label, os.path.join(labels_folder, case + file_ending))
    for case, (_, pseudo_label) in sorted(pseudo_labeled.items()):
        shutil.copyfile(pseudo_label, os.path.join(labels_folder, case + file_ending))

    dataset_json = {k: v for k, v in source_dataset_json.items() if k != "dataset"}
    dataset_json.update(name=dataset_name, numTraining=len(labeled) + len(pseudo_labeled), description=description)
    save_json(dataset_json, dataset_json_file, sort_keys=False)
