"""``nnUNetv2_scdl_self_train``: nnU-Net self-training ("noisy student") with pseudo-labels, as one command.

    nnUNetv2_plan_and_preprocess -d 11 -c 3d_fullres                # nnU-Net, as usual
    nnUNetv2_scdl_self_train -d 11 -c 3d_fullres -f 0 --derived-id 511

Trains (or reuses) the teacher on dataset 11, predicts the unlabeled images (imagesUnlabeled/, or the 'unlabeled' cases
of splits_final.json) with nnUNetv2_predict, keeps the confidently predicted cases as pseudo-labels, writes them with
the labeled cases as dataset 511 (plans copied with nnUNetv2_move_plans_between_datasets, then nnUNetv2_preprocess),
and trains the student on it. Predict with the student as with any nnU-Net model:

    nnUNetv2_predict -i IN -o OUT -d 511 -c 3d_fullres -tr nnUNetTrainer -f 0

Run the same command again to resume: finished stages are skipped. See docs/self_training.md.
"""
import argparse
import os
import sys
from typing import Optional

from nnunetv2_scdl.cli.commands import StepError, exit_code_of
from nnunetv2_scdl.data.pseudo_labels import DEFAULT_KEEP_FRACTION, DEFAULT_MIN_CONFIDENCE
from nnunetv2_scdl.training.self_training import (BUDGET_TRAINER, DEFAULT_TRAINER, DEVICES, FINETUNE_TRAINER,
                                                  STOP_STAGES, SelfTrainingError, SelfTrainingSettings,
                                                  TrainingBudget, run_self_training)

PROGRAM = "nnUNetv2_scdl_self_train"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", dest="dataset", required=True, help="source dataset name or ID (only read)")
    parser.add_argument("-c", dest="configuration", required=True, help="configuration, e.g. 3d_fullres")
    parser.add_argument("-f", dest="fold", type=int, required=True, help="fold of teacher and students")
    parser.add_argument("--derived-id", type=int, required=True,
                        help="dataset ID of the first round's derived dataset; round r uses this ID + r - 1. IDs "
                             "used by anything else are refused")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("--rounds", type=int, default=1, help="self-training rounds (default 1)")
    parser.add_argument("--teacher-trainer", default=None,
                        help=f"teacher trainer (default {DEFAULT_TRAINER}; {BUDGET_TRAINER} with --epochs)")
    parser.add_argument("--teacher-model-folder", default=None,
                        help="reuse this trained model folder (TRAINER__PLANS__CONFIGURATION with fold_F) as the "
                             "teacher instead of training one")
    parser.add_argument("--student-trainer", default=None,
                        help=f"student trainer (default {DEFAULT_TRAINER}; {BUDGET_TRAINER} with --epochs)")
    parser.add_argument("--min-confidence", type=float, default=DEFAULT_MIN_CONFIDENCE,
                        help=f"minimum case confidence: mean top-class probability over the predicted foreground "
                             f"(default {DEFAULT_MIN_CONFIDENCE})")
    parser.add_argument("--keep-fraction", type=float, default=DEFAULT_KEEP_FRACTION,
                        help=f"keep at most this share of the unlabeled cases, the most confident first (default "
                             f"{DEFAULT_KEEP_FRACTION})")
    parser.add_argument("--finetune", action="store_true",
                        help=f"fine-tune each student on the labeled cases ({FINETUNE_TRAINER})")
    budget = parser.add_argument_group("budget (this package's trainers only; applies to teacher and students)")
    budget.add_argument("--epochs", type=int, default=None, help="epochs per model (SCDL_NUM_EPOCHS)")
    budget.add_argument("--iterations-per-epoch", type=int, default=None,
                        help="optimiser steps per epoch (SCDL_NUM_ITERATIONS_PER_EPOCH)")
    budget.add_argument("--val-iterations", type=int, default=None,
                        help="pseudo-Dice batches per epoch (SCDL_NUM_VAL_ITERATIONS_PER_EPOCH)")
    budget.add_argument("--finetune-epochs", type=int, default=None,
                        help="epochs of the fine-tuning (default: --epochs)")
    budget.add_argument("--seed", type=int, default=None, help="SCDL_SEED of every model")
    parser.add_argument("--no-final-validation", action="store_true",
                        help="skip nnU-Net's validation after each training (SCDL_FINAL_VALIDATION=0)")
    parser.add_argument("-device", dest="device", choices=DEVICES, default=None,
                        help="training and prediction device (default: cuda if available, else cpu)")
    parser.add_argument("--disable-tta", action="store_true",
                        help="the teacher predicts the unlabeled images without mirroring")
    parser.add_argument("-np", dest="num_processes", type=int, default=2,
                        help="processes for preprocessing and prediction export (default 2)")
    parser.add_argument("--stop-after", choices=STOP_STAGES, default=None,
                        help="stop after this stage of the last round, e.g. 'predict' to look at the scores and "
                             "pseudo-labels before training a student")
    parser.add_argument("--verbose", action="store_true", help="echo every line of every command")
    return parser


def settings_from_args(args: argparse.Namespace) -> SelfTrainingSettings:
    budget = None
    given = [args.epochs, args.iterations_per_epoch]
    if any(v is not None for v in given):
        if any(v is None for v in given):
            raise SelfTrainingError("Give --epochs and --iterations-per-epoch together.")
        budget = TrainingBudget(args.epochs, args.iterations_per_epoch, args.val_iterations)
    elif args.val_iterations is not None or args.finetune_epochs is not None:
        raise SelfTrainingError("--val-iterations and --finetune-epochs need --epochs and --iterations-per-epoch.")
    finetune_budget = None
    if args.finetune_epochs is not None:
        finetune_budget = TrainingBudget(args.finetune_epochs, args.iterations_per_epoch, args.val_iterations)
    device = args.device
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return SelfTrainingSettings(
        dataset=args.dataset, configuration=args.configuration, fold=args.fold, derived_dataset_id=args.derived_id,
        plans=args.plans, rounds=args.rounds, teacher_trainer=args.teacher_trainer,
        student_trainer=args.student_trainer, teacher_model_folder=args.teacher_model_folder,
        min_confidence=args.min_confidence, keep_fraction=args.keep_fraction, finetune=args.finetune,
        teacher_budget=budget, student_budget=budget, finetune_budget=finetune_budget, seed=args.seed,
        final_validation=not args.no_final_validation, device=device, tta=not args.disable_tta,
        num_processes=args.num_processes, verbose=args.verbose, stop_after=args.stop_after)


def report(settings: SelfTrainingSettings, result) -> None:
    for outcome in result.rounds:
        print(f"round {outcome.round}: {outcome.derived_dataset}, {len(outcome.pseudo_labeled)} pseudo-labeled "
              f"case(s), {len(outcome.rejected)} left out")
    final = result.final_model
    if final is None:
        print(f"stopped after '{settings.stop_after}'; run the command without --stop-after to continue.")
        return
    steps = result.total_optimiser_steps
    print(f"final model: {final.model_folder} (fold {final.fold})")
    print(f"optimiser steps, teacher and students together: {steps if steps is not None else 'unknown'}")
    print(f"predict with it:\n  nnUNetv2_predict -i INPUT -o OUTPUT -d {final.dataset} -c {settings.configuration} "
          f"-p {settings.plans} -tr {final.trainer} -f {final.fold}")


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> None:
        settings = settings_from_args(args)
        report(settings, run_self_training(settings, dict(os.environ)))

    return exit_code_of(PROGRAM, run, (SelfTrainingError, StepError, FileNotFoundError),
                        "; run the same command again to resume.")


if __name__ == "__main__":
    sys.exit(main())
