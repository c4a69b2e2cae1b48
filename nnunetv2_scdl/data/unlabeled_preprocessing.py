"""Preprocess unlabeled images exactly like nnU-Net preprocesses labeled ones.

``nnUNetv2_plan_and_preprocess`` needs a label per case, so unlabeled images go through this module instead. Each
case is run through the plans' own preprocessor (``configuration_manager.preprocessor_class``) with
``seg_file=None`` (same transpose, nonzero cropping, normalisation and resampling as the labeled cases) and saved as
``run_case_save`` saves labeled cases (``nnUNetDatasetBlosc2.save_case`` with ``comp_blosc2_params`` chunks). The
``_seg`` file of an unlabeled case is only the nonzero mask (0 inside, -1 outside), and its properties have no
``class_locations``.

Sources of unlabeled cases (both may be combined):

- real-world mode: ``nnUNet_raw/DatasetX/imagesUnlabeled/{ID}_{XXXX}{file_ending}``;
- benchmark mode: the ``unlabeled`` lists of ``nnUNet_preprocessed/DatasetX/splits_final.json`` (see
  :mod:`nnunetv2_scdl.data.splits`), whose images are read from ``imagesTr``. Their label files are never opened.

Output, a sibling of nnU-Net's ``<data_identifier>/`` (never inside it)::

    nnUNet_preprocessed/DatasetX/<data_identifier>_unlabeled/
        {ID}.b2nd  {ID}_seg.b2nd  {ID}.pkl   per case
        unlabeled_manifest.json              {"plans_identifier", "configuration", "data_identifier",
                                              "preprocessing_fingerprint", "cases": {ID: {"source", "images"}},
                                              "source_files": {image: {"size", "mtime_ns", "ctime_ns", "sha256"}}}

Runs are incremental: a case is preprocessed again only if it is new, if its image files changed (a different SHA-256;
the hash is only recomputed for files whose size, mtime or ctime changed) or if the preprocessing changed (another
fingerprint, which redoes every case). Outputs of cases that are gone from the sources are dropped. ``overwrite``
redoes every case.

Everything is validated before anything is written: file names, channels, image headers, and the dimensionality and
voxel components of each channel against ``imagesTr``. Images that are constant or almost all zeros are preprocessed
with a warning naming the file. The new folder is built beside the old one (unchanged cases hard-linked, or copied
where links are impossible) and replaces it only once every case succeeded, so a failure never loses data
preprocessed before.
"""
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
from tqdm import tqdm

from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_scdl.data.splits import SplitError, benchmark_unlabeled_cases

UNLABELED_RAW_FOLDER = "imagesUnlabeled"
UNLABELED_FOLDER_SUFFIX = "_unlabeled"
MANIFEST_FILENAME = "unlabeled_manifest.json"
SOURCE_RAW_UNLABELED = "imagesUnlabeled"
SOURCE_BENCHMARK = "imagesTr"
COMMAND = "nnUNetv2_scdl_preprocess_unlabeled"
# file endings whose header SimpleITK can read without loading the voxels (the early readability check)
_SITK_HEADER_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".gipl", ".gipl.gz")
_MAX_LISTED_PROBLEMS = 20
CASE_FILE_SUFFIXES = (".b2nd", "_seg.b2nd", ".pkl")  # what nnU-Net's save_case writes per case
# an image channel with at least this share of zero voxels, or with a single value, gets a warning
ALMOST_EMPTY_ZERO_FRACTION = 0.999
_HASH_CHUNK_BYTES = 1 << 20


class UnlabeledDataError(ValueError):
    """Unlabeled data that cannot be preprocessed, or preprocessed unlabeled data that cannot be used."""


@dataclass(frozen=True)
class UnlabeledCase:
    """One unlabeled case: its ID, its image files (one per channel, in channel order) and where it comes from."""
    identifier: str
    image_files: tuple
    source: str  # SOURCE_RAW_UNLABELED or SOURCE_BENCHMARK


# ----------------------------------------------------------------------------------------------------------------------
# the folder and its manifest (what trainers call)
# ----------------------------------------------------------------------------------------------------------------------
def get_unlabeled_folder(preprocessed_dataset_folder_base: str, data_identifier: str) -> str:
    """``<preprocessed_dataset_folder_base>/<data_identifier>_unlabeled``, the sibling of nnU-Net's data folder."""
    return os.path.join(preprocessed_dataset_folder_base, data_identifier + UNLABELED_FOLDER_SUFFIX)


def _suggested_command(folder: str) -> str:
    base, name = os.path.split(os.path.normpath(folder))
    dataset = os.path.basename(base) or "DATASET"
    data_identifier = name[:-len(UNLABELED_FOLDER_SUFFIX)] if name.endswith(UNLABELED_FOLDER_SUFFIX) else name
    for configuration in ("3d_cascade_fullres", "3d_fullres", "3d_lowres", "2d"):
        if data_identifier.endswith("_" + configuration):
            plans = data_identifier[:-len(configuration) - 1]
            return f"{COMMAND} -d {dataset} -c {configuration} -p {plans}"
    return f"{COMMAND} -d {dataset} -c CONFIGURATION -p PLANS"


def assert_unlabeled_preprocessed(folder: str) -> None:
    """Raise FileNotFoundError, naming the command to run, unless ``folder`` holds preprocessed unlabeled data."""
    if not os.path.isfile(os.path.join(folder, MANIFEST_FILENAME)):
        state = "does not exist" if not os.path.isdir(folder) else f"has no {MANIFEST_FILENAME}"
        raise FileNotFoundError(
            f"No preprocessed unlabeled data: {folder} {state}. Preprocess the unlabeled images first (after "
            f"nnUNetv2_plan_and_preprocess): {_suggested_command(folder)}")


def load_unlabeled_manifest(folder: str) -> dict:
    """The manifest of a preprocessed unlabeled folder (FileNotFoundError with the command to run if absent)."""
    assert_unlabeled_preprocessed(folder)
    return load_json(os.path.join(folder, MANIFEST_FILENAME))


def list_unlabeled_identifiers(folder: str) -> List[str]:
    """Sorted IDs of the preprocessed unlabeled cases in ``folder``, after checking that the folder is complete.

    Raises FileNotFoundError if it was never preprocessed and :class:`UnlabeledDataError` if cases of the manifest
    lack files, or files lack a manifest entry.
    """
    manifest = load_unlabeled_manifest(folder)
    expected = set(manifest.get("cases", {}))
    present = set(nnUNetDatasetBlosc2.get_identifiers(folder))
    incomplete = sorted(i for i in expected if not _case_files_present(folder, i))
    unlisted = sorted(present - expected)
    if incomplete or unlisted:
        raise UnlabeledDataError(
            f"{folder} is inconsistent with its {MANIFEST_FILENAME}: "
            + (f"cases without their .b2nd/_seg.b2nd/.pkl files: {incomplete}. " if incomplete else "")
            + (f"cases not in the manifest: {unlisted}. " if unlisted else "")
            + f"Rerun {_suggested_command(folder)} (it redoes what is missing).")
    if not expected:
        raise UnlabeledDataError(f"{folder} holds no unlabeled cases. Rerun {_suggested_command(folder)}")
    return sorted(expected)


def _case_files_present(folder: str, identifier: str) -> bool:
    return all(os.path.isfile(os.path.join(folder, identifier + s)) for s in CASE_FILE_SUFFIXES)


# ----------------------------------------------------------------------------------------------------------------------
# finding and validating the unlabeled cases (reads file names and image headers only)
# ----------------------------------------------------------------------------------------------------------------------
def _problems_error(title: str, problems: List[str]) -> UnlabeledDataError:
    listed = problems[:_MAX_LISTED_PROBLEMS]
    more = len(problems) - len(listed)
    return UnlabeledDataError(title + "\n  " + "\n  ".join(listed) + (f"\n  ... and {more} more" if more else ""))


def _group_channel_files(folder: str, file_ending: str, num_channels: int,
                         only: Optional[Sequence[str]] = None) -> Dict[str, tuple]:
    """``{ID: (channel files...)}`` for files named ``{ID}_{XXXX}{file_ending}`` in ``folder``.

    With ``only`` (IDs), other files are ignored and missing IDs are errors; without it, every non-hidden file must
    follow the naming scheme. Raises :class:`UnlabeledDataError` listing every problem found.
    """
    pattern = re.compile(r"(?P<id>.+)_(?P<channel>\d{4})" + re.escape(file_ending))
    found: Dict[str, Dict[int, str]] = {}
    problems = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(".") or os.path.isdir(path):
            continue
        match = pattern.fullmatch(name)
        if match is None:
            if only is None:
                problems.append(f"{path}: unexpected file name or file ending; expected {{ID}}_{{XXXX}}{file_ending} "
                                f"(file_ending from dataset.json)")
            continue
        if only is not None and match.group("id") not in only:
            continue
        found.setdefault(match.group("id"), {})[int(match.group("channel"))] = path
    expected_channels = set(range(num_channels))
    for identifier, channels in sorted(found.items()):
        if set(channels) != expected_channels:
            names = ", ".join(os.path.basename(channels[c]) for c in sorted(channels))
            problems.append(f"{identifier}: wrong number of channels: found {names}; dataset.json channel_names "
                            f"expects {num_channels} channel(s), _0000 to _{num_channels - 1:04d}{file_ending}")
    if only is not None:
        for identifier in sorted(set(only) - set(found)):
            problems.append(f"{identifier}: no image {identifier}_0000{file_ending} in {folder}")
    if problems:
        raise _problems_error(f"Invalid unlabeled images in {folder}:", problems)
    return {i: tuple(channels[c] for c in sorted(channels)) for i, channels in found.items()}


@dataclass(frozen=True)
class ImageLayout:
    """What an image header says about the voxel grid: dimensionality, voxel components, size and spacing."""
    file: str
    dimension: int
    components: int  # values per voxel: 1 for a scalar image, 3 for RGB, ...
    size: tuple
    spacing: tuple

    def describe(self) -> str:
        kind = f"{self.dimension}-D" + (f", {self.components} components per voxel" if self.components != 1 else "")
        return f"{kind}, size {'x'.join(map(str, self.size))}"


def read_image_layout(image_file: str) -> Optional[ImageLayout]:
    """The header of ``image_file`` (voxels are not read); None for file endings SimpleITK cannot read headers of.

    Raises RuntimeError (SimpleITK's) for unreadable files.
    """
    if not image_file.endswith(_SITK_HEADER_ENDINGS):
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(image_file)
    reader.ReadImageInformation()
    return ImageLayout(image_file, reader.GetDimension(), reader.GetNumberOfComponents(), tuple(reader.GetSize()),
                       tuple(round(s, 5) for s in reader.GetSpacing()))


def _training_reference_layouts(raw_dataset_folder: str, dataset_json: dict,
                                num_channels: int) -> Dict[int, ImageLayout]:
    """``{channel: layout}`` of the first training case (nnU-Net checks that all of imagesTr agree); empty if there is
    no readable training image."""
    if "dataset" in dataset_json:
        entries = dataset_json["dataset"]
        files = [_resolve(raw_dataset_folder, f) for f in entries[sorted(entries)[0]]["images"]] if entries else []
    else:
        images_tr = os.path.join(raw_dataset_folder, "imagesTr")
        try:
            grouped = _group_channel_files(images_tr, dataset_json["file_ending"], num_channels,
                                           only=sorted(_training_case_ids(raw_dataset_folder, dataset_json))[:1])
        except (OSError, UnlabeledDataError):
            return {}
        files = next(iter(grouped.values()), ())
    layouts = {}
    for channel, image_file in enumerate(files):
        try:
            layout = read_image_layout(image_file)
        except RuntimeError:
            continue
        if layout is not None:
            layouts[channel] = layout
    return layouts


def _check_image_headers(cases: Sequence[UnlabeledCase], reference: Dict[int, ImageLayout]) -> None:
    """Read every image header (where SimpleITK can), so that unreadable files, channels that do not match each
    other and images shaped unlike ``reference`` (imagesTr's layout per channel) fail before anything is written."""
    problems = []
    for case in cases:
        layouts = []
        for channel, image_file in enumerate(case.image_files):
            try:
                layout = read_image_layout(image_file)
            except RuntimeError as e:
                lines = [line.strip() for line in str(e).splitlines() if line.strip()] or ["unknown error"]
                reason = next((line for line in lines if "ERROR" in line), lines[0])
                problems.append(f"{image_file}: unreadable image file ({reason})")
                continue
            if layout is None:
                continue
            layouts.append(layout)
            expected = reference.get(channel)
            if expected is not None and (layout.dimension, layout.components) != (expected.dimension,
                                                                                   expected.components):
                problems.append(f"{image_file}: {layout.describe()}, but channel {channel} of imagesTr is "
                                f"{expected.describe()} ({os.path.basename(expected.file)}); unlabeled images need "
                                f"the dimensionality and voxel components of the training images")
        if len({(layout.size, layout.spacing) for layout in layouts}) > 1:
            problems.append(f"{case.identifier}: its channels differ in size or spacing: "
                            + "; ".join(f"{os.path.basename(layout.file)} size {layout.size} spacing {layout.spacing}"
                                        for layout in layouts))
    if problems:
        raise _problems_error("Cannot use these unlabeled images:", problems)


def _training_case_ids(raw_dataset_folder: str, dataset_json: dict) -> set:
    if "dataset" in dataset_json:
        return set(dataset_json["dataset"])
    images_tr = os.path.join(raw_dataset_folder, "imagesTr")
    if not os.path.isdir(images_tr):
        return set()
    pattern = re.compile(r"(.+)_\d{4}" + re.escape(dataset_json["file_ending"]))
    return {m.group(1) for m in map(pattern.fullmatch, os.listdir(images_tr)) if m}


def collect_unlabeled_cases(raw_dataset_folder: str, preprocessed_dataset_folder_base: str,
                            dataset_json: dict) -> List[UnlabeledCase]:
    """Find the unlabeled cases of both sources and validate them (names, channels, ID clashes, headers).

    Raises :class:`UnlabeledDataError` naming every file and problem found. Label files are never opened.
    """
    file_ending = dataset_json["file_ending"]
    num_channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
    cases: List[UnlabeledCase] = []

    unlabeled_folder = os.path.join(raw_dataset_folder, UNLABELED_RAW_FOLDER)
    if os.path.isdir(unlabeled_folder):
        grouped = _group_channel_files(unlabeled_folder, file_ending, num_channels)
        clashes = sorted(set(grouped) & _training_case_ids(raw_dataset_folder, dataset_json))
        if clashes:
            raise _problems_error(
                f"These IDs in {unlabeled_folder} are also training cases in imagesTr; unlabeled IDs must be new:",
                [f"{i}: {os.path.basename(grouped[i][0])}" for i in clashes])
        cases += [UnlabeledCase(i, files, SOURCE_RAW_UNLABELED) for i, files in sorted(grouped.items())]

    try:
        benchmark_ids = benchmark_unlabeled_cases(preprocessed_dataset_folder_base)
    except SplitError as e:
        raise UnlabeledDataError(str(e)) from None
    if benchmark_ids:
        if "dataset" in dataset_json:
            entries = dataset_json["dataset"]
            missing = [i for i in benchmark_ids if i not in entries]
            if missing:
                raise UnlabeledDataError(f"These 'unlabeled' cases of splits_final.json are not in the 'dataset' key "
                                         f"of dataset.json: {missing}")
            grouped = {i: tuple(_resolve(raw_dataset_folder, f) for f in entries[i]["images"]) for i in benchmark_ids}
        else:
            grouped = _group_channel_files(os.path.join(raw_dataset_folder, "imagesTr"), file_ending, num_channels,
                                           only=benchmark_ids)
        cases += [UnlabeledCase(i, files, SOURCE_BENCHMARK) for i, files in sorted(grouped.items())]

    if not cases:
        state = "is empty" if os.path.isdir(unlabeled_folder) else "does not exist"
        raise UnlabeledDataError(
            f"No unlabeled cases found: {unlabeled_folder} {state}, and "
            f"{os.path.join(preprocessed_dataset_folder_base, 'splits_final.json')} lists no 'unlabeled' cases. Put "
            f"unlabeled images in {UNLABELED_RAW_FOLDER}/ as {{ID}}_{{XXXX}}{file_ending}, or write a benchmark split "
            f"with nnUNetv2_scdl_make_split.")
    _check_image_headers(cases, _training_reference_layouts(raw_dataset_folder, dataset_json, num_channels))
    return cases


def _resolve(raw_dataset_folder: str, path: str) -> str:
    path = os.path.expandvars(path)
    return path if os.path.isabs(path) else os.path.join(raw_dataset_folder, path)


# ----------------------------------------------------------------------------------------------------------------------
# preprocessing (worker side)
# ----------------------------------------------------------------------------------------------------------------------
_WORKER_STATE: dict = {}


def _init_worker(plans: dict, configuration: str, dataset_json: dict) -> None:
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    _WORKER_STATE.update(plans_manager=plans_manager, configuration_manager=configuration_manager,
                         preprocessor=configuration_manager.preprocessor_class(verbose=False),
                         dataset_json=dataset_json)


def preprocess_unlabeled_case(image_files: Sequence[str], plans_manager: PlansManager, configuration_manager,
                              dataset_json: dict, preprocessor=None):
    """``(data, nonzero_mask_seg, properties)`` for one unlabeled case, from the plans' own preprocessor."""
    if preprocessor is None:
        preprocessor = configuration_manager.preprocessor_class(verbose=False)
    return preprocessor.run_case(list(image_files), None, plans_manager, configuration_manager, dataset_json)


def save_preprocessed_case(data: np.ndarray, seg: np.ndarray, properties: dict, output_filename_truncated: str,
                           patch_size: Sequence[int]) -> None:
    """Save like nnU-Net's ``run_case_save``: float32 data, int16 seg, blosc2 chunks fitted to the patch size."""
    data = data.astype(np.float32, copy=False)
    seg = seg.astype(np.int16, copy=False)
    block_size_data, chunk_size_data = comp_blosc2_params(data.shape, tuple(patch_size), data.itemsize)
    block_size_seg, chunk_size_seg = comp_blosc2_params(seg.shape, tuple(patch_size), seg.itemsize)
    nnUNetDatasetBlosc2.save_case(data, seg, properties, output_filename_truncated,
                                  chunks=chunk_size_data, blocks=block_size_data,
                                  chunks_seg=chunk_size_seg, blocks_seg=block_size_seg)


def content_warnings(images: np.ndarray, image_files: Sequence[str]) -> List[str]:
    """Warnings, naming the file, for channels of ``images`` (``[c, ...]``, as nnU-Net's readers return them) that
    hold a single value or at least :data:`ALMOST_EMPTY_ZERO_FRACTION` zeros: blank or truncated scans."""
    warnings = []
    for channel, values in enumerate(images):
        name = image_files[channel] if len(image_files) == len(images) else ", ".join(image_files)
        zero_fraction = 1 - np.count_nonzero(values) / max(values.size, 1)
        if values.size == 0 or values.min() == values.max():
            value = f"{values.flat[0]:g}" if values.size else "none"
            warnings.append(f"{name}: every voxel has the same value ({value}); is it a blank image?")
        elif zero_fraction >= ALMOST_EMPTY_ZERO_FRACTION:
            warnings.append(f"{name}: {zero_fraction:.2%} of its voxels are 0; is it empty or truncated?")
    return warnings


def _run_one(identifier: str, image_files: Sequence[str], output_folder: str) -> Tuple[str, List[str]]:
    """Preprocess and save one case; return its ID and the warnings about its content."""
    state = _WORKER_STATE
    try:
        # read once more for the content check: the plans' preprocessor must run unchanged, reading by itself
        images, _ = state["plans_manager"].image_reader_writer_class().read_images(list(image_files))
        warnings = content_warnings(images, image_files)
        del images
        data, seg, properties = preprocess_unlabeled_case(image_files, state["plans_manager"],
                                                          state["configuration_manager"], state["dataset_json"],
                                                          state["preprocessor"])
    except Exception as e:  # the reader's own errors rarely name the file
        raise UnlabeledDataError(f"Cannot preprocess unlabeled case {identifier} ({', '.join(image_files)}): "
                                 f"{type(e).__name__}: {e}") from None
    save_preprocessed_case(data, seg, properties, os.path.join(output_folder, identifier),
                           state["configuration_manager"].patch_size)
    return identifier, warnings


# ----------------------------------------------------------------------------------------------------------------------
# the whole command
# ----------------------------------------------------------------------------------------------------------------------
def preprocessing_fingerprint(plans: dict, configuration: str) -> str:
    """Hash of everything in the plans that changes preprocessed data (not the network, batch or patch size).

    Plans derived for another device (e.g. ``nnUNetPlans_cpu``) keep the data identifier and the fingerprint, so they
    reuse the same preprocessed unlabeled folder.
    """
    configuration_dict = PlansManager(plans).get_configuration(configuration).configuration
    relevant = {k: configuration_dict.get(k) for k in (
        "data_identifier", "preprocessor_name", "spacing", "normalization_schemes", "use_mask_for_norm",
        "resampling_fn_data", "resampling_fn_data_kwargs", "resampling_fn_seg", "resampling_fn_seg_kwargs")}
    relevant.update({k: plans.get(k) for k in (
        "transpose_forward", "image_reader_writer", "foreground_intensity_properties_per_channel")})
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_file_record(path: str, previous: Optional[dict] = None) -> dict:
    """``{"size", "mtime_ns", "ctime_ns", "sha256"}`` of a source image. The hash of ``previous`` (the record of an
    earlier run) is reused when size, mtime and ctime are unchanged; any write to the file changes its ctime."""
    status = os.stat(path)
    record = {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "ctime_ns": status.st_ctime_ns}
    if previous is not None and all(previous.get(k) == v for k, v in record.items()) and "sha256" in previous:
        record["sha256"] = previous["sha256"]
        return record
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    record["sha256"] = digest.hexdigest()
    return record


def _build_manifest(plans_identifier: str, configuration: str, data_identifier: str, fingerprint: str,
                    cases: Sequence[UnlabeledCase], raw_dataset_folder: str, source_files: Dict[str, dict]) -> dict:
    return {
        "plans_identifier": plans_identifier,
        "configuration": configuration,
        "data_identifier": data_identifier,
        "preprocessing_fingerprint": fingerprint,
        "cases": {c.identifier: {"source": c.source, "images": _relative_images(c, raw_dataset_folder)}
                  for c in sorted(cases, key=lambda c: c.identifier)},
        "source_files": {name: source_files[name] for name in sorted(source_files)},
    }


def _relative_images(case: UnlabeledCase, raw_dataset_folder: str) -> List[str]:
    return [os.path.relpath(f, raw_dataset_folder) for f in case.image_files]


def _existing_manifest(folder: str) -> Optional[dict]:
    """The manifest of ``folder`` if it exists and is readable, else None."""
    try:
        manifest = load_unlabeled_manifest(folder)
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("cases"), dict) else None


@dataclass
class UpdatePlan:
    """What one output folder needs: cases to (re)preprocess, to keep, and to drop."""
    target: str
    configuration: str
    manifest: dict  # the manifest the folder will have
    reason: str  # why every case is preprocessed ("" when the run is incremental)
    new: List[UnlabeledCase]
    changed: List[UnlabeledCase]
    kept: List[str]
    removed: List[str]
    manifest_outdated: bool  # the data are up to date but the recorded file times are not

    @property
    def to_preprocess(self) -> List[UnlabeledCase]:
        return sorted(self.new + self.changed, key=lambda c: c.identifier)

    @property
    def data_up_to_date(self) -> bool:
        return not (self.new or self.changed or self.removed)


def _plan_update(target: str, configuration: str, manifest: dict, cases: Sequence[UnlabeledCase],
                 raw_dataset_folder: str, overwrite: bool) -> UpdatePlan:
    """Compare the sources with ``target``'s manifest: which cases are new, changed, unchanged or gone."""
    existing = _existing_manifest(target) if os.path.isdir(target) else None
    reason = ""
    if overwrite:
        reason = "--overwrite"
    elif not os.path.isdir(target):
        reason = "a new folder"
    elif existing is None:
        reason = f"{MANIFEST_FILENAME} is missing or unreadable"
    elif existing is not None and existing.get("preprocessing_fingerprint") != manifest["preprocessing_fingerprint"]:
        reason = "the plans preprocess differently now"
    if reason:
        return UpdatePlan(target, configuration, manifest, reason, new=list(cases), changed=[], kept=[],
                          removed=[], manifest_outdated=False)
    old_cases, old_files = existing["cases"], existing.get("source_files", {})
    new, changed, kept = [], [], []
    for case in cases:
        images = _relative_images(case, raw_dataset_folder)
        old = old_cases.get(case.identifier)
        if old is None:
            new.append(case)
        elif (old.get("source") != case.source or old.get("images") != images
              or any(old_files.get(i, {}).get("sha256") != manifest["source_files"][i]["sha256"] for i in images)
              or not _case_files_present(target, case.identifier)):
            changed.append(case)
        else:
            kept.append(case.identifier)
    removed = sorted(set(old_cases) - {c.identifier for c in cases})
    manifest_outdated = any(old_files.get(i) != manifest["source_files"][i]
                            for c in cases for i in _relative_images(c, raw_dataset_folder))
    return UpdatePlan(target, configuration, manifest, reason, new, changed, kept, removed, manifest_outdated)


def _preprocess_into(folder: str, cases: Sequence[UnlabeledCase], plans: dict, configuration: str,
                     dataset_json: dict, num_processes: int) -> List[str]:
    """Preprocess ``cases`` into ``folder``; return the content warnings (also printed as they come)."""
    warnings: List[str] = []

    def finished(result: Tuple[str, List[str]]) -> None:
        for warning in result[1]:
            tqdm.write(f"warning: {warning}", file=sys.stderr)
        warnings.extend(result[1])
        progress.update()

    progress = tqdm(total=len(cases), desc=f"Preprocessing unlabeled cases ({configuration})")
    with progress:
        if num_processes <= 1:
            _init_worker(plans, configuration, dataset_json)
            for case in cases:
                finished(_run_one(case.identifier, case.image_files, folder))
            return warnings
        with ProcessPoolExecutor(max_workers=num_processes, mp_context=get_context("spawn"),
                                 initializer=_init_worker, initargs=(plans, configuration, dataset_json)) as pool:
            futures = [pool.submit(_run_one, c.identifier, c.image_files, folder) for c in cases]
            try:
                for future in as_completed(futures):
                    finished(future.result())  # re-raises a worker's error; a killed worker raises BrokenProcessPool
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return warnings


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)  # nnU-Net never writes a finished case file again, so sharing it is safe
    except OSError:
        shutil.copy2(source, destination)


def _write_manifest_atomically(folder: str, manifest: dict) -> None:
    partial = os.path.join(folder, f".{MANIFEST_FILENAME}.partial")
    save_json(manifest, partial, sort_keys=False)
    os.replace(partial, os.path.join(folder, MANIFEST_FILENAME))


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _swap_in(tmp_folder: str, target: str) -> None:
    """Replace ``target`` by ``tmp_folder``; the old folder is removed only after the new one is in place."""
    if not os.path.isdir(target):
        os.rename(tmp_folder, target)
        return
    old = tmp_folder + ".old"
    os.rename(target, old)
    try:
        os.rename(tmp_folder, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old)


def _apply_update(plan: UpdatePlan, preprocessed_base: str, plans: dict, dataset_json: dict,
                  num_processes: int) -> List[str]:
    """Build the new folder beside the old one (kept cases linked, the others preprocessed) and swap it in."""
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(plan.target)}.tmp-", dir=preprocessed_base)
    try:
        os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes it private; give it a normal folder's mode
        for identifier in plan.kept:
            for suffix in CASE_FILE_SUFFIXES:
                _link_or_copy(os.path.join(plan.target, identifier + suffix), os.path.join(tmp, identifier + suffix))
        warnings = _preprocess_into(tmp, plan.to_preprocess, plans, plan.configuration, dataset_json, num_processes)
        _write_manifest_atomically(tmp, plan.manifest)
        _swap_in(tmp, plan.target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return warnings


def _load_plans_and_configurations(preprocessed_base: str, dataset_name: str, plans_identifier: str,
                                   configurations: Sequence[str]):
    plans_file = os.path.join(preprocessed_base, plans_identifier + ".json")
    hint = f"Run nnUNetv2_plan_and_preprocess -d {dataset_name} -c {' '.join(configurations)} first."
    if not os.path.isfile(plans_file):
        raise UnlabeledDataError(f"Plans file {plans_file} not found. {hint}")
    plans = load_json(plans_file)
    plans_manager = PlansManager(plans)
    unknown = [c for c in configurations if c not in plans_manager.available_configurations]
    if unknown:
        raise UnlabeledDataError(f"Configuration(s) {unknown} not found in {plans_file} (it has "
                                 f"{plans_manager.available_configurations}). {hint}")
    return plans, {c: plans_manager.get_configuration(c) for c in configurations}


def _source_file_records(cases: Sequence[UnlabeledCase], raw_dataset_folder: str, previous: Dict[str, dict],
                         verbose: bool) -> Dict[str, dict]:
    """:func:`source_file_record` of every image of ``cases``, keyed by its path relative to the raw folder."""
    files = [(os.path.relpath(f, raw_dataset_folder), f) for c in cases for f in c.image_files]
    return {name: source_file_record(path, previous.get(name))
            for name, path in tqdm(files, desc="Checking unlabeled source files", leave=False,
                                   disable=not verbose or len(files) < 100)}


def preprocess_unlabeled(dataset_name_or_id, configurations: Sequence[str], plans_identifier: str = "nnUNetPlans",
                         num_processes: int = 2, overwrite: bool = False, verbose: bool = True) -> Dict[str, str]:
    """Preprocess the new and changed unlabeled cases of a dataset for each configuration and drop the outputs of
    removed ones; return ``{configuration: status}``.

    ``status`` is ``"written"`` (a new folder), ``"updated"`` (some cases added, redone or dropped), ``"overwritten"``
    (every case redone: ``overwrite``, or the preprocessing changed) or ``"up to date"``. Raises
    :class:`UnlabeledDataError` for any bad input, before anything is written; on any error the folder keeps what it
    held before.
    """
    unset = [p.env_var_name for p in (nnUNet_raw, nnUNet_preprocessed) if not p.is_set()]
    if unset:
        raise UnlabeledDataError(f"{' and '.join(unset)} must be set (see nnU-Net's "
                                 f"documentation/setting_up_paths.md).")
    try:
        dataset_name = maybe_convert_to_dataset_name(dataset_name_or_id)
    except (RuntimeError, ValueError) as e:  # unknown ID, or neither an ID nor a DatasetXXX_ name
        raise UnlabeledDataError(str(e)) from None
    raw_folder = os.path.join(nnUNet_raw, dataset_name)
    preprocessed_base = os.path.join(nnUNet_preprocessed, dataset_name)
    if not os.path.isdir(raw_folder):
        raise UnlabeledDataError(f"Raw dataset {raw_folder} not found (nnUNet_raw={nnUNet_raw.get()}).")
    configurations = list(dict.fromkeys(configurations))
    plans, managers = _load_plans_and_configurations(preprocessed_base, dataset_name, plans_identifier,
                                                     configurations)
    dataset_json_file = os.path.join(preprocessed_base, "dataset.json")
    if not os.path.isfile(dataset_json_file):
        raise UnlabeledDataError(f"{dataset_json_file} not found. Run nnUNetv2_plan_and_preprocess -d "
                                 f"{dataset_name} first.")
    dataset_json = load_json(dataset_json_file)
    cases = collect_unlabeled_cases(raw_folder, preprocessed_base, dataset_json)

    # one job per output folder (configurations that share a data identifier share the folder)
    jobs = {}
    for configuration, manager in managers.items():
        jobs.setdefault(manager.data_identifier, configuration)
    updates = {}
    for data_identifier, configuration in jobs.items():
        target = get_unlabeled_folder(preprocessed_base, data_identifier)
        existing = _existing_manifest(target) if os.path.isdir(target) else None
        source_files = _source_file_records(cases, raw_folder, (existing or {}).get("source_files", {}), verbose)
        manifest = _build_manifest(plans_identifier, configuration, data_identifier,
                                   preprocessing_fingerprint(plans, configuration), cases, raw_folder, source_files)
        updates[data_identifier] = _plan_update(target, configuration, manifest, cases, raw_folder, overwrite)

    statuses = {}
    counts = {s: sum(c.source == s for c in cases) for s in (SOURCE_RAW_UNLABELED, SOURCE_BENCHMARK)}
    for data_identifier, plan in updates.items():
        configuration, target = plan.configuration, plan.target
        if plan.data_up_to_date:
            if plan.manifest_outdated:  # e.g. files touched or copied: same content, new times
                _write_manifest_atomically(target, plan.manifest)
            statuses[configuration] = "up to date"
            if verbose:
                print(f"{target}: its {len(cases)} cases are up to date; nothing to do (--overwrite redoes them).")
            continue
        if verbose:
            print(f"{dataset_name} {configuration}: {len(cases)} unlabeled cases ({counts[SOURCE_RAW_UNLABELED]} "
                  f"from {UNLABELED_RAW_FOLDER}/, {counts[SOURCE_BENCHMARK]} from imagesTr via splits_final.json) "
                  f"in {target}: "
                  + (f"preprocessing every case ({plan.reason})" if plan.reason else
                     f"{len(plan.new)} new, {len(plan.changed)} changed, {len(plan.removed)} removed, "
                     f"{len(plan.kept)} unchanged"))
        if not os.path.isdir(os.path.join(preprocessed_base, data_identifier)):
            print(f"Note: the labeled cases of {configuration} are not preprocessed yet "
                  f"({os.path.join(preprocessed_base, data_identifier)} is missing); run nnUNetv2_preprocess -d "
                  f"{dataset_name} -c {configuration} -plans_name {plans_identifier} before training.")
        existed = os.path.exists(target)
        warnings = _apply_update(plan, preprocessed_base, plans, dataset_json, num_processes)
        if warnings and verbose:
            print(f"{len(warnings)} image(s) look blank or truncated (warnings above); they were preprocessed "
                  f"anyway. Remove them from {UNLABELED_RAW_FOLDER}/ and rerun if they are not real scans.",
                  file=sys.stderr)
        statuses[configuration] = ("written" if not existed else "overwritten" if plan.reason else "updated")
    return {c: statuses[jobs[m.data_identifier]] for c, m in managers.items()}
