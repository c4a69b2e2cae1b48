"""Writing an EvaluationResult as JSON and as a markdown table.

JSON: label keys become strings, NaN becomes null. Dice is stored as a fraction in [0, 1]; the markdown table shows
it in percent, like the papers.
"""
import json
import math
from pathlib import Path
from typing import List

from nnunetv2_scdl.evaluation.evaluate_folder import EvaluationResult

METRIC_DESCRIPTIONS = {
    "original.dice": "Dice on the original voxel grid, fraction in [0, 1]",
    "original.assd_mm": "symmetric average surface distance on the original grid, mm: mean over the surface voxels "
                        "of prediction and reference of the distance to the other surface (both directions pooled)",
    "original.hd95_mm": "95th percentile of both directions' surface distances pooled, original grid, mm",
    "original.edge_cases": "class absent from prediction and reference: all null (skipped in means); present in "
                           "only one: Dice 0 and distances = the image's corner-to-corner distance in mm",
    "paper.dice": "papers' protocol (GA/SCDL): Dice after nearest resize of prediction and reference to the paper "
                  "grid, fraction in [0, 1]",
    "paper.asd_voxels": "papers' protocol: one-directional mean distance from prediction surface voxels to the "
                        "reference surface, in voxels of the paper grid (medpy asd)",
    "paper.edge_cases": "present in only one: Dice 0, ASD 128; absent from both: Dice 1, ASD 0; an entirely empty "
                        "resized prediction: every metric 0 (the papers' bug, unless fixed)",
    "aggregation": "per class: mean over cases (nulls skipped); mean/head/tail: mean over those classes of the "
                   "per-class values; case_mean_std: std over cases of each case's class mean",
}


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def result_to_json_dict(result: EvaluationResult) -> dict:
    groups = result.groups
    return _json_safe({
        "dataset": result.dataset_name,
        "pred_dir": str(result.pred_dir),
        "ref_dir": str(result.ref_dir),
        "classes": result.class_names,
        "metrics": METRIC_DESCRIPTIONS,
        "settings": {"paper_grid_zyx": result.settings.paper_grid_zyx,
                     "fix_empty_volume_bug": result.settings.fix_empty_volume_bug},
        "class_groups": {"rule": groups.rule, "head": groups.head, "tail": groups.tail,
                         "labeled_cases": groups.labeled_cases, "voxel_counts": groups.voxel_counts,
                         "voxel_frequencies": groups.frequencies, "total_voxels": groups.total_voxels},
        "summary": result.summary,
        "per_case": result.per_case,
    })


def write_json(result: EvaluationResult, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result_to_json_dict(result), handle, indent=1)


def _format(value: float, scale: float = 1.0) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value * scale:.2f}"


def markdown_table(result: EvaluationResult) -> str:
    """One row per class plus mean/head/tail rows; Dice in %, distances in mm or paper-grid voxels."""
    has_paper = "paper" in result.summary
    header = ["label", "class", "group", "Dice % (orig.)", "ASSD mm", "HD95 mm"]
    if has_paper:
        header += ["Dice % (paper)", "ASD vox (paper)"]
    lines: List[str] = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(label: str, name: str, group: str, original: dict, paper: dict) -> str:
        cells = [label, name, group, _format(original["dice"], 100), _format(original["assd_mm"]),
                 _format(original["hd95_mm"])]
        if has_paper:
            cells += [_format(paper["dice"], 100), _format(paper["asd_voxels"])]
        return "| " + " | ".join(cells) + " |"

    original_summary = result.summary["original"]
    paper_summary = result.summary.get("paper", {})
    for label in result.class_labels:
        lines.append(row(str(label), result.class_names[label], result.groups.group_of(label),
                         original_summary["per_class"][label], paper_summary.get("per_class", {}).get(label)))
    for key, title in (("mean", "**mean**"), ("head", "**head mean**"), ("tail", "**tail mean**")):
        lines.append(row("", title, "", original_summary[key], paper_summary.get(key)))
    notes = [
        f"Cases: {len(result.per_case)}. Predictions: `{result.pred_dir}`; references: `{result.ref_dir}`.",
        "Original grid: Dice, symmetric ASD and HD95 in mm on the original spacing; a class absent from both "
        "prediction and reference is skipped; present in only one: Dice 0 and distances = the image diagonal.",
        f"Head/tail: {result.groups.rule}. Head: {list(result.groups.head)}; tail: {list(result.groups.tail)}.",
    ]
    if has_paper:
        notes.append(
            f"Paper protocol (GA/SCDL): prediction and reference nearest-resized to (z, y, x) = "
            f"{tuple(result.settings.paper_grid_zyx)}; ASD is one-directional (prediction to reference) in voxels "
            f"of that grid; present in only one: Dice 0, ASD 128; absent from both: Dice 1, ASD 0. Entirely empty "
            f"resized predictions: {paper_summary['n_empty_prediction_volumes']} case(s), scored "
            + ("as any other case (bug fixed)." if result.settings.fix_empty_volume_bug
               else "0 for every metric, as in the papers (ASD 0 there is a bug)."))
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"


def write_markdown(result: EvaluationResult, path: Path) -> None:
    title = f"# Evaluation{' of ' + result.dataset_name if result.dataset_name else ''}\n\n"
    Path(path).write_text(title + markdown_table(result), encoding="utf-8")
