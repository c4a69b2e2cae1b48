"""DHC (MICCAI'23) on nnU-Net: heterogeneous co-training with dynamic class weights. See docs/co_training.md.

Net A is weighted by DiffDW (difficulty-aware) weights w_A, net B by DistDW (distribution-aware) weights w_B:

L = DS[DC_CE_{w_A}(A(x_l), y)] + DS[DC_CE_{w_B}(B(x_l), y)]
    + w_cps(t)·[wCE_{w_A}(A(x), argmax B(x)) + wCE_{w_B}(B(x), argmax A(x))]

DC_CE_w = class-weighted CE + class-weighted soft batch Dice (foreground classes, smooth 1); wCE = class-weighted CE;
x = cat(labeled, unlabeled); CPS on full-resolution logits; w_cps(t) = 0.1·sigmoid_rampup(t, all iterations).

Every step, before the losses, both weight vectors are updated from this step's full-resolution outputs (detached):
w_A ← DiffDW(hard batch Dice of argmax A on the labeled half vs GT), w_B ← DistDW EMA with the class histogram of
argmax B on the unlabeled half. DistDW starts from the class voxel counts of the fold's labeled training cases,
read once from their preprocessed segmentations (the first time a step runs; background = nnU-Net's -1 "outside the
nonzero region" and 0, the ignore label is not counted). Both states go into the checkpoint
(``checkpoint['nnunetv2_scdl']['dist_dw'|'diff_dw']``), so ``--c`` continues with exactly the same weights.
Both nets keep nnU-Net's He init. See docs/co_training.md.
"""
import numpy as np
import torch

from nnunetv2_scdl.losses import (DiffDW, DistDW, WeightedCrossEntropyLoss, WeightedDiceCELoss,
                                  class_voxel_counts)
from nnunetv2_scdl.training.co_training import PaperOptimiser, nnUNetTrainerCoTraining
from nnunetv2_scdl.training.distributed import all_reduce_sum
from nnunetv2_scdl.training.scdl_addon import SCDL_HYPERPARAMETERS, SCDL_LOGGED_TERMS
from nnunetv2_scdl.training.scdl_co_training import CoTrainingSCDLAddon
from nnunetv2_scdl.training.ssl_base import full_resolution


class nnUNetTrainerDHC(nnUNetTrainerCoTraining):
    """DHC. Hyperparameters (env ``SCDL_<NAME>``): ``cps_weight`` 0.1, ``dist_dw_momentum`` 0.99,
    ``diff_dw_momentum`` 0.98 (= 49/50). Logged besides the co-training terms: the mean foreground weight of each net
    (``weight_a_foreground``, ``weight_b_foreground``)."""

    hyperparameters = nnUNetTrainerCoTraining.hyperparameters + ("dist_dw_momentum", "diff_dw_momentum")
    dist_dw_momentum = 0.99
    diff_dw_momentum = 49 / 50
    network_b_init = "he"
    logged_terms = nnUNetTrainerCoTraining.logged_terms + ("weight_a_foreground", "weight_b_foreground")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        num_classes = self.label_manager.num_segmentation_heads
        self.diff_dw = DiffDW(num_classes, momentum=self.diff_dw_momentum)  # net A
        self.dist_dw = DistDW(num_classes, momentum=self.dist_dw_momentum)  # net B

    def build_co_training_losses(self) -> None:
        ignore = self.label_manager.ignore_label
        self.dice_ce_a = WeightedDiceCELoss(ignore_index=ignore)
        self.dice_ce_b = WeightedDiceCELoss(ignore_index=ignore)
        self.supervised_loss_a = self.wrap_deep_supervision(self.dice_ce_a)
        self.supervised_loss_b = self.wrap_deep_supervision(self.dice_ce_b)
        self.cps_loss_a = WeightedCrossEntropyLoss()  # pseudo-labels carry no ignore label
        self.cps_loss_b = WeightedCrossEntropyLoss()

    def labeled_class_counts(self) -> torch.Tensor:
        """Class voxel counts n_c [C] over the preprocessed segmentations of this fold's labeled training cases."""
        training_keys, _ = self.do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, training_keys)
        num_classes = self.label_manager.num_segmentation_heads
        counts = torch.zeros(num_classes, dtype=torch.float64)
        for key in training_keys:
            _, seg, _, _ = dataset.load_case(key)
            labels = torch.from_numpy(np.asarray(seg[:]).astype(np.int64))
            labels[labels < 0] = 0  # nnU-Net marks background outside the nonzero region with -1
            counts += class_voxel_counts(labels, num_classes, ignore_index=self.label_manager.ignore_label)
        return counts

    def update_class_weights(self, outputs_a, outputs_b, target, n_labeled: int) -> None:
        if not self.dist_dw.initialized:
            counts = self.labeled_class_counts()
            self.dist_dw.init_from_counts(counts)
            self.print_to_log_file(f"DistDW initialised from labeled class voxel counts {counts.tolist()}: "
                                   f"w_B = {[round(w, 4) for w in self.dist_dw.weights.tolist()]}")
        with torch.no_grad():
            labels_a = full_resolution(outputs_a)[:n_labeled].argmax(1)
            # counts summed over ranks under multi-GPU training: every rank applies the same weights
            self.diff_dw.update_from_labels(labels_a, full_resolution(target)[:, 0],
                                            ignore_index=self.label_manager.ignore_label,
                                            reduce_counts=all_reduce_sum)
            self.dist_dw.update_from_labels(full_resolution(outputs_b)[n_labeled:].argmax(1),
                                            reduce_counts=all_reduce_sum)

    def before_losses(self, outputs_a, outputs_b, target, n_labeled: int) -> None:
        self.update_class_weights(outputs_a, outputs_b, target, n_labeled)
        weights_a, weights_b = self.diff_dw.weights, self.dist_dw.weights
        self.dice_ce_a.set_class_weights(weights_a)
        self.cps_loss_a.set_class_weights(weights_a)
        self.dice_ce_b.set_class_weights(weights_b)
        self.cps_loss_b.set_class_weights(weights_b)

    def compute_loss(self, data, target, unlabeled):
        total, terms = super().compute_loss(data, target, unlabeled)
        terms["weight_a_foreground"] = float(self.diff_dw.weights[1:].mean())
        terms["weight_b_foreground"] = float(self.dist_dw.weights[1:].mean())
        return total, terms

    def extra_checkpoint_state(self) -> dict:
        state = super().extra_checkpoint_state()
        state["diff_dw"] = self.diff_dw.state_dict()
        state["dist_dw"] = self.dist_dw.state_dict()
        return state

    def load_extra_checkpoint_state(self, state: dict) -> None:
        super().load_extra_checkpoint_state(state)
        self.diff_dw.load_state_dict(state["diff_dw"])
        self.dist_dw.load_state_dict(state["dist_dw"])


class nnUNetTrainerSCDL_DHC(CoTrainingSCDLAddon, nnUNetTrainerDHC):
    """DHC with one SCDL per network: priors in both decoders (the ``released`` variant: losses only)."""

    hyperparameters = nnUNetTrainerDHC.hyperparameters + SCDL_HYPERPARAMETERS
    logged_terms = nnUNetTrainerDHC.logged_terms + SCDL_LOGGED_TERMS


class DHCPaperSchedule(PaperOptimiser):
    """DHC's optimisation: SGD lr 0.03, momentum 0.9, Nesterov, wd 3e-5, poly 0.9 (set per iteration here; DHC steps
    it per epoch of 8 iterations), 2 400 iterations (Synapse 20 %: 24 epochs × 100)."""

    paper_lr = 0.03
    paper_momentum = 0.9
    paper_nesterov = True
    paper_weight_decay = 3e-5
    num_epochs = 24
    num_iterations_per_epoch = 100


class nnUNetTrainerDHC_paper(DHCPaperSchedule, nnUNetTrainerDHC):
    pass


class nnUNetTrainerSCDL_DHC_paper(DHCPaperSchedule, nnUNetTrainerSCDL_DHC):
    pass
