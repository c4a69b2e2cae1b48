"""SCDL (Semantic Class Distribution Learning) as pure-PyTorch building blocks; see ``module.SCDL``."""
from nnunetv2_scdl.scdl.module import LOSS_TERM_NAMES, SCDL, SCDLOutput, no_weight_decay_parameters
from nnunetv2_scdl.scdl.variants import SCDL_VARIANTS, get_variant

__all__ = ["SCDL", "SCDLOutput", "LOSS_TERM_NAMES", "SCDL_VARIANTS", "get_variant", "no_weight_decay_parameters"]
