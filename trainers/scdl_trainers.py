"""Re-exports every trainer of nnunetv2_scdl for nnU-Net's ``nnUNet_extTrainer`` lookup (``-tr NAME``)."""
from nnunetv2_scdl.training.registry import *  # noqa: F401,F403
