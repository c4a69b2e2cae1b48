"""``nnUNetv2_scdl_evaluate PRED_DIR REF_DIR -d DATASET``: Dice, ASD and HD95 per class, head/tail means, papers'
protocol; writes evaluation_scdl.json, evaluation_scdl.md and evaluation_scdl_per_class.png.

Head/tail classes come from voxel frequencies in the labeled cases (see nnunetv2_scdl.evaluation.class_groups):
the labels of the cases listed under "labeled" in --split (or given with --labeled-cases), read from --labels-dir
(default: the dataset's labelsTr). Without a split, every label file of that folder counts as labeled.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from nnunetv2_scdl.evaluation.class_groups import (ClassGroups, groups_from_labeled_files, groups_from_tail_override,
                                                   labeled_label_files)
from nnunetv2_scdl.evaluation.dataset_info import read_dataset_info
from nnunetv2_scdl.evaluation.evaluate_folder import EvaluationSettings, evaluate_folders
from nnunetv2_scdl.evaluation.paper_protocol import PAPER_GRID_ZYX, PAPER_GRID_ZYX_AMOS_AS_PUBLISHED
from nnunetv2_scdl.evaluation.plot import plot_per_class
from nnunetv2_scdl.evaluation.report import markdown_table, write_json, write_markdown

OUTPUT_STEM = "evaluation_scdl"


def parse_grid(text: str) -> tuple:
    try:
        grid = tuple(int(value) for value in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--paper-grid expects three integers Z,Y,X, got {text!r}") from None
    if len(grid) != 3 or min(grid) < 1:
        raise argparse.ArgumentTypeError(f"--paper-grid expects three positive integers Z,Y,X, got {text!r}")
    return grid


def parse_tail_classes(values: Sequence[str], class_names: Dict[int, str]) -> List[int]:
    """Label values from a list of label values or class names (comma-separated items allowed)."""
    by_name = {name: label for label, name in class_names.items()}
    labels = []
    for item in (part.strip() for value in values for part in value.split(",")):
        if not item:
            continue
        if item in by_name:
            labels.append(by_name[item])
        elif item.isdigit():
            labels.append(int(item))
        else:
            raise ValueError(f"--tail-classes: {item!r} is neither a label value nor a class name "
                             f"({', '.join(f'{k}={v}' for k, v in sorted(class_names.items()))}).")
    return labels


def labeled_cases_from_split(split_file: Path, dataset_name: str) -> List[str]:
    split_file = Path(split_file)
    if not split_file.is_file():
        raise FileNotFoundError(f"Split file not found: {split_file}")
    with open(split_file, encoding="utf-8") as handle:
        split = json.load(handle)
    if isinstance(split, list) and len(split) == 1 and isinstance(split[0], dict) and "train" in split[0]:
        return list(split[0]["train"])  # a one-fold splits_final.json: its 'train' cases are the labeled ones
    if not isinstance(split, dict) or not isinstance(split.get("labeled"), list):
        raise ValueError(f"{split_file} has no 'labeled' list (expected keys labeled, unlabeled, val, or a one-fold "
                         f"splits_final.json).")
    if split.get("dataset") not in (None, dataset_name):
        print(f"Warning: {split_file} is for dataset {split['dataset']!r}, evaluating {dataset_name!r}.",
              file=sys.stderr)
    return list(split["labeled"])


def build_class_groups(args, class_names: Dict[int, str], labels_dir: Path, file_ending: str) -> ClassGroups:
    if args.tail_classes:
        return groups_from_tail_override(sorted(class_names), parse_tail_classes(args.tail_classes, class_names))
    labeled_cases: Optional[List[str]] = None
    if args.split is not None:
        labeled_cases = labeled_cases_from_split(args.split, args.dataset_name)
    if args.labeled_cases:
        labeled_cases = [case for value in args.labeled_cases for case in value.split(",") if case]
    if labeled_cases is None:
        print(f"Head/tail classes from every label file in {labels_dir} (pass --split or --labeled-cases to "
              f"restrict them to the labeled cases).", file=sys.stderr)
    files = labeled_label_files(labels_dir, file_ending, labeled_cases)
    return groups_from_labeled_files(files, sorted(class_names))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_scdl_evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pred_dir", type=Path, help="folder of predicted label maps (nnU-Net prediction output)")
    parser.add_argument("ref_dir", type=Path, help="folder of reference label maps with the same file names")
    parser.add_argument("-d", "--dataset", required=True,
                        help="nnU-Net dataset ID or name (looked up in $nnUNet_raw) or a raw dataset folder; gives "
                             "class names, file ending and the default labels folder")
    parser.add_argument("--split", type=Path,
                        help="split json whose 'labeled' list defines the labeled cases (or a one-fold "
                             "splits_final.json, whose 'train' list does)")
    parser.add_argument("--labeled-cases", nargs="+", help="labeled case IDs (overrides --split)")
    parser.add_argument("--labels-dir", type=Path,
                        help="folder with the labeled cases' label files (default: the dataset's labelsTr)")
    parser.add_argument("--tail-classes", nargs="+",
                        help="tail classes as label values or names; overrides the frequency rule")
    parser.add_argument("-o", "--output-dir", type=Path, help="where to write the reports (default: PRED_DIR)")
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--paper-grid", type=parse_grid, default=PAPER_GRID_ZYX,
                      help=f"papers' resize grid in (z, y, x) array order, default "
                           f"{','.join(map(str, PAPER_GRID_ZYX))} (the papers' (160, 160, 80) in (x, y, z)); for "
                           f"AMOS numbers as published use {','.join(map(str, PAPER_GRID_ZYX_AMOS_AS_PUBLISHED))}")
    grid.add_argument("--no-paper-protocol", action="store_true", help="skip the papers' protocol")
    parser.add_argument("--fix-empty-volume-bug", action="store_true",
                        help="paper protocol: score an entirely empty (resized) prediction like any other case; "
                             "by default every metric of such a case is 0, as in the papers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> List[Path]:
    """Evaluate as ``args`` say; returns the written report paths."""
    dataset = read_dataset_info(args.dataset)
    args.dataset_name = dataset.name
    labels_dir = args.labels_dir if args.labels_dir is not None else dataset.folder / "labelsTr"
    groups = build_class_groups(args, dataset.class_names, labels_dir, dataset.file_ending)
    settings = EvaluationSettings(paper_grid_zyx=None if args.no_paper_protocol else args.paper_grid,
                                  fix_empty_volume_bug=args.fix_empty_volume_bug)
    result = evaluate_folders(args.pred_dir, args.ref_dir, dataset.class_names, groups, dataset.file_ending,
                              settings, dataset_name=dataset.name, show_progress=not args.no_progress)
    output_dir = args.output_dir if args.output_dir is not None else args.pred_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / f"{OUTPUT_STEM}.json", output_dir / f"{OUTPUT_STEM}.md",
             output_dir / f"{OUTPUT_STEM}_per_class.png"]
    write_json(result, paths[0])
    write_markdown(result, paths[1])
    plot_per_class(result, paths[2])
    print(markdown_table(result))
    print("Wrote " + ", ".join(str(path) for path in paths))
    return paths


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"nnUNetv2_scdl_evaluate: error: {error}") from None


if __name__ == "__main__":
    main()
