"""``nnUNetv2_scdl_convert_dataset``: the papers' datasets as nnU-Net raw datasets, and the papers' split files.

    nnUNetv2_scdl_convert_dataset synapse /data/BTCV -d 111            # -> $nnUNet_raw/Dataset111_Synapse
    nnUNetv2_scdl_convert_dataset amos /data/amos22 -d 112 --splits-txt-dir DHC/amos_data/splits
    nnUNetv2_scdl_convert_dataset split synapse_ga_10pct --dataset-name Dataset011_BTCV --case-ids sabs -o s.json
    nnUNetv2_scdl_convert_dataset split-from-txt amos DIR --percent 5 --dataset-name Dataset112_AMOS -o s.json
    nnUNetv2_scdl_convert_dataset list-splits

The converters write <dataset>/paper_splits/<split>.json, ready for ``nnUNetv2_scdl_make_split -d D --split FILE``.
"""
import argparse
import os
from pathlib import Path
from typing import List, Optional

from nnunetv2_scdl.data.conversion import ConversionResult, convert_amos, convert_synapse
from nnunetv2_scdl.data.paper_splits import (CASE_ID_STYLES, SYNAPSE_SPLIT_NAMES, SYNAPSE_TEST_SETS, AMOS_SPLIT_NAMES,
                                             amos_split_from_txt_dir, describe_splits, paper_split,
                                             synapse_split_from_txt_dir, write_split_json)


def _raw_root(value: Optional[Path]) -> Path:
    if value is not None:
        return value
    env = os.environ.get("nnUNet_raw")
    if env is None:
        raise ValueError("Pass --output-root or set the environment variable nnUNet_raw.")
    return Path(env)


def _report(result: ConversionResult) -> None:
    print(f"Wrote {result.dataset_dir}: {len(result.training_cases)} cases in imagesTr, {len(result.test_cases)} in "
          f"imagesTs.")
    for path in result.written_splits:
        print(f"Split file: {path}")
    for name, missing in result.skipped_splits.items():
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        print(f"Split {name} not written: {len(missing)} of its cases were not converted ({shown}).")


def _add_conversion_arguments(parser: argparse.ArgumentParser, default_name: str) -> None:
    parser.add_argument("source", type=Path, help="folder of the original dataset")
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="nnU-Net dataset ID (1-999)")
    parser.add_argument("--name", default=default_name, help=f"dataset name (default {default_name})")
    parser.add_argument("--output-root", type=Path, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder of the same name")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnUNetv2_scdl_convert_dataset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    synapse = commands.add_parser("synapse", help="Synapse/BTCV: SOURCE[/RawData]/Training/{img,label}")
    _add_conversion_arguments(synapse, "Synapse")
    synapse.add_argument("--test-set", choices=tuple(SYNAPSE_TEST_SETS), default="ga",
                         help="which 6 scans go to imagesTs: the GA/SCDL test set (default), the DHC/GenericSSL one, "
                              "or none")

    amos = commands.add_parser("amos", help="AMOS22: SOURCE/{dataset.json,imagesTr,labelsTr,imagesVa[,labelsVa]}")
    _add_conversion_arguments(amos, "AMOS")
    amos.add_argument("--splits-txt-dir", type=Path,
                      help="folder of the papers' split text files (labeled_{P}p.txt, unlabeled_{P}p.txt, eval.txt, "
                           "test.txt) to turn into split files")
    amos.add_argument("--allow-non-paper-splits", action="store_true",
                      help="accept split text files that disagree with the papers' counts and 5%% list")
    amos.add_argument("--channel-name", help="nnU-Net channel name (default: the dataset.json modality, else CT)")

    split = commands.add_parser("split", help="write a built-in split file")
    split.add_argument("name", choices=SYNAPSE_SPLIT_NAMES + AMOS_SPLIT_NAMES)
    split.add_argument("--dataset-name", required=True, help="nnU-Net dataset name, e.g. Dataset111_Synapse")
    split.add_argument("--case-ids", choices=CASE_ID_STYLES, default="synapse",
                       help="Synapse case IDs: synapse_0002 (this converter) or btcv_01 (the shared SABS copy)")
    split.add_argument("-o", "--output", type=Path, required=True, help="split json to write")

    from_txt = commands.add_parser("split-from-txt", help="write a split file from the papers' split text files")
    from_txt.add_argument("dataset", choices=("synapse", "amos"))
    from_txt.add_argument("txt_dir", type=Path)
    from_txt.add_argument("--percent", type=int, required=True, help="P of labeled_{P}p.txt")
    from_txt.add_argument("--dataset-name", required=True, help="nnU-Net dataset name, e.g. Dataset112_AMOS")
    from_txt.add_argument("--case-ids", choices=CASE_ID_STYLES, default="synapse", help="Synapse case ID style")
    from_txt.add_argument("--allow-non-paper-splits", action="store_true",
                          help="AMOS: accept lists that disagree with the papers' counts and 5%% list")
    from_txt.add_argument("-o", "--output", type=Path, required=True, help="split json to write")

    commands.add_parser("list-splits", help="list the built-in splits and what cannot be reproduced")
    return parser


def run(args: argparse.Namespace) -> List[Path]:
    """Carry out one subcommand; returns the files it wrote (the dataset folder for conversions)."""
    if args.command == "synapse":
        result = convert_synapse(args.source, _raw_root(args.output_root), args.dataset_id, args.name, args.test_set,
                                 args.overwrite, not args.no_progress)
        _report(result)
        return [result.dataset_dir] + result.written_splits
    if args.command == "amos":
        result = convert_amos(args.source, _raw_root(args.output_root), args.dataset_id, args.name,
                              args.splits_txt_dir, not args.allow_non_paper_splits, args.channel_name,
                              args.overwrite, not args.no_progress)
        _report(result)
        return [result.dataset_dir] + result.written_splits
    if args.command == "split":
        path = write_split_json(paper_split(args.name, args.case_ids), args.dataset_name, args.output)
        print(f"Wrote {path}")
        return [path]
    if args.command == "split-from-txt":
        if args.dataset == "amos":
            split = amos_split_from_txt_dir(args.txt_dir, args.percent, verify=not args.allow_non_paper_splits)
        else:
            split = synapse_split_from_txt_dir(args.txt_dir, args.percent, args.case_ids)
        path = write_split_json(split, args.dataset_name, args.output)
        print(f"Wrote {path}")
        return [path]
    print(describe_splits())
    return []


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        raise SystemExit(f"nnUNetv2_scdl_convert_dataset: error: {error}") from None


if __name__ == "__main__":
    main()
