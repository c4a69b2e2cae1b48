"""Trainer summaries: one small JSON per finished trainer and seed, from which every benchmark report can be rebuilt.

A benchmark folder holds models, predictions and logs (gigabytes). A summary keeps what the reports need (kilobytes,
mostly the per-epoch pseudo Dice):

- ``settings``: dataset, configuration, plans, split (labeled and validation case names, unlabeled count and a hash
  of their names), budget (epochs, iterations per epoch, pseudo-Dice batches), seed, device, mirroring, protocol and
  the ``SCDL_*`` overrides; ``commands``: the commands that ran in the benchmark folder;
- ``classes`` and ``class_groups`` (head and tail classes, voxel frequencies of the labeled cases);
- ``cases``: the evaluated validation cases;
- ``summary``: the evaluation's per-class, mean, head and tail Dice, ASSD and HD95 (and the papers' protocol);
- ``training``: summed epoch time, epochs, optimiser steps, and the per-epoch pseudo Dice; for a row made of several
  trained models (self-training) these count every model, and ``models`` lists each with its role and steps;
- ``learned``: per class, the epoch and the optimiser step from which the pseudo Dice stayed learned (see
  :func:`nnunetv2_scdl.evaluation.benchmark_report.first_learned_epoch`), of the validated network and of each
  monitored one; for a self-training row, of the student and of each model (:func:`learned_record`).

They are written as ``<folder>/seed_<seed>/<trainer>.json`` (``<folder>/steps_<steps>/seed_<seed>/<trainer>.json`` for
a learning curve), see docs/benchmark.md.
"""
import hashlib
import json
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from nnunetv2_scdl.evaluation.benchmark_report import (LEARNED_SUSTAIN, LEARNED_THRESHOLD, TrainerRecord,
                                                       curves_by_label, first_learned_epoch, model_curves)

SUMMARY_FORMAT = "nnunetv2_scdl.trainer_summary"
SUMMARY_VERSION = 1
#: settings that must agree for summaries to be merged over seeds (the budget too, unless a learning curve)
MERGE_KEYS = ("dataset", "configuration", "plans", "split", "epochs", "iterations_per_epoch",
              "val_iterations_per_epoch", "tta", "paper_protocol", "scdl_environment")
BUDGET_KEYS = ("epochs", "iterations_per_epoch")


def names_hash(names: Iterable[str]) -> str:
    """A short hash of a sorted list of case names (identifies the unlabeled pool without listing it)."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


def summary_settings(settings: dict) -> dict:
    """A benchmark folder's settings (``benchmark_state.json``) in summary form: the unlabeled cases as count and
    hash, the split file by name only (its folder differs between machines)."""
    split = settings["split"]
    return {
        "dataset": settings["dataset"], "configuration": settings["configuration"], "plans": settings["plans"],
        "split": {"file_name": Path(split["file"]).name, "labeled": sorted(split["labeled"]),
                  "val": sorted(split["val"]), "unlabeled_count": len(split["unlabeled"]),
                  "unlabeled_hash": names_hash(split["unlabeled"])},
        "epochs": settings["epochs"], "iterations_per_epoch": settings["iterations_per_epoch"],
        "val_iterations_per_epoch": settings["val_iterations_per_epoch"], "seed": settings["seed"],
        "device": settings["device"], "tta": settings["tta"], "paper_protocol": settings["paper_protocol"],
        "scdl_environment": settings["scdl_environment"],
    }


def learned_steps(pseudo_dice: Optional[List[List[Optional[float]]]], labels: List[int],
                  iterations_per_epoch: int) -> Optional[Dict[str, Optional[dict]]]:
    """``{label: {"epoch": e, "step": s} or None}``: the first epoch ``e`` (from 0) from which the class's pseudo Dice
    stayed learned, and ``s = (e + 1) × iterations_per_epoch``, the optimiser steps done when that epoch's pseudo
    Dice was measured. ``None`` without a usable pseudo-Dice log."""
    curves = curves_by_label(pseudo_dice, labels)
    if curves is None:
        return None
    learned = {}
    for label in labels:
        epoch = first_learned_epoch(curves[label])
        learned[str(label)] = None if epoch is None else {"epoch": epoch, "step": (epoch + 1) * iterations_per_epoch}
    return learned


def training_summary(checkpoint_file: Path) -> dict:
    """From the checkpoint's log: summed epoch durations (nnU-Net's epoch timestamps; setup and validation export
    excluded), epochs, the per-epoch pseudo Dice per foreground class (``None`` where NaN, for JSON), and that of
    each monitored network (``network_pseudo_dice``; co-training's A and B, an EMA teacher's student)."""
    import torch

    from nnunetv2_scdl.training.progress_logging import NETWORK_DICE_PREFIX, per_class_rows
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    logging = checkpoint["logging"]
    starts, ends = logging["epoch_start_timestamps"], logging["epoch_end_timestamps"]

    def rounded(rows) -> List[List[Optional[float]]]:
        return [[None if math.isnan(float(v)) else round(float(v), 5) for v in epoch] for epoch in rows]

    summary = {"seconds": float(sum(e - s for s, e in zip(starts, ends))), "epochs": len(ends),
               "pseudo_dice": rounded(logging.get("dice_per_class_or_region", []))}
    networks = {key[len(NETWORK_DICE_PREFIX):]: rounded(per_class_rows(values[:len(ends)]))
                for key, values in logging.items() if key.startswith(NETWORK_DICE_PREFIX)}
    if networks:
        summary["network_pseudo_dice"] = networks
    return summary


def make_summary(trainer: str, settings: dict, commands: List[str], evaluation: dict, training: dict) -> dict:
    """The summary of ``trainer``'s finished run: ``settings`` and ``commands`` from the benchmark folder's state,
    ``evaluation`` as in ``evaluation_scdl.json``, ``training`` as the state keeps it (seconds, epochs,
    pseudo_dice, network_pseudo_dice where the trainer logs other networks; steps and models for a self-training
    row; code, the runner's record of what trained it)."""
    compact = summary_settings(settings)
    labels = sorted(int(label) for label in evaluation["classes"])
    pseudo_dice = training.get("pseudo_dice")
    networks = training.get("network_pseudo_dice") or {}
    groups = evaluation["class_groups"]
    return {
        "format": SUMMARY_FORMAT, "version": SUMMARY_VERSION, "trainer": trainer,
        "settings": compact, "commands": list(commands),
        "classes": evaluation["classes"],
        "class_groups": {key: groups[key] for key in ("rule", "head", "tail", "voxel_frequencies") if key in groups},
        "cases": sorted(case["case"] for case in evaluation["per_case"]),
        "summary": evaluation["summary"],
        "training": {"seconds": training["seconds"], "epochs": training.get("epochs"),
                     "steps": training.get("steps", compact["epochs"] * compact["iterations_per_epoch"]),
                     "pseudo_dice": pseudo_dice, **({"models": training["models"]} if training.get("models") else {}),
                     **({"network_pseudo_dice": networks} if networks else {}),
                     **({"code": training["code"]} if training.get("code") else {})},
        "learned": learned_record(pseudo_dice, networks, training.get("models"), labels,
                                  compact["iterations_per_epoch"]),
    }


def learned_record(pseudo_dice, networks: Dict[str, list], models: Optional[List[dict]], labels: List[int],
                   iterations_per_epoch: int) -> dict:
    """A summary's ``learned``: ``by_class`` from the validated network's pseudo Dice, ``by_network`` from each
    monitored network's. For a row of several models (self-training), ``by_class`` is the last model's (the one that
    predicts) and ``by_network`` each model's by role, each counted from that model's own first step."""
    if models:
        networks = dict(model_curves(pseudo_dice, models, iterations_per_epoch))
        pseudo_dice = networks[models[-1]["role"]]
    return {"threshold": LEARNED_THRESHOLD, "sustain": LEARNED_SUSTAIN,
            "by_class": learned_steps(pseudo_dice, labels, iterations_per_epoch),
            **({"by_network": {name: learned_steps(values, labels, iterations_per_epoch)
                               for name, values in networks.items()}} if networks else {})}


def summary_record(summary: dict) -> TrainerRecord:
    """The report row of a summary (its evaluation reduced to what the report tables read)."""
    settings = summary["settings"]
    evaluation = {"classes": summary["classes"], "class_groups": summary["class_groups"],
                  "per_case": [{"case": case} for case in summary["cases"]], "summary": summary["summary"]}
    training = summary["training"]
    return TrainerRecord(summary["trainer"], evaluation, training["seconds"],
                         training.get("steps") or settings["epochs"] * settings["iterations_per_epoch"],
                         training["pseudo_dice"], iterations_per_epoch=settings["iterations_per_epoch"],
                         models=training.get("models"), network_pseudo_dice=training.get("network_pseudo_dice"))


def seed_of(summary: dict) -> int:
    return int(summary["settings"]["seed"])


def steps_of(summary: dict) -> int:
    """The benchmark's budget per model (a self-training row's total is in ``training.steps``)."""
    return int(summary["settings"]["epochs"]) * int(summary["settings"]["iterations_per_epoch"])


def summary_path(root: Path, summary: dict, by_steps: bool = False) -> Path:
    """``root/seed_<seed>/<trainer>.json``, or ``root/steps_<steps>/seed_<seed>/<trainer>.json`` with ``by_steps``."""
    folder = Path(root) / (f"steps_{steps_of(summary):04d}" if by_steps else "") / f"seed_{seed_of(summary)}"
    return folder / f"{summary['trainer']}.json"


def write_summary(summary: dict, path: Path) -> Path:
    """Compact JSON (no indentation); the ``source`` that loading adds is left out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {key: value for key, value in summary.items() if key != "source"}
    path.write_text(json.dumps(content, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


def is_summary(data) -> bool:
    return isinstance(data, dict) and data.get("format") == SUMMARY_FORMAT


def load_summary_file(path: Path) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not is_summary(data):
        raise ValueError(f"{path} is not a trainer summary (no \"format\": \"{SUMMARY_FORMAT}\").")
    if data.get("version", 0) > SUMMARY_VERSION:
        raise ValueError(f"{path} has summary version {data['version']}; this code reads up to {SUMMARY_VERSION}. "
                         f"Update nnunetv2_scdl.")
    data["source"] = str(path)
    return data


def load_summary_folder(folder: Path) -> List[dict]:
    """Every trainer summary below ``folder`` (other JSON files are ignored), in path order."""
    summaries = []
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if is_summary(data):
            summaries.append(load_summary_file(path))
    return summaries


def differing_settings(summaries: List[dict], keys=MERGE_KEYS) -> List[str]:
    """The keys of ``keys`` whose values are not the same in every summary."""
    first = summaries[0]["settings"]
    return [key for key in keys if any(s["settings"].get(key) != first.get(key) for s in summaries[1:])]
