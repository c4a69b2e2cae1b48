"""The benchmark report over seeds: each trainer's results as mean ± sd over seeds, and paired differences.

Input: trainer summaries (:mod:`nnunetv2_scdl.evaluation.benchmark_summary`) of one dataset, split and budget, one per
trainer and seed. Output:

- mean ± sd over seeds of mean, head and tail Dice, HD95 and training time, with the number of seeds per trainer;
- per-class Dice, mean ± sd over seeds;
- the budget of the self-training rows: each model's optimiser steps, the total, and the reference's steps;
- paired differences of mean Dice, seed by seed: each SCDL variant minus its host, and each trainer minus the
  supervised reference; whether the sign agrees across seeds; and whether the difference is a finding;
- per trainer, seed and class: the optimiser step (and epoch) from which the class's pseudo Dice stayed learned.

The finding rule: the seed-to-seed spread ``s`` is the standard deviation over seeds of mean Dice, pooled over trainers
(``sqrt(sum((n_i - 1) s_i²) / sum(n_i - 1))``): over the two compared trainers when both have at least two seeds,
since their own spreads are then known, else over every trainer with at least two seeds. So an unstable trainer
does not widen the threshold of a comparison between two other trainers that both have several seeds. A paired
difference is a finding when the absolute mean of its per-seed differences exceeds ``2 s``. Without any trainer with
two seeds there is no spread and no finding. A comparison with a single paired seed whose difference is below ``s``
needs another seed.
"""
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from nnunetv2_scdl.evaluation.benchmark_report import (REFERENCE_TRAINER, SCDL_PAIRS, SELF_TRAINING_NOTE, TAIL_MARK,
                                                       TrainerRecord, _fmt, budget_table, check_comparable,
                                                       colour_index, first_learned_epoch, LEARNED_SUSTAIN,
                                                       LEARNED_THRESHOLD, learned_cell, short_name)
from nnunetv2_scdl.evaluation.benchmark_summary import differing_settings, seed_of, summary_record

#: a paired difference is a finding when |mean Δ| exceeds this multiple of the seed-to-seed spread
FINDING_FACTOR = 2.0
FINDING_RULE = (f"A difference counts as a finding only when the absolute mean of its per-seed differences exceeds "
                f"{FINDING_FACTOR:g} × the seed-to-seed spread s: the standard deviation over seeds of mean Dice, "
                f"pooled over the two compared trainers when both have at least two seeds, else over every trainer "
                f"with at least two seeds. A comparison with one paired seed whose difference is below s needs "
                f"another seed.")
#: (metric key in the summary, label, scale) of the over-seeds summary table
SUMMARY_METRICS = (("mean", "dice", "Dice %", 100.0), ("head", "dice", "head Dice %", 100.0),
                   ("tail", "dice", "tail Dice %", 100.0), ("mean", "hd95_mm", "HD95 mm", 1.0))

Runs = Dict[str, Dict[int, TrainerRecord]]  # trainer -> seed -> record, trainers in report order


def runs_from_summaries(summaries: Sequence[dict]) -> Runs:
    """``{trainer: {seed: record}}``, trainers in the reference-first order of the summaries; a trainer and seed given
    twice is refused, naming both sources."""
    runs: Runs = {}
    sources: Dict[Tuple[str, int], str] = {}
    ordered = sorted(summaries, key=lambda s: s["trainer"] != REFERENCE_TRAINER)  # stable: keeps the others' order
    for summary in ordered:
        key = (summary["trainer"], seed_of(summary))
        source = summary.get("source", "?")
        if key in sources:
            raise ValueError(f"{key[0]} with seed {key[1]} is given twice: {sources[key]} and {source}. Give each "
                             f"trainer and seed once.")
        sources[key] = source
        runs.setdefault(summary["trainer"], {})[key[1]] = summary_record(summary)
    for trainer in runs:
        runs[trainer] = dict(sorted(runs[trainer].items()))
    check_comparable([record for seeds in runs.values() for record in seeds.values()])
    return runs


def mean_sd(values: Sequence[float]) -> Tuple[float, float, int]:
    """(mean, sample standard deviation, n) of the finite values; sd is NaN below two values."""
    finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not finite:
        return float("nan"), float("nan"), 0
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan"), len(finite)


def fmt_mean_sd(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    mean, sd, n = mean_sd(values)
    if n == 0:
        return "n/a"
    return _fmt(mean, scale, digits) + ("" if n < 2 else f" ± {_fmt(sd, scale, digits)}")


def seed_spread(runs: Runs, among: Optional[Sequence[str]] = None) -> Tuple[Optional[float], List[str]]:
    """The pooled standard deviation over seeds of mean Dice (fraction) over the trainers ``among`` (default: all),
    and the trainers it pools: those with at least two seeds; ``None`` when none has two."""
    squares, dof, trainers = 0.0, 0, []
    for trainer, seeds in runs.items():
        if among is not None and trainer not in among:
            continue
        _, sd, n = mean_sd([r.metric("original", "mean", "dice") for r in seeds.values()])
        if n >= 2:
            squares += (n - 1) * sd ** 2
            dof += n - 1
            trainers.append(trainer)
    return (math.sqrt(squares / dof) if dof else None), trainers


def comparisons_of(runs: Runs) -> List[Tuple[str, str, str]]:
    """(kind, minuend, subtrahend): each SCDL variant minus its host, then each trainer minus the reference."""
    pairs = [("SCDL − host", scdl, host) for host, scdl in SCDL_PAIRS if host in runs and scdl in runs]
    if REFERENCE_TRAINER in runs:
        pairs += [("trainer − supervised", trainer, REFERENCE_TRAINER) for trainer in runs
                  if trainer != REFERENCE_TRAINER]
    return pairs


def paired_deltas(runs: Runs, spread: Optional[float], spread_trainers: Sequence[str] = ()) -> List[dict]:
    """Per comparison (:func:`comparisons_of`): the per-seed Δ of mean Dice over the seeds both trainers ran, their
    mean, the mean Δ of head and tail Dice, sign agreement (``None`` below two seeds), the spread s it is judged by
    and the trainers s pools (the two compared ones when both have two seeds or more, else ``spread`` pooled over
    ``spread_trainers``), the finding threshold ``FINDING_FACTOR × s``, whether it is a finding (``None`` without
    a spread), and whether another seed is needed (one paired seed, |Δ| below s). Fractions, not points."""
    results = []
    for kind, minuend, subtrahend in comparisons_of(runs):
        seeds = sorted(set(runs[minuend]) & set(runs[subtrahend]))
        if not seeds:
            continue
        own, own_trainers = seed_spread(runs, (minuend, subtrahend))
        pair_spread, pair_trainers = ((own, own_trainers) if len(own_trainers) == 2
                                      else (spread, list(spread_trainers)))

        def deltas(key: str) -> List[float]:
            return [runs[minuend][s].metric("original", key, "dice") - runs[subtrahend][s].metric("original", key,
                                                                                                    "dice")
                    for s in seeds]

        per_seed = deltas("mean")
        mean = mean_sd(per_seed)[0]
        finite = [d for d in per_seed if not math.isnan(d)]
        signs = {np.sign(d) for d in finite}
        threshold = None if pair_spread is None else FINDING_FACTOR * pair_spread
        results.append({
            "kind": kind, "minuend": minuend, "subtrahend": subtrahend, "seeds": seeds,
            "delta_per_seed": dict(zip(seeds, per_seed)), "mean_delta": mean,
            "mean_delta_head": mean_sd(deltas("head"))[0], "mean_delta_tail": mean_sd(deltas("tail"))[0],
            "sign_agrees": None if len(finite) < 2 else (len(signs) == 1 and 0 not in signs),
            "spread": pair_spread, "spread_trainers": pair_trainers, "threshold": threshold,
            "finding": None if threshold is None or math.isnan(mean) else bool(abs(mean) > threshold),
            "needs_seed": (pair_spread is not None and len(seeds) == 1 and not math.isnan(mean)
                           and abs(mean) < pair_spread),
        })
    return results


# ----------------------------------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------------------------------
def table_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_header(cells: Sequence[str]) -> List[str]:
    return [table_row(cells), "|---|" + "---:|" * (len(cells) - 1)]


def summary_table_over_seeds(runs: Runs, deltas: Sequence[dict]) -> str:
    """Per trainer: seeds, mean ± sd over seeds of mean/head/tail Dice, HD95 and training minutes, optimiser steps, and
    the mean paired Δ of mean Dice against the reference."""
    versus_reference = {d["minuend"]: d for d in deltas if d["subtrahend"] == REFERENCE_TRAINER}
    lines = table_header(["trainer", "seeds"] + [label for _, _, label, _ in SUMMARY_METRICS] +
                         ["steps", "train min", "Δ Dice vs supervised (paired)"])
    for trainer, seeds in runs.items():
        records = list(seeds.values())
        cells = [short_name(trainer), str(len(records))]
        cells += [fmt_mean_sd([r.metric("original", key, metric) for r in records], scale,
                               1 if scale > 1 else 2) for key, metric, _, scale in SUMMARY_METRICS]
        cells.append(steps_text(records))
        cells.append(fmt_mean_sd([r.training_seconds / 60 for r in records]))
        delta = versus_reference.get(trainer)
        cells.append("reference" if trainer == REFERENCE_TRAINER else
                     "n/a" if delta is None else _fmt(delta["mean_delta"], 100, signed=True))
        lines.append(table_row(cells))
    return "\n".join(lines)


def steps_text(records: Sequence[TrainerRecord]) -> str:
    """The optimiser steps of a trainer's runs: one number, or each distinct number when the seeds differ."""
    return " / ".join(str(steps) for steps in sorted({r.iterations for r in records}))


def self_training_table_over_seeds(runs: Runs, deltas: Sequence[dict]) -> str:
    """The budget of each row made of several models (self-training), with its mean ± sd Dice over seeds and its mean
    paired Δ against the reference; an empty string without such a row."""
    versus_reference = {d["minuend"]: d for d in deltas if d["subtrahend"] == REFERENCE_TRAINER}
    reference = runs.get(REFERENCE_TRAINER)
    rows = []
    for trainer, seeds in runs.items():
        records = list(seeds.values())
        if not records[0].models:
            continue
        steps = {r.iterations for r in records}
        reference_steps = {r.iterations for r in reference.values()} if reference else set()
        delta = versus_reference.get(trainer)
        rows.append((trainer, records[0].models, steps.pop() if len(steps) == 1 else None,
                     reference_steps.pop() if len(reference_steps) == 1 else None,
                     fmt_mean_sd([r.metric("original", "mean", "dice") for r in records], 100),
                     "n/a" if delta is None else _fmt(delta["mean_delta"], 100, signed=True) + " (paired)"))
    return budget_table(rows) if rows else ""


def per_class_table_over_seeds(runs: Runs) -> str:
    """Dice % per class, mean ± sd over seeds; tail classes marked; the best mean of each class in bold."""
    first = next(iter(next(iter(runs.values())).values())).evaluation
    labels = sorted(int(label) for label in first["classes"])
    tail = set(first["class_groups"]["tail"])
    means = {(t, label): round(100 * mean_sd([r.class_dice(label) for r in seeds.values()])[0], 1)
             for t, seeds in runs.items() for label in labels}
    best = {label: max((means[t, label] for t in runs if not math.isnan(means[t, label])), default=0.0)
            for label in labels}
    names = [first["classes"][str(label)] + (f" {TAIL_MARK}" if label in tail else "") for label in labels]
    lines = table_header(["trainer", "seeds"] + names)
    for trainer, seeds in runs.items():
        cells = [short_name(trainer), str(len(seeds))]
        for label in labels:
            text = fmt_mean_sd([r.class_dice(label) for r in seeds.values()], 100)
            bold = len(runs) > 1 and best[label] > 0 and means[trainer, label] == best[label]
            cells.append(f"**{text}**" if bold else text)
        lines.append(table_row(cells))
    return "\n".join(lines)


def paired_delta_table(deltas: Sequence[dict]) -> str:
    if not deltas:
        return "(no pair of trainers ran with a common seed)"
    lines = table_header(["comparison", "seeds", "Δ Dice per seed (points)", "mean Δ Dice", "mean Δ head",
                          "mean Δ tail", "sign agrees", "finding"])
    for d in deltas:
        per_seed = ", ".join(f"s{seed}: {_fmt(value, 100, signed=True)}" for seed, value in d["delta_per_seed"].items())
        agrees = "n/a (1 seed)" if d["sign_agrees"] is None else "yes" if d["sign_agrees"] else "no"
        if d["finding"] is None:
            finding = "none claimable (no seed spread)"
        else:
            own = len(d["spread_trainers"]) == 2 and set(d["spread_trainers"]) == {d["minuend"], d["subtrahend"]}
            finding = (f"{'yes' if d['finding'] else 'no'} (2s = {_fmt(d['threshold'], 100)}"
                       + (", s of these two" if own else "") + ")")
            if d["needs_seed"]:
                finding += "; add a seed (Δ within ±s)"
        lines.append(table_row([f"{short_name(d['minuend'])} − {short_name(d['subtrahend'])}", str(len(d["seeds"])),
                           per_seed, _fmt(d["mean_delta"], 100, signed=True),
                           _fmt(d["mean_delta_head"], 100, signed=True), _fmt(d["mean_delta_tail"], 100, signed=True),
                           agrees, finding]))
    return "\n".join(lines)


def learned_steps_table(runs: Runs) -> str:
    """Rows: trainer (and each monitored network of it) and seed; cells: ``step (epoch)`` from which the class's
    pseudo Dice stayed learned. Runs without a pseudo-Dice log are left out; an empty string if none has one."""
    first = next(iter(next(iter(runs.values())).values())).evaluation
    labels = sorted(int(label) for label in first["classes"])
    tail = set(first["class_groups"]["tail"])
    lines = []
    for trainer, seeds in runs.items():
        for seed, record in seeds.items():
            for row, curves in record.learning_curves():
                lines.append(table_row([row, str(seed)] +
                                  [learned_cell(first_learned_epoch(curves[label]), record.iterations_per_epoch)
                                   for label in labels]))
    if not lines:
        return ""
    return "\n".join(table_header(["trainer", "seed"] + [first["classes"][str(label)] +
                                                    (f" {TAIL_MARK}" if label in tail else "") for label in labels])
                     + lines)


# ----------------------------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------------------------
def plot_seed_report(runs: Runs, deltas: Sequence[dict], per_class_path: Path, delta_path: Path) -> None:
    """Per-class Dice bars (mean over seeds, sd as error bar), and the paired Δ of mean Dice per comparison (one dot
    per seed, a bar for the mean, the ±2s band around zero)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(next(iter(runs.values())).values())).evaluation
    labels = sorted(int(label) for label in first["classes"])
    tail = set(first["class_groups"]["tail"])
    colours = plt.get_cmap("tab20")
    width = 0.8 / len(runs)
    positions = np.arange(len(labels))
    figure, axis = plt.subplots(figsize=(max(7.0, 0.9 * len(labels) + 3), 4.0))
    for index, (trainer, seeds) in enumerate(runs.items()):
        stats = [mean_sd([r.class_dice(label) for r in seeds.values()]) for label in labels]
        axis.bar(positions - 0.4 + (index + 0.5) * width, [100 * np.nan_to_num(m) for m, _, _ in stats], width,
                 yerr=[100 * np.nan_to_num(sd) for _, sd, _ in stats], capsize=2,
                 label=f"{short_name(trainer)} (n={len(seeds)})", color=colours(colour_index(trainer, index)))
    axis.set_xticks(positions)
    axis.set_xticklabels([first["classes"][str(label)] + (f" {TAIL_MARK}" if label in tail else "")
                          for label in labels], rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("Dice % (original grid)")
    axis.set_title("Per-class Dice, mean ± sd over seeds", fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(per_class_path, dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7.0, 0.45 * max(len(deltas), 1) + 1.6))
    banded = False
    for row, d in enumerate(deltas):
        if d["threshold"] is not None:  # each comparison's own ±2s band
            axis.barh(row, 200 * d["threshold"], left=-100 * d["threshold"], height=0.9, color="grey", alpha=0.2,
                      label=None if banded else f"±{FINDING_FACTOR:g}s (no finding inside)")
            banded = True
        values = [100 * v for v in d["delta_per_seed"].values()]
        axis.barh(row, 100 * np.nan_to_num(d["mean_delta"]), height=0.5, color=colours(colour_index(d["minuend"], row)),
                  alpha=0.7)
        axis.scatter(values, [row] * len(values), color="black", s=12, zorder=3)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_yticks(range(len(deltas)))
    axis.set_yticklabels([f"{short_name(d['minuend'])} − {short_name(d['subtrahend'])}" for d in deltas], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("Δ mean Dice, points (bar: mean over seeds; dots: seeds)")
    axis.grid(axis="x", alpha=0.3)
    if banded:
        axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(delta_path, dpi=120)
    plt.close(figure)


# ----------------------------------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------------------------------
def json_number(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def seed_report_json(runs: Runs, deltas: Sequence[dict], spread: Optional[float], spread_trainers: List[str]) -> dict:
    trainers = {}
    for trainer, seeds in runs.items():
        records = list(seeds.values())
        entry = {"seeds": list(seeds)}
        if records[0].models:
            entry["models"] = records[0].models
        for key, metric, _, _ in SUMMARY_METRICS:
            mean, sd, n = mean_sd([r.metric("original", key, metric) for r in records])
            entry[f"{key}_{metric}"] = {"mean": json_number(mean), "sd": json_number(sd), "n": n}
        mean, sd, n = mean_sd([r.training_seconds for r in records])
        entry["training_seconds"] = {"mean": json_number(mean), "sd": json_number(sd), "n": n}
        labels = sorted(int(label) for label in records[0].evaluation["classes"])
        entry["per_class_dice"] = {}
        for label in labels:
            mean, sd, n = mean_sd([r.class_dice(label) for r in records])
            entry["per_class_dice"][str(label)] = {"mean": json_number(mean), "sd": json_number(sd), "n": n}
        entry["per_seed"] = {str(seed): {"mean_dice": json_number(r.metric("original", "mean", "dice")),
                                         "head_dice": json_number(r.metric("original", "head", "dice")),
                                         "tail_dice": json_number(r.metric("original", "tail", "dice")),
                                         "hd95_mm": json_number(r.metric("original", "mean", "hd95_mm")),
                                         "training_seconds": r.training_seconds, "steps": r.iterations}
                             for seed, r in seeds.items()}
        trainers[trainer] = entry
    return {
        "trainers": trainers,
        "seed_spread": {"value": spread, "trainers": spread_trainers, "rule": FINDING_RULE,
                        "finding_factor": FINDING_FACTOR},
        "comparisons": [{**d, "delta_per_seed": {str(s): json_number(v) for s, v in d["delta_per_seed"].items()},
                         **{k: json_number(d[k]) for k in ("mean_delta", "mean_delta_head", "mean_delta_tail",
                                                           "spread", "threshold")}}
                        for d in deltas],
    }


def write_seed_report(summaries: Sequence[dict], output: Path, sources: Sequence[str] = (),
                      stem: str = "benchmark") -> Path:
    """``<stem>.md``, ``<stem>.json``, ``<stem>_dice_per_class.png`` and ``<stem>_paired_delta.png`` in ``output``
    from trainer summaries of one benchmark (one dataset, split and budget; any seeds). Returns the markdown's path."""
    if not summaries:
        raise ValueError("No finished trainer found: nothing to report.")
    different = differing_settings(list(summaries))
    if different:
        raise ValueError(f"The runs differ in {', '.join(different)}; a report over seeds merges runs of one dataset, "
                         f"split and budget only.")
    runs = runs_from_summaries(summaries)
    spread, spread_trainers = seed_spread(runs)
    deltas = paired_deltas(runs, spread, spread_trainers)
    output.mkdir(parents=True, exist_ok=True)
    plot_seed_report(runs, deltas, output / f"{stem}_dice_per_class.png", output / f"{stem}_paired_delta.png")
    settings = summaries[0]["settings"]
    split = settings["split"]
    seeds = sorted({seed_of(s) for s in summaries})
    devices = sorted({s["settings"]["device"] for s in summaries})
    commands = list(dict.fromkeys(c for s in sorted(summaries, key=seed_of) for c in s.get("commands", [])))
    steps = settings["epochs"] * settings["iterations_per_epoch"]
    lines = [
        f"# Benchmark over seeds: {settings['dataset']}, {len(split['labeled'])} labeled cases", "",
        f"- Split `{split['file_name']}`: {len(split['labeled'])} labeled, {split['unlabeled_count']} unlabeled, "
        f"{len(split['val'])} validation cases (evaluated).",
        f"- Plans `{settings['plans']}`, configuration `{settings['configuration']}`; budget per trainer "
        f"{settings['epochs']} epochs × {settings['iterations_per_epoch']} iterations = {steps} optimiser steps; "
        f"prediction {'with' if settings['tta'] else 'without'} mirroring.",
        f"- Seeds: {', '.join(map(str, seeds))}; every trainer of a seed ran with that seed, so differences are "
        f"paired by seed. Device: {', '.join(devices)}"
        + (" (training times are comparable only within one device)." if len(devices) > 1 else "."),
        f"- ± is the standard deviation over seeds (sample sd); a cell without ± has one seed. Dice and HD95 on the "
        f"original grid: mean over classes of the per-class means over the validation cases.",
    ]
    if settings["scdl_environment"]:
        lines.append(f"- Hyperparameter overrides in the environment: `{settings['scdl_environment']}`.")
    if sources:
        lines.append("- Built from: " + ", ".join(f"`{s}`" for s in sources) + ".")
    if commands:
        lines.append("- Commands that ran in the benchmark folders:\n" + "\n".join(f"  - `{c}`" for c in commands))
    if spread is None:
        spread_text = ("Every trainer has one seed, so there is no seed-to-seed spread and no difference can be "
                       "claimed as a finding.")
    else:
        spread_text = (f"Seed-to-seed spread pooled over every trainer with two seeds or more "
                       f"({', '.join(short_name(t) for t in spread_trainers)}): s = {_fmt(spread, 100, digits=2)} "
                       f"points of mean Dice; comparisons marked \"s of these two\" use the two trainers' own.")
    lines += ["", "## Summary over seeds", "", summary_table_over_seeds(runs, deltas), "",
              "## Per-class Dice % over seeds", "", per_class_table_over_seeds(runs), "",
              "† tail class; bold: best mean for that class.", "",
              "## Paired differences of mean Dice", "", FINDING_RULE + " " + spread_text, "",
              paired_delta_table(deltas), ""]
    budgets = self_training_table_over_seeds(runs, deltas)
    if budgets:
        lines += ["## Self-training: optimiser steps", "", SELF_TRAINING_NOTE, "", budgets, ""]
    lines += [f"![per-class Dice]({stem}_dice_per_class.png)", "", f"![paired differences]({stem}_paired_delta.png)",
              ""]
    learned = learned_steps_table(runs)
    if learned:
        lines += ["## When each class was learned", "",
                  f"Optimiser step (epoch from 0 in parentheses) from which the class's pseudo Dice stayed at or "
                  f"above {LEARNED_THRESHOLD:g} for {LEARNED_SUSTAIN} epochs; step = (epoch + 1) × iterations per "
                  f"epoch, the steps done when that epoch's pseudo Dice was measured.", "", learned, ""]
    markdown = output / f"{stem}.md"
    markdown.write_text("\n".join(lines), encoding="utf-8")
    report = seed_report_json(runs, deltas, spread, spread_trainers)
    report.update({"settings": {k: v for k, v in settings.items() if k not in ("seed", "device")}, "seeds": seeds,
                   "devices": {str(seed_of(s)): s["settings"]["device"] for s in summaries}, "commands": commands,
                   "classes": summaries[0]["classes"], "class_groups": summaries[0]["class_groups"]})
    (output / f"{stem}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return markdown
