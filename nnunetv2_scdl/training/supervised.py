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


class nnUNetTrainerSupervisedLabeledOnly(nnUNetTrainerSupervised):
    """``nnUNetTrainerSupervised`` on the fold's ``train`` cases minus those its split entry lists under
    ``pseudo_labeled``: self-training fine-tunes its student with it on the labeled cases of the derived dataset
    (``nnUNetv2_train ... -pretrained_weights``; see docs/self_training.md). Without that key it trains on every
    ``train`` case, as ``nnUNetTrainerSupervised`` does."""

    def do_split(self):
        from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json

        from nnunetv2_scdl.data.derived_dataset import PSEUDO_LABELED_KEY

        train_keys, val_keys = super().do_split()
        splits_file = join(self.preprocessed_dataset_folder_base, "splits_final.json")
        entries = load_json(splits_file) if isfile(splits_file) else []
        if self.fold != "all":  # fold "all" trains on every case: leave out what any entry calls pseudo-labeled
            entries = entries[self.fold:self.fold + 1]
        pseudo_labeled = {c for entry in entries for c in entry.get(PSEUDO_LABELED_KEY, [])}
        labeled = [k for k in train_keys if k not in pseudo_labeled]
        if not labeled:
            raise RuntimeError(f"Fold {self.fold} of splits_final.json has no training case that is not "
                               f"pseudo-labeled; there is nothing to fine-tune on.")
        self.print_to_log_file(f"Training on the {len(labeled)} labeled cases of the split's {len(train_keys)} "
                               f"training cases ({len(train_keys) - len(labeled)} pseudo-labeled left out).")
        return labeled, val_keys
