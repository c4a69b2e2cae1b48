"""How much of each foreground class's P2E negatives are other foreground classes, at SCDL's token resolution.

SCDL's class-level P2E pushes a proxy μ_c away from the tokens c does not own, weighted by 1 − w[n, c] (w: the
ground-truth class proportions per token). Where most of those negatives are background, P2E barely separates two
foreground classes from each other, and E2P (each token towards its own classes' proxies) does not separate them
either: both are minimal when two foreground proxies coincide. For the labeled cases of a split this prints, per
token stride, the mean over cases and foreground classes of

- the other foreground classes' share of a class's negative weight, Σ_n (1 − w_c) Σ_{o ∉ {0, c}} w_o / Σ_n (1 − w_c);
- the fraction of a class's voxels that lie in tokens also holding another foreground class.

Tokens are the package's own (``class_proportions_per_token``) over each whole preprocessed case, padded with
background to a multiple of the stride; a training patch covers all or part of a case. Example::

    python benchmarks/token_class_mix.py -d 4 --split ../shared/data/splits/Dataset004_Hippocampus_5pct.json \\
        -p nnUNetPlans_cpu --strides 8 4 2

Needs ``nnUNet_preprocessed`` with the plans' configuration preprocessed; nothing is written.
"""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nnunetv2_scdl.scdl.tokens import class_one_hot, class_proportions_per_token


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, help="dataset name or id")
    parser.add_argument("--split", required=True, help="split JSON with a 'labeled' list")
    parser.add_argument("-p", "--plans", default="nnUNetPlans")
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("--strides", type=int, nargs="+", default=[8], help="isotropic token strides (voxels)")
    return parser.parse_args(argv)


def foreground_mix(labels: torch.Tensor, num_classes: int, stride: int):
    """Per foreground class of one case (``labels`` [*S] int64, background 0): (other-foreground share of its P2E
    negatives, fraction of its voxels in tokens that hold another foreground class); an absent class is left out."""
    pad = [p for s in reversed(labels.shape) for p in (0, (-s) % stride)]
    labels = F.pad(labels, pad)  # background
    w, _ = class_proportions_per_token(class_one_hot(labels[None], num_classes), [stride] * labels.dim())
    w = w[0]
    results = {}
    for c in range(1, num_classes):
        if w[:, c].sum() == 0:
            continue
        negative = 1.0 - w[:, c]
        others = w[:, 1:].sum(dim=1) - w[:, c]
        share = float((negative * others).sum() / negative.sum())
        mixed = float(w[:, c][others > 0].sum() / w[:, c].sum())
        results[c] = (share, mixed)
    return results


def main(argv=None):
    args = parse_args(argv)
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    name = maybe_convert_to_dataset_name(args.dataset)
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / name
    plans = load_json(preprocessed / f"{args.plans}.json")
    config = plans["configurations"][args.configuration]
    folder = preprocessed / config.get("data_identifier", f"{args.plans}_{args.configuration}")
    labels_json = load_json(preprocessed / "dataset.json")["labels"]
    if any(not isinstance(v, int) for v in labels_json.values()) or "ignore" in labels_json:
        raise SystemExit("plain labels without an ignore label only")
    num_classes = max(labels_json.values()) + 1
    if num_classes < 3:
        raise SystemExit("needs at least two foreground classes")
    cases = list(json.loads(Path(args.split).read_text())["labeled"])
    dataset = infer_dataset_class(str(folder))(str(folder), cases)
    segmentations = [torch.from_numpy(np.asarray(dataset.load_case(case)[1][0]).astype(np.int64)).clamp_min(0)
                     for case in cases]
    print(f"{name}, {len(cases)} labeled cases, {args.plans} {args.configuration}")
    print("| token stride | other foreground's share of a class's P2E negatives | class voxels in tokens shared "
          "with another foreground class |")
    print("|---:|---:|---:|")
    for stride in args.strides:
        values = [v for seg in segmentations for v in foreground_mix(seg, num_classes, stride).values()]
        share, mixed = np.mean(values, axis=0)
        print(f"| {stride} | {100 * share:.1f} % | {100 * mixed:.0f} % |")


if __name__ == "__main__":
    main()
