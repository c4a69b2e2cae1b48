"""``nnUNetTrainerSCDL_MT``: the mean teacher with SCDL attached (proxies, CDBA, SAC, decoder priors).

The student and its EMA teacher are both SCDL U-Nets; the teacher, priors included, is what inference uses.
"""
from nnunetv2_scdl.training.mean_teacher import nnUNetTrainerMeanTeacher
from nnunetv2_scdl.training.scdl_addon import SCDL_HYPERPARAMETERS, SCDL_LOGGED_TERMS, SCDLAddon


class nnUNetTrainerSCDL_MT(SCDLAddon, nnUNetTrainerMeanTeacher):
    hyperparameters = nnUNetTrainerMeanTeacher.hyperparameters + SCDL_HYPERPARAMETERS
    logged_terms = nnUNetTrainerMeanTeacher.logged_terms + SCDL_LOGGED_TERMS


class nnUNetTrainerSCDL_MT_1epoch(nnUNetTrainerSCDL_MT):
    num_epochs = 1


class nnUNetTrainerSCDL_MT_5epochs(nnUNetTrainerSCDL_MT):
    num_epochs = 5


class nnUNetTrainerSCDL_MT_10epochs(nnUNetTrainerSCDL_MT):
    num_epochs = 10


class nnUNetTrainerSCDL_MT_50epochs(nnUNetTrainerSCDL_MT):
    num_epochs = 50


class nnUNetTrainerSCDL_MT_100epochs(nnUNetTrainerSCDL_MT):
    num_epochs = 100


class nnUNetTrainerSCDL_MT_250epochs(nnUNetTrainerSCDL_MT):
    num_epochs = 250


class nnUNetTrainerSCDL_MT_500epochs(nnUNetTrainerSCDL_MT):
    num_epochs = 500
