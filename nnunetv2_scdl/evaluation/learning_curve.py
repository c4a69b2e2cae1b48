"""The supervised learning curve: the reference trainer's validation Dice against the training budget, and the
protocol budget it implies.

Input: trainer summaries (:mod:`nnunetv2_scdl.evaluation.benchmark_summary`) of the supervised reference at several
budgets (optimiser steps), one or more seeds each, on one dataset, split and plans. Output: a table and a plot of
mean, head and tail Dice against steps (mean ± sd over seeds), the per-class table, and the protocol budget: the
smallest measured budget B whose doubling (2B also measured) changes the validation mean Dice by less than
:data:`BUDGET_TOLERANCE` (1 point), or, when none qualifies, the budget to measure next.
"""
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from nnunetv2_scdl.evaluation.benchmark_report import REFERENCE_TRAINER, TAIL_MARK, _fmt, check_comparable
from nnunetv2_scdl.evaluation.benchmark_summary import (BUDGET_KEYS, MERGE_KEYS, differing_settings, seed_of,
                                                        steps_of, summary_record)
from nnunetv2_scdl.evaluation.seed_report import fmt_mean_sd, table_header, json_number, table_row, mean_sd

#: doubling the protocol budget changes mean Dice by less than this (a fraction: 1 point)
BUDGET_TOLERANCE = 0.01


def budget_points(summaries: Sequence[dict], trainer: str = REFERENCE_TRAINER) -> List[dict]:
    """Per budget (ascending steps): steps, epochs, iterations per epoch, seeds, and the records of ``trainer``.
    Summaries of other trainers are ignored; runs that differ in anything but the budget and the seed are refused."""
    own = [s for s in summaries if s["trainer"] == trainer]
    if not own:
        raise ValueError(f"No finished {trainer} run found: no learning curve to report.")
    different = differing_settings(own, tuple(k for k in MERGE_KEYS if k not in BUDGET_KEYS))
    if different:
        raise ValueError(f"The {trainer} runs differ in {', '.join(different)}; a learning curve compares budgets of "
                         f"one dataset, split and plans only.")
    points: Dict[int, dict] = {}
    for summary in own:
        point = points.setdefault(steps_of(summary), {
            "steps": steps_of(summary), "epochs": summary["settings"]["epochs"],
            "iterations_per_epoch": summary["settings"]["iterations_per_epoch"], "records": {}})
        if seed_of(summary) in point["records"]:
            raise ValueError(f"{trainer} at {point['steps']} steps with seed {seed_of(summary)} is given twice "
                             f"({summary.get('source', '?')}).")
        point["records"][seed_of(summary)] = summary_record(summary)
    ordered = [points[steps] for steps in sorted(points)]
    check_comparable([r for p in ordered for r in p["records"].values()])
    for point in ordered:
        point["seeds"] = sorted(point["records"])
        point["mean_dice"] = mean_sd([r.metric("original", "mean", "dice") for r in point["records"].values()])[0]
    return ordered


def protocol_budget(points: Sequence[dict], tolerance: float = BUDGET_TOLERANCE) -> dict:
    """``{"budget": B or None, "doublings": [{"budget", "doubled", "delta"}], "next": steps to measure or None}``:
    ``B`` is the smallest budget whose doubling changes the mean Dice (mean over seeds) by less than
    ``tolerance``; without one, ``next`` is twice the largest measured budget."""
    by_steps = {p["steps"]: p for p in points}
    doublings = [{"budget": steps, "doubled": 2 * steps, "delta": by_steps[2 * steps]["mean_dice"] - p["mean_dice"]}
                 for steps, p in by_steps.items() if 2 * steps in by_steps]
    qualifying = [d for d in doublings if not math.isnan(d["delta"]) and abs(d["delta"]) < tolerance]
    budget = min((d["budget"] for d in qualifying), default=None)
    return {"budget": budget, "tolerance": tolerance, "doublings": doublings,
            "next": None if budget is not None else 2 * max(by_steps)}


def protocol_text(decision: dict, points: Sequence[dict]) -> str:
    tolerance = f"{100 * decision['tolerance']:g} point"
    seeds = sorted({len(p["seeds"]) for p in points})
    seed_note = ("" if seeds != [1] else " Each budget has one seed: a change below the seed-to-seed spread is noise, "
                 "so confirm the budget with a second seed where the protocol needs it.")
    if decision["budget"] is not None:
        budget = decision["budget"]
        delta = next(d["delta"] for d in decision["doublings"] if d["budget"] == budget)
        return (f"**Protocol budget: {budget} steps.** Doubling it to {2 * budget} steps changed the validation mean "
                f"Dice by {_fmt(delta, 100, signed=True)} points, less than {tolerance}; it is the smallest measured "
                f"budget with that property.{seed_note}")
    if not decision["doublings"]:
        reason = "no measured budget has its double measured too"
    else:
        reason = "every measured doubling changed the validation mean Dice by " + tolerance + " or more (" + ", ".join(
            f"{d['budget']} → {d['doubled']}: {_fmt(d['delta'], 100, signed=True)}" for d in decision["doublings"]) \
            + ")"
    return (f"**No protocol budget yet:** {reason}. Next: train the supervised reference at {decision['next']} steps "
            f"(add {decision['next']} to `--learning-curve`; the finished budgets are reused).{seed_note}")


def curve_table(points: Sequence[dict], decision: dict) -> str:
    deltas = {d["budget"]: d["delta"] for d in decision["doublings"]}
    lines = table_header(["steps", "epochs × iterations", "seeds", "Dice %", "head Dice %", "tail Dice %", "HD95 mm",
                     "train min", "Δ Dice at 2× steps"])
    for p in points:
        records = list(p["records"].values())
        lines.append(table_row([str(p["steps"]), f"{p['epochs']} × {p['iterations_per_epoch']}", str(len(records)),
                           fmt_mean_sd([r.metric("original", "mean", "dice") for r in records], 100),
                           fmt_mean_sd([r.metric("original", "head", "dice") for r in records], 100),
                           fmt_mean_sd([r.metric("original", "tail", "dice") for r in records], 100),
                           fmt_mean_sd([r.metric("original", "mean", "hd95_mm") for r in records], digits=2),
                           fmt_mean_sd([r.training_seconds / 60 for r in records]),
                           _fmt(deltas[p["steps"]], 100, signed=True) if p["steps"] in deltas else "—"]))
    return "\n".join(lines)


def per_class_curve_table(points: Sequence[dict]) -> str:
    evaluation = next(iter(points[0]["records"].values())).evaluation
    labels = sorted(int(label) for label in evaluation["classes"])
    tail = set(evaluation["class_groups"]["tail"])
    lines = table_header(["steps"] + [evaluation["classes"][str(label)] + (f" {TAIL_MARK}" if label in tail else "")
                                 for label in labels])
    for p in points:
        records = list(p["records"].values())
        lines.append(table_row([str(p["steps"])] + [fmt_mean_sd([r.class_dice(label) for r in records], 100)
                                                    for label in labels]))
    return "\n".join(lines)


def plot_learning_curve(points: Sequence[dict], path: Path, decision: Optional[dict] = None) -> None:
    """Mean, head and tail Dice (mean over seeds, sd as error bar) against optimiser steps, log-2 axis; the protocol
    budget marked when there is one."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["steps"] for p in points]
    figure, axis = plt.subplots(figsize=(6.5, 4.0))
    for key, label, colour in (("mean", "mean Dice", "black"), ("head", "head Dice", "tab:blue"),
                               ("tail", f"tail Dice {TAIL_MARK}", "tab:orange")):
        stats = [mean_sd([r.metric("original", key, "dice") for r in p["records"].values()]) for p in points]
        axis.errorbar(steps, [100 * m for m, _, _ in stats], yerr=[100 * np.nan_to_num(sd) for _, sd, _ in stats],
                      marker="o", capsize=3, color=colour, label=label, linewidth=1.4)
    if decision and decision.get("budget") is not None:
        axis.axvline(decision["budget"], color="grey", linestyle="--", linewidth=0.8, label="protocol budget")
    if len(steps) > 1:
        axis.set_xscale("log", base=2)
    axis.set_xticks(steps)
    axis.set_xticklabels([str(s) for s in steps])
    axis.set_xlabel("optimiser steps")
    axis.set_ylabel("validation Dice % (original grid)")
    axis.set_title("Supervised reference: Dice against budget", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_learning_curve(summaries: Sequence[dict], output: Path, sources: Sequence[str] = (),
                         pending: Sequence[str] = (), trainer: str = REFERENCE_TRAINER) -> Path:
    """``learning_curve.md``, ``learning_curve.json`` and ``learning_curve.png`` in ``output``; returns the markdown's
    path. ``pending``: budgets or folders not finished yet, listed in the report."""
    points = budget_points(summaries, trainer)
    decision = protocol_budget(points)
    output.mkdir(parents=True, exist_ok=True)
    plot_learning_curve(points, output / "learning_curve.png", decision)
    first = next(s for s in summaries if s["trainer"] == trainer)
    settings, split = first["settings"], first["settings"]["split"]
    seeds = sorted({seed for p in points for seed in p["seeds"]})
    lines = [f"# Supervised learning curve: {settings['dataset']}, {len(split['labeled'])} labeled cases", "",
             f"- Trainer `{trainer}`; plans `{settings['plans']}`, configuration `{settings['configuration']}`; split "
             f"`{split['file_name']}` ({len(split['val'])} validation cases, evaluated); seeds "
             f"{', '.join(map(str, seeds))}.",
             "- Dice and HD95 on the original grid: mean over classes of the per-class means over the validation "
             "cases; ± is the standard deviation over seeds (no ± with one seed)."]
    if sources:
        lines.append("- Built from: " + ", ".join(f"`{s}`" for s in sources) + ".")
    if pending:
        lines.append("- Not finished yet: " + ", ".join(f"`{p}`" for p in pending) + ".")
    lines += ["", "## Protocol budget", "",
              f"The protocol budget is the smallest budget B for which doubling it to 2B changes the validation "
              f"mean Dice by less than {100 * BUDGET_TOLERANCE:g} point.", "", protocol_text(decision, points), "",
              "## Dice by budget", "", curve_table(points, decision), "", "![learning curve](learning_curve.png)", "",
              "## Per-class Dice % by budget", "", per_class_curve_table(points), "", "† tail class.", ""]
    markdown = output / "learning_curve.md"
    markdown.write_text("\n".join(lines), encoding="utf-8")
    report = {
        "trainer": trainer,
        "settings": {k: v for k, v in settings.items() if k not in ("seed", "device", *BUDGET_KEYS)},
        "classes": first["classes"], "class_groups": first["class_groups"],
        "budgets": [{"steps": p["steps"], "epochs": p["epochs"], "iterations_per_epoch": p["iterations_per_epoch"],
                     "seeds": p["seeds"],
                     **{f"{key}_dice": dict(zip(("mean", "sd", "n"), map(json_number, mean_sd(
                         [r.metric("original", key, "dice") for r in p["records"].values()]))))
                        for key in ("mean", "head", "tail")},
                     "per_class_dice": {label: dict(zip(("mean", "sd", "n"), map(json_number, mean_sd(
                         [r.class_dice(int(label)) for r in p["records"].values()]))))
                         for label in first["classes"]},
                     "training_seconds": {str(seed): r.training_seconds for seed, r in p["records"].items()}}
                    for p in points],
        "protocol": {**decision, "doublings": [{**d, "delta": json_number(d["delta"])} for d in decision["doublings"]],
                     "rule": f"smallest B with |Dice(2B) - Dice(B)| < {BUDGET_TOLERANCE} (mean Dice, mean over seeds)"},
        "pending": list(pending),
    }
    (output / "learning_curve.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return markdown
