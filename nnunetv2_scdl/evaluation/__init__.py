"""Evaluation: Dice, symmetric ASD and HD95 in mm on the original grid, the GA/SCDL papers' protocol (Dice and
one-directional voxel ASD on a resized grid), and head/tail class groups from labeled-set voxel frequencies.

Entry point: ``nnUNetv2_scdl_evaluate`` (nnunetv2_scdl.cli.evaluate). Library use::

    from nnunetv2_scdl.evaluation import evaluate_folders, groups_from_labeled_files, labeled_label_files
"""
from nnunetv2_scdl.evaluation.class_groups import (ClassGroups, groups_from_labeled_files, groups_from_tail_override,
                                                   labeled_label_files, split_head_tail)
from nnunetv2_scdl.evaluation.evaluate_folder import EvaluationResult, EvaluationSettings, evaluate_folders
from nnunetv2_scdl.evaluation.original_spacing import class_metrics_original_spacing
from nnunetv2_scdl.evaluation.overlap import dice_coefficient
from nnunetv2_scdl.evaluation.paper_protocol import (PAPER_GRID_ZYX, PAPER_GRID_ZYX_AMOS_AS_PUBLISHED,
                                                     case_metrics_paper, class_metrics_paper, nearest_resize)
from nnunetv2_scdl.evaluation.surface_distance import SurfaceDistances, surface_distances

__all__ = ["ClassGroups", "groups_from_labeled_files", "groups_from_tail_override", "labeled_label_files",
           "split_head_tail", "EvaluationResult", "EvaluationSettings", "evaluate_folders",
           "class_metrics_original_spacing", "dice_coefficient", "PAPER_GRID_ZYX", "PAPER_GRID_ZYX_AMOS_AS_PUBLISHED",
           "case_metrics_paper", "class_metrics_paper", "nearest_resize", "SurfaceDistances", "surface_distances"]
