"""``nnUNetv2_scdl_cpu_plans``: derive small plans for CPU runs from nnU-Net's own plans.

    nnUNetv2_scdl_cpu_plans -d 4 -c 3d_fullres                          # features / 4, batch 2, same data
    nnUNetv2_scdl_cpu_plans -d 11 -c 3d_fullres --spacing-factor 1.5 3 3 --preprocess -np 2

Writes ``nnUNet_preprocessed/DatasetX/<plans_name>.json`` (default ``nnUNetPlans_cpu``). Without
``--spacing-factor`` the derived configuration reads the data already preprocessed for the source plans. With a
coarser spacing it needs its own preprocessing: ``--preprocess`` runs ``nnUNetv2_preprocess`` for it, or the command
prints what to run. See :mod:`nnunetv2_scdl.data.cpu_plans`.
"""
import argparse
import os
import subprocess
import sys

from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunetv2_scdl.cli.commands import console_command, dataset_id_of


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_scdl_cpu_plans",
        description="Derive plans for CPU runs from nnU-Net's plans: fewer features per stage, a smaller batch and "
                    "optionally a coarser target spacing (then the configuration must be preprocessed again).")
    parser.add_argument("-d", dest="dataset", required=True, help="dataset name or ID")
    parser.add_argument("-c", dest="configurations", nargs="+", default=["3d_fullres"],
                        help="configurations to reduce (default 3d_fullres)")
    parser.add_argument("-p", dest="source_plans", default="nnUNetPlans", help="source plans (default nnUNetPlans)")
    parser.add_argument("-o", dest="target_plans", default="nnUNetPlans_cpu",
                        help="name of the derived plans (default nnUNetPlans_cpu)")
    parser.add_argument("--feature-divisor", type=int, default=4,
                        help="divide features_per_stage by this (default 4)")
    parser.add_argument("--batch-size", type=int, default=2, help="batch size (default 2)")
    parser.add_argument("--spacing-factor", type=float, nargs="+", default=[1.0], metavar="F",
                        help="multiply the target spacing by F (one value, or one per axis in array order, e.g. "
                             "1.5 3 3 for z y x); patch and median size shrink accordingly (default 1: unchanged)")
    parser.add_argument("--preprocess", action="store_true",
                        help="run nnUNetv2_preprocess for configurations whose spacing changed")
    parser.add_argument("-np", dest="num_processes", type=int, default=2,
                        help="processes for --preprocess (default 2)")
    return parser


def describe(plans_file: str, configurations) -> str:
    plans = load_json(plans_file)
    lines = []
    for name in configurations:
        c = plans["configurations"][name]
        features = c["architecture"]["arch_kwargs"].get("features_per_stage") if "architecture" in c else None
        lines.append(f"  {name}: spacing {c.get('spacing', 'inherited')}, patch {c.get('patch_size', 'inherited')}, "
                     f"batch {c['batch_size']}, features {features}, data {c.get('data_identifier')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunetv2_scdl.data.cpu_plans import derive_cpu_plans

    factor = args.spacing_factor[0] if len(args.spacing_factor) == 1 else args.spacing_factor
    try:
        dataset_name = maybe_convert_to_dataset_name(args.dataset)
        folder = os.path.join(nnUNet_preprocessed, dataset_name)
        target = derive_cpu_plans(folder, args.source_plans, args.target_plans, args.feature_divisor,
                                  args.batch_size, args.configurations, factor)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"nnUNetv2_scdl_cpu_plans: error: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {target}\n{describe(target, args.configurations)}")
    if factor == 1:
        return 0
    command = ["nnUNetv2_preprocess", "-d", dataset_id_of(dataset_name), "-plans_name", args.target_plans, "-c",
               *args.configurations, "-np", *[str(args.num_processes)] * len(args.configurations)]
    if not args.preprocess:
        print("The spacing changed; preprocess once before training:\n  " + " ".join(command))
        return 0
    return subprocess.call(console_command(command[0]) + command[1:])


if __name__ == "__main__":
    sys.exit(main())
