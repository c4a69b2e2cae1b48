"""``nnUNetv2_scdl_benchmark_report``: build a benchmark report from finished runs, without training.

    # merge single-seed benchmark folders into a report over seeds
    nnUNetv2_scdl_benchmark_report bench/hippo_seed0 bench/hippo_seed1 -o bench/hippo_seeds
    # the supervised learning curve of a --learning-curve folder (or of explicit budget folders, --learning-curve)
    nnUNetv2_scdl_benchmark_report bench/lc/hippocampus_5pct_quarter
    # export each finished trainer's small summary (JSON) for the repository ...
    nnUNetv2_scdl_benchmark_report bench/hippo_seeds --export docs/results/hippocampus_5pct
    # ... and rebuild the report from those summaries alone, on any machine
    nnUNetv2_scdl_benchmark_report docs/results/hippocampus_5pct

A source is a benchmark folder of ``nnUNetv2_scdl_benchmark`` (one seed: it holds ``benchmark_state.json``; several
seeds: ``seed_<n>/`` folders; a learning curve: ``steps_<steps>/`` folders), a folder of trainer summaries written by
``--export``, or one summary file. Only finished (evaluated) trainers count; unfinished ones are listed. Sources whose
budgets differ make a learning curve of the supervised reference; this needs ``--learning-curve`` unless a source is a
learning-curve folder. Reports: ``benchmark.md`` (with ``benchmark.json`` and plots) over seeds, or
``learning_curve.md`` (with ``learning_curve.json`` and ``learning_curve.png``); see docs/benchmark.md.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from nnunetv2_scdl.cli.commands import exit_code_of
from nnunetv2_scdl.cli.evaluate import OUTPUT_STEM
from nnunetv2_scdl.evaluation.benchmark_summary import (load_summary_file, load_summary_folder, make_summary,
                                                        steps_of, summary_path, write_summary)

#: what an ordinary (single-seed) benchmark folder has done; used by nnUNetv2_scdl_benchmark to resume
STATE_FILE = "benchmark_state.json"
#: one trainer's evaluation, in <benchmark folder>/predictions/<trainer>/
EVALUATION_FILE = f"{OUTPUT_STEM}.json"


def seed_folder(output: Path, seed: int) -> Path:
    return output / f"seed_{seed}"


def steps_folder(output: Path, steps: int) -> Path:
    return output / f"steps_{steps:04d}"


def _subfolders(folder: Path, prefix: str) -> List[Path]:
    found = [p for p in folder.glob(f"{prefix}_*") if p.is_dir() and p.name[len(prefix) + 1:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(prefix) + 1:]))


def seed_subfolders(folder: Path) -> List[Path]:
    """``folder``'s ``seed_<n>`` folders, by seed."""
    return _subfolders(Path(folder), "seed")


def is_run_folder(folder: Path) -> bool:
    """An ordinary (single-seed) benchmark folder."""
    return (Path(folder) / STATE_FILE).is_file()


def is_learning_curve_folder(folder: Path) -> bool:
    return bool(_subfolders(Path(folder), "steps"))


def run_folder_summaries(folder: Path) -> Tuple[List[dict], List[str]]:
    """(summaries of the evaluated trainers, ``folder: trainer`` of the unfinished ones) of one benchmark folder."""
    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    commands = state.get("commands") or [state["command"]]
    summaries, pending = [], []
    for trainer, entry in state["trainers"].items():
        evaluation_file = folder / "predictions" / trainer / EVALUATION_FILE
        if entry.get("evaluated") and "training" in entry and evaluation_file.is_file():
            evaluation = json.loads(evaluation_file.read_text(encoding="utf-8"))
            training = dict(entry["training"], code=entry.get("code"))  # the records of every training invocation
            summary = make_summary(trainer, state["settings"], commands, evaluation, training)
            summary["source"] = str(folder)
            summaries.append(summary)
        else:
            pending.append(f"{folder}: {trainer}")
    if not state["trainers"]:
        pending.append(f"{folder}: no trainer finished")
    return summaries, pending


def collect_summaries(source: Path) -> Tuple[List[dict], List[str]]:
    """Summaries and unfinished runs below ``source`` (see the module docstring for what a source is)."""
    source = Path(source)
    if source.is_file():
        return [load_summary_file(source)], []
    if not source.is_dir():
        raise FileNotFoundError(f"{source} does not exist.")
    if is_run_folder(source):
        return run_folder_summaries(source)
    nested = _subfolders(source, "steps") + _subfolders(source, "seed")
    if nested and any(is_run_folder(p) or _subfolders(p, "seed") for p in nested):
        summaries, pending = [], []
        for folder in nested:
            found, waiting = collect_summaries(folder)
            summaries += found
            pending += waiting if found or waiting else [f"{folder}: not started"]
        return summaries, pending
    return load_summary_folder(source), []


def export_summaries(summaries: List[dict], target: Path, by_steps: bool) -> List[Path]:
    """Write each summary to ``target/[steps_<steps>/]seed_<seed>/<trainer>.json``; returns the paths."""
    return [write_summary(summary, summary_path(target, summary, by_steps)) for summary in summaries]


def build_report(summaries: List[dict], output: Path, learning_curve: bool, sources: List[str],
                 pending: List[str]) -> Path:
    """The learning-curve report (``learning_curve``) or the report over seeds, in ``output``."""
    from nnunetv2_scdl.evaluation.learning_curve import write_learning_curve
    from nnunetv2_scdl.evaluation.seed_report import write_seed_report

    if not summaries:
        raise ValueError("No finished trainer found in " + ", ".join(sources) + ": nothing to report"
                         + (f" (not finished yet: {'; '.join(pending)})." if pending else "."))
    if learning_curve:
        return write_learning_curve(summaries, output, sources, pending)
    budgets = sorted({steps_of(s) for s in summaries})
    if len(budgets) > 1:
        raise ValueError(f"The runs have different budgets ({', '.join(map(str, budgets))} steps). Pass "
                         f"--learning-curve for the supervised learning curve, or give runs of one budget.")
    report = write_seed_report(summaries, output, sources)
    if pending:
        with open(report, "a", encoding="utf-8") as handle:
            handle.write("\nNot finished yet (left out): " + "; ".join(pending) + ".\n")
    return report


def report_sources(sources: List[Path], output: Optional[Path], learning_curve: bool = False,
                   export: Optional[Path] = None, printer=print) -> Optional[Path]:
    """Collect the summaries of ``sources``; export them to ``export``; write the report to ``output`` (default: the
    only source folder, unless that is a single-seed benchmark folder, whose own report the runner writes)."""
    summaries, pending = [], []
    for source in sources:
        found, waiting = collect_summaries(source)
        summaries += found
        pending += waiting
    learning_curve = learning_curve or any(Path(s).is_dir() and is_learning_curve_folder(Path(s)) for s in sources)
    if export is not None:
        written = export_summaries(summaries, export, by_steps=learning_curve)
        size = sum(p.stat().st_size for p in written)
        printer(f"Exported {len(written)} trainer summaries ({size / 1024:.0f} kB) to {export}")
    if output is None:
        if export is not None:
            return None
        if len(sources) != 1 or not Path(sources[0]).is_dir():
            raise ValueError("Give the report folder with -o when there is more than one source.")
        if is_run_folder(Path(sources[0])):
            raise ValueError(f"{sources[0]} is a single-seed benchmark folder, whose report nnUNetv2_scdl_benchmark "
                             f"writes; give another folder with -o.")
        output = Path(sources[0])
    if is_run_folder(output):
        raise ValueError(f"{output} is a single-seed benchmark folder; its benchmark.md belongs to the runner. Give "
                         f"another folder with -o.")
    report = build_report(summaries, output, learning_curve, [str(s) for s in sources], pending)
    printer(f"Report: {report}")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnUNetv2_scdl_benchmark_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", type=Path,
                        help="benchmark folders (one seed, seed_<n>/ folders or steps_<steps>/ folders), folders of "
                             "exported summaries, or summary files")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="folder for the report (default: the only source, unless it is a single-seed benchmark "
                             "folder; none with --export alone)")
    parser.add_argument("--learning-curve", action="store_true",
                        help="report the supervised reference against the budget (implied when a source holds "
                             "steps_<steps>/ folders)")
    parser.add_argument("--export", type=Path, default=None,
                        help="write each finished trainer's summary to "
                             "EXPORT/[steps_<steps>/]seed_<seed>/<trainer>.json")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return exit_code_of("nnUNetv2_scdl_benchmark_report",
                        lambda: report_sources(args.sources, args.output, args.learning_curve, args.export),
                        (ValueError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
