"""SCDL (Semantic Class Distribution Learning) as pure-PyTorch building blocks; see ``module.SCDL``."""
from nnunetv2_scdl.scdl.module import LOSS_TERM_NAMES, SCDL, SCDLOutput

__all__ = ["SCDL", "SCDLOutput", "LOSS_TERM_NAMES"]
