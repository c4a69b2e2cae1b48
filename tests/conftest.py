"""Shared pytest fixtures and helpers for nnunetv2_scdl's tests.

Fixtures
--------
``nnunet_folders`` (session)
    :class:`NnUNetFolders` with fresh ``raw``, ``preprocessed`` and ``results`` folders under pytest's tmp dir. While
    it is active, the environment variables ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` point at
    them (nnU-Net reads them lazily, so this works after import); they are restored at the end of the session.

``planned_phantom`` (session)
    :class:`PlannedPhantom`: a tiny phantom dataset (6 labeled, 6 unlabeled in ``imagesUnlabeled``, 2 test cases of
    20×28×28 voxels; ID :data:`PLANNED_PHANTOM_ID`) planned and preprocessed by the real
    ``nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres -np 1`` (run as a subprocess), plus tiny CPU plans
    ``nnUNetPlans_cpu`` (features / 4, batch 2). Treat it as read-only; use ``phantom_copy`` to modify data.

``phantom_copy`` (function)
    Factory: ``phantom_copy()`` copies the planned phantom (raw and preprocessed folders, not results) under a new
    dataset ID and returns its :class:`PlannedPhantom`. For tests that delete, corrupt or add files.

``phantom_with_unlabeled`` (module)
    A copy of the planned phantom (as ``phantom_copy`` makes) whose unlabeled cases are preprocessed, shared by the
    in-process trainer tests of one module; they only read it. Removed at the end of the module.

``phantom_with_ignore_label`` (session)
    A copy of the planned phantom whose unlabeled cases are preprocessed and whose training labels carry nnU-Net's
    ignore label on their first two slices (:func:`add_ignore_label`); read-only, shared by the trainer tests of every
    module that check the ignore label.

``cli_trained`` (session)
    Factory: ``cli_trained(trainer)`` trains ``trainer`` once per session through the real ``nnUNetv2_train``
    (:data:`CLI_TRAINING_EPOCHS` epoch × :data:`CLI_TRAINING_ITERATIONS` iterations, CPU) on one shared phantom copy
    whose unlabeled cases the real ``nnUNetv2_scdl_preprocess_unlabeled`` preprocessed, and returns a
    :class:`CliTrained` (the dataset, the fold folder and the environment to predict with). Every test that only
    needs a trained checkpoint of a trainer shares that training; each trainer writes only its own results folder.

``run_console``
    :func:`run_console_command`, as a fixture.

``shared_data_dir``
    Path of ``../shared/data`` (relative to the repository root); skips the test, with a message, when it is absent.
    Alternatively mark a test ``@pytest.mark.shared_data`` to skip it under the same condition.

Helpers (importable as ``from conftest import ...``)
----------------------------------------------------
:func:`run_console_command` runs a console script (nnU-Net's or ours) with this Python interpreter and the current
environment plus overrides, and asserts success with the tail of its output in the failure message.
:class:`StepsCache` gives a module's in-process trainer tests one run of each trainer's first steps to share (the
steps test, the resume test and the spy tests read the same trainer), from a module-scoped fixture of that module.
"""
import itertools
import json
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
SHARED_DATA_SKIP_REASON = (f"needs the shared evaluation data at {SHARED_DATA_DIR} (../shared/data relative to the "
                           f"repository root), which is absent")

PLANNED_PHANTOM_ID = 990
PLANNED_PHANTOM_NAME = "PhantomTiny"
PLANNED_PHANTOM_SHAPE = (20, 28, 28)
PLANNED_PHANTOM_SPACING = (2.0, 1.0, 1.0)
CONFIGURATION = "3d_fullres"
_copy_ids = itertools.count(PLANNED_PHANTOM_ID - 89)  # 901, 902, ...: copies of the planned phantom


@dataclass(frozen=True)
class NnUNetFolders:
    raw: Path
    preprocessed: Path
    results: Path


@dataclass(frozen=True)
class PlannedPhantom:
    """A phantom dataset that nnU-Net has planned and preprocessed (see the module docstring)."""
    dataset_id: int
    dataset_name: str  # e.g. Dataset990_PhantomTiny
    raw_folder: Path  # nnUNet_raw/<dataset_name>
    preprocessed_folder: Path  # nnUNet_preprocessed/<dataset_name>
    results_folder: Path  # nnUNet_results/<dataset_name> (not created here)
    plans: str  # nnU-Net's plans identifier, "nnUNetPlans"
    cpu_plans: str  # derived tiny plans, "nnUNetPlans_cpu"
    configuration: str  # "3d_fullres"
    data_identifier: str  # the configuration's preprocessed data folder name, e.g. nnUNetPlans_3d_fullres
    labeled: List[str] = field(default_factory=list)
    unlabeled: List[str] = field(default_factory=list)
    test: List[str] = field(default_factory=list)

    @property
    def labeled_data_folder(self) -> Path:
        return self.preprocessed_folder / self.data_identifier


def pytest_configure(config):
    config.addinivalue_line("markers", "shared_data: needs ../shared/data (skipped with a message when absent)")


def pytest_runtest_setup(item):
    if item.get_closest_marker("shared_data") is not None and not SHARED_DATA_DIR.is_dir():
        pytest.skip(SHARED_DATA_SKIP_REASON)


def run_console_command(name: str, args: Sequence[str] = (), env: Optional[Dict[str, str]] = None,
                        check: bool = True, timeout: float = 600, log_file: Optional[Path] = None
                        ) -> subprocess.CompletedProcess:
    """Run the console script ``name`` (e.g. ``nnUNetv2_plan_and_preprocess``) with ``args``.

    Uses this interpreter (see :func:`nnunetv2_scdl.cli.commands.console_command`) and ``os.environ`` updated with
    ``env``; the repository root is put on PYTHONPATH so an uninstalled checkout works. Output (stdout and stderr
    together) is in ``.stdout``, and in ``log_file`` if given. With ``check``, a non-zero exit fails the test with the
    last 40 lines of output.
    """
    from nnunetv2_scdl.cli.commands import console_command, display_command, source_checkout_pythonpath

    command = console_command(name) + [str(a) for a in args]
    full_env = source_checkout_pythonpath(os.environ)
    full_env.update(env or {})
    result = subprocess.run(command, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", timeout=timeout)
    if log_file is not None:
        Path(log_file).write_text(result.stdout)
    if check and result.returncode != 0:
        lines = [line.split("\r")[-1] for line in result.stdout.splitlines()]
        pytest.fail(f"`{display_command(command)}` failed with exit code {result.returncode}. Last lines:\n"
                    + "\n".join(lines[-40:]), pytrace=False)
    return result


@pytest.fixture
def run_console():
    return run_console_command


@pytest.fixture
def shared_data_dir() -> Path:
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(SHARED_DATA_SKIP_REASON)
    return SHARED_DATA_DIR


@pytest.fixture(scope="session")
def nnunet_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    folders = NnUNetFolders(root / "nnUNet_raw", root / "nnUNet_preprocessed", root / "nnUNet_results")
    for folder in (folders.raw, folders.preprocessed, folders.results):
        folder.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("nnUNet_raw", str(folders.raw))
        patch.setenv("nnUNet_preprocessed", str(folders.preprocessed))
        patch.setenv("nnUNet_results", str(folders.results))
        yield folders


@pytest.fixture(scope="session")
def planned_phantom(nnunet_folders) -> PlannedPhantom:
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from nnunetv2_scdl.data.cpu_plans import derive_cpu_plans
    from nnunetv2_scdl.data.phantoms import make_phantom_dataset

    written = make_phantom_dataset(str(nnunet_folders.raw), PLANNED_PHANTOM_ID, PLANNED_PHANTOM_NAME, n_labeled=6,
                                   n_unlabeled=6, n_test=2, shape=PLANNED_PHANTOM_SHAPE,
                                   spacing=PLANNED_PHANTOM_SPACING, seed=1)
    # nnUNet_n_proc_DA must be >= 1 while planning: the planner calls torch.set_num_threads with it
    run_console_command("nnUNetv2_plan_and_preprocess",
                        ["-d", PLANNED_PHANTOM_ID, "-c", CONFIGURATION, "-np", 1, "-npfp", 1],
                        env={"nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1"})
    preprocessed = nnunet_folders.preprocessed / written.dataset_name
    derive_cpu_plans(str(preprocessed), "nnUNetPlans", "nnUNetPlans_cpu", feature_divisor=4, batch_size=2)
    data_identifier = load_json(str(preprocessed / "nnUNetPlans.json"))["configurations"][CONFIGURATION][
        "data_identifier"]
    return PlannedPhantom(
        dataset_id=PLANNED_PHANTOM_ID, dataset_name=written.dataset_name, raw_folder=Path(written.dataset_folder),
        preprocessed_folder=preprocessed, results_folder=nnunet_folders.results / written.dataset_name,
        plans="nnUNetPlans", cpu_plans="nnUNetPlans_cpu", configuration=CONFIGURATION,
        data_identifier=data_identifier, labeled=written.labeled, unlabeled=written.unlabeled, test=written.test)


def next_free_dataset_id() -> int:
    """The next copy ID (901, 902, ...) that names no folder yet in nnUNet_raw/_preprocessed/_results."""
    from nnunetv2.utilities.dataset_name_id_conversion import find_candidate_datasets

    return next(i for i in _copy_ids if len(find_candidate_datasets(i)) == 0)


def copy_planned_dataset(source: PlannedPhantom, dataset_id: Optional[int] = None) -> PlannedPhantom:
    """Copy the raw and preprocessed folders of ``source`` under ``dataset_id`` (plans' dataset_name updated);
    by default under the next free copy ID."""
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

    if dataset_id is None:
        dataset_id = next_free_dataset_id()

    name = re.sub(r"^Dataset\d{3}", f"Dataset{dataset_id:03d}", source.dataset_name)
    raw = source.raw_folder.parent / name
    preprocessed = source.preprocessed_folder.parent / name
    shutil.copytree(source.raw_folder, raw)
    shutil.copytree(source.preprocessed_folder, preprocessed)
    for plans_file in preprocessed.glob("nnUNetPlans*.json"):
        plans = load_json(str(plans_file))
        plans["dataset_name"] = name
        save_json(plans, str(plans_file), sort_keys=False)
    dataset_json = load_json(str(raw / "dataset.json"))
    dataset_json["name"] = name
    for folder in (raw, preprocessed):
        save_json(dataset_json, str(folder / "dataset.json"), sort_keys=False)
    return replace(source, dataset_id=dataset_id, dataset_name=name, raw_folder=raw, preprocessed_folder=preprocessed,
                   results_folder=source.results_folder.parent / name)


def remove_dataset(dataset: PlannedPhantom) -> None:
    """Delete a copy's raw, preprocessed and results folders."""
    for folder in (dataset.raw_folder, dataset.preprocessed_folder, dataset.results_folder):
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def copy_with_unlabeled(source: PlannedPhantom) -> Iterator[PlannedPhantom]:
    """A copy of ``source`` with its unlabeled cases preprocessed, removed afterwards."""
    from nnunetv2_scdl.data.unlabeled_preprocessing import preprocess_unlabeled

    dataset = copy_planned_dataset(source)
    try:
        preprocess_unlabeled(dataset.dataset_id, [dataset.configuration], dataset.cpu_plans, num_processes=1,
                             verbose=False)
        yield dataset
    finally:
        remove_dataset(dataset)


@pytest.fixture(scope="module")
def phantom_with_unlabeled(planned_phantom) -> PlannedPhantom:
    with copy_with_unlabeled(planned_phantom) as dataset:
        yield dataset


def make_trainer(dataset: PlannedPhantom, trainer_class, dataset_json: Optional[dict] = None, fold=0):
    """Build ``trainer_class`` in-process on ``dataset``'s CPU plans, as nnUNetv2_train would (on the CPU)."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json

    plans = load_json(str(dataset.preprocessed_folder / f"{dataset.cpu_plans}.json"))
    plans["continue_training"] = False  # nnU-Net's run_training injects this key
    dataset_json = dataset_json or load_json(str(dataset.preprocessed_folder / "dataset.json"))
    return trainer_class(plans, dataset.configuration, fold, dataset_json, torch.device("cpu"))


def tree_digest(*folders) -> str:
    """Hash of every path, link target and file content under ``folders`` (to prove that nothing was changed)."""
    import hashlib

    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            digest.update(str(path).encode())
            if path.is_symlink():
                digest.update(os.readlink(path).encode())
            elif path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


def started_trainer(dataset: PlannedPhantom, trainer_class):
    """An initialised trainer with its data loaders, at the start of an epoch: ready for ``train_step``."""
    trainer = make_trainer(dataset, trainer_class)
    trainer.initialize()
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
    trainer.on_train_epoch_start()
    return trainer


@dataclass
class TrainedSteps:
    trainer: object  # the trainer after its steps, still in its first epoch (on_train_epoch_end not called)
    outputs: List[dict]  # what each train_step returned
    prepared: object = None  # what the cache's ``prepare`` hook returned (spies, snapshots)


class StepsCache:
    """``cache(dataset, trainer_class)``: the trainer started on ``dataset`` (:func:`started_trainer`, with ``env``
    set) and trained ``steps`` steps, once per dataset and class. For module-scoped fixtures of the in-process trainer
    tests: the tests that need the same trainer after the same steps share one run. ``prepare(trainer)`` runs before
    the steps (spies, snapshots). Tests must not train the cached trainers further; :meth:`close` ends their
    training."""

    def __init__(self, steps: int = 2, env: Optional[Dict[str, str]] = None, prepare=None):
        self.steps, self.prepare = steps, prepare
        self.env = {"nnUNet_n_proc_DA": "0", **(env or {})}
        self.trained: Dict[tuple, TrainedSteps] = {}

    def __call__(self, dataset: PlannedPhantom, trainer_class) -> TrainedSteps:
        key = (dataset.dataset_name, trainer_class)
        if key not in self.trained:
            with pytest.MonkeyPatch.context() as patch:
                for name, value in self.env.items():
                    patch.setenv(name, value)
                trainer = started_trainer(dataset, trainer_class)
                try:
                    prepared = self.prepare(trainer) if self.prepare is not None else None
                    outputs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(self.steps)]
                except BaseException:
                    trainer.on_train_end()
                    raise
            self.trained[key] = TrainedSteps(trainer, outputs, prepared)
        return self.trained[key]

    def close(self) -> None:
        for trained in self.trained.values():
            trained.trainer.on_train_end()


def end_epoch_and_check_logged_terms(trainer, outputs) -> None:
    """``on_train_epoch_end`` must log one value per epoch for every name in ``trainer.logged_terms``."""
    trainer.on_train_epoch_end(outputs)
    for name in trainer.logged_terms:
        assert len(trainer.logger.get_value(name, None)) == 1, name


def assert_checkpoint_restores_teacher_and_student(trainer, dataset: PlannedPhantom, trainer_class, tmp_path: Path):
    """Save ``trainer`` (a teacher-student trainer after some steps) and load the file into a fresh ``trainer_class``:
    ``network_weights`` must be the teacher, and teacher, student and iteration counter must come back unchanged.
    Returns the resumed trainer for further checks."""
    import torch

    checkpoint_file = str(tmp_path / "checkpoint.pth")
    trainer.save_checkpoint(checkpoint_file)
    saved = torch.load(checkpoint_file, weights_only=False)
    teacher = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    student = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    assert all(torch.equal(saved["network_weights"][k], v) for k, v in teacher.items())

    resumed = make_trainer(dataset, trainer_class)
    resumed.load_checkpoint(checkpoint_file)
    assert resumed.global_iteration == trainer.global_iteration
    assert all(torch.equal(resumed.teacher.state_dict()[k], v) for k, v in teacher.items()), "teacher not restored"
    assert all(torch.equal(resumed.network.state_dict()[k], v) for k, v in student.items()), "student not restored"
    return resumed


def predict_test_cases(run_console, dataset: PlannedPhantom, trainer: str, output: Path, env: Dict[str, str],
                       *extra) -> None:
    """``nnUNetv2_predict`` on the test images with fold 0 of ``trainer``; each prediction must match its reference's
    grid and hold only the phantom's labels."""
    import numpy as np
    import SimpleITK as sitk

    run_console("nnUNetv2_predict", ["-i", dataset.raw_folder / "imagesTs", "-o", output, "-d", dataset.dataset_id,
                                     "-c", dataset.configuration, "-tr", trainer, "-p", dataset.cpu_plans, "-f", 0,
                                     "-device", "cpu", "--disable_tta", "-npp", 1, "-nps", 1, *extra], env=env)
    for case in dataset.test:
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(output / f"{case}.nii.gz")))
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset.raw_folder / "labelsTs" / f"{case}.nii.gz")))
        assert prediction.shape == reference.shape
        assert set(np.unique(prediction)) <= {0, 1, 2, 3}


def training_env(num_epochs: int, iterations: int = 3) -> Dict[str, str]:
    """Environment for a short CPU run of our trainers through nnU-Net's command lines."""
    from nnunetv2_scdl.cli.trainers_path import trainers_dir

    return {
        "nnUNet_extTrainer": str(trainers_dir()),
        "nnUNet_compile": "f",
        "nnUNet_n_proc_DA": "0",
        "nnUNet_def_n_proc": "1",  # nnU-Net's final validation and export spawn this many workers (8 by default)
        "SCDL_NUM_EPOCHS": str(num_epochs),
        "SCDL_NUM_ITERATIONS_PER_EPOCH": str(iterations),
        "SCDL_NUM_VAL_ITERATIONS_PER_EPOCH": "1",
    }


def train(run_console, dataset: PlannedPhantom, num_epochs: int, *extra, trainer: str = "nnUNetTrainerMeanTeacher",
          check: bool = True):
    """``nnUNetv2_train DATASET CONFIG 0 -tr trainer -p <cpu plans> -device cpu`` with :func:`training_env`."""
    return run_console("nnUNetv2_train", [dataset.dataset_id, dataset.configuration, 0, "-tr", trainer,
                                          "-p", dataset.cpu_plans, "-device", "cpu", *extra],
                       env=training_env(num_epochs), check=check)


def fold_folder(dataset: PlannedPhantom, trainer: str = "nnUNetTrainerMeanTeacher") -> Path:
    return dataset.results_folder / f"{trainer}__{dataset.cpu_plans}__{dataset.configuration}" / "fold_0"


def load_benchmark_script(name: str):
    """``benchmarks/<name>.py`` as a module (the scripts are not a package, so they cannot be imported by name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_checkpoint(folder: Path, name: str = "checkpoint_final.pth") -> dict:
    import torch

    return torch.load(folder / name, map_location="cpu", weights_only=False)


def add_ignore_label(dataset: PlannedPhantom, run_console) -> None:
    """Mark the first two slices of every training label as nnU-Net's ignore label and preprocess again."""
    import SimpleITK as sitk
    from batchgenerators.utilities.file_and_folder_operations import load_json

    dataset_json = load_json(str(dataset.raw_folder / "dataset.json"))
    ignore = max(dataset_json["labels"].values()) + 1
    dataset_json["labels"]["ignore"] = ignore
    for folder in (dataset.raw_folder, dataset.preprocessed_folder):
        (folder / "dataset.json").write_text(json.dumps(dataset_json))
    for label_file in (dataset.raw_folder / "labelsTr").glob("*.nii.gz"):
        image = sitk.ReadImage(str(label_file))
        labels = sitk.GetArrayFromImage(image)
        labels[:2] = ignore
        painted = sitk.GetImageFromArray(labels)
        painted.CopyInformation(image)
        sitk.WriteImage(painted, str(label_file))
    run_console("nnUNetv2_preprocess", ["-d", dataset.dataset_id, "-c", dataset.configuration, "-np", 1],
                env={"nnUNet_n_proc_DA": "1"})


@pytest.fixture(scope="session")
def phantom_with_ignore_label(planned_phantom) -> PlannedPhantom:
    with copy_with_unlabeled(planned_phantom) as dataset:
        add_ignore_label(dataset, run_console_command)
        yield dataset


CLI_TRAINING_EPOCHS = 1
CLI_TRAINING_ITERATIONS = 2
CPU_DDIM_STEPS = "2"  # DDIM steps of the GenericSSL trainers on CPU (the method uses 10; see tests/test_diffusion.py)


@dataclass(frozen=True)
class CliTrained:
    """Fold 0 of ``trainer``, trained by ``nnUNetv2_train`` on ``dataset`` (see the ``cli_trained`` fixture)."""
    dataset: PlannedPhantom
    trainer: str
    folder: Path
    env: Dict[str, str]  # the training environment; nnUNetv2_predict runs with it too


@pytest.fixture(scope="session")
def cli_trained(planned_phantom):
    dataset = copy_planned_dataset(planned_phantom)
    env = {**training_env(CLI_TRAINING_EPOCHS, iterations=CLI_TRAINING_ITERATIONS), "SCDL_DDIM_STEPS": CPU_DDIM_STEPS}
    trained: Dict[str, CliTrained] = {}
    unlabeled_preprocessed = []

    def train_once(trainer: str) -> CliTrained:
        if not unlabeled_preprocessed:  # the first trainer of the session: preprocess the unlabeled cases
            run_console_command("nnUNetv2_scdl_preprocess_unlabeled", ["-d", dataset.dataset_id, "-c",
                                                                       dataset.configuration, "-p", dataset.cpu_plans,
                                                                       "-np", 1])
            unlabeled_preprocessed.append(True)
        if trainer not in trained:
            run_console_command("nnUNetv2_train", [dataset.dataset_id, dataset.configuration, 0, "-tr", trainer,
                                                   "-p", dataset.cpu_plans, "-device", "cpu"], env=env)
            trained[trainer] = CliTrained(dataset, trainer, fold_folder(dataset, trainer), env)
        return trained[trainer]

    try:
        yield train_once
    finally:
        remove_dataset(dataset)


@pytest.fixture
def phantom_copy(planned_phantom):
    made = []

    def make() -> PlannedPhantom:
        copy = copy_planned_dataset(planned_phantom)
        made.append(copy)
        return copy

    yield make
    for copy in made:
        remove_dataset(copy)
