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
                                              "preprocessing_fingerprint", "cases": {ID: {"source", "images"}}}

Everything is validated before anything is written; cases are written into a temporary sibling folder that replaces
the old one only once every case succeeded, so a failure never loses data preprocessed before.
"""
import hashlib
import json
import os
import re
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Dict, List, Optional, Sequence

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
    incomplete = sorted(i for i in expected
                        if not all(os.path.isfile(os.path.join(folder, i + s)) for s in (".b2nd", "_seg.b2nd", ".pkl")))
    unlisted = sorted(present - expected)
    if incomplete or unlisted:
        raise UnlabeledDataError(
            f"{folder} is inconsistent with its {MANIFEST_FILENAME}: "
            + (f"cases without their .b2nd/_seg.b2nd/.pkl files: {incomplete}. " if incomplete else "")
            + (f"cases not in the manifest: {unlisted}. " if unlisted else "")
            + f"Rerun {_suggested_command(folder)} --overwrite")
    if not expected:
        raise UnlabeledDataError(f"{folder} holds no unlabeled cases. Rerun {_suggested_command(folder)} --overwrite")
    return sorted(expected)


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


def _check_image_headers(cases: Sequence[UnlabeledCase]) -> None:
    """Read every image header (where SimpleITK can) so unreadable files fail before anything is written."""
    problems = []
    for case in cases:
        geometry = []
        for image_file in case.image_files:
            if not image_file.endswith(_SITK_HEADER_ENDINGS):
                continue
            reader = sitk.ImageFileReader()
            reader.SetFileName(image_file)
            try:
                reader.ReadImageInformation()
            except RuntimeError as e:
                lines = [line.strip() for line in str(e).splitlines() if line.strip()] or ["unknown error"]
                reason = next((line for line in lines if "ERROR" in line), lines[0])
                problems.append(f"{image_file}: unreadable image file ({reason})")
                continue
            geometry.append((image_file, reader.GetSize(), tuple(round(s, 5) for s in reader.GetSpacing())))
        if len({g[1:] for g in geometry}) > 1:
            problems.append(f"{case.identifier}: its channels differ in size or spacing: "
                            + "; ".join(f"{os.path.basename(f)} size {s} spacing {sp}" for f, s, sp in geometry))
    if problems:
        raise _problems_error("Cannot read these unlabeled images:", problems)


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
    _check_image_headers(cases)
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


def _run_one(identifier: str, image_files: Sequence[str], output_folder: str) -> str:
    state = _WORKER_STATE
    try:
        data, seg, properties = preprocess_unlabeled_case(image_files, state["plans_manager"],
                                                          state["configuration_manager"], state["dataset_json"],
                                                          state["preprocessor"])
    except Exception as e:  # the reader's own errors rarely name the file
        raise UnlabeledDataError(f"Cannot preprocess unlabeled case {identifier} ({', '.join(image_files)}): "
                                 f"{type(e).__name__}: {e}") from None
    save_preprocessed_case(data, seg, properties, os.path.join(output_folder, identifier),
                           state["configuration_manager"].patch_size)
    return identifier


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


def _build_manifest(plans_identifier: str, configuration: str, data_identifier: str, fingerprint: str,
                    cases: Sequence[UnlabeledCase], raw_dataset_folder: str) -> dict:
    return {
        "plans_identifier": plans_identifier,
        "configuration": configuration,
        "data_identifier": data_identifier,
        "preprocessing_fingerprint": fingerprint,
        "cases": {c.identifier: {"source": c.source,
                                 "images": [os.path.relpath(f, raw_dataset_folder) for f in c.image_files]}
                  for c in sorted(cases, key=lambda c: c.identifier)},
    }


def _is_up_to_date(folder: str, manifest: dict) -> bool:
    try:
        existing = load_unlabeled_manifest(folder)
        list_unlabeled_identifiers(folder)
    except (FileNotFoundError, UnlabeledDataError, json.JSONDecodeError):
        return False
    return (existing.get("preprocessing_fingerprint") == manifest["preprocessing_fingerprint"]
            and existing.get("cases") == manifest["cases"])


def _preprocess_into(folder: str, cases: Sequence[UnlabeledCase], plans: dict, configuration: str,
                     dataset_json: dict, num_processes: int) -> None:
    progress = tqdm(total=len(cases), desc=f"Preprocessing unlabeled cases ({configuration})")
    with progress:
        if num_processes <= 1:
            _init_worker(plans, configuration, dataset_json)
            for case in cases:
                _run_one(case.identifier, case.image_files, folder)
                progress.update()
            return
        with ProcessPoolExecutor(max_workers=num_processes, mp_context=get_context("spawn"),
                                 initializer=_init_worker, initargs=(plans, configuration, dataset_json)) as pool:
            futures = [pool.submit(_run_one, c.identifier, c.image_files, folder) for c in cases]
            try:
                for future in as_completed(futures):
                    future.result()  # re-raises a worker's error here; a killed worker raises BrokenProcessPool
                    progress.update()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


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


def preprocess_unlabeled(dataset_name_or_id, configurations: Sequence[str], plans_identifier: str = "nnUNetPlans",
                         num_processes: int = 2, overwrite: bool = False, verbose: bool = True) -> Dict[str, str]:
    """Preprocess the unlabeled cases of a dataset for each configuration; return ``{configuration: status}``.

    ``status`` is ``"written"``, ``"overwritten"`` or ``"up to date"``. Without ``overwrite``, an existing folder with
    the same cases and the same preprocessing is left as is and a different one is an error. Raises
    :class:`UnlabeledDataError` for any bad input, before anything is written.
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
    planned = {}
    for data_identifier, configuration in jobs.items():
        target = get_unlabeled_folder(preprocessed_base, data_identifier)
        manifest = _build_manifest(plans_identifier, configuration, data_identifier,
                                   preprocessing_fingerprint(plans, configuration), cases, raw_folder)
        if os.path.exists(target) and not overwrite:
            if not _is_up_to_date(target, manifest):
                raise UnlabeledDataError(
                    f"{target} already exists with other cases or another preprocessing. Pass --overwrite to "
                    f"replace it (the old data are kept until the new ones are complete).")
        planned[data_identifier] = (configuration, target, manifest)

    statuses = {}
    counts = {s: sum(c.source == s for c in cases) for s in (SOURCE_RAW_UNLABELED, SOURCE_BENCHMARK)}
    for data_identifier, (configuration, target, manifest) in planned.items():
        if os.path.exists(target) and not overwrite:
            statuses[configuration] = "up to date"
            if verbose:
                print(f"{target}: already preprocessed with these {len(cases)} cases; nothing to do "
                      f"(--overwrite redoes it).")
            continue
        if verbose:
            print(f"{dataset_name} {configuration}: preprocessing {len(cases)} unlabeled cases "
                  f"({counts[SOURCE_RAW_UNLABELED]} from {UNLABELED_RAW_FOLDER}/, {counts[SOURCE_BENCHMARK]} from "
                  f"imagesTr via splits_final.json) into {target}")
        if not os.path.isdir(os.path.join(preprocessed_base, data_identifier)):
            print(f"Note: the labeled cases of {configuration} are not preprocessed yet "
                  f"({os.path.join(preprocessed_base, data_identifier)} is missing); run nnUNetv2_preprocess -d "
                  f"{dataset_name} -c {configuration} -plans_name {plans_identifier} before training.")
        existed = os.path.exists(target)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=preprocessed_base)
        try:
            os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes it private; give it a normal folder's mode
            _preprocess_into(tmp, cases, plans, configuration, dataset_json, num_processes)
            save_json(manifest, os.path.join(tmp, MANIFEST_FILENAME), sort_keys=False)
            _swap_in(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        statuses[configuration] = "overwritten" if existed else "written"
    return {c: statuses[jobs[m.data_identifier]] for c, m in managers.items()}
