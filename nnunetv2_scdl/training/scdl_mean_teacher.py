"""``nnUNetTrainerSCDL_MT``: the mean teacher with SCDL attached (proxies, CDBA, SAC, decoder priors).

The student and its EMA teacher are both SCDL U-Nets; the teacher, priors included, is what inference uses.
"""
from nnunetv2_scdl.training.mean_teacher import nnUNetTrainerMeanTeacher
from nnunetv2_scdl.training.scdl_addon import SCDL_HYPERPARAMETERS, SCDL_LOGGED_TERMS, SCDLAddon


class nnUNetTrainerSCDL_MT(SCDLAddon, nnUNetTrainerMeanTeacher):
    hyperparameters = nnUNetTrainerMeanTeacher.hyperparameters + SCDL_HYPERPARAMETERS
    logged_terms = nnUNetTrainerMeanTeacher.logged_terms + SCDL_LOGGED_TERMS
