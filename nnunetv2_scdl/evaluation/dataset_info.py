"""What the evaluator needs to know about an nnU-Net raw dataset: its folder, class names and file ending."""
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict


@dataclass(frozen=True)
class DatasetInfo:
    """name: e.g. 'Dataset111_Synapse'; folder: the raw dataset folder (holds dataset.json, labelsTr/);
    class_names: {foreground label value: name} (background and regions excluded); file_ending: e.g. '.nii.gz'."""
    name: str
    folder: Path
    class_names: Dict[int, str]
    file_ending: str

    @property
    def class_labels(self):
        return sorted(self.class_names)


def resolve_raw_dataset_folder(dataset: str) -> Path:
    """The raw dataset folder for ``dataset``: a folder holding dataset.json, a dataset name ('Dataset111_Synapse')
    or an ID ('111'), the last two looked up in $nnUNet_raw."""
    as_path = Path(dataset)
    if (as_path / "dataset.json").is_file():
        return as_path
    raw_root = os.environ.get("nnUNet_raw")
    if raw_root is None:
        raise ValueError(f"Cannot find dataset {dataset!r}: it is not a folder with a dataset.json and the "
                         f"environment variable nnUNet_raw is not set.")
    raw_root = Path(raw_root)
    if dataset.startswith("Dataset"):
        pattern = dataset
        candidates = [raw_root / dataset]
    else:
        try:
            dataset_id = int(dataset)
        except ValueError:
            raise ValueError(f"Dataset {dataset!r} is neither a folder with a dataset.json, a dataset name "
                             f"(DatasetXXX_Name) nor an integer ID.") from None
        pattern = f"Dataset{dataset_id:03d}_*"
        candidates = sorted(p for p in raw_root.glob(pattern) if p.is_dir())
    candidates = [p for p in candidates if (p / "dataset.json").is_file()]
    if len(candidates) != 1:
        found = ", ".join(str(p) for p in candidates) or "none"
        raise ValueError(f"Expected exactly one raw dataset folder {pattern} with a dataset.json for {dataset!r} in "
                         f"nnUNet_raw={raw_root}; found {found}.")
    return candidates[0]


def class_names_from_labels(labels: Dict[str, object], source: str) -> Dict[int, str]:
    """{label value: name} for the foreground classes of an nnU-Net dataset.json 'labels' entry."""
    class_names: Dict[int, str] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise ValueError(f"{source}: label {name!r} is a region {value}; region-based datasets are not supported "
                             f"by this evaluator.")
        if name == "ignore":
            raise ValueError(f"{source}: datasets with an ignore label are not supported by this evaluator.")
        if int(value) != 0:
            class_names[int(value)] = name
    if not class_names:
        raise ValueError(f"{source}: no foreground labels.")
    return class_names


def read_dataset_info(dataset: str) -> DatasetInfo:
    folder = resolve_raw_dataset_folder(dataset)
    dataset_json = folder / "dataset.json"
    with open(dataset_json, encoding="utf-8") as handle:
        content = json.load(handle)
    if "labels" not in content:
        raise ValueError(f"{dataset_json} has no 'labels' entry.")
    return DatasetInfo(folder.name, folder, class_names_from_labels(content["labels"], str(dataset_json)),
                       content.get("file_ending", ".nii.gz"))
