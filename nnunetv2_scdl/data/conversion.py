"""Converting the papers' datasets into nnU-Net v2 raw datasets, with the papers' split files beside them.

Synapse / BTCV (``RawData/Training/img/imgNNNN.nii.gz`` and ``RawData/Training/label/labelNNNN.nii.gz``, 30 scans,
13 organs): case ``synapse_NNNN``. The chosen protocol's 6 test scans go to imagesTs/labelsTs, the others to
imagesTr/labelsTr.
AMOS22 (``imagesTr``/``labelsTr``/``imagesVa`` [+ ``labelsVa``] and its ``dataset.json``, 15 organs): the training
cases go to imagesTr/labelsTr, the official validation cases (the papers' 120 test cases) to imagesTs (and labelsTs
where their labels exist). AMOS's own unlabelled test images (imagesTs) are not used by the papers and not converted.

Per case the image file is copied unchanged as ``{case}_0000.nii.gz``; the label is checked (same size, spacing,
origin and direction as the image within small tolerances, integer values among the dataset's labels) and written as
uint8 on the image's exact geometry, so nnU-Net's integrity check passes. Split files go to
``<dataset folder>/paper_splits/<name>.json`` (see ``paper_splits``); a split is written only when all of its cases
were converted.
"""
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from nnunetv2_scdl.data.paper_splits import (PaperSplit, SYNAPSE_SPLITS_BY_TEST_SET, SYNAPSE_TEST_SETS,
                                             amos_split_from_txt_dir, missing_cases, percents_in_txt_dir,
                                             synapse_case_id, synapse_split, write_split_json)

FILE_ENDING = ".nii.gz"
SPLITS_FOLDER = "paper_splits"
SPACING_RTOL = 1e-3     # label vs image voxel size, relative
ORIGIN_ATOL_MM = 1e-2   # label vs image origin, mm
DIRECTION_ATOL = 1e-3   # label vs image direction cosines

SYNAPSE_LABELS: Dict[str, int] = {
    "background": 0, "spleen": 1, "right_kidney": 2, "left_kidney": 3, "gallbladder": 4, "esophagus": 5, "liver": 6,
    "stomach": 7, "aorta": 8, "inferior_vena_cava": 9, "portal_splenic_vein": 10, "pancreas": 11,
    "right_adrenal_gland": 12, "left_adrenal_gland": 13}


@dataclass(frozen=True)
class SourceCase:
    """One case to convert: its new identifier, its image file and its label file (None when it has none)."""
    case_id: str
    image: Path
    label: Optional[Path]


@dataclass
class ConversionResult:
    dataset_dir: Path
    training_cases: List[str] = field(default_factory=list)
    test_cases: List[str] = field(default_factory=list)
    written_splits: List[Path] = field(default_factory=list)
    skipped_splits: Dict[str, List[str]] = field(default_factory=dict)  # split name -> its missing cases


# ------------------------------------------------------------------------------------------------ dataset folder
def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 0 < int(dataset_id) < 1000:
        raise ValueError(f"nnU-Net dataset IDs have three digits (1-999), got {dataset_id}.")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ValueError(f"Dataset name {name!r} may only hold letters, digits, '_' and '-'.")
    return f"Dataset{int(dataset_id):03d}_{name}"


def prepare_dataset_folder(raw_root: Path, dataset_id: int, name: str, overwrite: bool) -> Path:
    """Create ``raw_root/DatasetXXX_name`` (empty). Refuses an ID that another dataset folder already uses, and an
    existing folder of the same name unless ``overwrite`` (which deletes that folder first)."""
    raw_root = Path(raw_root)
    folder = raw_root / dataset_folder_name(dataset_id, name)
    others = [p for p in raw_root.glob(f"Dataset{int(dataset_id):03d}_*") if p != folder] if raw_root.is_dir() else []
    if others:
        raise ValueError(f"Dataset ID {dataset_id} is already used by {others[0]}; choose another ID.")
    if folder.exists():
        if not overwrite:
            raise FileExistsError(f"{folder} exists; pass overwrite=True (--overwrite) to replace it.")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


# --------------------------------------------------------------------------------------------------- case writing
def _image_information(path: Path):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise ValueError(f"Cannot read {path} as an image: {error}") from None
    return reader


def write_label_on_image_grid(label_file: Path, image_file: Path, destination: Path,
                              allowed_labels: Iterable[int]) -> None:
    """Check ``label_file`` against ``image_file`` and write it as uint8 with the image's geometry.

    Raises ValueError naming the files when sizes differ, geometry differs beyond the tolerances, or values are not
    integers among ``allowed_labels``.
    """
    import SimpleITK as sitk

    image_info = _image_information(image_file)
    try:
        label = sitk.ReadImage(str(label_file))
    except RuntimeError as error:
        raise ValueError(f"Cannot read {label_file} as an image: {error}") from None
    problems = []
    if tuple(label.GetSize()) != tuple(image_info.GetSize()):
        problems.append(f"size (x, y, z) {label.GetSize()} vs {image_info.GetSize()}")
    elif not np.allclose(label.GetSpacing(), image_info.GetSpacing(), rtol=SPACING_RTOL, atol=0):
        problems.append(f"spacing {label.GetSpacing()} vs {image_info.GetSpacing()}")
    elif not np.allclose(label.GetOrigin(), image_info.GetOrigin(), rtol=0, atol=ORIGIN_ATOL_MM):
        problems.append(f"origin {label.GetOrigin()} vs {image_info.GetOrigin()}")
    elif not np.allclose(label.GetDirection(), image_info.GetDirection(), rtol=0, atol=DIRECTION_ATOL):
        problems.append(f"direction {label.GetDirection()} vs {image_info.GetDirection()}")
    if problems:
        raise ValueError(f"Label {label_file} does not match image {image_file}: {problems[0]}")
    values = sitk.GetArrayFromImage(label)
    if not np.issubdtype(values.dtype, np.integer) and not np.all(np.mod(values, 1) == 0):
        raise ValueError(f"Label {label_file} holds non-integer values.")
    unknown = sorted(set(np.unique(values).astype(np.int64).tolist()) - set(allowed_labels))
    if unknown:
        raise ValueError(f"Label {label_file} holds values {unknown} that are not labels of the dataset "
                         f"({sorted(allowed_labels)}).")
    out = sitk.GetImageFromArray(values.astype(np.uint8))
    out.SetSpacing(image_info.GetSpacing())
    out.SetOrigin(image_info.GetOrigin())
    out.SetDirection(image_info.GetDirection())
    sitk.WriteImage(out, str(destination), True)


def copy_image(image_file: Path, destination: Path) -> None:
    """Copy a .nii.gz image unchanged; other formats are re-written as .nii.gz through SimpleITK."""
    if image_file.name.endswith(FILE_ENDING):
        shutil.copyfile(image_file, destination)
    else:
        import SimpleITK as sitk
        sitk.WriteImage(sitk.ReadImage(str(image_file)), str(destination), True)


def convert_cases(cases: Sequence[SourceCase], images_dir: Path, labels_dir: Optional[Path],
                  allowed_labels: Iterable[int], description: str, show_progress: bool = True) -> List[str]:
    """Write every case's image (and label, when it has one and ``labels_dir`` is given); returns the case IDs."""
    from tqdm import tqdm

    allowed_labels = set(allowed_labels)
    images_dir.mkdir(parents=True, exist_ok=True)
    if labels_dir is not None:
        labels_dir.mkdir(parents=True, exist_ok=True)
    for case in tqdm(cases, desc=description, unit="case", disable=not show_progress):
        if not case.image.is_file():
            raise FileNotFoundError(f"Image of case {case.case_id} not found: {case.image}")
        copy_image(case.image, images_dir / f"{case.case_id}_0000{FILE_ENDING}")
        if case.label is not None and labels_dir is not None:
            write_label_on_image_grid(case.label, case.image, labels_dir / f"{case.case_id}{FILE_ENDING}",
                                      allowed_labels)
    return [case.case_id for case in cases]


def write_dataset_json(dataset_dir: Path, channel_name: str, labels: Dict[str, int], num_training: int,
                       description: str, reference: str, license_text: str) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    generate_dataset_json(str(dataset_dir), {0: channel_name}, labels, num_training, FILE_ENDING,
                          dataset_name=dataset_dir.name, description=description, reference=reference,
                          license=license_text, converted_by="nnunetv2_scdl (nnUNetv2_scdl_convert_dataset)")


def write_paper_splits(result: ConversionResult, splits: Iterable[PaperSplit]) -> None:
    """Write each split whose cases all exist in the converted dataset; record the others with their missing cases.
    Test cases may sit in imagesTs or, when nothing was held out, in imagesTr."""
    for split in splits:
        missing = missing_cases(split, result.training_cases, result.test_cases + result.training_cases)
        if missing:
            result.skipped_splits[split.name] = missing
            continue
        path = result.dataset_dir / SPLITS_FOLDER / f"{split.name}.json"
        result.written_splits.append(write_split_json(split, result.dataset_dir.name, path))


# --------------------------------------------------------------------------------------------------------- Synapse
def find_synapse_training_dir(source: Path) -> Path:
    """The folder holding img/ and label/: SOURCE/RawData/Training, SOURCE/Training or SOURCE itself."""
    source = Path(source)
    candidates = [source / "RawData" / "Training", source / "Training", source]
    for candidate in candidates:
        if (candidate / "img").is_dir() and (candidate / "label").is_dir():
            return candidate
    raise FileNotFoundError(f"No Synapse training folder with img/ and label/ found; looked in: "
                            f"{', '.join(str(c) for c in candidates)}")


def synapse_source_cases(source: Path) -> Dict[int, SourceCase]:
    """{scan number: SourceCase} for every img/imgNNNN.nii.gz; each needs label/labelNNNN.nii.gz."""
    training_dir = find_synapse_training_dir(source)
    cases: Dict[int, SourceCase] = {}
    for image in sorted((training_dir / "img").iterdir()):
        match = re.fullmatch(r"img(\d{4})\.nii\.gz", image.name)
        if match is None:
            continue
        number = int(match.group(1))
        label = training_dir / "label" / f"label{match.group(1)}.nii.gz"
        if not label.is_file():
            raise FileNotFoundError(f"No label for {image}: expected {label}")
        cases[number] = SourceCase(synapse_case_id(number), image, label)
    if not cases:
        raise FileNotFoundError(f"No imgNNNN.nii.gz files in {training_dir / 'img'}")
    return cases


def convert_synapse(source: Path, raw_root: Path, dataset_id: int, name: str = "Synapse", test_set: str = "ga",
                    overwrite: bool = False, show_progress: bool = True) -> ConversionResult:
    """Convert Synapse/BTCV; ``test_set`` ('ga', 'genericssl' or 'none') picks the 6 scans held out in imagesTs and the
    split files written (see ``paper_splits.SYNAPSE_SPLITS_BY_TEST_SET``)."""
    if test_set not in SYNAPSE_TEST_SETS:
        raise ValueError(f"Unknown Synapse test set {test_set!r}; choose one of {tuple(SYNAPSE_TEST_SETS)}.")
    cases = synapse_source_cases(source)
    dataset_dir = prepare_dataset_folder(raw_root, dataset_id, name, overwrite)
    result = ConversionResult(dataset_dir)
    held_out = set(SYNAPSE_TEST_SETS[test_set])
    labels = set(SYNAPSE_LABELS.values())
    result.training_cases = convert_cases([c for n, c in sorted(cases.items()) if n not in held_out],
                                          dataset_dir / "imagesTr", dataset_dir / "labelsTr", labels,
                                          "Synapse imagesTr", show_progress)
    if held_out:
        result.test_cases = convert_cases([c for n, c in sorted(cases.items()) if n in held_out],
                                          dataset_dir / "imagesTs", dataset_dir / "labelsTs", labels,
                                          "Synapse imagesTs", show_progress)
    write_dataset_json(dataset_dir, "CT", SYNAPSE_LABELS, len(result.training_cases),
                       f"BTCV (Synapse multi-organ) training scans; test set '{test_set}' in imagesTs/labelsTs.",
                       "Landman et al., MICCAI 2015 Multi-Atlas Labeling Beyond the Cranial Vault (BTCV)",
                       "Synapse terms of use (research only)")
    write_paper_splits(result, (synapse_split(split_name) for split_name in SYNAPSE_SPLITS_BY_TEST_SET[test_set]))
    return result


# ------------------------------------------------------------------------------------------------------------ AMOS
def _label_name(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).strip().lower()).strip("_")


def amos_labels(meta: dict, source: str) -> Dict[str, int]:
    """nnU-Net labels {name: value} from an AMOS dataset.json 'labels' entry ({"0": "background", "1": "spleen",
    ...}); names are lower-cased with runs of other characters replaced by '_' ('prostate/uterus' ->
    'prostate_uterus')."""
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{source} has no 'labels' entry.")
    if all(str(key).isdigit() for key in raw):
        by_value = {int(key): _label_name(value) for key, value in raw.items()}
    else:
        by_value = {int(value): _label_name(key) for key, value in raw.items()}
    if by_value.get(0) is None:
        raise ValueError(f"{source}: no label 0 (background).")
    by_value[0] = "background"
    names = list(by_value.values())
    if len(set(names)) != len(names) or "" in names:
        raise ValueError(f"{source}: label names are empty or not unique after normalisation: {by_value}")
    return {name: value for value, name in sorted(by_value.items())}


def _amos_entries(source: Path, meta: dict, key: str, images_folder: str, labels_folder: str) -> List[SourceCase]:
    """Cases of one part ('training' or 'validation') from dataset.json entries, or from the folders without them."""
    cases = []
    entries = meta.get(key)
    if entries:
        for entry in entries:
            image = (source / entry["image"]).resolve() if isinstance(entry, dict) else (source / entry).resolve()
            case_id = image.name[:-len(FILE_ENDING)] if image.name.endswith(FILE_ENDING) else image.stem
            label_ref = entry.get("label") if isinstance(entry, dict) else None
            label = (source / label_ref).resolve() if label_ref else source / labels_folder / image.name
            cases.append(SourceCase(case_id, image, label if label.is_file() else None))
    elif (source / images_folder).is_dir():
        for image in sorted((source / images_folder).glob(f"*{FILE_ENDING}")):
            label = source / labels_folder / image.name
            cases.append(SourceCase(image.name[:-len(FILE_ENDING)], image, label if label.is_file() else None))
    return cases


def amos_source_cases(source: Path) -> Tuple[dict, List[SourceCase], List[SourceCase]]:
    """(dataset.json content, training cases, validation cases) of an AMOS22 folder. Training cases must have labels
    (FileNotFoundError naming the missing file otherwise)."""
    source = Path(source)
    dataset_json = source / "dataset.json"
    if not dataset_json.is_file():
        raise FileNotFoundError(f"AMOS dataset.json not found: {dataset_json}")
    with open(dataset_json, encoding="utf-8") as handle:
        meta = json.load(handle)
    training = _amos_entries(source, meta, "training", "imagesTr", "labelsTr")
    validation = _amos_entries(source, meta, "validation", "imagesVa", "labelsVa")
    if not training:
        raise FileNotFoundError(f"No AMOS training cases: {dataset_json} lists none and {source / 'imagesTr'} has no "
                                f"{FILE_ENDING} files.")
    for case in training:
        if case.label is None:
            raise FileNotFoundError(f"No label for AMOS training image {case.image} (expected it in labelsTr).")
    return meta, training, validation


def convert_amos(source: Path, raw_root: Path, dataset_id: int, name: str = "AMOS",
                 splits_txt_dir: Optional[Path] = None, verify_splits: bool = True,
                 channel_name: Optional[str] = None, overwrite: bool = False,
                 show_progress: bool = True) -> ConversionResult:
    """Convert AMOS22: training -> imagesTr/labelsTr, validation -> imagesTs (+ labelsTs where labelled).

    splits_txt_dir: folder of the papers' split text files; every labeled_{P}p.txt there becomes paper_splits/
    amos_{P}pct.json (checked against the papers' published split facts unless ``verify_splits`` is False).
    channel_name: nnU-Net channel name (it selects the normalisation); default: the dataset.json's modality '0',
    else 'CT'. Note the papers' AMOS split includes IDs >= 0500, which AMOS numbers as MRI scans.
    """
    source = Path(source)
    meta, training, validation = amos_source_cases(source)
    labels = amos_labels(meta, str(source / "dataset.json"))
    splits = []
    if splits_txt_dir is not None:
        percents = percents_in_txt_dir(splits_txt_dir)
        if not percents:
            raise FileNotFoundError(f"No labeled_{{P}}p.txt / unlabeled_{{P}}p.txt pairs in {splits_txt_dir}")
        splits = [amos_split_from_txt_dir(splits_txt_dir, percent, verify_splits) for percent in percents]
    if channel_name is None:
        channel_name = str((meta.get("modality") or {}).get("0", "CT"))
    dataset_dir = prepare_dataset_folder(raw_root, dataset_id, name, overwrite)
    result = ConversionResult(dataset_dir)
    values = set(labels.values())
    result.training_cases = convert_cases(training, dataset_dir / "imagesTr", dataset_dir / "labelsTr", values,
                                          "AMOS imagesTr", show_progress)
    if validation:
        has_labels = any(case.label is not None for case in validation)
        result.test_cases = convert_cases(validation, dataset_dir / "imagesTs",
                                          dataset_dir / "labelsTs" if has_labels else None, values,
                                          "AMOS imagesTs", show_progress)
    write_dataset_json(dataset_dir, channel_name, labels, len(result.training_cases),
                       "AMOS22 training cases in imagesTr/labelsTr; the official validation cases (the papers' "
                       "test set) in imagesTs/labelsTs.",
                       "Ji et al., AMOS: A Large-Scale Abdominal Multi-Organ Benchmark, NeurIPS 2022",
                       "see the AMOS22 terms of use")
    write_paper_splits(result, splits)
    return result
