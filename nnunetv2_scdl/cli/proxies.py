"""``nnUNetv2_scdl_proxies``: how far apart SCDL's class proxies are in trained checkpoints.

    # a model folder (checkpoint_final.pth, else checkpoint_latest.pth), or checkpoint files
    nnUNetv2_scdl_proxies $nnUNet_results/Dataset004_Hippocampus/nnUNetTrainerSCDL_MT__nnUNetPlans__3d_fullres/fold_0
    nnUNetv2_scdl_proxies fold_0/checkpoint_best.pth fold_0/checkpoint_final.pth --all-pairs

Prints a markdown table: per SCDL module, the pair of classes whose proxy means μ_c have the largest cosine, the
mean ‖μ_c‖ and σ_c (see :mod:`nnunetv2_scdl.evaluation.proxy_geometry`).
"""
import argparse
import sys
from pathlib import Path

from nnunetv2_scdl.cli.commands import exit_code_of
from nnunetv2_scdl.evaluation.proxy_geometry import proxy_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnUNetv2_scdl_proxies", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path,
                        help="checkpoint files, or model folders (fold_<f>) read from checkpoint_final.pth, else "
                             "checkpoint_latest.pth")
    parser.add_argument("--all-pairs", action="store_true", help="add the cosine of every pair of classes")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return exit_code_of("nnUNetv2_scdl_proxies", lambda: print(proxy_table(args.checkpoints, args.all_pairs)),
                        (ValueError, FileNotFoundError, KeyError))


if __name__ == "__main__":
    sys.exit(main())
