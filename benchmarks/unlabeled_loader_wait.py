"""Does the unlabeled loader starve training? Measure the share of step time spent waiting for batches.

Runs a short mean-teacher training on a phantom dataset through the real ``nnUNetv2_train`` once per worker count
and reports ``data_wait_fraction``, which nnUNetTrainerSSL logs every epoch. Epoch 0 includes starting the workers,
so the report averages the later epochs.

    python benchmarks/unlabeled_loader_wait.py --workdir /tmp/loader_wait --workers 0 2 --epochs 3 --iterations 20
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nnunetv2_scdl.cli.trainers_path import trainers_dir
from nnunetv2_scdl.data.cpu_plans import derive_cpu_plans
from nnunetv2_scdl.data.phantoms import make_phantom_dataset
from nnunetv2_scdl.data.unlabeled_preprocessing import preprocess_unlabeled

DATASET_ID = 980


def run(command, env):
    subprocess.run([sys.executable, "-c", f"import sys; from {command[0]} import {command[1]} as f; "
                                          f"sys.argv = ['x'] + sys.argv[1:]; f()", *map(str, command[2:])],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="nnUNet_n_proc_DA values to compare")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--feature-divisor", type=int, default=4)
    args = parser.parse_args()

    folders = {name: args.workdir / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    env = {**os.environ, **{k: str(v) for k, v in folders.items()}, "nnUNet_compile": "f",
           "nnUNet_extTrainer": str(trainers_dir())}
    os.environ.update({k: str(v) for k, v in folders.items()})
    dataset = f"Dataset{DATASET_ID}_Phantom"
    if not (folders["nnUNet_preprocessed"] / dataset / "nnUNetPlans_cpu.json").is_file():
        make_phantom_dataset(str(folders["nnUNet_raw"]), DATASET_ID, "Phantom", n_labeled=8, n_unlabeled=16, n_test=1)
        run(["nnunetv2.experiment_planning.plan_and_preprocess_entrypoints", "plan_and_preprocess_entry",
             "-d", DATASET_ID, "-c", "3d_fullres", "-np", 2], {**env, "nnUNet_n_proc_DA": "1"})
        derive_cpu_plans(str(folders["nnUNet_preprocessed"] / dataset), feature_divisor=args.feature_divisor)
        preprocess_unlabeled(DATASET_ID, ["3d_fullres"], "nnUNetPlans_cpu", num_processes=2, verbose=False)

    print(f"{'nnUNet_n_proc_DA':>16} | {'s/iteration':>11} | {'waiting for batches':>19}")
    for workers in args.workers:
        trainer = "nnUNetTrainerMeanTeacher"
        started = time.time()
        run(["nnunetv2.run.run_training", "run_training_entry", DATASET_ID, "3d_fullres", 0, "-tr", trainer,
             "-p", "nnUNetPlans_cpu", "-device", "cpu"],
            {**env, "nnUNet_n_proc_DA": str(workers), "SCDL_NUM_EPOCHS": str(args.epochs),
             "SCDL_NUM_ITERATIONS_PER_EPOCH": str(args.iterations), "SCDL_NUM_VAL_ITERATIONS_PER_EPOCH": "1"})
        fold = folders["nnUNet_results"] / dataset / f"{trainer}__nnUNetPlans_cpu__3d_fullres" / "fold_0"
        logging = torch.load(fold / "checkpoint_final.pth", weights_only=False)["logging"]
        later = slice(1, None) if args.epochs > 1 else slice(None)
        wait = float(np.mean(logging["data_wait_fraction"][later]))
        epoch_s = np.subtract(logging["epoch_end_timestamps"], logging["epoch_start_timestamps"])[later]
        print(f"{workers:>16} | {np.mean(epoch_s) / args.iterations:>11.3f} | {100 * wait:>18.1f}%"
              f"   (whole run incl. validation: {time.time() - started:.0f} s)")
        os.rename(fold, fold.with_name(f"fold_0_workers{workers}_{int(started)}"))


if __name__ == "__main__":
    main()
