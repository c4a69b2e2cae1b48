"""Re-exports every trainer of nnunetv2_scdl for nnU-Net's ``nnUNet_extTrainer`` lookup (``-tr NAME``)."""
from nnunetv2_scdl.training.mean_teacher import (  # noqa: F401
    nnUNetTrainerMeanTeacher, nnUNetTrainerMeanTeacher_1epoch, nnUNetTrainerMeanTeacher_5epochs,
    nnUNetTrainerMeanTeacher_10epochs, nnUNetTrainerMeanTeacher_50epochs, nnUNetTrainerMeanTeacher_100epochs,
    nnUNetTrainerMeanTeacher_250epochs, nnUNetTrainerMeanTeacher_500epochs)
from nnunetv2_scdl.training.supervised import (  # noqa: F401
    nnUNetTrainerSupervised, nnUNetTrainerSupervised_1epoch, nnUNetTrainerSupervised_5epochs,
    nnUNetTrainerSupervised_10epochs, nnUNetTrainerSupervised_50epochs, nnUNetTrainerSupervised_100epochs,
    nnUNetTrainerSupervised_250epochs, nnUNetTrainerSupervised_500epochs, nnUNetTrainerSupervisedLabeledOnly)
from nnunetv2_scdl.training.scdl_mean_teacher import (  # noqa: F401
    nnUNetTrainerSCDL_MT, nnUNetTrainerSCDL_MT_1epoch, nnUNetTrainerSCDL_MT_5epochs, nnUNetTrainerSCDL_MT_10epochs,
    nnUNetTrainerSCDL_MT_50epochs, nnUNetTrainerSCDL_MT_100epochs, nnUNetTrainerSCDL_MT_250epochs,
    nnUNetTrainerSCDL_MT_500epochs)
from nnunetv2_scdl.training.ga_cps import (  # noqa: F401
    nnUNetTrainerGACPS, nnUNetTrainerGACPS_paper, nnUNetTrainerGACPS_1epoch, nnUNetTrainerGACPS_5epochs,
    nnUNetTrainerGACPS_10epochs, nnUNetTrainerGACPS_50epochs, nnUNetTrainerGACPS_100epochs,
    nnUNetTrainerGACPS_250epochs, nnUNetTrainerGACPS_500epochs, nnUNetTrainerSCDL_GACPS,
    nnUNetTrainerSCDL_GACPS_paper, nnUNetTrainerSCDL_GACPS_1epoch, nnUNetTrainerSCDL_GACPS_5epochs,
    nnUNetTrainerSCDL_GACPS_10epochs, nnUNetTrainerSCDL_GACPS_50epochs, nnUNetTrainerSCDL_GACPS_100epochs,
    nnUNetTrainerSCDL_GACPS_250epochs, nnUNetTrainerSCDL_GACPS_500epochs)
from nnunetv2_scdl.training.dhc import (  # noqa: F401
    nnUNetTrainerDHC, nnUNetTrainerDHC_paper, nnUNetTrainerDHC_1epoch, nnUNetTrainerDHC_5epochs,
    nnUNetTrainerDHC_10epochs, nnUNetTrainerDHC_50epochs, nnUNetTrainerDHC_100epochs, nnUNetTrainerDHC_250epochs,
    nnUNetTrainerDHC_500epochs, nnUNetTrainerSCDL_DHC, nnUNetTrainerSCDL_DHC_paper, nnUNetTrainerSCDL_DHC_1epoch,
    nnUNetTrainerSCDL_DHC_5epochs, nnUNetTrainerSCDL_DHC_10epochs, nnUNetTrainerSCDL_DHC_50epochs,
    nnUNetTrainerSCDL_DHC_100epochs, nnUNetTrainerSCDL_DHC_250epochs, nnUNetTrainerSCDL_DHC_500epochs)
from nnunetv2_scdl.training.generic_ssl import (  # noqa: F401
    nnUNetTrainerGenericSSL, nnUNetTrainerGenericSSL_1epoch, nnUNetTrainerGenericSSL_5epochs,
    nnUNetTrainerGenericSSL_10epochs, nnUNetTrainerGenericSSL_50epochs, nnUNetTrainerGenericSSL_100epochs,
    nnUNetTrainerGenericSSL_250epochs, nnUNetTrainerGenericSSL_500epochs, nnUNetTrainerSCDL_GenericSSL,
    nnUNetTrainerSCDL_GenericSSL_1epoch, nnUNetTrainerSCDL_GenericSSL_5epochs, nnUNetTrainerSCDL_GenericSSL_10epochs,
    nnUNetTrainerSCDL_GenericSSL_50epochs, nnUNetTrainerSCDL_GenericSSL_100epochs,
    nnUNetTrainerSCDL_GenericSSL_250epochs, nnUNetTrainerSCDL_GenericSSL_500epochs)
from nnunetv2_scdl.training.ga_magicnet import (  # noqa: F401
    nnUNetTrainerGAMagicNet, nnUNetTrainerGAMagicNet_paper, nnUNetTrainerGAMagicNet_1epoch,
    nnUNetTrainerGAMagicNet_5epochs, nnUNetTrainerGAMagicNet_10epochs, nnUNetTrainerGAMagicNet_50epochs,
    nnUNetTrainerGAMagicNet_100epochs, nnUNetTrainerGAMagicNet_250epochs, nnUNetTrainerGAMagicNet_500epochs,
    nnUNetTrainerSCDL_GAMagicNet, nnUNetTrainerSCDL_GAMagicNet_paper, nnUNetTrainerSCDL_GAMagicNet_1epoch,
    nnUNetTrainerSCDL_GAMagicNet_5epochs, nnUNetTrainerSCDL_GAMagicNet_10epochs, nnUNetTrainerSCDL_GAMagicNet_50epochs,
    nnUNetTrainerSCDL_GAMagicNet_100epochs, nnUNetTrainerSCDL_GAMagicNet_250epochs,
    nnUNetTrainerSCDL_GAMagicNet_500epochs)
