"""``nnUNetv2_scdl_preprocess_unlabeled``: preprocess unlabeled images with the plans' own nnU-Net preprocessor.

    nnUNetv2_plan_and_preprocess -d 990 -c 3d_fullres          # first, as usual (labeled cases)
    nnUNetv2_scdl_preprocess_unlabeled -d 990 -c 3d_fullres     # then the unlabeled ones

Unlabeled cases come from ``nnUNet_raw/DatasetX/imagesUnlabeled/{ID}_{XXXX}{file_ending}`` and/or from the
``unlabeled`` lists of ``splits_final.json`` written by ``nnUNetv2_scdl_make_split`` (images read from imagesTr,
labels never opened). Output: ``nnUNet_preprocessed/DatasetX/<data_identifier>_unlabeled/``.

Run it again after adding, removing or replacing images: it preprocesses only new and changed cases and drops the
outputs of removed ones. See :mod:`nnunetv2_scdl.data.unlabeled_preprocessing`.
"""
import argparse
import sys

from nnunetv2_scdl.data.unlabeled_preprocessing import UnlabeledDataError, preprocess_unlabeled

DEFAULT_NUM_PROCESSES = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_scdl_preprocess_unlabeled",
        description="Preprocess unlabeled images exactly like nnU-Net preprocesses the labeled ones (same resampling, "
                    "normalisation, cropping and transposition), into "
                    "nnUNet_preprocessed/DatasetX/<data_identifier>_unlabeled/. Run nnUNetv2_plan_and_preprocess "
                    "first. Rerun it after adding, removing or replacing unlabeled images: only new and changed "
                    "cases are preprocessed, and the outputs of removed ones are dropped.")
    parser.add_argument("-d", dest="dataset", required=True, help="dataset name or ID")
    parser.add_argument("-c", dest="configurations", nargs="+", required=True, metavar="CONFIG",
                        help="configuration(s) of the plans, e.g. 3d_fullres")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-np", dest="num_processes", type=int, default=DEFAULT_NUM_PROCESSES,
                        help=f"worker processes (default {DEFAULT_NUM_PROCESSES}; 1 runs in this process)")
    parser.add_argument("--overwrite", action="store_true",
                        help="preprocess every case again, changed or not (the old folder is replaced only once "
                             "the new one is complete)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_processes < 1:
        print("nnUNetv2_scdl_preprocess_unlabeled: error: -np must be at least 1", file=sys.stderr)
        return 2
    try:
        statuses = preprocess_unlabeled(args.dataset, args.configurations, args.plans, args.num_processes,
                                        args.overwrite)
    except (UnlabeledDataError, FileNotFoundError) as e:
        print(f"nnUNetv2_scdl_preprocess_unlabeled: error: {e}", file=sys.stderr)
        return 1
    for configuration, status in statuses.items():
        print(f"{configuration}: {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
