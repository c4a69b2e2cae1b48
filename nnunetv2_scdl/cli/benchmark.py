"""``nnUNetv2_scdl_benchmark``: train several trainers on the same low-label split and budget, predict the validation
cases with ``nnUNetv2_predict``, evaluate them, and write a comparison report.

    nnUNetv2_plan_and_preprocess -d 4 -c 3d_fullres
    nnUNetv2_scdl_cpu_plans -d 4 -c 3d_fullres                       # optional: small plans for a CPU run
    nnUNetv2_scdl_benchmark -d 4 --split splits/Dataset004_Hippocampus_5pct.json -p nnUNetPlans_cpu \\
        --epochs 10 --iterations-per-epoch 25 -o bench/hippocampus_5pct

For each trainer (default: the supervised reference and every semi-supervised trainer with and without SCDL), in its
own ``<output>/nnUNet_results`` so that different benchmarks never share a model folder:

1. ``nnUNetv2_train DATASET CONFIGURATION 0 -tr TRAINER -p PLANS --c`` with the budget, the seed and no final
   validation set through ``SCDL_*`` variables (the same for every trainer);
2. ``nnUNetv2_predict`` of the split's ``val`` cases (``-chk checkpoint_final.pth``);
3. the evaluation of ``nnUNetv2_scdl_evaluate`` (Dice, ASSD, HD95, papers' protocol; head/tail classes from the
   labeled cases' labels), written next to the predictions.

Two rows are nnU-Net self-training rather than a trainer (``--trainers SelfTraining SelfTrainingHalfBudget``; see
docs/benchmark.md): :func:`nnunetv2_scdl.training.self_training.run_self_training` trains a teacher and a student of
the reference trainer, in ``<output>/self_training/<row>/`` (its own nnU-Net folders), and the student is predicted
and evaluated like every other row. ``SelfTraining`` reuses the reference as its teacher and gives the student the
same budget (twice the reference's steps in all); ``SelfTrainingHalfBudget`` gives teacher and student half the
budget each (the reference's steps in all).

Before that it writes the split as ``splits_final.json``, runs ``nnUNetv2_preprocess`` if the plans' data are missing,
and ``nnUNetv2_scdl_preprocess_unlabeled``. After each trainer it rewrites ``<output>/benchmark.md`` (tables),
``benchmark.json`` (every number) and three plots (per-class Dice, Dice against time, pseudo Dice per epoch). Run the
same command again to resume: finished steps are skipped, a half-trained model continues from its last checkpoint.
Changing the settings of an existing output folder is refused.

Several seeds (``--seed 0 1 2``) run one after the other, each in its own ordinary benchmark folder
``<output>/seed_<seed>``, and ``<output>/benchmark.md`` merges them (mean ± sd over seeds, paired differences; see
:mod:`nnunetv2_scdl.evaluation.seed_report`). Another invocation into the same output (e.g. a second set of trainers,
or another seed) adds to those folders.

``--learning-curve 600 1200 2400`` trains only the supervised reference, at each budget in ``<output>/steps_0600``,
``<output>/steps_1200``, ...: each is the folder that ``--trainers nnUNetTrainerSupervised --epochs STEPS/IT
--iterations-per-epoch IT -o <output>/steps_<STEPS>`` writes, so such folders are resumed.
``<output>/learning_curve.md`` (with ``.json`` and ``.png``) reports the curve and the protocol budget
(:mod:`nnunetv2_scdl.evaluation.learning_curve`).

``--summaries DIR`` writes each finished trainer's small summary (JSON) to ``DIR/seed_<seed>/<trainer>.json``
(``DIR/steps_<steps>/seed_<seed>/...`` for a learning curve); ``nnUNetv2_scdl_benchmark_report`` rebuilds the report
from them alone.
"""
import argparse
import copy
import json
import math
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional

from nnunetv2_scdl.cli.commands import (TRAINING_PROGRESS, EpochProgress, StepError, code_provenance,
                                        console_command, dataset_id_of, exit_code_of, external_trainer_path, run_logged,
                                        source_checkout_pythonpath)
from nnunetv2_scdl.cli.benchmark_report import (STATE_FILE, collect_summaries, export_summaries, is_run_folder,
                                               report_sources, seed_folder, seed_subfolders, steps_folder)
from nnunetv2_scdl.cli.evaluate import OUTPUT_STEM
from nnunetv2_scdl.evaluation.benchmark_report import (BENCHMARK_TRAINERS, LEARNED_SUSTAIN, LEARNED_THRESHOLD,
                                                       REFERENCE_TRAINER, SELF_TRAINING, SELF_TRAINING_HALF_BUDGET,
                                                       SELF_TRAINING_NOTE, SELF_TRAINING_ROWS, TrainerRecord,
                                                       check_comparable, has_paper_protocol, learned_epoch_table,
                                                       per_class_table, plot_benchmark, plot_learning_curves,
                                                       scdl_effect, scdl_effect_table, self_training_table,
                                                       summary_table)
from nnunetv2_scdl.evaluation.benchmark_summary import training_summary

FOLD = "0"
# settings that must match to resume an output folder (the trainer list may grow)
_RESUME_KEYS = ("dataset", "configuration", "plans", "split", "epochs", "iterations_per_epoch",
                "val_iterations_per_epoch", "seed", "device", "tta", "paper_protocol", "scdl_environment")


# SCDL_* variables the runner sets for every trainer (the user's own values of these are overridden)
_RUNNER_VARIABLES = ("SCDL_NUM_EPOCHS", "SCDL_NUM_ITERATIONS_PER_EPOCH", "SCDL_NUM_VAL_ITERATIONS_PER_EPOCH",
                     "SCDL_SEED", "SCDL_FINAL_VALIDATION", "SCDL_SAVE_EVERY", "SCDL_STOP_AFTER_EPOCHS")


@dataclass
class BenchmarkPaths:
    output: Path

    @property
    def results(self) -> Path:
        return self.output / "nnUNet_results"

    @property
    def images(self) -> Path:
        return self.output / "inputs" / "imagesVal"

    @property
    def labels(self) -> Path:
        return self.output / "inputs" / "labelsVal"

    @property
    def logs(self) -> Path:
        return self.output / "logs"

    def predictions(self, trainer: str) -> Path:
        return self.output / "predictions" / trainer

    def self_training(self, row: str) -> Path:
        """The nnU-Net folders (raw, preprocessed, results) of a self-training row."""
        return self.output / "self_training" / row


# ----------------------------------------------------------------------------------------------------------------------
# settings, state, environment
# ----------------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnUNetv2_scdl_benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", dest="dataset", required=True, help="dataset name or ID")
    parser.add_argument("--split", required=True, type=Path,
                        help="split JSON with the keys labeled, unlabeled and val (written as splits_final.json)")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="benchmark folder (models, predictions, logs, report); reuse it to resume")
    parser.add_argument("-c", dest="configuration", default="3d_fullres", help="configuration (default 3d_fullres)")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("--trainers", nargs="+", default=None,
                        help=f"trainer class names (default: all {len(BENCHMARK_TRAINERS)}: the supervised "
                             f"reference and every semi-supervised trainer with and without SCDL). "
                             f"{REFERENCE_TRAINER} is added first as the reference row (see --no-reference). "
                             f"{SELF_TRAINING} and "
                             f"{SELF_TRAINING_HALF_BUDGET} add nnU-Net self-training rows: teacher and student each "
                             f"with the budget (the reference is the teacher), or each with half of it")
    parser.add_argument("--no-reference", action="store_true",
                        help=f"do not add {REFERENCE_TRAINER}: its row comes from another folder of the same "
                             f"settings (e.g. the learning curve's run at the protocol budget), merged with "
                             f"nnUNetv2_scdl_benchmark_report or --summaries. Lets two invocations with different "
                             f"--trainers run at once, each into its own -o folder")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per trainer (SCDL_NUM_EPOCHS); required unless --learning-curve")
    parser.add_argument("--iterations-per-epoch", type=int, required=True,
                        help="optimiser steps per epoch (SCDL_NUM_ITERATIONS_PER_EPOCH)")
    parser.add_argument("--learning-curve", type=int, nargs="+", metavar="STEPS", default=None,
                        help="train only the supervised reference, once per budget of STEPS optimiser steps (each a "
                             "multiple of --iterations-per-epoch), in <output>/steps_<STEPS>; report the learning "
                             "curve and the protocol budget")
    parser.add_argument("--val-iterations", type=int, default=2,
                        help="nnU-Net's per-epoch pseudo-Dice batches (SCDL_NUM_VAL_ITERATIONS_PER_EPOCH, default 2)")
    parser.add_argument("--stop-after-epochs", type=int, default=None, metavar="N",
                        help="train each trainer only until N epochs of its --epochs schedule are done "
                             "(SCDL_STOP_AFTER_EPOCHS: same learning rates as the full run), skip prediction and "
                             "evaluation, and print when each network left the background plateau "
                             "(nnUNetv2_scdl_plateau). The same command without it continues every run to the end")
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="seed of every trainer (SCDL_SEED, default 0); several seeds run one after the other, "
                             "each in <output>/seed_<seed>, with a report over seeds in <output>")
    parser.add_argument("--seed-folders", action="store_true",
                        help="put even a single seed into <output>/seed_<seed> (implied by several seeds, or when "
                             "<output> already holds seed_<n> folders)")
    parser.add_argument("--summaries", type=Path, default=None,
                        help="also write each finished trainer's small summary (JSON) to "
                             "SUMMARIES/[steps_<steps>/]seed_<seed>/<trainer>.json, e.g. under docs/results/")
    parser.add_argument("-device", dest="device", choices=("cpu", "cuda", "mps"), default=None,
                        help="training and prediction device (default: cuda if available, else cpu)")
    parser.add_argument("--tta", action="store_true", help="predict with mirroring (off by default: CPU time)")
    parser.add_argument("--no-paper-protocol", action="store_true",
                        help="evaluate on the original grid only (skip the papers' resized-grid protocol)")
    parser.add_argument("--overwrite-split", action="store_true",
                        help="replace an existing, different splits_final.json (a backup is kept)")
    parser.add_argument("-np", dest="num_processes", type=int, default=2,
                        help="processes for preprocessing and prediction export (default 2)")
    parser.add_argument("--ext-trainer-dir", action="append", default=[],
                        help="another folder for nnUNet_extTrainer (repeatable), for your own trainers")
    parser.add_argument("--verbose", action="store_true", help="echo every line of every command")
    return parser


def default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def benchmark_settings(args: argparse.Namespace, dataset_name: str, split) -> dict:
    """Everything that defines the comparison; a resumed run must match it."""
    scdl_environment = {k: v for k, v in sorted(os.environ.items())
                        if k.startswith("SCDL_") and k not in _RUNNER_VARIABLES}
    return {
        "dataset": dataset_name, "configuration": args.configuration, "plans": args.plans,
        "split": {"file": str(args.split.resolve()), "labeled": sorted(split.labeled),
                  "unlabeled": sorted(split.unlabeled), "val": sorted(split.val)},
        "epochs": args.epochs, "iterations_per_epoch": args.iterations_per_epoch,
        "val_iterations_per_epoch": args.val_iterations, "seed": args.seed, "device": args.device,
        "tta": args.tta, "paper_protocol": not args.no_paper_protocol,
        # SCDL_* variables the user set (hyperparameter overrides) change every trainer: part of the settings
        "scdl_environment": scdl_environment,
    }


def load_or_create_state(paths: BenchmarkPaths, settings: dict, command: str) -> dict:
    """The folder's state, with ``command`` added to its commands; refuses other settings than the folder's."""
    state_file = paths.output / STATE_FILE
    if not state_file.is_file():
        return {"settings": settings, "commands": [command], "trainers": {}}
    state = json.loads(state_file.read_text())
    different = [k for k in _RESUME_KEYS if state["settings"].get(k) != settings.get(k)]
    if different:
        raise StepError(f"{paths.output} holds a benchmark with other settings ({', '.join(different)}); "
                        f"resume it with its own command:\n  {state['commands'][-1]}\nor choose a new -o folder.")
    if command not in state["commands"]:  # e.g. trainers appended: the report names every command that ran
        state["commands"].append(command)
    return state


def save_state(paths: BenchmarkPaths, state: dict) -> None:
    target = paths.output / STATE_FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, target)


def benchmark_environment(paths: BenchmarkPaths, args: argparse.Namespace) -> Dict[str, str]:
    env = source_checkout_pythonpath(os.environ)
    env.update({
        "nnUNet_results": str(paths.results),
        "nnUNet_extTrainer": external_trainer_path(
            [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p] + args.ext_trainer_dir),
        "SCDL_NUM_EPOCHS": str(args.epochs),
        "SCDL_NUM_ITERATIONS_PER_EPOCH": str(args.iterations_per_epoch),
        "SCDL_NUM_VAL_ITERATIONS_PER_EPOCH": str(args.val_iterations),
        "SCDL_SEED": str(args.seed),
        "SCDL_FINAL_VALIDATION": "0",  # the val cases are predicted with nnUNetv2_predict below
        "SCDL_SAVE_EVERY": "1",  # a checkpoint per epoch: an interrupted benchmark loses at most one epoch
        "SCDL_STOP_AFTER_EPOCHS": str(getattr(args, "stop_after_epochs", None) or 0),
        "PYTHONUNBUFFERED": "1",
    })
    if args.device == "cpu":
        env.setdefault("nnUNet_compile", "f")
    return env


# ----------------------------------------------------------------------------------------------------------------------
# preparation
# ----------------------------------------------------------------------------------------------------------------------
def resolve_dataset_and_split(args: argparse.Namespace):
    """(dataset info, checked split, preprocessed folder); reads names and dataset.json only, writes nothing."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunetv2_scdl.data.splits import load_split_file, raw_case_files, validate_split
    from nnunetv2_scdl.evaluation.dataset_info import read_dataset_info

    dataset_name = maybe_convert_to_dataset_name(args.dataset)
    raw_folder = Path(nnUNet_raw) / dataset_name
    split = load_split_file(str(args.split))
    validate_split(split, raw_case_files(str(raw_folder)), dataset_name)
    return read_dataset_info(str(raw_folder)), split, Path(nnUNet_preprocessed) / dataset_name


def prepare_dataset(args: argparse.Namespace, dataset, split, preprocessed: Path, paths: BenchmarkPaths,
                    env: Dict[str, str], printer) -> None:
    """Write the split, preprocess what is missing, link the validation images and labels."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_scdl.data.splits import write_splits_final

    plans_file = preprocessed / f"{args.plans}.json"
    if not plans_file.is_file():
        raise StepError(f"{plans_file} not found. Run nnUNetv2_plan_and_preprocess -d {args.dataset} -c "
                        f"{args.configuration} (and nnUNetv2_scdl_cpu_plans for CPU plans) first.")
    configuration = PlansManager(str(plans_file)).get_configuration(args.configuration)
    printer(f"splits_final.json {write_splits_final(str(preprocessed), split, args.overwrite_split)}: "
            f"{len(split.labeled)} labeled, {len(split.unlabeled)} unlabeled, {len(split.val)} validation cases")
    if not (preprocessed / configuration.data_identifier).is_dir():
        printer(f"preprocessing {args.configuration} of {args.plans} (nnUNetv2_preprocess) ...")
        run_logged(console_command("nnUNetv2_preprocess") +
                   ["-d", dataset_id_of(dataset.name), "-plans_name", args.plans, "-c", args.configuration, "-np",
                    str(args.num_processes)], env, paths.logs / "preprocess.log", printer=printer)
    run_logged(console_command("nnUNetv2_scdl_preprocess_unlabeled") +
               ["-d", dataset.name, "-c", args.configuration, "-p", args.plans, "-np", str(args.num_processes)],
               env, paths.logs / "preprocess_unlabeled.log", printer=printer)
    link_validation_cases(dataset.folder, split.val, dataset.file_ending, paths)


def link_validation_cases(raw_folder: Path, cases: List[str], file_ending: str, paths: BenchmarkPaths) -> None:
    """Symlink the validation cases' images (every channel) and labels into the benchmark's input folders."""
    paths.images.mkdir(parents=True, exist_ok=True)
    paths.labels.mkdir(parents=True, exist_ok=True)
    for case in cases:
        channels = sorted((raw_folder / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{file_ending}"))
        label = raw_folder / "labelsTr" / f"{case}{file_ending}"
        if not channels or not label.is_file():
            raise StepError(f"Validation case {case}: image or label missing in {raw_folder}.")
        for source, target in [(c, paths.images / c.name) for c in channels] + [(label, paths.labels / label.name)]:
            if not target.is_symlink() and not target.exists():
                target.symlink_to(source.resolve())


# ----------------------------------------------------------------------------------------------------------------------
# one trainer
# ----------------------------------------------------------------------------------------------------------------------
def fold_folder(paths: BenchmarkPaths, dataset_name: str, trainer: str, plans: str, configuration: str) -> Path:
    return paths.results / dataset_name / f"{trainer}__{plans}__{configuration}" / f"fold_{FOLD}"


def epochs_done(checkpoint_file: Path) -> int:
    import torch

    return int(torch.load(checkpoint_file, map_location="cpu", weights_only=False)["current_epoch"])


def train(trainer: str, dataset_name: str, args: argparse.Namespace, paths: BenchmarkPaths, env: Dict[str, str],
          printer) -> Optional[Path]:
    """Train (or continue training) ``trainer`` unless its ``checkpoint_final.pth`` exists; return the fold folder,
    or ``None`` where ``--stop-after-epochs`` stopped it (its ``checkpoint_latest.pth`` holds the run)."""
    fold = fold_folder(paths, dataset_name, trainer, args.plans, args.configuration)
    if (fold / "checkpoint_final.pth").is_file():
        return fold
    resuming = (fold / "checkpoint_latest.pth").is_file()
    stop = getattr(args, "stop_after_epochs", None)
    if stop and resuming and epochs_done(fold / "checkpoint_latest.pth") >= stop:
        return None  # already past the probe's end: nothing to train
    printer(f"  {'continuing' if resuming else 'training'} {trainer}")
    train_env = dict(env)
    if args.device == "cpu":
        train_env.setdefault("nnUNet_n_proc_DA", "0")  # on a few cores, in-process augmentation is faster
    with EpochProgress(f"{trainer}: epochs", stop or args.epochs) as epochs:
        run_logged(console_command("nnUNetv2_train") +
                   [dataset_name, args.configuration, FOLD, "-tr", trainer, "-p", args.plans, "-device", args.device,
                    "--c"], train_env, paths.logs / f"train_{trainer}.log", echo=TRAINING_PROGRESS,
                   verbose=args.verbose, printer=printer, on_line=epochs)
    if stop and not (fold / "checkpoint_final.pth").is_file() and (fold / "checkpoint_latest.pth").is_file():
        return None
    if not (fold / "checkpoint_final.pth").is_file():
        raise StepError(f"nnUNetv2_train finished but {fold / 'checkpoint_final.pth'} is missing; see "
                        f"{paths.logs / f'train_{trainer}.log'}.")
    return fold


def predict(trainer: str, dataset_name: str, args: argparse.Namespace, paths: BenchmarkPaths, env: Dict[str, str],
            printer, final_model: Optional[dict] = None) -> Path:
    """Predict the validation cases with the row's model: ``trainer`` on ``dataset_name``, or for a self-training row
    its ``final_model`` (``dataset`` and ``trainer``, in the row's own ``nnUNet_results``)."""
    output = paths.predictions(trainer)
    model_dataset, model_trainer = dataset_name, trainer
    if final_model is not None:
        model_dataset, model_trainer = final_model["dataset"], final_model["trainer"]
        env = dict(env, nnUNet_results=str(paths.self_training(trainer) / "nnUNet_results"))
    command = console_command("nnUNetv2_predict") + [
        "-i", str(paths.images), "-o", str(output), "-d", model_dataset, "-c", args.configuration, "-tr",
        model_trainer, "-p", args.plans, "-f", FOLD, "-chk", "checkpoint_final.pth", "-device", args.device,
        "-npp", "1", "-nps", str(max(1, args.num_processes // 2)), "--continue_prediction"]
    if not args.tta:
        command.append("--disable_tta")
    run_logged(command, env, paths.logs / f"predict_{trainer}.log", verbose=args.verbose, printer=printer)
    return output


# ----------------------------------------------------------------------------------------------------------------------
# self-training rows
# ----------------------------------------------------------------------------------------------------------------------
def self_training_budgets(row: str, args: argparse.Namespace):
    """(teacher budget, student budget) of a self-training row; the teacher budget is None where the reference, trained
    with the runner's budget, is the teacher. With half the budget each and odd epochs, the teacher gets the extra
    epoch: its pseudo-labels are what the student learns from."""
    from nnunetv2_scdl.training.self_training import TrainingBudget

    budget = TrainingBudget(args.epochs, args.iterations_per_epoch, args.val_iterations)
    if row == SELF_TRAINING:
        return None, budget
    return replace(budget, epochs=math.ceil(args.epochs / 2)), replace(budget, epochs=args.epochs // 2)


#: the pseudo-label selection of the self-training rows (docs/self_training.md); like every SCDL_* variable, part of
#: the benchmark folder's settings
SELF_TRAINING_SELECTION_VARIABLES = {"min_confidence": "SCDL_SELF_TRAINING_MIN_CONFIDENCE",
                                     "keep_fraction": "SCDL_SELF_TRAINING_KEEP_FRACTION"}


def self_training_selection(env: Dict[str, str]) -> Dict[str, float]:
    """``min_confidence`` and ``keep_fraction`` from ``SCDL_SELF_TRAINING_*``, self-training's defaults otherwise."""
    from nnunetv2_scdl.data.pseudo_labels import DEFAULT_KEEP_FRACTION, DEFAULT_MIN_CONFIDENCE

    selection = {"min_confidence": DEFAULT_MIN_CONFIDENCE, "keep_fraction": DEFAULT_KEEP_FRACTION}
    for key, variable in SELF_TRAINING_SELECTION_VARIABLES.items():
        if env.get(variable, "").strip():
            try:
                selection[key] = float(env[variable])
            except ValueError:
                raise StepError(f"{variable}={env[variable]!r} is not a number.") from None
    return selection


def derived_dataset_id(dataset_name: str) -> int:
    """The derived dataset's ID. The row's own nnU-Net folders hold only the source dataset besides it, so any other
    ID is free: 999, or 998 for a source numbered 999."""
    return 998 if dataset_id_of(dataset_name) == "999" else 999


def self_training_folders(paths: BenchmarkPaths, row: str, dataset_name: str) -> Dict[str, str]:
    """The row's own ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results``, with the source dataset linked
    into the first two (self-training only reads the source), so the derived dataset never lands among yours."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    folders = {}
    for variable, source_root in (("nnUNet_raw", nnUNet_raw), ("nnUNet_preprocessed", nnUNet_preprocessed),
                                  ("nnUNet_results", None)):
        folder = paths.self_training(row) / variable
        folder.mkdir(parents=True, exist_ok=True)
        if source_root is not None:
            link, source = folder / dataset_name, (Path(source_root) / dataset_name).resolve()
            if link.is_symlink() and Path(os.readlink(link)) != source:  # the user's folders moved
                link.unlink()
            if not link.is_symlink():
                link.symlink_to(source, target_is_directory=True)
        folders[variable] = str(folder)
    return folders


def train_self_training(row: str, dataset_name: str, args: argparse.Namespace, paths: BenchmarkPaths,
                        env: Dict[str, str], printer) -> dict:
    """Run (or resume) the self-training of ``row``; return its training entry: the models' summed epoch time, epochs
    and optimiser steps, their pseudo Dice one after the other, each model (``models``) and the model that predicts
    (``final_model``)."""
    from nnunetv2_scdl.training.self_training import SelfTrainingSettings, run_self_training

    teacher_budget, student_budget = self_training_budgets(row, args)
    teacher_folder = None
    if teacher_budget is None:  # the reference row's model: same trainer, budget, seed and environment
        teacher_folder = str(train(REFERENCE_TRAINER, dataset_name, args, paths, env, printer).parent)
    settings = SelfTrainingSettings(
        dataset=dataset_name, configuration=args.configuration, fold=int(FOLD),
        derived_dataset_id=derived_dataset_id(dataset_name), plans=args.plans, teacher_trainer=REFERENCE_TRAINER,
        student_trainer=REFERENCE_TRAINER, teacher_model_folder=teacher_folder, teacher_budget=teacher_budget,
        student_budget=student_budget, seed=args.seed, final_validation=False, device=args.device, tta=args.tta,
        num_processes=args.num_processes, verbose=args.verbose, **self_training_selection(env))
    printer(f"  self-training {row}: teacher " + (f"{REFERENCE_TRAINER} (the reference row's model)"
                                                  if teacher_folder else f"{teacher_budget.optimiser_steps} steps")
            + f", student {student_budget.optimiser_steps} steps, in {paths.self_training(row)}")
    result = run_self_training(settings, dict(env, **self_training_folders(paths, row, dataset_name)),
                               lambda line: printer(f"  {line}"))
    entry = {"seconds": 0.0, "epochs": 0, "steps": 0, "pseudo_dice": [], "models": []}
    for model in result.models:
        trained = training_summary(Path(model.checkpoint))
        # the steps the pipeline read from the model's log; the runner's own count where the log does not say
        steps = model.optimiser_steps if model.optimiser_steps is not None else \
            trained["epochs"] * args.iterations_per_epoch
        role = "teacher (the reference)" if model.role == "teacher" and teacher_folder else model.role
        entry["models"].append({"role": role, "dataset": model.dataset, "trainer": model.trainer, "steps": steps,
                                "epochs": trained["epochs"], "seconds": round(trained["seconds"], 1)})
        entry["seconds"] += trained["seconds"]
        entry["epochs"] += trained["epochs"]
        entry["steps"] += steps
        entry["pseudo_dice"] += trained["pseudo_dice"]
    entry["final_model"] = {"dataset": result.final_model.dataset, "trainer": result.final_model.trainer}
    return entry


def evaluate(trainer: str, dataset, split, args: argparse.Namespace, paths: BenchmarkPaths) -> dict:
    """Evaluate the trainer's predictions like ``nnUNetv2_scdl_evaluate``; write its three reports; return the JSON."""
    from nnunetv2_scdl.evaluation import (EvaluationSettings, evaluate_folders, groups_from_labeled_files,
                                          labeled_label_files)
    from nnunetv2_scdl.evaluation.plot import plot_per_class
    from nnunetv2_scdl.evaluation.report import result_to_json_dict, write_json, write_markdown

    labeled = labeled_label_files(dataset.folder / "labelsTr", dataset.file_ending, split.labeled)
    groups = groups_from_labeled_files(labeled, sorted(dataset.class_names))
    settings = EvaluationSettings() if not args.no_paper_protocol else EvaluationSettings(paper_grid_zyx=None)
    output = paths.predictions(trainer)
    result = evaluate_folders(output, paths.labels, dataset.class_names, groups, dataset.file_ending, settings,
                              dataset_name=dataset.name, show_progress=False)
    write_json(result, output / f"{OUTPUT_STEM}.json")
    write_markdown(result, output / f"{OUTPUT_STEM}.md")
    plot_per_class(result, output / f"{OUTPUT_STEM}_per_class.png")
    return result_to_json_dict(result)


# ----------------------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------------------
def records_in_order(state: dict, trainers: List[str], paths: BenchmarkPaths) -> List[TrainerRecord]:
    records = []
    for trainer in trainers:
        entry = state["trainers"].get(trainer, {})
        evaluation_file = paths.predictions(trainer) / f"{OUTPUT_STEM}.json"
        if entry.get("evaluated") and evaluation_file.is_file():
            # a self-training row counts the steps of all its models
            iterations = entry["training"].get("steps") or \
                state["settings"]["epochs"] * state["settings"]["iterations_per_epoch"]
            records.append(TrainerRecord(trainer, json.loads(evaluation_file.read_text()),
                                         entry["training"]["seconds"], iterations,
                                         entry["training"].get("pseudo_dice"),
                                         iterations_per_epoch=state["settings"]["iterations_per_epoch"],
                                         models=entry["training"].get("models"),
                                         network_pseudo_dice=entry["training"].get("network_pseudo_dice")))
    return records


def write_report(state: dict, trainers: List[str], paths: BenchmarkPaths) -> Optional[Path]:
    """``benchmark.md``, ``benchmark.json`` and the two plots from the trainers evaluated so far."""
    records = records_in_order(state, trainers, paths)
    if not records:
        return None
    check_comparable(records)
    settings = state["settings"]
    split = settings["split"]
    missing = [t for t in trainers if t not in {r.trainer for r in records}]
    evaluation = records[0].evaluation
    tail_names = [evaluation["classes"][str(label)] for label in evaluation["class_groups"]["tail"]]
    plot_benchmark(records, paths.output / "benchmark_dice_per_class.png", paths.output / "benchmark_dice_vs_time.png")
    has_curves = plot_learning_curves(records, paths.output / "benchmark_pseudo_dice.png")
    commands = state["commands"]
    lines = [
        f"# Benchmark: {settings['dataset']}, {len(split['labeled'])} labeled cases",
        "",
        f"- Command: `{commands[0]}`" if len(commands) == 1 else
        "- Commands, in the order they ran in this folder:\n" + "\n".join(f"  - `{c}`" for c in commands),
        f"- Split: `{split['file']}`: {len(split['labeled'])} labeled, {len(split['unlabeled'])} unlabeled, "
        f"{len(split['val'])} validation cases (evaluated).",
        f"- Plans: `{settings['plans']}`, configuration `{settings['configuration']}`, fold {FOLD}.",
        f"- Budget per trainer (per model of a self-training row): {settings['epochs']} epochs × "
        f"{settings['iterations_per_epoch']} iterations = "
        f"{settings['epochs'] * settings['iterations_per_epoch']} optimiser steps; seed {settings['seed']}; device "
        f"{settings['device']}; prediction {'with' if settings['tta'] else 'without'} mirroring.",
        f"- Tail classes ({TAIL_NOTE}): {', '.join(tail_names) or 'none'}.",
        "- Training time: summed epoch durations from the checkpoint (setup excluded).",
    ]
    if settings["scdl_environment"]:
        lines.append(f"- Hyperparameter overrides in the environment: `{settings['scdl_environment']}`.")
    if missing:
        lines.append(f"- Not finished yet: {', '.join(missing)}.")
    lines += ["", "## Summary", "", summary_table(records), "",
              "Dice, ASSD and HD95: original grid, mean over classes of the per-class means over cases; ± is the "
              "standard deviation over cases of each case's mean Dice."
              + (" Paper columns: the GA/SCDL papers' protocol (resized grid, one-directional ASD in voxels)."
                 if has_paper_protocol(records) else ""), "",
              "## Per-class Dice %", "", per_class_table(records), "",
              f"{TAIL_MARK_NOTE}", "",
              "## What SCDL adds to each host", "", scdl_effect_table(records), ""]
    budgets = self_training_table(records)
    if budgets:
        lines += ["## Self-training: optimiser steps", "", SELF_TRAINING_NOTE, "", budgets, ""]
    lines += ["![per-class Dice](benchmark_dice_per_class.png)", "", "![Dice vs time](benchmark_dice_vs_time.png)", ""]
    if has_curves:
        lines += ["## When each class was learned", "",
                  f"First epoch (from 0) from which the pseudo Dice stayed at or above {LEARNED_THRESHOLD:g} for "
                  f"{LEARNED_SUSTAIN} epochs. Pseudo Dice is nnU-Net's per-epoch Dice on "
                  f"{settings['val_iterations_per_epoch']} batches of validation patches, so it is noisy; it shows "
                  f"when training left the \"everything is background\" plateau for each class.", "",
                  learned_epoch_table(records), "", "![pseudo Dice per epoch](benchmark_pseudo_dice.png)", ""]
    (paths.output / "benchmark.md").write_text("\n".join(lines), encoding="utf-8")
    (paths.output / "benchmark.json").write_text(json.dumps({
        "settings": settings, "commands": commands,
        "trainers": {r.trainer: {"training_seconds": r.training_seconds, "iterations": r.iterations,
                                 "pseudo_dice_per_epoch": r.pseudo_dice, "summary": r.evaluation["summary"],
                                 **({"network_pseudo_dice_per_epoch": r.network_pseudo_dice}
                                    if r.network_pseudo_dice else {}),
                                 **({"models": r.models} if r.models else {})}
                     for r in records},
        "class_groups": evaluation["class_groups"], "classes": evaluation["classes"],
        "scdl_effect": scdl_effect(records)}, indent=1))
    return paths.output / "benchmark.md"


TAIL_NOTE = "voxel frequency in the labeled cases below the median of the foreground classes"
TAIL_MARK_NOTE = "† tail class; bold: best trainer for that class."


# ----------------------------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------------------------
def trainers_to_run(args: argparse.Namespace) -> List[str]:
    """``--trainers`` in order, without repeats; the reference row first unless ``--no-reference``."""
    return list(dict.fromkeys(([] if args.no_reference else [REFERENCE_TRAINER]) + list(args.trainers)))


def run_benchmark(args: argparse.Namespace, command: str) -> Optional[Path]:
    from tqdm import tqdm

    if min(args.epochs, args.iterations_per_epoch, args.val_iterations) < 1:
        raise StepError("--epochs, --iterations-per-epoch and --val-iterations must be >= 1.")
    args.device = args.device or default_device()
    trainers = trainers_to_run(args)
    paths = BenchmarkPaths(args.output.resolve())
    paths.logs.mkdir(parents=True, exist_ok=True)
    env = benchmark_environment(paths, args)
    dataset, split, preprocessed = resolve_dataset_and_split(args)
    state = load_or_create_state(paths, benchmark_settings(args, dataset.name, split), command)  # refuses changes
    prepare_dataset(args, dataset, split, preprocessed, paths, env, print)
    save_state(paths, state)

    steps = tqdm(total=3 * len(trainers), desc="benchmark", unit="stage", dynamic_ncols=True)
    try:
        for trainer in trainers:
            entry = state["trainers"].setdefault(trainer, {})
            steps.set_description(f"{trainer}: train")
            if "training" not in entry:
                # predictions of an earlier model would be kept by --continue_prediction: start clean
                shutil.rmtree(paths.predictions(trainer), ignore_errors=True)
                for step in ("predicted", "evaluated"):
                    entry.pop(step, None)
                started = time.monotonic()
                entry.setdefault("code", []).append(code_provenance(env))  # one record per invocation that trains
                save_state(paths, state)
                if trainer in SELF_TRAINING_ROWS:
                    entry["training"] = train_self_training(trainer, dataset.name, args, paths, env, steps.write)
                else:
                    fold = train(trainer, dataset.name, args, paths, env, steps.write)
                    if fold is None:
                        latest = fold_folder(paths, dataset.name, trainer, args.plans, args.configuration) / \
                            "checkpoint_latest.pth"
                        steps.write(f"  {trainer}: stopped after {epochs_done(latest)} of {args.epochs} epochs")
                        steps.update(3)
                        continue
                    entry["training"] = training_summary(fold / "checkpoint_final.pth")
                entry["training"]["wall_seconds_this_run"] = round(time.monotonic() - started, 1)
                save_state(paths, state)
            steps.update()
            steps.set_description(f"{trainer}: predict")
            if not entry.get("predicted"):
                predict(trainer, dataset.name, args, paths, env, steps.write, entry["training"].get("final_model"))
                entry["predicted"] = True
                save_state(paths, state)
            steps.update()
            steps.set_description(f"{trainer}: evaluate")
            if not entry.get("evaluated"):
                summary = evaluate(trainer, dataset, split, args, paths)["summary"]["original"]["mean"]
                entry["evaluated"] = True
                save_state(paths, state)
                steps.write(f"  {trainer}: mean Dice {100 * summary['dice']:.1f} % "
                            f"(training {entry['training']['seconds'] / 60:.1f} min)")
            steps.update()
            write_report(state, trainers, paths)
            export_folder_summaries(args, paths)
    finally:
        steps.close()
    if getattr(args, "stop_after_epochs", None):
        from nnunetv2_scdl.evaluation.plateau import load_sources, plateau_table

        try:
            sources = load_sources([paths.results])
            print(f"When each network left the background plateau (nnUNetv2_scdl_plateau {paths.results}):")
            print(plateau_table(sources))
        except (ValueError, FileNotFoundError) as e:
            print(f"warning: no plateau table for {paths.results}: {e}", file=sys.stderr)
    report = write_report(state, trainers, paths)
    if report is not None:
        print(f"Report: {report}")
    return report


def export_folder_summaries(args: argparse.Namespace, paths: BenchmarkPaths) -> None:
    """With ``--summaries``: (re)write the summaries of this folder's finished trainers."""
    if getattr(args, "summaries", None) is None:
        return
    summaries, _ = collect_summaries(paths.output)
    export_summaries(summaries, args.summaries, by_steps=bool(getattr(args, "learning_curve", None)))


# ----------------------------------------------------------------------------------------------------------------------
# several seeds, learning curve
# ----------------------------------------------------------------------------------------------------------------------
def check_options(args: argparse.Namespace) -> None:
    """Refuse contradictory or impossible options before anything runs; normalise seeds and budgets."""
    if args.iterations_per_epoch < 1 or args.val_iterations < 1:
        raise StepError("--iterations-per-epoch and --val-iterations must be >= 1.")
    args.seed = list(dict.fromkeys(args.seed))
    if args.stop_after_epochs is not None:
        if args.learning_curve is not None or set(args.trainers or ()) & set(SELF_TRAINING_ROWS):
            raise StepError("--stop-after-epochs stops trainers early for their plateau rows; it does not apply to "
                            "--learning-curve or the self-training rows.")
        if args.epochs is not None and not 1 <= args.stop_after_epochs < args.epochs:
            raise StepError(f"--stop-after-epochs must be between 1 and --epochs - 1 ({args.epochs - 1}); got "
                            f"{args.stop_after_epochs}.")
    if args.learning_curve is None:
        if args.no_reference and not set(args.trainers or BENCHMARK_TRAINERS) - {REFERENCE_TRAINER}:
            raise StepError("--no-reference leaves no trainer to run; name the trainers with --trainers.")
        if args.epochs is None:
            raise StepError("--epochs is required (or --learning-curve STEPS ... for the supervised budget search).")
        if SELF_TRAINING_HALF_BUDGET in (args.trainers or ()) and args.epochs < 2:
            raise StepError(f"{SELF_TRAINING_HALF_BUDGET} splits --epochs between teacher and student; it needs at "
                            f"least 2 epochs (got {args.epochs}).")
        return
    if args.epochs is not None:
        raise StepError("--learning-curve sets the epochs of each budget (STEPS / --iterations-per-epoch); leave out "
                        "--epochs.")
    if args.no_reference:
        raise StepError("--learning-curve trains only the reference; leave out --no-reference.")
    if args.trainers is not None and set(args.trainers) != {REFERENCE_TRAINER}:
        raise StepError(f"--learning-curve trains only the supervised reference {REFERENCE_TRAINER}; leave out "
                        f"--trainers.")
    ipe = args.iterations_per_epoch
    wrong = [steps for steps in args.learning_curve if steps < 1 or steps % ipe]
    if wrong:
        raise StepError(f"--learning-curve: {', '.join(map(str, wrong))} step(s) not a positive multiple of "
                        f"--iterations-per-epoch {ipe}; every budget must be a whole number of epochs (e.g. "
                        f"{', '.join(str(max(1, round(s / ipe)) * ipe) for s in wrong)}).")
    args.learning_curve = sorted(set(args.learning_curve))


def folder_command(args: argparse.Namespace, epochs: int, seed: int, output: Path) -> str:
    """The plain single-seed command that writes ``output`` as the seeds or learning-curve mode does; recorded in
    that folder, so the folder is the same as if that command had made it."""
    parts = ["-d", args.dataset, "--split", args.split]
    parts += ["-c", args.configuration] if args.configuration != "3d_fullres" else []
    parts += ["-p", args.plans] if args.plans != "nnUNetPlans" else []
    parts += ["--epochs", epochs, "--iterations-per-epoch", args.iterations_per_epoch]
    parts += ["--val-iterations", args.val_iterations] if args.val_iterations != 2 else []
    trainers = [REFERENCE_TRAINER] if args.learning_curve else args.trainers
    parts += ["--trainers", *trainers] if trainers else []
    parts += ["--no-reference"] if args.no_reference else []
    parts += ["--stop-after-epochs", args.stop_after_epochs] if getattr(args, "stop_after_epochs", None) else []
    parts += ["--seed", seed, "-o", output]
    parts += ["-device", args.device] if args.device else []
    parts += ["--tta"] if args.tta else []
    parts += ["--no-paper-protocol"] if args.no_paper_protocol else []
    parts += ["--overwrite-split"] if args.overwrite_split else []
    parts += ["-np", args.num_processes] if args.num_processes != 2 else []
    for folder in args.ext_trainer_dir:
        parts += ["--ext-trainer-dir", folder]
    parts += ["--verbose"] if args.verbose else []
    return "nnUNetv2_scdl_benchmark " + " ".join(shlex.quote(str(part)) for part in parts)


def single_run_args(args: argparse.Namespace, epochs: int, seed: int, output: Path) -> argparse.Namespace:
    single = copy.copy(args)
    single.epochs, single.seed, single.output = epochs, seed, output
    single.trainers = [REFERENCE_TRAINER] if args.learning_curve else (args.trainers or list(BENCHMARK_TRAINERS))
    return single


def uses_seed_folders(args: argparse.Namespace, output: Path) -> bool:
    """Seeds go into ``seed_<n>`` folders with several seeds, ``--seed-folders``, or an output that has them."""
    seed_layout = len(args.seed) > 1 or args.seed_folders or bool(seed_subfolders(output))
    if seed_layout and is_run_folder(output):
        raise StepError(f"{output} is a single-seed benchmark folder; several seeds go into seed_<n> folders of a new "
                        f"-o folder. To merge this folder with others, use nnUNetv2_scdl_benchmark_report {output} "
                        f"OTHER_FOLDER ... -o MERGED_FOLDER.")
    return seed_layout


def write_merged_report(output: Path, learning_curve: bool = False) -> Optional[Path]:
    """The report over seeds (or the learning curve) of ``output``; a failure is printed, not raised, so that it
    never hides the error of a run."""
    try:
        return report_sources([output], output, learning_curve=learning_curve)
    except (ValueError, FileNotFoundError) as e:
        print(f"warning: no {'learning-curve ' if learning_curve else ''}report for {output}: {e}", file=sys.stderr)
        return None


def run_seeds(args: argparse.Namespace, epochs: int, output: Path, command: Optional[str]) -> Optional[Path]:
    """Run every seed of ``args`` at ``epochs`` into ``output``: the folder itself for a single seed (recording
    ``command``, or :func:`folder_command` when ``None``), else ``output/seed_<seed>`` and a report over seeds."""
    if not uses_seed_folders(args, output):
        seed = args.seed[0]
        return run_benchmark(single_run_args(args, epochs, seed, output),
                             command or folder_command(args, epochs, seed, output))
    try:
        for index, seed in enumerate(args.seed):
            folder = seed_folder(output, seed)
            print(f"== seed {seed} ({index + 1}/{len(args.seed)}): {folder}")
            run_benchmark(single_run_args(args, epochs, seed, folder), folder_command(args, epochs, seed, folder))
    finally:
        report = write_merged_report(output)
    return report


def run_learning_curve(args: argparse.Namespace) -> Optional[Path]:
    """Train the supervised reference at each budget into ``output/steps_<steps>``; report the learning curve."""
    output = args.output.resolve()
    if is_run_folder(output):
        raise StepError(f"{output} is a benchmark folder; --learning-curve writes steps_<steps> folders into a "
                        f"folder of its own.")
    try:
        for index, steps in enumerate(args.learning_curve):
            epochs = steps // args.iterations_per_epoch
            folder = steps_folder(output, steps)
            print(f"== budget {steps} steps = {epochs} epochs × {args.iterations_per_epoch} iterations "
                  f"({index + 1}/{len(args.learning_curve)}): {folder}")
            run_seeds(args, epochs, folder, None)
            write_merged_report(output, learning_curve=True)
    finally:
        report = write_merged_report(output, learning_curve=True)
    return report


def run(args: argparse.Namespace, command: str) -> Optional[Path]:
    check_options(args)
    if args.learning_curve:
        return run_learning_curve(args)
    return run_seeds(args, args.epochs, args.output.resolve(), command)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    arguments = sys.argv[1:] if argv is None else argv
    command = "nnUNetv2_scdl_benchmark " + " ".join(shlex.quote(str(a)) for a in arguments)
    return exit_code_of("nnUNetv2_scdl_benchmark", lambda: run(args, command),
                        (StepError, ValueError, FileNotFoundError, RuntimeError),
                        "; run the same command again to resume.")


if __name__ == "__main__":
    sys.exit(main())
