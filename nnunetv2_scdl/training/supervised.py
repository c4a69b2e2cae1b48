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
