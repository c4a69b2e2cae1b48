"""Every public trainer of the package, including the generated variants that nnU-Net users select by name.

nnU-Net's idiom for a different budget is a subclass that changes one attribute (``nnUNetTrainer_5epochs``). This
module generates those subclasses in one loop, with exactly the names users type:

- ``<trainer>_1epoch``, ``_5epochs``, ``_10epochs``, ``_50epochs``, ``_100epochs``, ``_250epochs``, ``_500epochs``
  (``num_epochs``) for the supervised reference and every host, with and without SCDL;
- ``<SCDL trainer>_released`` (``scdl_variant = "released"``): the released SCDL code's behaviour instead of the
  paper's formulas (docs/scdl.md).

The generated classes are module globals, so ``trainers/scdl_trainers.py`` re-exports all of them with one star
import and nnU-Net's ``recursive_find_trainer_class_by_name`` finds them.
"""
from typing import Dict, List, Type

from nnunetv2_scdl.training.dhc import (nnUNetTrainerDHC, nnUNetTrainerDHC_paper, nnUNetTrainerSCDL_DHC,
                                        nnUNetTrainerSCDL_DHC_paper)
from nnunetv2_scdl.training.ga_cps import (nnUNetTrainerGACPS, nnUNetTrainerGACPS_paper, nnUNetTrainerSCDL_GACPS,
                                           nnUNetTrainerSCDL_GACPS_paper)
from nnunetv2_scdl.training.ga_magicnet import (nnUNetTrainerGAMagicNet, nnUNetTrainerGAMagicNet_paper,
                                                nnUNetTrainerSCDL_GAMagicNet, nnUNetTrainerSCDL_GAMagicNet_paper)
from nnunetv2_scdl.training.generic_ssl import nnUNetTrainerGenericSSL, nnUNetTrainerSCDL_GenericSSL
from nnunetv2_scdl.training.mean_teacher import nnUNetTrainerMeanTeacher
from nnunetv2_scdl.training.scdl_mean_teacher import nnUNetTrainerSCDL_MT
from nnunetv2_scdl.training.supervised import nnUNetTrainerSupervised, nnUNetTrainerSupervisedLabeledOnly

#: the hand-written trainers (the generated ones derive from these)
BASE_TRAINERS: List[type] = [
    nnUNetTrainerSupervised, nnUNetTrainerSupervisedLabeledOnly,
    nnUNetTrainerMeanTeacher, nnUNetTrainerSCDL_MT,
    nnUNetTrainerGACPS, nnUNetTrainerSCDL_GACPS, nnUNetTrainerGACPS_paper, nnUNetTrainerSCDL_GACPS_paper,
    nnUNetTrainerDHC, nnUNetTrainerSCDL_DHC, nnUNetTrainerDHC_paper, nnUNetTrainerSCDL_DHC_paper,
    nnUNetTrainerGAMagicNet, nnUNetTrainerSCDL_GAMagicNet, nnUNetTrainerGAMagicNet_paper,
    nnUNetTrainerSCDL_GAMagicNet_paper,
    nnUNetTrainerGenericSSL, nnUNetTrainerSCDL_GenericSSL,
]
#: trainers that get ``_Xepochs`` variants
BUDGET_VARIANT_BASES: List[type] = [
    nnUNetTrainerSupervised, nnUNetTrainerMeanTeacher, nnUNetTrainerSCDL_MT, nnUNetTrainerGACPS,
    nnUNetTrainerSCDL_GACPS, nnUNetTrainerDHC, nnUNetTrainerSCDL_DHC, nnUNetTrainerGenericSSL,
    nnUNetTrainerSCDL_GenericSSL, nnUNetTrainerGAMagicNet, nnUNetTrainerSCDL_GAMagicNet,
]
#: name suffix → num_epochs
BUDGET_SUFFIXES: Dict[str, int] = {"1epoch": 1, "5epochs": 5, "10epochs": 10, "50epochs": 50, "100epochs": 100,
                                   "250epochs": 250, "500epochs": 500}
#: trainers that get a ``_released`` variant
RELEASED_VARIANT_BASES: List[type] = [nnUNetTrainerSCDL_MT, nnUNetTrainerSCDL_GACPS, nnUNetTrainerSCDL_DHC,
                                      nnUNetTrainerSCDL_GAMagicNet, nnUNetTrainerSCDL_GenericSSL]


def _derive(base: type, suffix: str, attributes: dict, doc: str) -> type:
    name = f"{base.__name__}_{suffix}"
    return type(name, (base,), {**attributes, "__module__": __name__, "__qualname__": name, "__doc__": doc})


def generated_trainers() -> List[type]:
    """The ``_Xepochs`` and ``_released`` variants, built anew on each call."""
    trainers = [_derive(base, suffix, {"num_epochs": epochs}, f"{base.__name__} with num_epochs = {epochs}.")
                for base in BUDGET_VARIANT_BASES for suffix, epochs in BUDGET_SUFFIXES.items()]
    trainers += [_derive(base, "released", {"scdl_variant": "released"},
                         f"{base.__name__} with the released SCDL code's behaviour (scdl_variant = 'released').")
                 for base in RELEASED_VARIANT_BASES]
    return trainers


GENERATED_TRAINERS: List[type] = generated_trainers()
globals().update({trainer.__name__: trainer for trainer in GENERATED_TRAINERS})
ALL_TRAINERS: Dict[str, Type] = {trainer.__name__: trainer for trainer in BASE_TRAINERS + GENERATED_TRAINERS}
__all__ = list(ALL_TRAINERS)
