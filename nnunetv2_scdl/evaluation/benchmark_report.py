"""The benchmark report: several trainers' evaluations side by side, as markdown tables and plots.

Input: one :class:`TrainerRecord` per trainer, holding its evaluation as written by ``nnUNetv2_scdl_evaluate``
(``evaluation_scdl.json``, see :mod:`nnunetv2_scdl.evaluation.report`) and its training time. Output:

- a summary table: mean, head and tail Dice, ASSD and HD95 on the original grid, the papers' protocol, the change
  against the supervised reference, and training time;
- per-class Dice, tail classes marked with †, the best trainer per class in bold;
- the effect of SCDL: each host trainer against its SCDL variant;
- the budget of the self-training rows: each model's optimiser steps, the total, and the reference's steps;
- when each trainer learned each class: the first epoch from which its pseudo Dice (nnU-Net's per-epoch validation
  Dice on patches) stayed above a threshold;
- plots: per-class Dice for every trainer, mean Dice against training time, and the head- and tail-class pseudo Dice
  per epoch (learning curves).
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

#: the reference row: nnU-Net's supervised trainer on the labeled cases only
REFERENCE_TRAINER = "nnUNetTrainerSupervised"
#: (host, host with SCDL), in the order the report lists them
SCDL_PAIRS: Tuple[Tuple[str, str], ...] = (
    ("nnUNetTrainerMeanTeacher", "nnUNetTrainerSCDL_MT"),
    ("nnUNetTrainerGACPS", "nnUNetTrainerSCDL_GACPS"),
    ("nnUNetTrainerDHC", "nnUNetTrainerSCDL_DHC"),
    ("nnUNetTrainerGAMagicNet", "nnUNetTrainerSCDL_GAMagicNet"),
    ("nnUNetTrainerGenericSSL", "nnUNetTrainerSCDL_GenericSSL"),
)
#: every trainer a full benchmark runs
BENCHMARK_TRAINERS: Tuple[str, ...] = (REFERENCE_TRAINER,) + tuple(name for pair in SCDL_PAIRS for name in pair)
#: rows that nnU-Net self-training fills (docs/self_training.md): a teacher and a student of REFERENCE_TRAINER.
#: SELF_TRAINING: teacher (the reference itself) and student each get the runner's budget B, 2B steps in all;
#: SELF_TRAINING_HALF_BUDGET: teacher and student get half of B each, B steps in all, as many as the reference
SELF_TRAINING = "SelfTraining"
SELF_TRAINING_HALF_BUDGET = "SelfTrainingHalfBudget"
SELF_TRAINING_ROWS: Tuple[str, ...] = (SELF_TRAINING, SELF_TRAINING_HALF_BUDGET)
TAIL_MARK = "†"
#: a class counts as learned from the first epoch whose pseudo Dice reaches this value...
LEARNED_THRESHOLD = 0.1
#: ... and stays there for this many epochs
LEARNED_SUSTAIN = 3


@dataclass
class TrainerRecord:
    """One benchmark row. ``evaluation``: the ``evaluation_scdl.json`` content. ``training_seconds``: summed epoch
    durations from the checkpoint's log (setup and final validation excluded); ``iterations``: optimiser steps.
    ``pseudo_dice``: nnU-Net's per-epoch pseudo Dice, [epochs][foreground classes in label order] (NaN where a class
    was absent from the epoch's validation patches); ``None`` when unknown. ``iterations_per_epoch``: optimiser steps
    per epoch, to express epochs as steps; ``None`` when unknown. ``models``: for a row made of several trained models
    (self-training), each model's ``role``, ``trainer``, ``steps`` and ``seconds`` in training order; ``iterations``,
    ``training_seconds`` and ``pseudo_dice`` are then those of all models together, one after the other.
    ``network_pseudo_dice``: ``{network: per-epoch pseudo Dice}`` of the networks that the validated one does not
    show on its own (each network of a co-training ensemble, the student of an EMA teacher)."""
    trainer: str
    evaluation: dict
    training_seconds: float
    iterations: int
    pseudo_dice: Optional[List[List[float]]] = None
    iterations_per_epoch: Optional[int] = None
    models: Optional[List[dict]] = None
    network_pseudo_dice: Optional[Dict[str, List[List[float]]]] = None

    def pseudo_dice_by_label(self) -> Optional[Dict[int, np.ndarray]]:
        """``{label: pseudo Dice per epoch}``; ``None`` if unknown or if its classes do not match the evaluation's."""
        return curves_by_label(self.pseudo_dice, self.labels)

    @property
    def labels(self) -> List[int]:
        return sorted(int(label) for label in self.evaluation["classes"])

    def learning_curves(self) -> List[Tuple[str, Dict[int, np.ndarray]]]:
        """``[(row, {label: pseudo Dice per epoch})]``: the validated network's curves (row: the trainer's short
        name), then each monitored network's (row: ``"<short name> · <network>"``, e.g. ``GACPS · network_a``); for
        a row of several models, each model's instead (row: ``"<short name> · <role>"``, :func:`model_curves`).
        Unknown curves, or curves whose classes do not match the evaluation's, are left out."""
        if self.models:  # one row per model: each starts its own schedule at step 0
            rows = [(f"{short_name(self.trainer)} · {role}", curves_by_label(values, self.labels))
                    for role, values in model_curves(self.pseudo_dice, self.models, self.iterations_per_epoch)]
        else:
            rows = [(short_name(self.trainer), self.pseudo_dice_by_label())]
            rows += [(f"{short_name(self.trainer)} · {network}", curves_by_label(values, self.labels))
                     for network, values in (self.network_pseudo_dice or {}).items()]
        return [(row, curves) for row, curves in rows if curves is not None]

    def metric(self, protocol: str, key: str, metric: str) -> float:
        """``summary[protocol][key][metric]`` (key: mean, head, tail, case_mean_std); NaN when missing."""
        value = self.evaluation["summary"].get(protocol, {}).get(key, {}).get(metric)
        return float("nan") if value is None else float(value)

    def class_dice(self, label: int) -> float:
        value = self.evaluation["summary"]["original"]["per_class"][str(label)]["dice"]
        return float("nan") if value is None else float(value)


def curves_by_label(pseudo_dice: Optional[List[List[Optional[float]]]],
                    labels: Sequence[int]) -> Optional[Dict[int, np.ndarray]]:
    """``{label: pseudo Dice per epoch}`` of a per-epoch log [epochs][foreground classes in label order] (``None``
    entries become NaN); ``None`` if the log is empty or its classes do not match ``labels``."""
    if not pseudo_dice:
        return None
    curves = np.asarray([[np.nan if v is None else v for v in epoch] for epoch in pseudo_dice], dtype=float)
    if curves.ndim != 2 or curves.shape[1] != len(labels):
        return None
    return {label: curves[:, index] for index, label in enumerate(labels)}


def model_curves(pseudo_dice: Optional[List[List[Optional[float]]]], models: Sequence[dict],
                 iterations_per_epoch: Optional[int]) -> List[Tuple[str, Optional[List[List[Optional[float]]]]]]:
    """``[(role, per-epoch pseudo Dice)]`` of each model of a row made of several models (self-training), whose
    pseudo Dice holds the models' logs one after the other in training order. A model's length is its ``epochs``,
    else its ``steps`` over ``iterations_per_epoch``; a curve is ``None`` where the row has no log."""
    if pseudo_dice is None:
        return [(model["role"], None) for model in models]
    rows, start = [], 0
    for model in models:
        epochs = model.get("epochs")
        if epochs is None:
            if model.get("steps") is None or not iterations_per_epoch:
                raise ValueError(f"model {model.get('role')!r}: neither its epochs nor its steps are known, so its "
                                 f"part of the row's pseudo Dice cannot be found.")
            epochs = int(model["steps"]) // int(iterations_per_epoch)
        rows.append((model["role"], pseudo_dice[start:start + int(epochs)]))
        start += int(epochs)
    return rows


def short_name(trainer: str) -> str:
    """``nnUNetTrainerSCDL_GACPS`` → ``SCDL_GACPS`` (tables stay narrow)."""
    return trainer[len("nnUNetTrainer"):] if trainer.startswith("nnUNetTrainer") and len(trainer) > 13 else trainer


def colour_index(trainer: str, position: int) -> int:
    """Index into matplotlib's ``tab20`` (pairs of a dark and a light shade of one hue): the reference is grey, each
    host is the light shade of its pair's hue and its SCDL variant the dark one, so a pair reads as one colour.
    Other trainers take the remaining hues by ``position`` (their place in the report)."""
    if trainer == REFERENCE_TRAINER:
        return 14  # grey
    for hue, pair in enumerate(SCDL_PAIRS):
        if trainer in pair:
            return 2 * hue + (0 if trainer == pair[1] else 1)
    if trainer in SELF_TRAINING_ROWS:
        return 10 + SELF_TRAINING_ROWS.index(trainer)  # brown: dark at 2B steps, light at B steps
    spare = (12, 13, 16, 17, 18, 19, 15)  # pink, olive, cyan shades, light grey
    return spare[position % len(spare)]


def _fmt(value: float, scale: float = 1.0, digits: int = 1, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value * scale:{'+' if signed else ''}.{digits}f}"


def _classes(records: Sequence[TrainerRecord]) -> Tuple[List[int], Dict[int, str], set]:
    evaluation = records[0].evaluation
    names = {int(label): name for label, name in evaluation["classes"].items()}
    return sorted(names), names, set(evaluation["class_groups"]["tail"])


def check_comparable(records: Sequence[TrainerRecord]) -> None:
    """Every record must cover the same cases and classes, or the rows are not comparable."""
    if not records:
        raise ValueError("No trainer has an evaluation yet: nothing to report.")
    first = records[0]
    cases = sorted(case["case"] for case in first.evaluation["per_case"])
    for record in records[1:]:
        other = sorted(case["case"] for case in record.evaluation["per_case"])
        if other != cases or record.evaluation["classes"] != first.evaluation["classes"]:
            raise ValueError(f"{record.trainer} was evaluated on other cases or classes than {first.trainer}; the "
                             f"report compares trainers only on identical validation sets.")


def has_paper_protocol(records: Sequence[TrainerRecord]) -> bool:
    return any("paper" in r.evaluation["summary"] for r in records)


def summary_table(records: Sequence[TrainerRecord]) -> str:
    """Mean/head/tail Dice %, ASSD/HD95 mm, the paper protocol (when evaluated), Δ mean Dice against the reference,
    optimiser steps (all models of a row together), training time."""
    reference = next((r for r in records if r.trainer == REFERENCE_TRAINER), None)
    paper = has_paper_protocol(records)
    header = ["trainer", "Dice %", "± (cases)", "head Dice %", "tail Dice %", "ASSD mm", "HD95 mm"]
    header += ["Dice % (paper)", "ASD vox (paper)"] if paper else []
    header += ["Δ Dice vs supervised", "steps", "train min", "s/it"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in records:
        delta = (r.metric("original", "mean", "dice") - reference.metric("original", "mean", "dice")
                 if reference is not None and r is not reference else float("nan"))
        cells = [short_name(r.trainer), _fmt(r.metric("original", "mean", "dice"), 100),
                 _fmt(r.metric("original", "case_mean_std", "dice"), 100),
                 _fmt(r.metric("original", "head", "dice"), 100), _fmt(r.metric("original", "tail", "dice"), 100),
                 _fmt(r.metric("original", "mean", "assd_mm"), digits=2),
                 _fmt(r.metric("original", "mean", "hd95_mm"), digits=2)]
        if paper:
            cells += [_fmt(r.metric("paper", "mean", "dice"), 100),
                      _fmt(r.metric("paper", "mean", "asd_voxels"), digits=2)]
        cells += ["reference" if r is reference else _fmt(delta, 100, signed=True), str(r.iterations),
                  _fmt(r.training_seconds / 60), _fmt(r.training_seconds / max(1, r.iterations), digits=2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class_table(records: Sequence[TrainerRecord]) -> str:
    """Dice % per class (rows: trainers); tail classes marked, the best value of each class in bold. Best is judged on
    the printed (rounded) values, so equal-looking cells are bold alike; a class that no trainer found (best 0.0) has
    no bold cell."""
    labels, names, tail = _classes(records)
    header = ["trainer"] + [names[label] + (f" {TAIL_MARK}" if label in tail else "") for label in labels]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(labels)]
    shown = {(r.trainer, label): round(100 * r.class_dice(label), 1) for r in records for label in labels}  # NaN stays
    best = {label: max((shown[r.trainer, label] for r in records if not math.isnan(shown[r.trainer, label])),
                       default=0.0) for label in labels}
    for r in records:
        cells = [short_name(r.trainer)]
        for label in labels:
            value, text = shown[r.trainer, label], _fmt(shown[r.trainer, label])
            cells.append(f"**{text}**" if len(records) > 1 and best[label] > 0 and value == best[label] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scdl_effect(records: Sequence[TrainerRecord]) -> List[dict]:
    """Per host whose SCDL variant is also present: Δ mean/head/tail Dice, classes better/worse by > 1 point."""
    by_name = {r.trainer: r for r in records}
    labels, _, _ = _classes(records)
    effects = []
    for host_name, scdl_name in SCDL_PAIRS:
        if host_name not in by_name or scdl_name not in by_name:
            continue
        host, scdl = by_name[host_name], by_name[scdl_name]
        deltas = {key: scdl.metric("original", key, "dice") - host.metric("original", key, "dice")
                  for key in ("mean", "head", "tail")}
        class_deltas = [scdl.class_dice(label) - host.class_dice(label) for label in labels]
        effects.append({"host": host_name, "scdl": scdl_name, "host_dice": host.metric("original", "mean", "dice"),
                        "scdl_dice": scdl.metric("original", "mean", "dice"),
                        **{f"delta_{key}": value for key, value in deltas.items()},
                        "classes_better": sum(d > 0.01 for d in class_deltas if not math.isnan(d)),
                        "classes_worse": sum(d < -0.01 for d in class_deltas if not math.isnan(d)),
                        "time_ratio": scdl.training_seconds / host.training_seconds if host.training_seconds else
                        float("nan")})
    return effects


def scdl_effect_table(records: Sequence[TrainerRecord]) -> str:
    effects = scdl_effect(records)
    if not effects:
        return "(no host trainer ran together with its SCDL variant)"
    header = ["host", "host Dice %", "+SCDL Dice %", "Δ mean", "Δ head", "Δ tail", "classes better / worse (>1 pt)",
              "time ×"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for e in effects:
        lines.append("| " + " | ".join([
            short_name(e["host"]), _fmt(e["host_dice"], 100), _fmt(e["scdl_dice"], 100),
            _fmt(e["delta_mean"], 100, signed=True), _fmt(e["delta_head"], 100, signed=True),
            _fmt(e["delta_tail"], 100, signed=True), f"{e['classes_better']} / {e['classes_worse']}",
            _fmt(e["time_ratio"], digits=2)]) + " |")
    return "\n".join(lines)


SELF_TRAINING_NOTE = (
    "Self-training rows count every model they trained: teacher plus student. Their optimiser steps, training time "
    "and pseudo-Dice curve are those of the teacher followed by the student. SelfTraining gives each model the "
    "supervised reference's budget and reuses the reference as its teacher: it compares at equal per-model budget "
    "and costs twice the reference's steps. SelfTrainingHalfBudget gives each model half of it: it compares at equal "
    "total steps.")


def budget_comparison(steps: Optional[int], reference_steps: Optional[int]) -> str:
    """``equal total steps``, or ``2× the reference's`` steps; ``n/a`` when either is unknown."""
    if not steps or not reference_steps:
        return "n/a"
    return "equal total steps" if steps == reference_steps else f"{steps / reference_steps:.3g}× the reference's"


def models_cell(models: Sequence[dict]) -> str:
    """``teacher 40 + student 40``: each model's role and optimiser steps (``?`` when unknown)."""
    return " + ".join(f"{m['role']} {'?' if m.get('steps') is None else m['steps']}" for m in models)


def budget_table(rows: Sequence[Tuple[str, Sequence[dict], Optional[int], Optional[int], str, str]]) -> str:
    """Rows of (row name, its models, total steps, the reference's steps, Dice text, Δ Dice text)."""
    header = ["row", "steps per model", "total steps", "supervised steps", "budget", "Dice %", "Δ Dice vs supervised"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, models, steps, reference_steps, dice, delta in rows:
        lines.append("| " + " | ".join([short_name(name), models_cell(models), "n/a" if steps is None else str(steps),
                                        "n/a" if reference_steps is None else str(reference_steps),
                                        budget_comparison(steps, reference_steps), dice, delta]) + " |")
    return "\n".join(lines)


def self_training_table(records: Sequence[TrainerRecord]) -> str:
    """The budget of each row made of several models (self-training) against the reference's; an empty string
    without such a row."""
    reference = next((r for r in records if r.trainer == REFERENCE_TRAINER), None)
    rows = []
    for r in records:
        if not r.models:
            continue
        delta = (r.metric("original", "mean", "dice") - reference.metric("original", "mean", "dice")
                 if reference is not None else float("nan"))
        rows.append((r.trainer, r.models, r.iterations, reference.iterations if reference is not None else None,
                     _fmt(r.metric("original", "mean", "dice"), 100), _fmt(delta, 100, signed=True)))
    return budget_table(rows) if rows else ""


def first_learned_epoch(curve: np.ndarray, threshold: float = LEARNED_THRESHOLD,
                        sustain: int = LEARNED_SUSTAIN) -> Optional[int]:
    """The first epoch (counted from 0) from which the pseudo Dice stays at or above ``threshold`` for ``sustain``
    epochs with a value; ``None`` if there is none. Epochs where the class was absent (NaN) neither count nor break a
    run. Requiring a run skips the blips of an untrained network, whose scattered foreground can score a Dice of about
    0.1 on a class in the first epochs; a run cut short by the end of training does not count either."""
    epochs = np.flatnonzero(np.isfinite(curve))
    reached = curve[epochs] >= threshold
    for start in range(len(epochs) - sustain + 1):
        if reached[start:start + sustain].all():
            return int(epochs[start])
    return None


def learned_cell(epoch: Optional[int], iterations_per_epoch: Optional[int]) -> str:
    """``never``, ``epoch``, or ``step (epoch)`` where ``step = (epoch + 1) × iterations_per_epoch``: the optimiser
    steps done when that epoch's pseudo Dice was measured."""
    if epoch is None:
        return "never"
    return str(epoch) if iterations_per_epoch is None else f"{(epoch + 1) * iterations_per_epoch} ({epoch})"


def learned_epoch_table(records: Sequence[TrainerRecord], threshold: float = LEARNED_THRESHOLD) -> str:
    """Per trainer (and per monitored network, :meth:`TrainerRecord.learning_curves`) and class: the epoch from which
    the pseudo Dice stayed ≥ ``threshold``
    (:func:`first_learned_epoch`), as ``step (epoch)`` when the record knows its iterations per epoch
    (:func:`learned_cell`), and the last epoch's mean pseudo Dice. Trainers without a pseudo-Dice log are left out; an
    empty string if none has one."""
    labels, names, tail = _classes(records)
    header = ["trainer"] + [names[label] + (f" {TAIL_MARK}" if label in tail else "") for label in labels]
    header += ["last epoch: mean pseudo Dice %"]
    lines = []
    for r in records:
        for row, curves in r.learning_curves():
            cells = [row] + [learned_cell(first_learned_epoch(curves[label], threshold), r.iterations_per_epoch)
                             for label in labels]
            cells.append(_fmt(float(_group_curve(curves, labels)[-1]), 100))
            lines.append("| " + " | ".join(cells) + " |")
    if not lines:
        return ""
    return "\n".join(["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)] + lines)


def _group_curve(curves: Dict[int, np.ndarray], labels: Sequence[int]) -> np.ndarray:
    """Mean pseudo Dice over ``labels`` per epoch, ignoring classes absent from an epoch's patches."""
    stacked = np.stack([curves[label] for label in labels])
    counts = np.isfinite(stacked).sum(axis=0)
    return np.where(counts > 0, np.nansum(stacked, axis=0) / np.maximum(counts, 1), np.nan)


def plot_learning_curves(records: Sequence[TrainerRecord], path: Path) -> bool:
    """Pseudo Dice per epoch of the head classes (left) and the tail classes (right), one line per trainer. Returns
    False (and writes nothing) when no record has a pseudo-Dice log."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, _, tail = _classes(records)
    groups = [("head classes", [label for label in labels if label not in tail]),
              (f"tail classes {TAIL_MARK}", [label for label in labels if label in tail])]
    groups = [(title, members) for title, members in groups if members]
    curves = [(index, r, r.pseudo_dice_by_label()) for index, r in enumerate(records)]
    curves = [(index, r, c) for index, r, c in curves if c is not None]
    if not curves:
        return False
    colours = plt.get_cmap("tab20")
    figure, axes = plt.subplots(1, len(groups), figsize=(5.0 * len(groups) + 1.5, 3.8), sharey=True, squeeze=False)
    for axis, (title, members) in zip(axes[0], groups):
        for index, r, c in curves:
            values = _group_curve(c, members)
            axis.plot(np.arange(len(values)), 100 * values, color=colours(colour_index(r.trainer, index)),
                      label=short_name(r.trainer), linewidth=1.4)
        axis.axhline(100 * LEARNED_THRESHOLD, color="black", linewidth=0.6, linestyle=":")
        axis.set_title(f"{title}: mean pseudo Dice per epoch", fontsize=10)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("pseudo Dice % (validation patches)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def plot_benchmark(records: Sequence[TrainerRecord], per_class_path: Path, time_path: Optional[Path] = None) -> None:
    """Grouped bars of per-class Dice (a host and its SCDL variant in two shades of one hue, tail classes marked)
    and, if ``time_path`` is given, mean Dice against training time (one point per trainer)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, names, tail = _classes(records)
    width = 0.8 / len(records)
    positions = np.arange(len(labels))
    figure, axis = plt.subplots(figsize=(max(7.0, 0.9 * len(labels) + 3), 4.0))
    colours = plt.get_cmap("tab20")
    for index, r in enumerate(records):
        values = np.nan_to_num([100 * r.class_dice(label) for label in labels], nan=0.0)
        axis.bar(positions - 0.4 + (index + 0.5) * width, values, width, label=short_name(r.trainer),
                 color=colours(colour_index(r.trainer, index)))
    axis.set_xticks(positions)
    axis.set_xticklabels([names[label] + (f" {TAIL_MARK}" if label in tail else "") for label in labels],
                         rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("Dice % (original grid)")
    axis.set_title(f"Per-class Dice on the validation cases ({TAIL_MARK}: tail class)", fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(per_class_path, dpi=120)
    plt.close(figure)
    if time_path is None:
        return
    figure, axis = plt.subplots(figsize=(6.5, 4.0))
    for index, r in enumerate(records):
        axis.scatter(r.training_seconds / 60, 100 * r.metric("original", "mean", "dice"),
                     color=colours(colour_index(r.trainer, index)),
                     label=short_name(r.trainer), s=40)
    axis.set_xlabel("training time, minutes")
    axis.set_ylabel("mean Dice % (original grid)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(time_path, dpi=120)
    plt.close(figure)
