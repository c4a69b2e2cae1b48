"""``nnUNetv2_scdl_plateau``: when each network of each trainer left the "everything is background" plateau.

    # finished runs, from the committed summaries
    nnUNetv2_scdl_plateau docs/results/hippocampus_5pct/seed_0
    # add runs still training (their checkpoint_latest.pth) from a benchmark folder's nnU-Net results
    nnUNetv2_scdl_plateau docs/results/hippocampus_5pct/seed_0 bench/tier/hippocampus_5pct_c/seed_0/nnUNet_results

Prints a markdown table: per trainer and network, the optimiser step from which each class's pseudo Dice stayed
≥ 0.1 for three epochs, over the reference trainer's step in parentheses (see
:mod:`nnunetv2_scdl.evaluation.plateau`).
"""
import argparse
import sys
from pathlib import Path

from nnunetv2_scdl.cli.commands import exit_code_of
from nnunetv2_scdl.evaluation.benchmark_report import REFERENCE_TRAINER
from nnunetv2_scdl.evaluation.plateau import load_sources, plateau_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnUNetv2_scdl_plateau", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", type=Path,
                        help="trainer summaries (files or folders) and nnU-Net model folders (fold_<f>, or folders "
                             "searched for them); a model folder is read from checkpoint_final.pth, else "
                             "checkpoint_latest.pth")
    parser.add_argument("--reference", default=REFERENCE_TRAINER,
                        help=f"trainer whose steps the ratios divide by (default {REFERENCE_TRAINER}): its run of "
                             f"the same seed and budget where there is one; no ratios if no source is of this trainer")
    parser.add_argument("--iterations-per-epoch", type=int, default=None,
                        help="for model folders whose debug.json lacks num_iterations_per_epoch")
    parser.add_argument("-o", "--output", type=Path, default=None, help="also write the table to this file")
    return parser


def run(args: argparse.Namespace) -> None:
    sources = load_sources(args.sources, args.iterations_per_epoch)
    table = plateau_table(sources, args.reference)
    print(table)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table + "\n", encoding="utf-8")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return exit_code_of("nnUNetv2_scdl_plateau", lambda: run(args), (ValueError, FileNotFoundError, KeyError))


if __name__ == "__main__":
    sys.exit(main())
