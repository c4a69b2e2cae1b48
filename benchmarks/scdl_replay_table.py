"""Loss terms of runs continued from one checkpoint: a table per run of the epochs after the shared start.

A replay continues a saved training state (copied as ``checkpoint_latest.pth`` into a fresh fold folder, then
``nnUNetv2_train ... --c``) with different trainers or data streams. This reads each run's per-epoch log from its
checkpoint (``checkpoint_final.pth``, else ``checkpoint_latest.pth``) and summarises the epochs from ``--start`` on;
each run is named by its nnUNet_results folder (one per replay). The table gives the mean and the worst (highest)
supervised loss, the largest labeled CDBA and SAC, and the mean validation pseudo
Dice. ``--export`` writes those epochs' values as JSON, and the report reads that JSON back as well as checkpoints:

    python benchmarks/scdl_replay_table.py <fold_0> [<fold_0> ...] --start 95 --export replays.json
    python benchmarks/scdl_replay_table.py replays.json
"""
import argparse
import json
from pathlib import Path
from typing import Dict, List

from nnunetv2_scdl.evaluation.proxy_geometry import checkpoint_file

TERMS = ("supervised", "scdl_cdba_labeled", "scdl_sac", "ema_fg_dice")


def run_terms(fold: Path, start: int) -> Dict[str, List[float]]:
    """The logged ``TERMS`` of one fold folder's run from epoch ``start`` on."""
    import torch

    logging = torch.load(checkpoint_file(fold), map_location="cpu", weights_only=False)["logging"]
    return {term: [float(v) for v in logging[term][start:]] for term in TERMS}


def summary_table(runs: Dict[str, Dict[str, List[float]]]) -> str:
    lines = ["| run | epochs | mean supervised loss | worst supervised loss | max CDBA labeled | max SAC | "
             "mean pseudo Dice |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, terms in runs.items():
        supervised = terms["supervised"]
        if not supervised:
            lines.append(f"| {name} | 0 | | | | | |")
            continue
        lines.append(f"| {name} | {len(supervised)} | {sum(supervised) / len(supervised):.3f} | "
                     f"{max(supervised):.2f} | {max(terms['scdl_cdba_labeled']):.2f} | {max(terms['scdl_sac']):.2f} | "
                     f"{sum(terms['ema_fg_dice']) / len(terms['ema_fg_dice']):.3f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", type=Path, help="fold folders, or a JSON written by --export")
    parser.add_argument("--start", type=int, help="first epoch of the replay, i.e. the epochs the shared checkpoint "
                                                   "had done (required with fold folders)")
    parser.add_argument("--export", type=Path, help="write the replayed epochs' terms to this JSON file")
    args = parser.parse_args()
    runs = {}
    for source in args.sources:
        if source.suffix == ".json":
            runs.update(json.loads(source.read_text())["runs"])
        elif args.start is None:
            parser.error("--start is required when reading fold folders.")
        else:
            runs[source.parents[2].name] = run_terms(source, args.start)
    if args.export:
        args.export.write_text(json.dumps({"start_epoch": args.start, "runs": runs}))
    print(summary_table(runs))


if __name__ == "__main__":
    main()
