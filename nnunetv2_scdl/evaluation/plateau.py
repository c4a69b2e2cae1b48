"""When each network of a trainer left the "everything is background" plateau, from finished or unfinished runs.

A class counts as learned from the first epoch whose pseudo Dice stays ≥ ``LEARNED_THRESHOLD`` for
``LEARNED_SUSTAIN`` epochs (:func:`nnunetv2_scdl.evaluation.benchmark_report.first_learned_epoch`), expressed as the
optimiser steps done when that epoch was measured. The benchmark report gives the same numbers for finished runs;
this module also reads a run still training (its ``checkpoint_latest.pth``), so that a plateau row needs only the
first few hundred steps of a run.

A source is either

- a trainer summary (``nnunetv2_scdl.trainer_summary`` JSON, see :mod:`nnunetv2_scdl.evaluation.benchmark_summary`)
  or a folder holding such summaries, or
- an nnU-Net model folder (``.../<trainer>__<plans>__<configuration>/fold_<f>``): its ``checkpoint_final.pth``, else
  its ``checkpoint_latest.pth``; the iterations per epoch and the seed come from its ``debug.json``, the class names
  from the ``dataset.json`` beside the fold.
"""
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from nnunetv2_scdl.evaluation.benchmark_report import (BENCHMARK_TRAINERS, REFERENCE_TRAINER, SELF_TRAINING_ROWS,
                                                       TAIL_MARK, model_curves, short_name)
from nnunetv2_scdl.evaluation.benchmark_summary import (learned_steps, load_summary_file, load_summary_folder,
                                                        training_summary)

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth")


@dataclass
class PlateauSource:
    """One trained (or training) model. ``curves``: ``[(network, per-epoch pseudo Dice)]``, the validated network
    first (network ``""``), then each monitored network (co-training's A and B, an EMA teacher's student);
    per-epoch pseudo Dice is [epochs][foreground classes in label order]. ``finished``: training reached its last
    epoch, so a class not learned was never learned."""
    trainer: str
    seed: Optional[int]
    epochs: int
    finished: bool
    iterations_per_epoch: int
    class_names: Dict[int, str]
    curves: List[Tuple[str, list]]
    tail: set = field(default_factory=set)
    origin: str = ""
    #: optimiser steps of the whole run's schedule (its budget); ``None`` where unknown
    budget_steps: Optional[int] = None

    @property
    def labels(self) -> List[int]:
        return sorted(self.class_names)

    def learned_steps(self) -> List[Tuple[str, Dict[int, Optional[int]]]]:
        """``[(network, {label: step or None})]`` for every curve whose classes match ``class_names``."""
        rows = []
        for network, pseudo_dice in self.curves:
            learned = learned_steps(pseudo_dice, self.labels, self.iterations_per_epoch)
            if learned is not None:
                rows.append((network, {label: learned[str(label)] and learned[str(label)]["step"]
                                       for label in self.labels}))
        return rows


def sources_from_summary(summary: dict) -> List[PlateauSource]:
    """One source per trained model: a trainer's run, or each model of a self-training row (teacher, student),
    whose per-epoch pseudo Dice the summary holds one after the other."""
    training, settings = summary["training"], summary["settings"]
    iterations_per_epoch = int(settings["iterations_per_epoch"])
    common = dict(trainer=summary["trainer"], seed=settings.get("seed"), finished=True,
                  iterations_per_epoch=iterations_per_epoch,
                  class_names={int(label): name for label, name in summary["classes"].items()},
                  tail={int(label) for label in summary.get("class_groups", {}).get("tail", [])},
                  origin=summary.get("source", ""))
    if not training.get("models"):
        curves = [("", training.get("pseudo_dice"))] + list((training.get("network_pseudo_dice") or {}).items())
        return [PlateauSource(epochs=int(training["epochs"]), curves=curves,
                              budget_steps=int(settings["epochs"]) * iterations_per_epoch, **common)]
    curves = model_curves(training.get("pseudo_dice") or [], training["models"], iterations_per_epoch)
    return [PlateauSource(epochs=len(curve), curves=[(role, curve)], budget_steps=int(model["steps"]), **common)
            for model, (role, curve) in zip(training["models"], curves)]


def _foreground_classes(dataset_json: Path) -> Dict[int, str]:
    labels = json.loads(dataset_json.read_text(encoding="utf-8"))["labels"]
    classes = {}
    for name, value in labels.items():
        if not isinstance(value, int):
            raise ValueError(f"{dataset_json}: label {name!r} is a region ({value}); plateau rows need plain labels.")
        if value != 0 and name != "ignore":
            classes[value] = name
    return classes


def source_from_model_folder(fold: Path, iterations_per_epoch: Optional[int] = None) -> PlateauSource:
    """A model folder's plateau data from its final checkpoint, else its latest (a run still training)."""
    fold = Path(fold)
    checkpoint = next((fold / name for name in CHECKPOINTS if (fold / name).is_file()), None)
    if checkpoint is None:
        raise FileNotFoundError(f"{fold} holds neither {' nor '.join(CHECKPOINTS)}: nothing to read.")
    debug = json.loads((fold / "debug.json").read_text(encoding="utf-8")) if (fold / "debug.json").is_file() else {}
    if "num_iterations_per_epoch" in debug:
        iterations_per_epoch = int(debug["num_iterations_per_epoch"])
    elif iterations_per_epoch is None:
        raise ValueError(f"{fold} has no debug.json with num_iterations_per_epoch; give the iterations per epoch.")
    dataset_json = fold.parent / "dataset.json"
    if not dataset_json.is_file():
        raise FileNotFoundError(f"{dataset_json} is missing: the class names of {fold} are unknown.")
    try:
        training = training_summary(checkpoint)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        # nnU-Net's own save (the supervised reference's) is not atomic: the run may be writing it right now
        raise CheckpointUnreadable(f"{checkpoint} cannot be read now ({e}); read it again in a moment.") from e
    seed = debug.get("seed")
    num_epochs = debug.get("num_epochs")
    curves = [("", training["pseudo_dice"])] + list(training.get("network_pseudo_dice", {}).items())
    return PlateauSource(
        trainer=fold.parent.name.split("__")[0], seed=None if seed in (None, "None") else int(seed),
        epochs=training["epochs"], finished=checkpoint.name == CHECKPOINTS[0],
        iterations_per_epoch=iterations_per_epoch, class_names=_foreground_classes(dataset_json), curves=curves,
        origin=str(checkpoint),
        budget_steps=int(num_epochs) * iterations_per_epoch if str(num_epochs).isdigit() else None)


class CheckpointUnreadable(ValueError):
    """A checkpoint that is being written (or is damaged)."""


def load_sources(paths: Sequence[Path], iterations_per_epoch: Optional[int] = None) -> List[PlateauSource]:
    """Every source below ``paths``: a summary file, a model folder, or a folder searched for summaries and, where it
    holds none, for model folders (``**/fold_*`` with a checkpoint). A run found twice (e.g. the learning curve's
    reference copied into a seed folder) is kept once."""
    sources = []
    for path in map(Path, paths):
        if path.is_file():
            sources += sources_from_summary(load_summary_file(path))
        elif any((path / name).is_file() for name in CHECKPOINTS):
            sources.append(source_from_model_folder(path, iterations_per_epoch))
        elif path.is_dir():
            found = [source for summary in load_summary_folder(path) for source in sources_from_summary(summary)]
            if not found:
                folds = sorted({c.parent for name in CHECKPOINTS for c in path.rglob(f"fold_*/{name}")})
                found = [source_from_model_folder(fold, iterations_per_epoch) for fold in folds]
            if not found:
                raise FileNotFoundError(f"{path} holds no trainer summary and no model folder with a checkpoint.")
            sources += found
        else:
            raise FileNotFoundError(f"{path} does not exist.")
    unique = {}
    for source in sources:
        unique.setdefault(json.dumps([source.trainer, source.seed, source.epochs, source.curves]), source)
    return list(unique.values())


def find_reference(sources: Sequence[PlateauSource], like: PlateauSource,
                   trainer: str = REFERENCE_TRAINER) -> Optional[PlateauSource]:
    """The run of ``trainer`` to compare ``like`` with: one of the same seed and budget if there is one, else of the
    same budget (a run on another learning-rate schedule is no reference), else, where a budget is unknown, any;
    finished runs first."""
    candidates = [s for s in sources if s.trainer == trainer]
    for matches in (lambda s: s.seed == like.seed and s.budget_steps == like.budget_steps,
                    lambda s: s.budget_steps == like.budget_steps,
                    lambda s: s.budget_steps is None or like.budget_steps is None):
        found = sorted((s for s in candidates if matches(s)), key=lambda s: not s.finished)
        if found:
            return found[0]
    return None


def _cell(step: Optional[int], reference_step: Optional[int], source: PlateauSource) -> str:
    if step is None:
        return "never" if source.finished else f"not by {source.epochs * source.iterations_per_epoch}"
    if reference_step is None:
        return str(step)
    return f"{step} ({step / reference_step:.2f})"


def plateau_table(sources: Sequence[PlateauSource], reference_trainer: str = REFERENCE_TRAINER) -> str:
    """Markdown table, in the benchmark's trainer order (the reference first): per source and network, the step
    from which each class stayed learned, and in parentheses that step over the step of the ``reference_trainer`` run of the same seed and budget (:func:`find_reference`);
    the steps each row has read (``finished`` for a completed run). The seed is shown when the sources have
    several."""
    if not sources:
        raise ValueError("no sources")
    labels = sources[0].labels
    for source in sources:
        if source.labels != labels:
            raise ValueError(f"{source.origin or source.trainer} has classes {source.labels}, the first source "
                             f"{labels}: one table compares one dataset.")
    names = {label: name for s in sources for label, name in s.class_names.items()}
    tail = set().union(*(s.tail for s in sources))
    several_seeds = len({s.seed for s in sources}) > 1
    header = ["trainer · network"] + [names[label] + (f" {TAIL_MARK}" if label in tail else "") for label in labels]
    header += ["steps read"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    order = [reference_trainer] + [t for t in BENCHMARK_TRAINERS + SELF_TRAINING_ROWS if t != reference_trainer]
    for source in sorted(sources, key=lambda s: (order.index(s.trainer) if s.trainer in order else len(order),
                                                 s.trainer, -1 if s.seed is None else s.seed)):
        reference = find_reference(sources, source, reference_trainer)
        reference_rows = reference.learned_steps() if reference is not None else []
        reference_steps = reference_rows[0][1] if reference_rows else {}
        for network, steps in source.learned_steps():
            row = short_name(source.trainer) + (f" · {network}" if network else "")
            row += f" (seed {source.seed})" if several_seeds else ""
            row += " (reference)" if source is reference and not network else ""
            cells = [_cell(steps[label], reference_steps.get(label), source) for label in labels]
            read = source.epochs * source.iterations_per_epoch
            cells.append(f"{read}, finished" if source.finished else f"{read}, training")
            lines.append("| " + " | ".join([row] + cells) + " |")
    return "\n".join(lines)
