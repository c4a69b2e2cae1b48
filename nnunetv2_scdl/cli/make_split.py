"""``nnUNetv2_scdl_make_split``: write a benchmark split (labeled / unlabeled / val) as nnU-Net's splits_final.json.

    nnUNetv2_scdl_make_split -d 4 --split shared/data/splits/Dataset004_Hippocampus_5pct.json
    nnUNetv2_scdl_make_split -d 990 --labeled 4 --num-val 2 --seed 0
    nnUNetv2_scdl_make_split -d 990 --fraction 0.2 --val-fraction 0.2 --seed 1 --overwrite

Works before or after ``nnUNetv2_plan_and_preprocess``. Reads only dataset.json and the file names in
imagesTr/labelsTr of ``nnUNet_raw/DatasetX``, never label contents.
"""
import argparse
import os
import sys

from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnunetv2_scdl.data.splits import (SplitError, load_split_file, random_split, raw_case_files, validate_split,
                                       write_splits_final)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_scdl_make_split",
        description="Benchmark mode: use only some labels of a fully labeled dataset. Writes "
                    "nnUNet_preprocessed/DatasetX/splits_final.json as one fold "
                    "[{'train': labeled, 'val': val, 'unlabeled': unlabeled}]. The labels of 'unlabeled' cases are "
                    "never read by this package.")
    parser.add_argument("-d", dest="dataset", required=True,
                        help="dataset name or ID, e.g. 4 or Dataset004_Hippocampus")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--split", metavar="FILE", help="JSON file with the keys labeled, unlabeled and val")
    source.add_argument("--labeled", type=int, metavar="N", help="draw N labeled cases at random")
    source.add_argument("--fraction", type=float, metavar="F",
                        help="draw this fraction of the non-validation cases as labeled (at least one)")
    val = parser.add_mutually_exclusive_group()
    val.add_argument("--num-val", type=int, metavar="N", help="number of validation cases (random draws only)")
    val.add_argument("--val-fraction", type=float, metavar="F",
                     help="fraction of all cases used for validation (random draws only; default 0.2, at least one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draw (default 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing, different splits_final.json (a backup is kept)")
    return parser


def make_split(dataset: str, split_file: str = None, n_labeled: int = None, labeled_fraction: float = None,
               n_val: int = None, val_fraction: float = None, seed: int = 0, overwrite: bool = False) -> str:
    """Build, check and write the split for ``dataset``; return a one-line report."""
    dataset_name = maybe_convert_to_dataset_name(dataset)
    raw_folder = os.path.join(nnUNet_raw, dataset_name)
    if not os.path.isdir(raw_folder):
        raise SplitError(f"Raw dataset {raw_folder} not found (nnUNet_raw={nnUNet_raw.get()}).")
    cases = raw_case_files(raw_folder)
    if split_file is not None:
        if n_val is not None or val_fraction is not None:
            raise SplitError("--num-val/--val-fraction only apply to random draws; the split file lists 'val'.")
        split = load_split_file(split_file)
    else:
        drawable = [c for c, found in cases.items() if found["has_image"] and found["has_label"]]
        if val_fraction is None and n_val is None:
            val_fraction = 0.2
        split = random_split(drawable, n_labeled, labeled_fraction, n_val, val_fraction, seed)
    validate_split(split, cases, dataset_name)
    status = write_splits_final(os.path.join(nnUNet_preprocessed, dataset_name), split, overwrite)
    unused = len(cases) - len(split.labeled) - len(split.unlabeled) - len(split.val)
    return (f"{dataset_name}: {len(split.labeled)} labeled, {len(split.unlabeled)} unlabeled, {len(split.val)} "
            f"validation cases" + (f", {unused} unused" if unused else "") + f"; splits_final.json {status}.")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(make_split(args.dataset, args.split, args.labeled, args.fraction, args.num_val, args.val_fraction,
                         args.seed, args.overwrite))
    except (ValueError, RuntimeError) as e:  # SplitError is a ValueError; RuntimeError: unknown dataset ID
        print(f"nnUNetv2_scdl_make_split: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
