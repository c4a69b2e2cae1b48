"""How large each class is, in voxels, at the spacing of each plans configuration: can a network still see it?

For the labeled cases of a split (or every training case), prints per class the median volume (ml) and the median
voxel count at the raw spacing and at the spacing of each ``PLANS:CONFIGURATION`` given. Counts are exact (read from
the preprocessed segmentations) where that configuration has been preprocessed, and estimated from the raw counts
by the ratio of voxel volumes (marked ``~``) where it has not; a 2-D configuration's count is per case, over all its
slices. A class absent from a case does not enter that class's median. Example::

    python benchmarks/class_sizes.py -d 11 --split ../shared/data/splits/Dataset011_BTCV_20pct.json \\
        nnUNetPlans:3d_fullres nnUNetPlans_cpu:3d_fullres nnUNetPlans:2d

Needs ``nnUNet_raw`` and ``nnUNet_preprocessed`` with the dataset's plans; nothing is written.
"""
import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, help="dataset name or id")
    parser.add_argument("--split", default=None,
                        help="split JSON with a 'labeled' list (default: every case of the raw dataset's labelsTr)")
    parser.add_argument("configurations", nargs="+", metavar="PLANS:CONFIGURATION",
                        help="e.g. nnUNetPlans_cpu:3d_fullres")
    args = parser.parse_args(argv)
    for item in args.configurations:
        if item.count(":") != 1:
            parser.error(f"{item!r}: expected PLANS:CONFIGURATION, e.g. nnUNetPlans_cpu:3d_fullres")
    return args


def class_voxel_counts(segmentation: np.ndarray, labels: Sequence[int]) -> Dict[int, int]:
    """{label: number of voxels with that label} of an integer label map, for the given labels."""
    counts = np.bincount(np.asarray(segmentation, dtype=np.int64).ravel().clip(min=0),
                         minlength=max(labels) + 1)
    return {label: int(counts[label]) for label in labels}


def medians(counts_per_case: List[Dict[int, float]], labels: Sequence[int]) -> Dict[int, Optional[float]]:
    """Per label, the median over the cases where it is present (count > 0); None when it is absent everywhere."""
    result = {}
    for label in labels:
        present = [counts[label] for counts in counts_per_case if counts[label] > 0]
        result[label] = statistics.median(present) if present else None
    return result


def voxel_volume(spacing: Sequence[float]) -> float:
    return float(np.prod([float(s) for s in spacing]))


def format_spacing(spacing: Sequence[float]) -> str:
    return " × ".join(f"{float(s):.2f}" for s in spacing) + " mm"


def main(argv=None):
    args = parse_args(argv)
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from tqdm import tqdm

    name = maybe_convert_to_dataset_name(args.dataset)
    raw = Path(os.environ["nnUNet_raw"]) / name
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / name
    dataset_json = load_json(raw / "dataset.json")
    ending = dataset_json["file_ending"]
    names = {int(v): k for k, v in dataset_json["labels"].items() if isinstance(v, int) and int(v) > 0}
    labels = sorted(names)
    if args.split:
        cases = list(json.loads(Path(args.split).read_text())["labeled"])
    else:
        cases = sorted(p.name[: -len(ending)] for p in (raw / "labelsTr").glob("*" + ending))
    if not cases:
        raise SystemExit(f"no labeled cases found for {name}")

    reader = determine_reader_writer_from_dataset_json(dataset_json, str(raw / "labelsTr" / (cases[0] + ending)))()
    raw_counts, raw_spacings = [], []
    for case in tqdm(cases, desc="raw labels"):
        seg, properties = reader.read_seg(str(raw / "labelsTr" / (case + ending)))
        raw_counts.append(class_voxel_counts(seg, labels))
        raw_spacings.append([float(s) for s in properties["spacing"]])

    columns = {"raw": (medians(raw_counts, labels), "")}
    spacings = {"raw": "median " + format_spacing(np.median(raw_spacings, axis=0))}
    for item in args.configurations:
        plans_name, configuration = item.split(":")
        plans = load_json(preprocessed / f"{plans_name}.json")
        if configuration not in plans["configurations"]:
            raise SystemExit(f"{plans_name} has no configuration {configuration!r}; it has "
                             f"{', '.join(plans['configurations'])}")
        config = plans["configurations"][configuration]
        spacing = [float(s) for s in config["spacing"]]
        folder = preprocessed / config.get("data_identifier", f"{plans_name}_{configuration}")
        spacings[item] = format_spacing(spacing) + (" in plane" if len(spacing) == 2 else "")
        if folder.is_dir() and all(any(folder.glob(case + "_seg.*")) for case in cases):
            dataset = infer_dataset_class(str(folder))(str(folder), cases)
            counts = [class_voxel_counts(np.asarray(dataset.load_case(case)[1][0]), labels)
                      for case in tqdm(cases, desc=item)]
            columns[item] = (medians(counts, labels), "")
        else:
            # a 2-D configuration resamples in plane only: its slices keep the raw through-plane spacing
            counts = [{label: c[label] * voxel_volume(r[-len(spacing):]) / voxel_volume(spacing) for label in labels}
                      for c, r in zip(raw_counts, raw_spacings)]
            columns[item] = (medians(counts, labels), "~")

    volumes = medians([{label: c[label] * voxel_volume(r) / 1000.0 for label in labels} for c, r in zip(raw_counts, raw_spacings)],
                      labels)
    print(f"# Class sizes: {name}, {len(cases)} cases" + (f" (labeled cases of {Path(args.split).name})"
                                                          if args.split else ""))
    print()
    for key, text in spacings.items():
        print(f"- {key}: spacing {text}")
    print()
    print("| class | median ml | " + " | ".join(f"voxels {key}" for key in columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for label in labels:
        cells = []
        for values, mark in columns.values():
            cells.append("absent" if values[label] is None else f"{mark}{values[label]:.0f}")
        volume = "absent" if volumes[label] is None else f"{volumes[label]:.1f}"
        print(f"| {names[label]} | {volume} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
