"""Which network of an EMA-teacher trainer to predict with: the EMA teacher or the student it averages.

Every EMA-teacher trainer (mean teacher, GA-MagicNet, with or without SCDL) predicts with the teacher
(``network_weights``) and keeps the student in ``checkpoint['nnunetv2_scdl']['training_network_weights']``. This
script writes the student into a checkpoint of its own (``checkpoint_final_student.pth`` beside the final one),
predicts the cases of a split key with both through ``nnUNetv2_predict`` (no mirroring), evaluates both with
``nnUNetv2_scdl_evaluate`` and prints their Dice and HD95 side by side.

    python benchmarks/ema_student_vs_teacher.py \\
        bench/tier/hippocampus_5pct_e/seed_0/nnUNet_results/Dataset004_Hippocampus/nnUNetTrainerGAMagicNet__nnUNetPlans_cpu__3d_fullres/fold_0 \\
        --split benchmarks/splits/Dataset004_Hippocampus_5pct_tuning.json -o bench/student_vs_teacher/ga_magicnet

Use a tuning split (its ``val`` cases are not the benchmark's validation cases), so that the choice is not made on
the cases the tables report. Needs ``nnUNet_raw`` (images and labels of the cases).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROLES = {"teacher": "checkpoint_final.pth", "student": "checkpoint_final_student.pth"}


def write_student_checkpoint(fold: Path) -> Path:
    """``fold/checkpoint_final_student.pth``: the final checkpoint with the student's weights as ``network_weights``."""
    checkpoint = torch.load(fold / ROLES["teacher"], map_location="cpu", weights_only=False)
    student = checkpoint.get("nnunetv2_scdl", {}).get("training_network_weights")
    if student is None:
        raise ValueError(f"{fold / ROLES['teacher']} keeps no separate student (no training_network_weights): "
                         f"its trainer predicts with the network it trains.")
    checkpoint["network_weights"] = student
    target = fold / ROLES["student"]
    torch.save(checkpoint, target)
    return target


def link_images(raw_dataset: Path, cases, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    file_ending = json.loads((raw_dataset / "dataset.json").read_text())["file_ending"]
    for case in cases:
        images = sorted((raw_dataset / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{file_ending}"))
        if not images:
            raise FileNotFoundError(f"no image of case {case} in {raw_dataset / 'imagesTr'}")
        for image in images:
            if not (folder / image.name).exists():
                (folder / image.name).symlink_to(image.resolve())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fold", type=Path, help="nnU-Net model folder (.../<trainer>__<plans>__<configuration>/fold_<f>)")
    parser.add_argument("--split", type=Path, required=True, help="split JSON; its --key cases are predicted")
    parser.add_argument("--key", default="val")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("-device", default="cpu")
    args = parser.parse_args(argv)

    fold = args.fold.resolve()
    trainer, plans, configuration = fold.parent.name.split("__")
    dataset = fold.parent.parent.name
    raw_dataset = Path(os.environ["nnUNet_raw"]) / dataset
    split = json.loads(args.split.read_text())
    write_student_checkpoint(fold)
    link_images(raw_dataset, split[args.key], args.output / "images")
    env = dict(os.environ, nnUNet_results=str(fold.parent.parent.parent))
    results = {}
    for role, checkpoint in ROLES.items():
        predictions = args.output / role
        shutil.rmtree(predictions, ignore_errors=True)  # never evaluate predictions of another model or case list
        subprocess.run(["nnUNetv2_predict", "-i", str(args.output / "images"), "-o", str(predictions), "-d", dataset,
                        "-c", configuration, "-tr", trainer, "-p", plans, "-f", fold.name.split("_")[-1],
                        "-chk", checkpoint, "--disable_tta", "-device", args.device, "-npp", "1", "-nps", "1"],
                       env=env, check=True)
        subprocess.run(["nnUNetv2_scdl_evaluate", str(predictions), str(raw_dataset / "labelsTr"), "-d", dataset,
                        "--split", str(args.split), "--no-paper-protocol", "--no-progress", "-o", str(predictions)],
                       env=env, check=True)
        results[role] = json.loads((predictions / "evaluation_scdl.json").read_text())
    classes = results["teacher"]["classes"]
    lines = [f"{trainer}, {len(split[args.key])} cases of {args.split.name}:{args.key}", "",
             "| network | Dice % | " + " | ".join(f"{name} %" for name in classes.values()) + " | HD95 mm |",
             "|---|---:|" + "---:|" * len(classes) + "---:|"]
    for role, evaluation in results.items():
        summary = evaluation["summary"]["original"]
        per_class = [f"{100 * summary['per_class'][label]['dice']:.1f}" for label in classes]
        lines.append(f"| {role} | {100 * summary['mean']['dice']:.1f} | " + " | ".join(per_class)
                     + f" | {summary['mean']['hd95_mm']:.2f} |")
    report = "\n".join(lines)
    (args.output / "student_vs_teacher.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
