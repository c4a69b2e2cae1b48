"""GA-CPS (GALoss, ECCV'24) on nnU-Net: cross pseudo supervision with gradient-aware losses. See docs/co_training.md.

L = Σ_{N∈{A,B}} DS[GACE_{k_sup,γ}(N(x_l), y) + GADice(N(x_l), y)]
    + w_cps(t)·[GACE_{k_cps,γ}(A(x), argmax B(x)) + GACE_{k_cps,γ}(B(x), argmax A(x))]

with x = cat(labeled, unlabeled), CPS on the full-resolution logits, DS = nnU-Net's deep-supervision wrapper,
k_sup = 10, k_cps = 100, γ = 0.5, w_cps(t) = 0.1·sigmoid_rampup(t, all iterations). A starts from nnU-Net's He
draw rescaled to Xavier-normal's per-layer norm (``network_a_init``), B from Xavier-normal.
"""
from typing import Optional

from torch import nn

from nnunetv2_scdl.losses import GACELoss, GADiceLoss
from nnunetv2_scdl.training.co_training import PaperOptimiser, nnUNetTrainerCoTraining
from nnunetv2_scdl.training.scdl_addon import SCDL_HYPERPARAMETERS, SCDL_LOGGED_TERMS
from nnunetv2_scdl.training.scdl_co_training import CoTrainingSCDLAddon


class GASupervisedLoss(nn.Module):
    """GACE(k, γ) + GADice on logits and an integer target (one DS scale)."""

    def __init__(self, k: float = 10.0, gamma: float = 0.5, ignore_index: Optional[int] = None):
        super().__init__()
        self.ce = GACELoss(k=k, gamma=gamma, ignore_index=ignore_index)
        self.dice = GADiceLoss(softmax=True, ignore_index=ignore_index)

    def forward(self, prediction, target):
        return self.ce(prediction, target) + self.dice(prediction, target)


class nnUNetTrainerGACPS(nnUNetTrainerCoTraining):
    """GA-CPS. Hyperparameters (env ``SCDL_<NAME>``): ``cps_weight`` 0.1, ``ga_k_supervised`` 10 (% of voxels kept
    by GACE's OHEM), ``ga_k_cps`` 100, ``ga_gamma`` 0.5."""

    hyperparameters = nnUNetTrainerCoTraining.hyperparameters + ("ga_k_supervised", "ga_k_cps", "ga_gamma")
    ga_k_supervised = 10.0
    ga_k_cps = 100.0
    ga_gamma = 0.5
    # B: Xavier-normal, as in GA-CPS. A: He's draw at Xavier's per-layer norm, so that under one optimiser both nets
    # move at the same rate (instance norm makes a layer's effective learning rate go as 1/‖w‖²)
    network_a_init = "he_xavier_norm"
    network_b_init = "xavier_normal"

    def build_co_training_losses(self) -> None:
        ignore = self.label_manager.ignore_label
        supervised = GASupervisedLoss(self.ga_k_supervised, self.ga_gamma, ignore_index=ignore)
        # stateless: A and B share the loss objects
        self.supervised_loss_a = self.supervised_loss_b = self.wrap_deep_supervision(supervised)
        self.cps_loss_a = self.cps_loss_b = GACELoss(k=self.ga_k_cps, gamma=self.ga_gamma)


class nnUNetTrainerSCDL_GACPS(CoTrainingSCDLAddon, nnUNetTrainerGACPS):
    """GA-CPS with one SCDL per network: priors in both decoders (the ``released`` variant: losses only)."""

    hyperparameters = nnUNetTrainerGACPS.hyperparameters + SCDL_HYPERPARAMETERS
    logged_terms = nnUNetTrainerGACPS.logged_terms + SCDL_LOGGED_TERMS


class GACPSPaperSchedule(PaperOptimiser):
    """GALoss' CPS optimisation: SGD lr 0.01, momentum 0.9, wd 1e-4, poly 0.9 per iteration, 17 000 iterations
    (68 epochs × 250), and its initialisation: net A keeps nnU-Net's He init (GALoss: Kaiming for A, Xavier for B)."""

    network_a_init = "he"

    paper_lr = 0.01
    paper_momentum = 0.9
    paper_nesterov = False
    paper_weight_decay = 1e-4
    num_epochs = 68
    num_iterations_per_epoch = 250


class nnUNetTrainerGACPS_paper(GACPSPaperSchedule, nnUNetTrainerGACPS):
    pass


class nnUNetTrainerSCDL_GACPS_paper(GACPSPaperSchedule, nnUNetTrainerSCDL_GACPS):
    pass
