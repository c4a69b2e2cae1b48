"""Per-class bar plot of an EvaluationResult (PNG): Dice and distances, head classes and tail classes coloured apart."""
from pathlib import Path

import numpy as np

from nnunetv2_scdl.evaluation.evaluate_folder import EvaluationResult

HEAD_COLOUR, TAIL_COLOUR = "#1f77b4", "#ff7f0e"


def plot_per_class(result: EvaluationResult, path: Path) -> None:
    """Bars per class: Dice (%) and symmetric ASD (mm) on the original grid, plus the paper protocol's Dice (%) and
    ASD (voxels) when it was computed. NaN values are drawn as missing bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = result.class_labels
    names = [result.class_names[label] for label in labels]
    colours = [HEAD_COLOUR if label in result.groups.head else TAIL_COLOUR for label in labels]
    panels = [("original", "dice", 100.0, "Dice % (original grid)"),
              ("original", "assd_mm", 1.0, "symmetric ASD, mm (original grid)")]
    if "paper" in result.summary:
        panels += [("paper", "dice", 100.0, "Dice % (paper protocol)"),
                   ("paper", "asd_voxels", 1.0, "ASD, voxels (paper protocol)")]
    figure, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 0.6 * len(labels) + 2), 2.6 * len(panels)),
                                squeeze=False)
    positions = np.arange(len(labels))
    for axis, (protocol, metric, scale, title) in zip(axes[:, 0], panels):
        per_class = result.summary[protocol]["per_class"]
        values = [per_class[label][metric] * scale for label in labels]
        axis.bar(positions, np.nan_to_num(values, nan=0.0), color=colours)
        axis.set_title(title, fontsize=10)
        axis.set_xticks(positions)
        axis.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=HEAD_COLOUR), plt.Rectangle((0, 0), 1, 1, color=TAIL_COLOUR)]
    axes[0, 0].legend(handles, ["head", "tail"], fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
