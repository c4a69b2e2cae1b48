"""``nnUNetTrainerCoTraining``: the shared base of the two-network co-training trainers (GA-CPS, DHC).

User documentation: docs/co_training.md.

- Network: a :class:`~nnunetv2_scdl.networks.dual_network.DualNetwork` of two U-Nets, each generated from the plans
  by nnU-Net's ``get_network_from_plans`` (He init), built in the classmethod ``build_network_architecture`` (so
  ``nnUNetv2_predict`` rebuilds exactly the trained module). Net B can be re-initialised (``network_b_init``).
  Inference, online validation and ``checkpoint['network_weights']`` use the ensemble (A(x) + B(x)) / 2.
- Training step: A and B both run on cat(labeled, unlabeled). The supervised loss of each net is applied to its
  labeled outputs under nnU-Net's ``DeepSupervisionWrapper`` (weights 1, ½, ¼, … with the lowest 0, normalised, as
  ``nnUNetTrainer._build_loss``). Cross pseudo supervision (CPS) runs on the full-resolution logits over the whole
  batch (labeled included), each net against the hard argmax pseudo-label of the other net (no gradient).
- Total: L = L_sup,A + L_sup,B + w_cps(t)·(L_cps,A + L_cps,B) [+ add-on terms, e.g. SCDL], with
  w_cps(t) = cps_weight · sigmoid_rampup(t, T), t = global iteration, T = all iterations of the run.

Subclasses set the losses in :meth:`build_co_training_losses` (and may update state in :meth:`before_losses`).
``PaperOptimiser`` switches a trainer to a paper's SGD with a per-iteration poly learning rate.
"""
from typing import Callable, Dict, Optional

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from nnunetv2_scdl.networks.dual_network import DualNetwork, InitWeights_XavierNormal, RescaleToXavierNormalNorm
from nnunetv2_scdl.training.ema import unwrap_network
from nnunetv2_scdl.training.ssl_base import Logits, full_resolution, nnUNetTrainerSSL, split_batch

#: re-initialisations for ``network_a_init`` / ``network_b_init``, applied to the plan-generated (He-initialised)
#: U-Net: "he" keeps get_network_from_plans' InitWeights_He, "xavier_normal" redraws every conv, "he_xavier_norm"
#: keeps the He draw and rescales each conv to Xavier-normal's expected norm (see docs/co_training.md)
NETWORK_INITS: Dict[str, Optional[Callable[[], Callable[[nn.Module], None]]]] = {
    "he": None,
    "xavier_normal": InitWeights_XavierNormal,
    "he_xavier_norm": RescaleToXavierNormalNorm,
}


def build_dual_network(trainer_class, configuration_manager, num_input_channels: int, num_output_channels: int,
                       enable_deep_supervision: bool = True) -> DualNetwork:
    """Two plan-generated U-Nets (A, B), initialised per ``trainer_class.network_{a,b}_init`` and then passed through
    ``trainer_class.attach_scdl`` (SCDL's wrapper for SCDL trainers, else nothing). Both plain U-Nets are built and
    initialised before any wrapper, so a wrapper never shifts the random draws of B: with the same seed, a host and
    its SCDL variant start from the same A and B."""
    networks = []
    for name in ("network_a_init", "network_b_init"):
        init = getattr(trainer_class, name)
        if init not in NETWORK_INITS:
            raise ValueError(f"{trainer_class.__name__}.{name} must be one of {sorted(NETWORK_INITS)}, got {init!r}.")
        network = get_network_from_plans(configuration_manager.network_arch_class_name,
                                         configuration_manager.network_arch_init_kwargs,
                                         configuration_manager.network_arch_init_kwargs_req_import,
                                         num_input_channels, num_output_channels, allow_init=True,
                                         deep_supervision=enable_deep_supervision)
        if NETWORK_INITS[init] is not None:
            network.apply(NETWORK_INITS[init]())
        networks.append(network)
    return DualNetwork(*(trainer_class.attach_scdl(network, configuration_manager, num_output_channels, index)
                         for index, network in enumerate(networks)))


class nnUNetTrainerCoTraining(nnUNetTrainerSSL):
    """Base class (not a method by itself): two plan-generated U-Nets trained with cross pseudo supervision.

    Hyperparameters (class attributes, env ``SCDL_<NAME>``): ``cps_weight`` (0.1, both papers), the maximum of the
    CPS weight ramp. Architecture options (class attributes only; the predictor rebuilds the network from the class):
    ``network_a_init`` / ``network_b_init`` (a key of :data:`NETWORK_INITS`).

    Subclasses implement :meth:`build_co_training_losses`, which sets ``supervised_loss_a``/``_b`` (called as
    ``loss(labeled_outputs, target)``, DS lists when DS is on; wrap with :meth:`wrap_deep_supervision`) and
    ``cps_loss_a``/``_b`` (called as ``loss(full_res_logits, pseudo_label [B,1,...])``).
    """

    hyperparameters = nnUNetTrainerSSL.hyperparameters + ("cps_weight",)
    cps_weight = 0.1
    network_a_init = "he"
    network_b_init = "he"
    logged_terms = ("supervised_a", "supervised_b", "cps_a", "cps_b", "cps_weight")
    monitored_networks = ("network_a", "network_b")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.supervised_loss_a = self.supervised_loss_b = None
        self.cps_loss_a = self.cps_loss_b = None

    # ---------------------------------------------------------------------------------------------- network
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        # a classmethod, called exactly like nnU-Net's staticmethod, so that the class attributes take effect
        return build_dual_network(cls, configuration_manager, num_input_channels, num_output_channels,
                                  enable_deep_supervision)

    def monitored_network(self, name: str) -> nn.Module:
        """A or B alone: validation evaluates their average, which can hide a network that learned nothing."""
        dual = unwrap_network(self.network)
        return {"network_a": dual.net_a, "network_b": dual.net_b}[name]

    def gradient_clip_groups(self):
        """A and B (each with everything it holds, e.g. its SCDL module) are clipped separately, as two trainers
        would clip them."""
        dual = unwrap_network(self.network)
        return [list(dual.net_a.parameters()), list(dual.net_b.parameters())]

    # ---------------------------------------------------------------------------------------------- losses
    def build_co_training_losses(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} is the co-training base class; train one of its methods "
                                  f"(e.g. nnUNetTrainerGACPS or nnUNetTrainerDHC) instead.")

    def hyperparameter_report(self) -> str:
        return (super().hyperparameter_report() + f"\n  co-training inits (class attributes only): network A "
                                                  f"{self.network_a_init!r}, network B {self.network_b_init!r}")

    def initialize(self):
        super().initialize()
        self.build_co_training_losses()

    # ---------------------------------------------------------------------------------------------- training step
    def rampup(self) -> float:
        """Both papers ramp the CPS weight over the whole run."""
        return self.whole_run_rampup()

    def forward_student(self, inputs: torch.Tensor):
        """``((outputs_a, outputs_b), aux)``: both nets on the same batch (through ``DualNetwork.forward``)."""
        return self.network(inputs, mode="both"), None

    def before_losses(self, outputs_a: Logits, outputs_b: Logits, target: Logits, n_labeled: int) -> None:
        """Hook called after the forward pass and before the losses (e.g. DHC's class-weight updates)."""

    def compute_loss(self, data, target, unlabeled):
        n_labeled = data.shape[0]
        (outputs_a, outputs_b), aux = self.forward_student(torch.cat((data, unlabeled["data"])))
        self.before_losses(outputs_a, outputs_b, target, n_labeled)
        labeled_a, _ = split_batch(outputs_a, n_labeled)
        labeled_b, _ = split_batch(outputs_b, n_labeled)
        supervised_a = self.supervised_loss_a(labeled_a, target)
        supervised_b = self.supervised_loss_b(labeled_b, target)
        logits_a, logits_b = full_resolution(outputs_a), full_resolution(outputs_b)
        with torch.no_grad():
            pseudo_a = logits_a.argmax(1, keepdim=True)
            pseudo_b = logits_b.argmax(1, keepdim=True)
        cps_a = self.cps_loss_a(logits_a, pseudo_b)  # A learns from B's hard labels
        cps_b = self.cps_loss_b(logits_b, pseudo_a)  # and B from A's
        weight = self.cps_weight * self.rampup()
        auxiliary, auxiliary_terms = self.auxiliary_loss(aux, target, n_labeled)
        terms = {"supervised_a": supervised_a.detach(), "supervised_b": supervised_b.detach(),
                 "cps_a": cps_a.detach(), "cps_b": cps_b.detach(), "cps_weight": weight, **auxiliary_terms}
        return supervised_a + supervised_b + weight * (cps_a + cps_b) + auxiliary, terms


# -------------------------------------------------------------------------------------------------- paper option
class IterationPolyLR:
    """lr = initial_lr · (1 − t/T)^exponent with t = the trainer's global iteration, set whenever ``step`` is called.

    nnU-Net calls ``step(current_epoch)`` at every epoch start (the argument is ignored: the lr follows the iteration
    counter, which ``--c`` restores); :class:`PaperOptimiser` also calls it after every optimiser step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, total_iterations: Callable[[], int],
                 current_iteration: Callable[[], int], exponent: float = 0.9):
        self.optimizer = optimizer
        self.initial_lr = initial_lr
        self.total_iterations = total_iterations
        self.current_iteration = current_iteration
        self.exponent = exponent
        self.step()

    def lr(self) -> float:
        total = max(1, self.total_iterations())
        progress = min(max(self.current_iteration(), 0), total) / total
        return self.initial_lr * (1 - progress) ** self.exponent

    def step(self, epoch=None) -> None:
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr


class PaperOptimiser:
    """Mixin (put it first in the bases): the papers' SGD with poly lr set per iteration, instead of nnU-Net's SGD
    (momentum 0.99, Nesterov, wd 3e-5) with poly lr per epoch, and no gradient clipping (none of the papers clips).
    AMP on CUDA stays as in nnUNetTrainerSSL. Subclasses set the ``paper_*`` attributes and the budget
    (``num_epochs`` × ``num_iterations_per_epoch``)."""

    gradient_clip_norm = 0.0
    paper_lr = 0.01
    paper_momentum = 0.9
    paper_nesterov = False
    paper_weight_decay = 1e-4
    paper_poly_exponent = 0.9

    def configure_optimizers(self):
        self.initial_lr, self.weight_decay = self.paper_lr, self.paper_weight_decay  # what nnU-Net logs
        optimizer = torch.optim.SGD(self.optimizer_parameter_groups(self.paper_weight_decay), lr=self.paper_lr,
                                    momentum=self.paper_momentum, nesterov=self.paper_nesterov)
        scheduler = IterationPolyLR(optimizer, self.paper_lr,
                                    lambda: self.num_epochs * self.num_iterations_per_epoch,
                                    lambda: self.global_iteration, self.paper_poly_exponent)
        return optimizer, scheduler

    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        self.lr_scheduler.step()
