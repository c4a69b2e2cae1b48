"""``nnUNetTrainerSupervised``: stock nnU-Net supervised training, the reference row of every comparison.

It is ``nnUNetTrainer`` unchanged, plus this package's hyperparameter mechanism, so that the training budget
(``num_epochs``, ``num_iterations_per_epoch``, ``num_val_iterations_per_epoch``) can be matched to a semi-supervised
run through the same ``SCDL_*`` environment variables or ``_Xepochs`` variants.
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_scdl.training.hyperparameters import ConfigurableHyperparameters


class nnUNetTrainerSupervised(ConfigurableHyperparameters, nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.apply_hyperparameters()


class nnUNetTrainerSupervised_1epoch(nnUNetTrainerSupervised):
    num_epochs = 1


class nnUNetTrainerSupervised_5epochs(nnUNetTrainerSupervised):
    num_epochs = 5


class nnUNetTrainerSupervised_10epochs(nnUNetTrainerSupervised):
    num_epochs = 10


class nnUNetTrainerSupervised_50epochs(nnUNetTrainerSupervised):
    num_epochs = 50


class nnUNetTrainerSupervised_100epochs(nnUNetTrainerSupervised):
    num_epochs = 100


class nnUNetTrainerSupervised_250epochs(nnUNetTrainerSupervised):
    num_epochs = 250


class nnUNetTrainerSupervised_500epochs(nnUNetTrainerSupervised):
    num_epochs = 500
