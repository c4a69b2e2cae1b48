"""Re-exports every trainer of nnunetv2_scdl for nnU-Net's ``nnUNet_extTrainer`` lookup (``-tr NAME``)."""
from nnunetv2_scdl.training.mean_teacher import (  # noqa: F401
    nnUNetTrainerMeanTeacher, nnUNetTrainerMeanTeacher_1epoch, nnUNetTrainerMeanTeacher_5epochs,
    nnUNetTrainerMeanTeacher_10epochs, nnUNetTrainerMeanTeacher_50epochs, nnUNetTrainerMeanTeacher_100epochs,
    nnUNetTrainerMeanTeacher_250epochs, nnUNetTrainerMeanTeacher_500epochs)
from nnunetv2_scdl.training.supervised import (  # noqa: F401
    nnUNetTrainerSupervised, nnUNetTrainerSupervised_1epoch, nnUNetTrainerSupervised_5epochs,
    nnUNetTrainerSupervised_10epochs, nnUNetTrainerSupervised_50epochs, nnUNetTrainerSupervised_100epochs,
    nnUNetTrainerSupervised_250epochs, nnUNetTrainerSupervised_500epochs)
from nnunetv2_scdl.training.scdl_mean_teacher import (  # noqa: F401
    nnUNetTrainerSCDL_MT, nnUNetTrainerSCDL_MT_1epoch, nnUNetTrainerSCDL_MT_5epochs, nnUNetTrainerSCDL_MT_10epochs,
    nnUNetTrainerSCDL_MT_50epochs, nnUNetTrainerSCDL_MT_100epochs, nnUNetTrainerSCDL_MT_250epochs,
    nnUNetTrainerSCDL_MT_500epochs)
