"""Segmentation losses and class weightings for the semi-supervised baselines (GA-CPS, DHC)."""
from nnunetv2_scdl.losses.class_weighting import (DiffDW, DistDW, class_voxel_counts, dist_dw_weights_from_counts,
                                                  hard_dice_per_class)
from nnunetv2_scdl.losses.ga_ce import GACELoss
from nnunetv2_scdl.losses.ga_dice import GADiceLoss
from nnunetv2_scdl.losses.weighted_dice_ce import WeightedCrossEntropyLoss, WeightedDiceCELoss, WeightedSoftDiceLoss

__all__ = ["GADiceLoss", "GACELoss", "DistDW", "DiffDW", "class_voxel_counts", "dist_dw_weights_from_counts",
           "hard_dice_per_class", "WeightedCrossEntropyLoss", "WeightedSoftDiceLoss", "WeightedDiceCELoss"]
