"""Semi-supervised training for nnU-Net v2: SCDL and its host baselines as nnUNetTrainer subclasses.

Importing the package checks the installed nnU-Net version first: the trainer API this package extends changed in
nnunetv2 2.7 and 2.8 (see docs/), so only the 2.8 series is supported.
"""
from nnunetv2_scdl._version_check import check_nnunet_version

__version__ = "0.1.0"

check_nnunet_version()
