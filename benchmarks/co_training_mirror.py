"""Does a co-training run started from swapped weights mirror the original run, A for B?

``benchmarks/co_training_swap`` holds ``nnUNetTrainerGACPS_swapAB``: GA-CPS with the same two random draws as
``nnUNetTrainerGACPS``, exchanged between the networks. With the same seed both runs see the same batches, so if the
training step treats A and B alike, the swapped run's ``supervised_b``, ``cps_b`` and ``pseudo_dice_network_b`` are
the original run's ``supervised_a``, ``cps_a`` and ``pseudo_dice_network_a``, epoch by epoch. This prints, per logged
term, the largest difference between the two runs over their common epochs: 0 everywhere means that a network's
progress depends only on the weights it starts from, not on its slot.

    export nnUNet_n_proc_DA=0 nnUNet_compile=f OMP_NUM_THREADS=1
    nnUNetv2_scdl_benchmark -d 4 --split ../shared/data/splits/Dataset004_Hippocampus_5pct.json -p nnUNetPlans_cpu \\
        --epochs 320 --iterations-per-epoch 15 --seed 1 --seed-folders --no-paper-protocol --no-reference \\
        --stop-after-epochs 4 --trainers nnUNetTrainerGACPS_swapAB --ext-trainer-dir benchmarks/co_training_swap \\
        -o bench/swap/gacps_swap_s1
    python benchmarks/co_training_mirror.py <original fold_0> bench/swap/gacps_swap_s1/seed_1/nnUNet_results/\\
        Dataset004_Hippocampus/nnUNetTrainerGACPS_swapAB__nnUNetPlans_cpu__3d_fullres/fold_0

A fold folder is read from its ``checkpoint_final.pth``, else ``checkpoint_latest.pth``. The original run can be a
finished ``nnUNetTrainerGACPS`` run of the same seed, split and schedule.
"""
import argparse
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from nnunetv2_scdl.evaluation.proxy_geometry import checkpoint_file

#: each term of the original run and the term of the swapped run that should equal it
MIRRORED_TERMS = {"supervised_a": "supervised_b", "supervised_b": "supervised_a", "cps_a": "cps_b",
                  "cps_b": "cps_a", "pseudo_dice_network_a": "pseudo_dice_network_b",
                  "pseudo_dice_network_b": "pseudo_dice_network_a", "train_losses": "train_losses",
                  "val_losses": "val_losses", "mean_fg_dice": "mean_fg_dice"}


def mirror_differences(original: Dict[str, Sequence], swapped: Dict[str, Sequence]) -> Dict[str, float]:
    """For each pair of :data:`MIRRORED_TERMS` logged by both runs: max |original[term] − swapped[mirror]| over the
    epochs both logged (per-class lists are compared element-wise). Keys are ``"term ↔ mirror"``."""
    differences = {}
    for term, mirror in MIRRORED_TERMS.items():
        if term not in original or mirror not in swapped:
            continue
        epochs = min(len(original[term]), len(swapped[mirror]))
        if epochs == 0:
            continue
        a = np.asarray(original[term][:epochs], dtype=np.float64)
        b = np.asarray(swapped[mirror][:epochs], dtype=np.float64)
        differences[f"{term} ↔ {mirror}"] = float(np.abs(a - b).max())
    return differences


def load_logging(fold: str) -> Dict[str, List]:
    return torch.load(checkpoint_file(Path(fold)), map_location="cpu", weights_only=False)["logging"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original", help="fold folder of the original co-training run")
    parser.add_argument("swapped", help="fold folder of the run started from swapped weights")
    args = parser.parse_args()
    original, swapped = load_logging(args.original), load_logging(args.swapped)
    differences = mirror_differences(original, swapped)
    if not differences:
        raise SystemExit("The two runs share no mirrored term; are both co-training runs with logged epochs?")
    epochs = min(len(original["train_losses"]), len(swapped["train_losses"]))
    print(f"{epochs} common epochs")
    print("| original term ↔ swapped term | max |difference| |\n|---|---:|")
    for name, value in differences.items():
        print(f"| {name} | {value:.3g} |")


if __name__ == "__main__":
    main()
