"""Self-training ("noisy student") with nnU-Net's own commands, as one resumable pipeline (docs/self_training.md).

Round 1 trains (or reuses) a teacher on dataset D; every round then

1. predicts the unlabeled images with ``nnUNetv2_predict_from_modelfolder --save_probabilities`` (the teacher's model
   folder), redoing only the cases whose output is missing or unreadable;
2. scores each case's confidence and keeps the confident ones (:mod:`nnunetv2_scdl.data.pseudo_labels`);
3. writes a derived raw dataset (labeled + pseudo-labeled cases) under a new ID
   (:mod:`nnunetv2_scdl.data.derived_dataset`), extracts its fingerprint, copies D's plans to it with
   ``nnUNetv2_move_plans_between_datasets`` (same plans identifier, so ``-p`` is unchanged) and preprocesses it with
   ``nnUNetv2_preprocess``;
4. trains the student with ``nnUNetv2_train`` on it and, if asked, fine-tunes the student on the labeled cases
   (``nnUNetTrainerSupervisedLabeledOnly`` with ``-pretrained_weights``).

The final model of a round is the next round's teacher. Every input is checked before anything is trained or
written; D's raw and preprocessed folders are only read. Running the same settings again skips every finished stage.
:func:`run_self_training` is the entry point; :class:`SelfTrainingResult` says where each model is and how many
optimiser steps it took.
"""
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

from nnunetv2_scdl.cli.commands import (TRAINING_PROGRESS, StepError, console_command, external_trainer_path,
                                        run_logged, source_checkout_pythonpath)
from nnunetv2_scdl.data.derived_dataset import (DerivedDatasetError, carried_labeled_cases, derived_dataset_name,
                                                derived_splits, folders_with_id, read_state, training_case_files,
                                                write_derived_raw_dataset, write_state)
from nnunetv2_scdl.data.pseudo_labels import (DEFAULT_KEEP_FRACTION, DEFAULT_MIN_CONFIDENCE, CaseConfidence,
                                              PredictionFileError, check_selection_settings, missing_predictions,
                                              prediction_files, read_case_confidence, select_confident_cases)

DEFAULT_TRAINER = "nnUNetTrainer"  # nnU-Net's own, when no budget is given
BUDGET_TRAINER = "nnUNetTrainerSupervised"  # nnU-Net's training with the SCDL_* budget variables
FINETUNE_TRAINER = "nnUNetTrainerSupervisedLabeledOnly"
WORK_FOLDER = "self_training"  # in nnUNet_results/<derived dataset>/: teacher predictions, logs, summary
STOP_STAGES = ("teacher", "predict", "dataset")
DEVICES = ("cpu", "cuda", "mps")
_CROSSVAL_FOLDS = 5  # nnU-Net's default split when splits_final.json does not exist yet
_ITERATIONS_LINE = re.compile(r"^\s*num_iterations_per_epoch\s*=\s*(\d+)", re.MULTILINE)
_BUDGET_VARIABLES = {"epochs": "SCDL_NUM_EPOCHS", "iterations_per_epoch": "SCDL_NUM_ITERATIONS_PER_EPOCH",
                     "val_iterations_per_epoch": "SCDL_NUM_VAL_ITERATIONS_PER_EPOCH"}


class SelfTrainingError(ValueError):
    """Bad input for self-training, or a stage that cannot go on; the message says what to change."""


@dataclass(frozen=True)
class TrainingBudget:
    """Epochs and optimiser steps per epoch of one model, passed to this package's trainers as ``SCDL_*``."""
    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: Optional[int] = None  # None: the trainer's default

    @property
    def optimiser_steps(self) -> int:
        return self.epochs * self.iterations_per_epoch

    def environment(self) -> Dict[str, str]:
        return {_BUDGET_VARIABLES[k]: str(v) for k, v in asdict(self).items() if v is not None}


@dataclass
class SelfTrainingSettings:
    """Everything that defines a self-training run (see docs/self_training.md for each value)."""
    dataset: str  # source dataset name or ID
    configuration: str
    fold: int
    derived_dataset_id: int  # round r writes dataset derived_dataset_id + r - 1
    plans: str = "nnUNetPlans"
    rounds: int = 1
    teacher_trainer: Optional[str] = None  # default: nnUNetTrainer, or nnUNetTrainerSupervised with a budget
    student_trainer: Optional[str] = None  # same default
    teacher_model_folder: Optional[str] = None  # reuse this trained model folder (TRAINER__PLANS__CONFIGURATION)
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    keep_fraction: float = DEFAULT_KEEP_FRACTION
    finetune: bool = False
    teacher_budget: Optional[TrainingBudget] = None
    student_budget: Optional[TrainingBudget] = None
    finetune_budget: Optional[TrainingBudget] = None
    seed: Optional[int] = None  # SCDL_SEED of every model
    final_validation: bool = True  # nnU-Net's validation of the fold's val cases after each training
    device: str = "cuda"
    tta: bool = True  # mirroring when the teacher predicts the unlabeled images
    num_processes: int = 2
    verbose: bool = False
    stop_after: Optional[str] = None  # one of STOP_STAGES: stop after that stage of the last round

    def trainer(self, role: str) -> str:
        chosen = self.teacher_trainer if role == "teacher" else self.student_trainer
        budget = self.teacher_budget if role == "teacher" else self.student_budget
        return chosen or (BUDGET_TRAINER if budget is not None else DEFAULT_TRAINER)


@dataclass
class TrainedModel:
    """One trained model: ``nnUNetv2_predict -d DATASET -tr TRAINER -p PLANS -c CONFIGURATION -f FOLD`` uses it."""
    role: str  # "teacher", "student" or "fine-tuned student"
    dataset: str
    trainer: str
    model_folder: str  # nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>
    fold: int
    optimiser_steps: Optional[int]  # epochs done x iterations per epoch; None when the log does not say
    trained_now: bool = False

    @property
    def checkpoint(self) -> str:
        return os.path.join(self.model_folder, f"fold_{self.fold}", "checkpoint_final.pth")


@dataclass
class RoundResult:
    round: int
    derived_dataset: str
    pseudo_labeled: List[str]
    rejected: Dict[str, str]
    student: Optional[TrainedModel] = None
    finetuned: Optional[TrainedModel] = None

    @property
    def final_model(self) -> Optional[TrainedModel]:
        return self.finetuned or self.student


@dataclass
class SelfTrainingResult:
    teacher: TrainedModel
    rounds: List[RoundResult] = field(default_factory=list)

    @property
    def final_model(self) -> Optional[TrainedModel]:
        """The last round's fine-tuned student, or its student; None when stopped before training it."""
        return self.rounds[-1].final_model if self.rounds else None

    @property
    def models(self) -> List[TrainedModel]:
        return [self.teacher] + [m for r in self.rounds for m in (r.student, r.finetuned) if m is not None]

    @property
    def total_optimiser_steps(self) -> Optional[int]:
        """Teacher + every student and fine-tuning, or None when a model's steps are unknown."""
        steps = [m.optimiser_steps for m in self.models]
        return None if any(s is None for s in steps) else sum(steps)

    def to_json(self) -> dict:
        return {"teacher": asdict(self.teacher), "rounds": [asdict(r) for r in self.rounds],
                "final_model": asdict(self.final_model) if self.final_model else None,
                "total_optimiser_steps": self.total_optimiser_steps}


@dataclass(frozen=True)
class _Roots:
    raw: str
    preprocessed: str
    results: str


@dataclass
class _Source:
    name: str
    raw_folder: str
    preprocessed_folder: str
    dataset_json: dict
    plans: dict
    unlabeled: Dict[str, tuple]  # ID -> image files
    splits: Optional[List[dict]]  # splits_final.json, when it exists


# ----------------------------------------------------------------------------------------------------------------------
# checks (all before anything is trained or written)
# ----------------------------------------------------------------------------------------------------------------------
def _roots(env: Dict[str, str]) -> _Roots:
    names = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
    unset = [n for n in names if not env.get(n)]
    if unset:
        raise SelfTrainingError(f"{' and '.join(unset)} must be set (see nnU-Net's documentation/setting_up_paths.md).")
    return _Roots(*(os.path.abspath(env[n]) for n in names))


def _check_settings(settings: SelfTrainingSettings) -> None:
    if settings.rounds < 1:
        raise SelfTrainingError(f"--rounds must be at least 1 (got {settings.rounds}).")
    if not isinstance(settings.fold, int) or settings.fold < 0:
        raise SelfTrainingError(f"The fold must be a non-negative integer (got {settings.fold!r}).")
    try:
        check_selection_settings(settings.min_confidence, settings.keep_fraction)
    except ValueError as e:
        raise SelfTrainingError(str(e)) from None
    for name in ("teacher_budget", "student_budget", "finetune_budget"):
        budget = getattr(settings, name)
        if budget is not None and min(v for v in asdict(budget).values() if v is not None) < 1:
            raise SelfTrainingError(f"Every number of the {name.replace('_', ' ')} must be at least 1 ({budget}).")
    if settings.device not in DEVICES:
        raise SelfTrainingError(f"-device must be one of {DEVICES} (got {settings.device}).")
    if settings.stop_after is not None and settings.stop_after not in STOP_STAGES:
        raise SelfTrainingError(f"stop_after must be one of {STOP_STAGES} (got {settings.stop_after}).")
    if settings.finetune_budget is not None and not settings.finetune:
        raise SelfTrainingError("A fine-tuning budget was given without fine-tuning.")
    last_id = settings.derived_dataset_id + settings.rounds - 1
    if not 1 <= settings.derived_dataset_id or last_id > 999:
        raise SelfTrainingError(f"Derived dataset IDs {settings.derived_dataset_id}..{last_id} (one per round) must "
                                f"lie in 1..999.")
    for role in ("teacher", "student"):
        budget = settings.teacher_budget if role == "teacher" else settings.student_budget
        if role == "teacher" and settings.teacher_model_folder is not None:
            continue
        trainer = settings.trainer(role)
        if budget is not None and not reads_budget_variables(trainer):
            raise SelfTrainingError(f"The {role} trainer {trainer} does not read the SCDL_* budget variables, so the "
                                    f"budget would be ignored. Use {BUDGET_TRAINER} (nnU-Net's training with these "
                                    f"variables) or another trainer of this package, or give no budget.")


def reads_budget_variables(trainer_name: str) -> bool:
    """Whether ``trainer_name`` is a trainer of this package that takes its budget from ``SCDL_*`` variables."""
    import importlib
    import pkgutil

    import nnunetv2_scdl.training as training
    from nnunetv2_scdl.training.hyperparameters import ConfigurableHyperparameters

    for module in pkgutil.iter_modules(training.__path__):
        found = getattr(importlib.import_module(f"{training.__name__}.{module.name}"), trainer_name, None)
        if isinstance(found, type) and issubclass(found, ConfigurableHyperparameters):
            return True
    return False


def _dataset_name(dataset: str, roots: _Roots) -> str:
    if str(dataset).startswith("Dataset"):
        return str(dataset)
    try:
        dataset_id = int(dataset)
    except ValueError:
        raise SelfTrainingError(f"-d takes a dataset ID or a DatasetXXX_Name; got {dataset!r}.") from None
    names = sorted({os.path.basename(f) for f in folders_with_id(dataset_id, [roots.raw, roots.preprocessed])})
    if len(names) != 1:
        raise SelfTrainingError(f"Dataset ID {dataset_id}: " + (f"several datasets use it: {names}." if names else
                                f"no dataset in {roots.raw} or {roots.preprocessed}."))
    return names[0]


def _load_source(settings: SelfTrainingSettings, roots: _Roots) -> _Source:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_scdl.data.splits import SplitError, read_benchmark_split
    from nnunetv2_scdl.data.unlabeled_preprocessing import (SOURCE_BENCHMARK, UnlabeledDataError,
                                                            collect_unlabeled_cases)

    name = _dataset_name(settings.dataset, roots)
    raw_folder = os.path.join(roots.raw, name)
    preprocessed_folder = os.path.join(roots.preprocessed, name)
    dataset_json_file = os.path.join(raw_folder, "dataset.json")
    if not os.path.isfile(dataset_json_file):
        raise SelfTrainingError(f"{dataset_json_file} not found: {name} is not an nnU-Net raw dataset.")
    dataset_json = load_json(dataset_json_file)
    if any(isinstance(v, (list, tuple)) for v in dataset_json.get("labels", {}).values()):
        raise SelfTrainingError(f"{name} uses region-based labels; self-training supports plain label maps only "
                                f"(the teacher's probabilities are sigmoids per region then).")
    plans_file = os.path.join(preprocessed_folder, settings.plans + ".json")
    hint = f"Run nnUNetv2_plan_and_preprocess -d {name} -c {settings.configuration} first."
    if not os.path.isfile(plans_file):
        raise SelfTrainingError(f"Plans file {plans_file} not found. {hint}")
    plans = load_json(plans_file)
    manager = PlansManager(plans)
    if settings.configuration not in manager.available_configurations:
        raise SelfTrainingError(f"Configuration {settings.configuration} is not in {plans_file} (it has "
                                f"{manager.available_configurations}).")
    if settings.configuration.endswith("cascade_fullres"):
        raise SelfTrainingError("Cascade configurations are not supported: the teacher would need the previous "
                                "stage's predictions of every unlabeled image.")
    data_folder = os.path.join(preprocessed_folder, manager.get_configuration(settings.configuration).data_identifier)
    if not os.path.isdir(data_folder):
        raise SelfTrainingError(f"{data_folder} not found: the labeled cases are not preprocessed with these plans. "
                                f"Run nnUNetv2_preprocess -d {name} -plans_name {settings.plans} -c "
                                f"{settings.configuration}.")
    try:
        splits = read_benchmark_split(preprocessed_folder)
        cases = collect_unlabeled_cases(raw_folder, preprocessed_folder, dataset_json)
    except (SplitError, UnlabeledDataError) as e:
        raise SelfTrainingError(str(e)) from None
    number_of_folds = len(splits) if splits is not None else _CROSSVAL_FOLDS
    if settings.fold >= number_of_folds:
        raise SelfTrainingError(f"Fold {settings.fold} does not exist: "
                                + (f"{preprocessed_folder}/splits_final.json has {len(splits)} fold(s)."
                                   if splits is not None else f"nnU-Net's default split has {_CROSSVAL_FOLDS} folds."))
    # benchmark cases of other folds' 'unlabeled' lists may be labeled in this fold
    fold_unlabeled = set(splits[settings.fold].get("unlabeled", [])) if splits is not None else set()
    unlabeled = {c.identifier: c.image_files for c in cases
                 if c.source != SOURCE_BENCHMARK or c.identifier in fold_unlabeled}
    if not unlabeled:
        raise SelfTrainingError(f"Fold {settings.fold} of {preprocessed_folder}/splits_final.json has no 'unlabeled' "
                                f"cases, and {raw_folder}/imagesUnlabeled does not exist.")
    return _Source(name, raw_folder, preprocessed_folder, dataset_json, plans, unlabeled, splits)


def _check_teacher_folder(model_folder: str, settings: SelfTrainingSettings, source: _Source,
                          require_final: bool) -> None:
    """Refuse a teacher model folder whose plans, configuration or labels differ from the run's."""
    import torch

    plans_file = os.path.join(model_folder, "plans.json")
    checkpoint = os.path.join(model_folder, f"fold_{settings.fold}", "checkpoint_final.pth")
    if not os.path.isfile(plans_file):
        if require_final:
            raise SelfTrainingError(f"{model_folder} is not an nnU-Net model folder (no plans.json).")
        return
    if require_final and not os.path.isfile(checkpoint):
        raise SelfTrainingError(f"The teacher {model_folder} has no finished fold {settings.fold} ({checkpoint} is "
                                f"missing). Finish its training, or let self-training train the teacher.")
    teacher_plans = load_json(plans_file)
    problems = []
    configuration = settings.configuration
    if configuration not in teacher_plans.get("configurations", {}):
        problems.append(f"its plans have no configuration {configuration}")
    elif teacher_plans["configurations"][configuration] != source.plans["configurations"][configuration]:
        problems.append(f"its configuration {configuration} differs from that of {settings.plans}.json")
    ignored = {"configurations", "dataset_name"}
    different = sorted(k for k in set(teacher_plans) | set(source.plans) if k not in ignored
                       and teacher_plans.get(k) != source.plans.get(k))
    if different:
        problems.append(f"its plans differ from {settings.plans}.json in {', '.join(different)}")
    checkpoints = [os.path.join(model_folder, f"fold_{settings.fold}", n)
                   for n in ("checkpoint_final.pth", "checkpoint_latest.pth")]
    existing = next((c for c in checkpoints if os.path.isfile(c)), None)
    if existing is not None:
        trained_with = torch.load(existing, map_location="cpu", weights_only=False).get("init_args", {}).get(
            "configuration")
        if trained_with is not None and trained_with != configuration:
            problems.append(f"it was trained with configuration {trained_with}")
    dataset_json_file = os.path.join(model_folder, "dataset.json")
    if os.path.isfile(dataset_json_file) and load_json(dataset_json_file).get("labels") != \
            source.dataset_json.get("labels"):
        problems.append(f"its labels differ from those of {source.name}")
    if problems:
        raise SelfTrainingError(f"The teacher {model_folder} does not fit -c {configuration} -p {settings.plans} of "
                                f"{source.name}: " + "; ".join(problems) + ". Use a teacher trained with these plans "
                                f"and configuration, or other -c/-p.")


def _round_settings(settings: SelfTrainingSettings, source: _Source, round_index: int) -> dict:
    """What a derived dataset is made of; a rerun must match it to resume that round."""
    budgets = {k: asdict(getattr(settings, k)) if getattr(settings, k) is not None else None
               for k in ("teacher_budget", "student_budget", "finetune_budget")}
    teacher = os.path.abspath(settings.teacher_model_folder) if settings.teacher_model_folder else \
        settings.trainer("teacher")
    return {"round": round_index, "source_dataset": source.name, "configuration": settings.configuration,
            "fold": settings.fold, "plans": settings.plans, "teacher": teacher,
            "student_trainer": settings.trainer("student"), "min_confidence": settings.min_confidence,
            "keep_fraction": settings.keep_fraction, "finetune": settings.finetune, **budgets, "seed": settings.seed,
            "tta": settings.tta, "unlabeled_cases": sorted(source.unlabeled)}


def _check_derived_ids(settings: SelfTrainingSettings, source: _Source, roots: _Roots) -> List[str]:
    """The derived dataset names, one per round; refuses IDs taken by anything but this run's own rounds."""
    source_id = int(source.name[len("Dataset"):len("Dataset") + 3])
    names = []
    for round_index in range(1, settings.rounds + 1):
        dataset_id = settings.derived_dataset_id + round_index - 1
        if dataset_id == source_id:
            raise SelfTrainingError(f"The derived dataset ID {dataset_id} is the source dataset's own ID.")
        name = derived_dataset_name(source.name, dataset_id, round_index)
        found = folders_with_id(dataset_id, [roots.raw, roots.preprocessed, roots.results])
        if found:
            state = read_state(os.path.join(roots.raw, name))
            if state is None or any(os.path.basename(f) != name for f in found):
                raise SelfTrainingError(
                    f"Dataset ID {dataset_id} is already taken:\n  " + "\n  ".join(found) +
                    f"\nChoose another --derived-id (round r writes ID {settings.derived_dataset_id} + r - 1); "
                    f"nothing was changed.")
            expected = _round_settings(settings, source, round_index)
            different = sorted(k for k in set(expected) | set(state["settings"])
                               if expected.get(k) != state["settings"].get(k))
            if different:
                raise SelfTrainingError(
                    f"{name} holds a self-training round with other settings ({', '.join(different)}). Resume it with "
                    f"the settings it was made with, or choose another --derived-id; nothing was changed.")
        names.append(name)
    return names


# ----------------------------------------------------------------------------------------------------------------------
# stages
# ----------------------------------------------------------------------------------------------------------------------
class _Pipeline:
    def __init__(self, settings: SelfTrainingSettings, env: Dict[str, str], printer: Callable[[str], None]):
        self.settings = settings
        self.roots = _roots(env)
        _check_settings(settings)
        self.source = _load_source(settings, self.roots)
        if settings.teacher_model_folder is not None:
            _check_teacher_folder(os.path.abspath(settings.teacher_model_folder), settings, self.source, True)
        else:
            _check_teacher_folder(self._model_folder(self.source.name, settings.trainer("teacher")), settings,
                                  self.source, False)
        self.derived_names = _check_derived_ids(settings, self.source, self.roots)
        self.env = self._environment(env)
        self.printer = printer

    # -- helpers
    def _environment(self, env: Dict[str, str]) -> Dict[str, str]:
        env = source_checkout_pythonpath(env)
        user_folders = [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
        env["nnUNet_extTrainer"] = external_trainer_path(user_folders)
        env["PYTHONUNBUFFERED"] = "1"
        if self.settings.device == "cpu":
            env.setdefault("nnUNet_compile", "f")
        return env

    def _model_folder(self, dataset: str, trainer: str) -> str:
        return os.path.join(self.roots.results, dataset,
                            f"{trainer}__{self.settings.plans}__{self.settings.configuration}")

    def _work(self, round_index: int) -> Path:
        return Path(self.roots.results) / self.derived_names[round_index - 1] / WORK_FOLDER

    def _raw(self, round_index: int) -> str:
        return os.path.join(self.roots.raw, self.derived_names[round_index - 1])

    def _run(self, command: List[str], log: Path, env: Optional[Dict[str, str]] = None, echo=None) -> None:
        run_logged(command, env or self.env, log, echo=echo, verbose=self.settings.verbose, printer=self.printer)

    # -- training
    def train(self, role: str, dataset: str, trainer: str, budget: Optional[TrainingBudget], log: Path,
              pretrained: Optional[str] = None) -> TrainedModel:
        """Train (or continue) ``trainer`` on ``dataset`` unless its ``checkpoint_final.pth`` exists."""
        model_folder = self._model_folder(dataset, trainer)
        fold_folder = os.path.join(model_folder, f"fold_{self.settings.fold}")
        final = os.path.join(fold_folder, "checkpoint_final.pth")
        trained_now = not os.path.isfile(final)
        if trained_now:
            resuming = any(os.path.isfile(os.path.join(fold_folder, n))
                           for n in ("checkpoint_latest.pth", "checkpoint_best.pth"))
            self.printer(f"{'continuing' if resuming else 'training'} the {role}: {trainer} on {dataset}")
            env = dict(self.env, SCDL_STOP_AFTER_EPOCHS="0")  # each stage must finish: the next one needs its model
            env.update(budget.environment() if budget is not None else {})
            if self.settings.seed is not None:
                env["SCDL_SEED"] = str(self.settings.seed)
            if not self.settings.final_validation:
                env["SCDL_FINAL_VALIDATION"] = "0"
            if self.settings.device == "cpu":
                env.setdefault("nnUNet_n_proc_DA", "0")  # on a few cores, in-process augmentation is faster
            command = console_command("nnUNetv2_train") + [
                dataset, self.settings.configuration, str(self.settings.fold), "-tr", trainer, "-p",
                self.settings.plans, "-device", self.settings.device]
            # nnU-Net refuses --c together with -pretrained_weights; a started fine-tuning continues with --c
            command += ["-pretrained_weights", pretrained] if pretrained and not resuming else ["--c"]
            self._run(command, log, env, echo=TRAINING_PROGRESS)
            if not os.path.isfile(final):
                raise StepError(f"nnUNetv2_train finished but {final} is missing; see {log}.")
        else:
            self.printer(f"the {role} is trained already: {fold_folder}")
        return TrainedModel(role, dataset, trainer, model_folder, self.settings.fold, optimiser_steps(fold_folder),
                            trained_now)

    def teacher(self) -> TrainedModel:
        if self.settings.teacher_model_folder is None:
            return self.train("teacher", self.source.name, self.settings.trainer("teacher"),
                              self.settings.teacher_budget, self._work(1) / "logs" / "train_teacher.log")
        import torch

        model_folder = os.path.abspath(self.settings.teacher_model_folder)
        fold_folder = os.path.join(model_folder, f"fold_{self.settings.fold}")
        trainer = torch.load(os.path.join(fold_folder, "checkpoint_final.pth"), map_location="cpu",
                             weights_only=False)["trainer_name"]
        self.printer(f"the teacher is the given model: {fold_folder}")
        return TrainedModel("teacher", os.path.basename(os.path.dirname(model_folder)), trainer, model_folder,
                            self.settings.fold, optimiser_steps(fold_folder))

    # -- pseudo-labels
    def predict_and_score(self, teacher: TrainedModel, round_index: int, state: dict) -> Dict[str, CaseConfidence]:
        """The teacher's confidence on every unlabeled case; predicts only the cases without complete output."""
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
        from tqdm import tqdm

        work = self._work(round_index)
        output = work / "teacher_predictions"
        checkpoint_stamp = _file_stamp(teacher.checkpoint)
        if state.get("prediction_teacher") != checkpoint_stamp:  # another teacher's predictions are stale
            shutil.rmtree(output, ignore_errors=True)
            state["prediction_teacher"] = checkpoint_stamp
            write_state(self._raw(round_index), state)
        images = work / "unlabeled_images"
        shutil.rmtree(images, ignore_errors=True)
        images.mkdir(parents=True)
        for case, files in sorted(self.source.unlabeled.items()):
            for channel, image in enumerate(files):
                (images / f"{case}_{channel:04d}{self.source.dataset_json['file_ending']}").symlink_to(
                    os.path.realpath(image))
        file_ending = self.source.dataset_json["file_ending"]
        cases = sorted(self.source.unlabeled)
        read_seg = PlansManager(self.source.plans).image_reader_writer_class().read_seg

        def predict(missing: List[str]) -> None:
            self.printer(f"predicting {len(missing)} of {len(cases)} unlabeled cases with the teacher")
            command = console_command("nnUNetv2_predict_from_modelfolder") + [
                "-i", str(images), "-o", str(output), "-m", teacher.model_folder, "-f", str(teacher.fold),
                "-chk", "checkpoint_final.pth", "-device", self.settings.device, "--save_probabilities",
                "--continue_prediction", "-npp", "1", "-nps", str(max(1, self.settings.num_processes // 2))]
            if not self.settings.tta:
                command.append("--disable_tta")
            self._run(command, work / "logs" / f"predict_round{round_index}.log")

        missing = missing_predictions(str(output), cases, file_ending)
        if missing:
            predict(missing)
        for attempt in (1, 2):
            confidences, broken = {}, {}
            for case in tqdm(cases, desc="scoring the teacher's predictions", unit="case", leave=False):
                try:
                    confidences[case] = read_case_confidence(str(output), case, file_ending,
                                                             lambda f: read_seg(f)[0])
                except PredictionFileError as e:
                    broken[case] = str(e)
            if not broken:
                return confidences
            if attempt == 2:
                raise SelfTrainingError(f"The teacher's predictions in {output} are still incomplete after predicting "
                                        f"them again:\n  " + "\n  ".join(broken.values()))
            self.printer(f"incomplete predictions (an interrupted run?), predicting these again:\n  "
                         + "\n  ".join(broken.values()))
            for case in broken:
                for f in prediction_files(str(output), case, file_ending):
                    if os.path.isfile(f):
                        os.remove(f)
            predict(sorted(broken))
        raise AssertionError("unreachable")

    # -- derived dataset
    def source_splits(self) -> List[dict]:
        """The source's splits_final.json, or the split nnU-Net would make (when the teacher came from elsewhere)."""
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
        from nnunetv2.utilities.crossval_split import generate_crossval_split
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        from nnunetv2_scdl.data.splits import read_benchmark_split

        splits = read_benchmark_split(self.source.preprocessed_folder)
        if splits is None:
            data_identifier = PlansManager(self.source.plans).get_configuration(
                self.settings.configuration).data_identifier
            data_folder = os.path.join(self.source.preprocessed_folder, data_identifier)
            splits = generate_crossval_split(sorted(infer_dataset_class(data_folder).get_identifiers(data_folder)),
                                             seed=12345, n_splits=_CROSSVAL_FOLDS)
        return splits

    def write_dataset(self, round_index: int, pseudo_labeled: List[str], splits: List[dict]) -> None:
        name = self.derived_names[round_index - 1]
        file_ending = self.source.dataset_json["file_ending"]
        files = training_case_files(self.source.raw_folder, self.source.dataset_json)
        labeled_ids = carried_labeled_cases(splits, self.settings.fold)
        missing = [c for c in labeled_ids if c not in files]
        if missing:
            raise SelfTrainingError(f"Cases of the split are not training cases of {self.source.name}: {missing}")
        labeled = {c: (files[c]["images"], files[c]["label"]) for c in labeled_ids}
        predictions = self._work(round_index) / "teacher_predictions"
        pseudo = {c: (self.source.unlabeled[c], str(predictions / (c + file_ending))) for c in pseudo_labeled}
        try:
            write_derived_raw_dataset(self._raw(round_index), name, self.source.dataset_json, labeled, pseudo,
                                      f"Self-training round {round_index} of {self.source.name}: {len(labeled)} "
                                      f"labeled and {len(pseudo)} pseudo-labeled cases (see self_training.json).")
        except DerivedDatasetError as e:
            raise SelfTrainingError(str(e)) from None

    def preprocess(self, round_index: int, pseudo_labeled: List[str], splits: List[dict]) -> None:
        name = self.derived_names[round_index - 1]
        logs = self._work(round_index) / "logs"
        target = os.path.join(self.roots.preprocessed, name)
        os.makedirs(target, exist_ok=True)
        shutil.copyfile(os.path.join(self._raw(round_index), "dataset.json"), os.path.join(target, "dataset.json"))
        self.printer(f"copying {self.settings.plans} of {self.source.name} to {name} and preprocessing it")
        derived_id = str(self.settings.derived_dataset_id + round_index - 1)
        # nnU-Net's order for moving plans: the target's fingerprint (nnUNetv2_train copies it), the plans, preprocessing
        self._run(console_command("nnUNetv2_extract_fingerprint") +
                  ["-d", derived_id, "-np", str(self.settings.num_processes), "--clean"], logs / "fingerprint.log")
        self._run(console_command("nnUNetv2_move_plans_between_datasets") +
                  ["-s", self.source.name, "-t", name, "-sp", self.settings.plans, "-tp", self.settings.plans],
                  logs / "move_plans.log")
        self._run(console_command("nnUNetv2_preprocess") +
                  ["-d", derived_id, "-plans_name", self.settings.plans,
                   "-c", self.settings.configuration, "-np", str(self.settings.num_processes)],
                  logs / "preprocess.log")
        save_json(derived_splits(splits, self.settings.fold, pseudo_labeled), os.path.join(target, "splits_final.json"),
                  sort_keys=False)

    # -- one round
    def run_round(self, round_index: int, teacher: TrainedModel, last: bool) -> RoundResult:
        settings = self.settings
        raw = self._raw(round_index)
        name = self.derived_names[round_index - 1]
        state = read_state(raw) or {"settings": _round_settings(settings, self.source, round_index), "stages": {}}
        write_state(raw, state)  # claims the ID before anything else of this round is written
        self.printer(f"round {round_index}/{settings.rounds}: {name} (teacher: {teacher.model_folder})")

        if "confidences" not in state:
            confidences = self.predict_and_score(teacher, round_index, state)
            state["confidences"] = {c: s.to_json() for c, s in confidences.items()}
            write_state(raw, state)
        else:
            self.printer(f"the teacher's predictions are scored already ({len(state['confidences'])} cases)")
        confidences = {c: CaseConfidence.from_json(s) for c, s in state["confidences"].items()}
        selection = select_confident_cases(confidences, settings.min_confidence, settings.keep_fraction)
        result = RoundResult(round_index, name, selection.selected, selection.rejected)
        self.printer(f"pseudo-labels kept: {len(selection.selected)} of {len(confidences)} unlabeled cases "
                     f"(minimum confidence {settings.min_confidence:g}, keep fraction {settings.keep_fraction:g})")
        if not selection.selected:
            known = sorted((s.confidence for s in confidences.values() if s.confidence is not None), reverse=True)
            reason = (f"the highest confidence is {known[0]:.4f}" if known else
                      "the teacher predicted no foreground in any of them")
            raise SelfTrainingError(f"No unlabeled case passed the selection ({reason}), so there is nothing to add "
                                    f"to the labeled cases. Scores: {raw}/self_training.json. Lower --min-confidence "
                                    f"or train a better teacher.")
        if last and settings.stop_after == "predict":
            return result

        splits = self.source_splits()
        if not state["stages"].get("dataset_written"):
            self.write_dataset(round_index, selection.selected, splits)
            state["stages"]["dataset_written"] = True
            write_state(raw, state)
        if not state["stages"].get("preprocessed"):
            self.preprocess(round_index, selection.selected, splits)
            state["stages"]["preprocessed"] = True
            write_state(raw, state)
        if last and settings.stop_after == "dataset":
            return result

        logs = self._work(round_index) / "logs"
        result.student = self.train("student", name, settings.trainer("student"), settings.student_budget,
                                    logs / "train_student.log")
        if settings.finetune:
            result.finetuned = self.train("fine-tuned student", name, FINETUNE_TRAINER,
                                          settings.finetune_budget or settings.student_budget,
                                          logs / "train_finetune.log", pretrained=result.student.checkpoint)
        state["models"] = [asdict(m) for m in (result.student, result.finetuned) if m is not None]
        write_state(raw, state)
        return result

    def run(self) -> SelfTrainingResult:
        from tqdm import tqdm

        rounds = self.settings.rounds
        progress = tqdm(total=rounds + 1, desc="self-training", unit="stage", dynamic_ncols=True)
        previous_printer = self.printer

        def below_the_bar(line: str) -> None:
            with tqdm.external_write_mode():
                previous_printer(line)
        self.printer = below_the_bar
        try:
            # claim round 1 first: the teacher's logs go to its work folder
            state = read_state(self._raw(1)) or {"settings": _round_settings(self.settings, self.source, 1),
                                                  "stages": {}}
            write_state(self._raw(1), state)
            progress.set_description("self-training: teacher")
            result = SelfTrainingResult(self.teacher())
            progress.update()
            if self.settings.stop_after == "teacher":
                return result
            teacher = result.teacher
            for round_index in range(1, rounds + 1):
                progress.set_description(f"self-training: round {round_index}/{rounds}")
                outcome = self.run_round(round_index, teacher, last=round_index == rounds)
                result.rounds.append(outcome)
                progress.update()
                if outcome.final_model is None:  # stopped early
                    break
                teacher = outcome.final_model
            summary = self._work(len(result.rounds)) / "summary.json"
            save_json(result.to_json(), str(summary), sort_keys=False)
            return result
        finally:
            progress.close()
            self.printer = previous_printer


def _file_stamp(path: str) -> List[float]:
    status = os.stat(path)
    return [status.st_size, status.st_mtime]


def optimiser_steps(fold_folder: str) -> Optional[int]:
    """Epochs in the fold's final checkpoint times the iterations per epoch printed in its training log by this
    package's trainers; None when the log does not print them (nnU-Net's own trainers)."""
    import torch

    checkpoint = os.path.join(fold_folder, "checkpoint_final.pth")
    if not os.path.isfile(checkpoint):
        return None
    epochs = torch.load(checkpoint, map_location="cpu", weights_only=False)["current_epoch"]
    iterations = None
    for log in sorted(Path(fold_folder).glob("training_log_*.txt")):
        found = _ITERATIONS_LINE.findall(log.read_text(errors="replace"))
        iterations = int(found[-1]) if found else iterations
    return None if iterations is None else epochs * iterations


def run_self_training(settings: SelfTrainingSettings, env: Optional[Dict[str, str]] = None,
                      printer: Callable[[str], None] = print) -> SelfTrainingResult:
    """Run (or resume) self-training; see the module docstring and docs/self_training.md.

    ``env`` (default ``os.environ``) gives nnU-Net's three folders and is passed to every command. Raises
    :class:`SelfTrainingError` for bad input (before anything is trained or written) and
    :class:`~nnunetv2_scdl.cli.commands.StepError` when an nnU-Net command fails.
    """
    pipeline = _Pipeline(settings, dict(os.environ if env is None else env), printer)
    return pipeline.run()
