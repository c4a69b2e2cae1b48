"""``nnUNetv2_scdl_demo``: the whole pipeline on a small synthetic dataset, on a CPU, in a few minutes.

    nnUNetv2_scdl_demo                              # ./nnunetv2_scdl_demo (or _2, _3, ... if it exists)
    nnUNetv2_scdl_demo --workdir /tmp/demo --epochs 5 --iterations 10
    nnUNetv2_scdl_demo --trainers nnUNetTrainerSupervised nnUNetTrainerSCDL_GACPS

The default trainers are supervised nnU-Net, the mean teacher and the mean teacher with SCDL. ``--trainers`` takes any
trainer nnU-Net can find (its own, this package's, or one in ``--ext-trainer-dir``); names are checked with nnU-Net's
own lookup before anything runs.

Steps, each a real nnU-Net (or nnunetv2_scdl) command run as a subprocess with nnUNet_raw/_preprocessed/_results
inside the work dir, its output logged to ``<workdir>/logs/``:

1. generate a class-imbalanced phantom dataset (:mod:`nnunetv2_scdl.data.phantoms`): labeled, unlabeled
   (``imagesUnlabeled``) and test cases;
2. ``nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres --verify_dataset_integrity``;
3. derive small CPU plans ``nnUNetPlans_cpu`` (:mod:`nnunetv2_scdl.data.cpu_plans`);
4. ``nnUNetv2_scdl_preprocess_unlabeled -d ID -c 3d_fullres -p nnUNetPlans_cpu``;
5. ``nnUNetv2_train ID 3d_fullres 0 -tr TRAINER -p nnUNetPlans_cpu -device cpu`` for each trainer, with
   ``nnUNet_extTrainer`` set to this package's trainers and the budget in ``SCDL_NUM_EPOCHS``,
   ``SCDL_NUM_ITERATIONS_PER_EPOCH`` and ``SCDL_NUM_VAL_ITERATIONS_PER_EPOCH``;
6. ``nnUNetv2_predict`` on ``imagesTs`` for each trainer;
7. per-class Dice on the test cases (nnU-Net's own ``compute_metrics``), printed and written to
   ``<workdir>/results.md`` and ``<workdir>/results.json``.
"""
import argparse
import contextlib
import difflib
import io
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from nnunetv2_scdl.cli.commands import (TRAINING_PROGRESS, StepError, console_command, exit_code_of,
                                        external_trainer_path, run_logged, source_checkout_pythonpath)

DEFAULT_TRAINERS = ("nnUNetTrainerSupervised", "nnUNetTrainerMeanTeacher", "nnUNetTrainerSCDL_MT")
DATASET_NAME = "PhantomDemo"
CONFIGURATION = "3d_fullres"
SOURCE_PLANS = "nnUNetPlans"
CPU_PLANS = "nnUNetPlans_cpu"
FOLD = "0"


# ----------------------------------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------------------------------
def dice_per_class(reference_folder: Path, prediction_folder: Path, labels: Dict[str, int],
                   file_ending: str = ".nii.gz") -> Dict[str, object]:
    """Mean Dice per foreground class over the reference cases, with nnU-Net's ``compute_metrics``.

    Returns ``{"per_class": {name: dice}, "mean": dice, "per_case": {case: {name: dice}}}``. A class absent from both
    reference and prediction is left out of the means (nnU-Net reports NaN for it).
    """
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    foreground = {name: value for name, value in labels.items() if value != 0}
    per_case = {}
    for reference in sorted(reference_folder.glob("*" + file_ending)):
        case = reference.name[:-len(file_ending)]
        prediction = prediction_folder / reference.name
        if not prediction.is_file():
            raise StepError(f"No prediction {prediction} for test case {case}.")
        metrics = compute_metrics(str(reference), str(prediction), SimpleITKIO(), list(foreground.values()))
        per_case[case] = {name: float(metrics["metrics"][value]["Dice"]) for name, value in foreground.items()}
    per_class = {name: float(np.nanmean([d[name] for d in per_case.values()])) for name in foreground}
    return {"per_class": per_class, "mean": float(np.mean(list(per_class.values()))), "per_case": per_case}


def what_a_short_run_shows(epochs: int, iterations: int) -> str:
    """The one line printed under the Dice table: what a run of this budget can and cannot show."""
    return (f"A {epochs} x {iterations}-iteration CPU run shows that every trainer trains, predicts and is evaluated "
            f"through nnU-Net's own commands; it cannot rank the methods: training is not seeded and far from "
            f"converged, so two runs differ by more than the trainers do.")


def results_table(results: Dict[str, dict], class_names: Sequence[str]) -> str:
    """Markdown table: one row per trainer, Dice per class and their mean."""
    header = "| trainer | " + " | ".join(class_names) + " | mean |"
    rule = "|---|" + "---:|" * (len(class_names) + 1)
    rows = [f"| {trainer} | " + " | ".join(f"{r['per_class'][c]:.3f}" for c in class_names) + f" | {r['mean']:.3f} |"
            for trainer, r in results.items()]
    return "\n".join([header, rule] + rows)


# ----------------------------------------------------------------------------------------------------------------------
# the demo
# ----------------------------------------------------------------------------------------------------------------------
def fresh_workdir(requested: Optional[str]) -> Path:
    """The work dir: ``requested`` (must be absent or empty), else the first free ``./nnunetv2_scdl_demo[_N]``."""
    if requested is not None:
        path = Path(requested).resolve()
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise StepError(f"--workdir {path} exists and is not empty; choose a new folder.")
        return path
    base = Path.cwd() / "nnunetv2_scdl_demo"
    path, counter = base, 2
    while path.exists():
        path, counter = Path(f"{base}_{counter}"), counter + 1
    return path


class StepClock:
    """Prints ``[step i/n] title`` and the elapsed time of each step and of the whole demo."""

    def __init__(self, total_steps: int):
        self.total_steps, self.index, self.start = total_steps, 0, time.monotonic()
        self.durations: Dict[str, float] = {}

    def run(self, title: str, function, *args, **kwargs):
        self.index += 1
        print(f"[step {self.index}/{self.total_steps}] {title} ...", flush=True)
        started = time.monotonic()
        result = function(*args, **kwargs)
        took = time.monotonic() - started
        self.durations[title] = round(took, 1)
        print(f"[step {self.index}/{self.total_steps}] done in {took:.1f} s (total {self.elapsed()})", flush=True)
        return result

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.start)
        return f"{seconds // 60}:{seconds % 60:02d}"


def unknown_trainers(names: Sequence[str], ext_trainer_path: str) -> List[str]:
    """The ``names`` that nnU-Net's own trainer lookup (what ``nnUNetv2_train -tr`` uses) does not find, with
    ``nnUNet_extTrainer=ext_trainer_path``."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    unknown = []
    previous = os.environ.get("nnUNet_extTrainer")
    os.environ["nnUNet_extTrainer"] = ext_trainer_path
    try:
        for name in names:
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # the lookup prints every folder it searches
                    recursive_find_trainer_class_by_name(name)
            except (RuntimeError, AssertionError):  # not found, or not an nnUNetTrainer
                unknown.append(name)
    finally:
        if previous is None:
            os.environ.pop("nnUNet_extTrainer", None)
        else:
            os.environ["nnUNet_extTrainer"] = previous
    return unknown


def check_trainer_names(names: Sequence[str], ext_trainer_path: str) -> None:
    """Raise :class:`StepError` naming every trainer nnU-Net cannot find, with close matches among this
    package's trainers. The default trainers are not looked up (their import alone takes seconds)."""
    to_check = [n for n in dict.fromkeys(names) if n not in DEFAULT_TRAINERS]
    unknown = unknown_trainers(to_check, ext_trainer_path) if to_check else []
    if not unknown:
        return
    from nnunetv2_scdl.training.registry import ALL_TRAINERS  # only on this error path: the import takes seconds

    known = sorted(set(ALL_TRAINERS) | {
        name for folder in ext_trainer_path.split(os.pathsep) if folder and os.path.isdir(folder)
        for file in Path(folder).rglob("*.py")
        for name in re.findall(r"\bnnUNetTrainer\w*", file.read_text(encoding="utf-8", errors="replace"))})
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3)
        lines.append(f"  {name}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    raise StepError("Unknown trainer(s) for --trainers; nnU-Net finds no class of this name in its own trainers "
                        "or in nnUNet_extTrainer (" + ext_trainer_path + "):\n" + "\n".join(lines) +
                        "\nThis package's trainers are listed in its README (Semi-supervised trainers); add the "
                        "folder of your own trainers with --ext-trainer-dir.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_scdl_demo",
        description="Generate a small class-imbalanced phantom dataset, plan and preprocess it with nnU-Net, "
                    "preprocess its unlabeled images, train supervised nnU-Net, the mean teacher and the mean teacher "
                    "with SCDL (or the --trainers given) on the CPU, predict the test cases and print the Dice per "
                    "class.")
    parser.add_argument("--workdir", help="new or empty folder for everything (default ./nnunetv2_scdl_demo[_N])")
    parser.add_argument("--trainers", nargs="+", default=list(DEFAULT_TRAINERS),
                        help="trainer class names, e.g. nnUNetTrainerSCDL_GACPS (default: "
                             f"{' '.join(DEFAULT_TRAINERS)})")
    # 6 x 15 = 90 steps per trainer: the three default trainers then cost about as much CPU time as 200 steps of
    # supervised + mean teacher, which ran in under 5 minutes on an idle 2-core CPU (README, Quick start)
    parser.add_argument("--epochs", type=int, default=6, help="SCDL_NUM_EPOCHS (default 6)")
    parser.add_argument("--iterations", type=int, default=15, help="SCDL_NUM_ITERATIONS_PER_EPOCH (default 15)")
    parser.add_argument("--val-iterations", type=int, default=4,
                        help="SCDL_NUM_VAL_ITERATIONS_PER_EPOCH (default 4)")
    parser.add_argument("--labeled", type=int, default=8, help="labeled training cases (default 8)")
    parser.add_argument("--unlabeled", type=int, default=24, help="unlabeled cases (default 24)")
    parser.add_argument("--test", type=int, default=8, help="held-out test cases (default 8)")
    parser.add_argument("--shape", type=int, nargs=3, default=(24, 40, 40), metavar=("Z", "Y", "X"),
                        help="phantom volume in voxels (default 24 40 40)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(2.0, 1.0, 1.0), metavar=("Z", "Y", "X"),
                        help="voxel spacing in mm (default 2 1 1)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    parser.add_argument("--dataset-id", type=int, default=991, help="nnU-Net dataset ID (default 991)")
    parser.add_argument("-np", dest="num_processes", type=int, default=2,
                        help="processes for preprocessing (default 2)")
    parser.add_argument("--ext-trainer-dir", action="append", default=[],
                        help="another folder for nnUNet_extTrainer (repeatable), searched after this package's")
    parser.add_argument("--verbose", action="store_true", help="echo every line of every command")
    return parser


def demo_environment(workdir: Path, args: argparse.Namespace) -> Dict[str, str]:
    """Environment for the subprocesses: nnU-Net folders in the work dir, external trainers, CPU-friendly settings."""
    env = source_checkout_pythonpath(os.environ)
    env.update({
        "nnUNet_raw": str(workdir / "nnUNet_raw"),
        "nnUNet_preprocessed": str(workdir / "nnUNet_preprocessed"),
        "nnUNet_results": str(workdir / "nnUNet_results"),
        "nnUNet_extTrainer": external_trainer_path(args.ext_trainer_dir),
        "nnUNet_compile": "f",
        # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), so 0 is only set for training
        "nnUNet_n_proc_DA": str(max(1, args.num_processes)),
        "nnUNet_def_n_proc": str(args.num_processes),
        "SCDL_NUM_EPOCHS": str(args.epochs),
        "SCDL_NUM_ITERATIONS_PER_EPOCH": str(args.iterations),
        "SCDL_NUM_VAL_ITERATIONS_PER_EPOCH": str(args.val_iterations),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def run_demo(args: argparse.Namespace) -> Dict[str, dict]:
    """Run every step; return ``{trainer: dice results}``."""
    from nnunetv2_scdl.data.cpu_plans import derive_cpu_plans
    from nnunetv2_scdl.data.phantoms import PHANTOM_LABELS, STRUCTURES, make_phantom_dataset

    workdir = fresh_workdir(args.workdir)
    env = demo_environment(workdir, args)
    check_trainer_names(args.trainers, env["nnUNet_extTrainer"])
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    dataset_id = str(args.dataset_id)
    print(f"nnunetv2_scdl demo in {workdir} (logs in {logs})\n"
          f"  trainers: {', '.join(args.trainers)}; budget {args.epochs} epochs x {args.iterations} iterations "
          f"(+{args.val_iterations} validation iterations)", flush=True)
    clock = StepClock(total_steps=4 + 2 * len(args.trainers) + 1)

    phantom = clock.run(f"Generating phantoms ({args.labeled} labeled, {args.unlabeled} unlabeled, {args.test} test, "
                        f"{'x'.join(map(str, args.shape))} voxels)", make_phantom_dataset,
                        env["nnUNet_raw"], args.dataset_id, DATASET_NAME, args.labeled, args.unlabeled, args.test,
                        tuple(args.shape), tuple(args.spacing), args.seed)
    clock.run("nnUNetv2_plan_and_preprocess", run_logged,
              console_command("nnUNetv2_plan_and_preprocess") +
              ["-d", dataset_id, "-c", CONFIGURATION, "--verify_dataset_integrity", "-np", str(args.num_processes),
               "-npfp", str(args.num_processes)], env, logs / "01_plan_and_preprocess.log", verbose=args.verbose)
    preprocessed = Path(env["nnUNet_preprocessed"]) / phantom.dataset_name
    clock.run(f"Deriving CPU plans {CPU_PLANS}", derive_cpu_plans, str(preprocessed), SOURCE_PLANS, CPU_PLANS,
              configurations=[CONFIGURATION])
    clock.run("nnUNetv2_scdl_preprocess_unlabeled", run_logged,
              console_command("nnUNetv2_scdl_preprocess_unlabeled") +
              ["-d", dataset_id, "-c", CONFIGURATION, "-p", CPU_PLANS, "-np", str(args.num_processes)],
              env, logs / "02_preprocess_unlabeled.log", verbose=args.verbose)

    for trainer in args.trainers:
        clock.run(f"nnUNetv2_train {trainer}", run_logged,
                  console_command("nnUNetv2_train") +
                  [dataset_id, CONFIGURATION, FOLD, "-tr", trainer, "-p", CPU_PLANS, "-device", "cpu"],
                  dict(env, nnUNet_n_proc_DA="0"), logs / f"03_train_{trainer}.log", echo=TRAINING_PROGRESS,
                  verbose=args.verbose)

    results = {}
    for trainer in args.trainers:
        predictions = workdir / "predictions" / trainer
        clock.run(f"nnUNetv2_predict {trainer}", run_logged,
                  console_command("nnUNetv2_predict") +
                  ["-i", str(Path(phantom.dataset_folder) / "imagesTs"), "-o", str(predictions), "-d", dataset_id,
                   "-c", CONFIGURATION, "-tr", trainer, "-p", CPU_PLANS, "-f", FOLD, "-device", "cpu",
                   "--disable_tta", "-npp", "1", "-nps", "1", "--disable_progress_bar"],
                  env, logs / f"04_predict_{trainer}.log", verbose=args.verbose)
        results[trainer] = dice_per_class(Path(phantom.dataset_folder) / "labelsTs", predictions, PHANTOM_LABELS)

    class_names = [name for name, value in PHANTOM_LABELS.items() if value != 0]
    table = clock.run("Dice on the test cases", results_table, results, class_names)
    label_names = {value: name for name, value in PHANTOM_LABELS.items()}
    table += "\n\nShare of the voxels per class: " + ", ".join(
        f"{label_names[s.label]} {s.fraction_range[0]:.1%}-{s.fraction_range[1]:.1%}"
        for s in sorted(STRUCTURES, key=lambda s: s.label)) + "."
    table += "\n" + what_a_short_run_shows(args.epochs, args.iterations)
    summary = {
        "workdir": str(workdir), "dataset": phantom.dataset_name, "configuration": CONFIGURATION,
        "plans": CPU_PLANS, "fold": FOLD, "trainers": list(args.trainers),
        "budget": {"epochs": args.epochs, "iterations_per_epoch": args.iterations,
                   "val_iterations_per_epoch": args.val_iterations},
        "cases": {"labeled": phantom.labeled, "unlabeled": phantom.unlabeled, "test": phantom.test},
        "step_seconds": clock.durations, "total_time": clock.elapsed(), "dice": results,
    }
    (workdir / "results.json").write_text(json.dumps(summary, indent=2))
    (workdir / "results.md").write_text(
        f"# nnunetv2_scdl demo\n\nDice per class on {len(phantom.test)} test phantoms "
        f"({phantom.dataset_name}, {CONFIGURATION}, {CPU_PLANS}, fold {FOLD}; {args.epochs} epochs x "
        f"{args.iterations} iterations, {len(phantom.labeled)} labeled + {len(phantom.unlabeled)} unlabeled cases).\n\n"
        f"{table}\n")
    print(f"\nDice on {len(phantom.test)} test cases (total time {clock.elapsed()}):\n\n{table}\n\n"
          f"Written: {workdir / 'results.md'}, {workdir / 'results.json'}")
    return results


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.epochs, args.iterations, args.labeled, args.test) < 1 or args.val_iterations < 1:
        print("nnUNetv2_scdl_demo: error: --epochs, --iterations, --val-iterations, --labeled and --test must be "
              ">= 1", file=sys.stderr)
        return 2
    return exit_code_of("nnUNetv2_scdl_demo", lambda: run_demo(args), (StepError, FileExistsError, ValueError))

if __name__ == "__main__":
    sys.exit(main())
