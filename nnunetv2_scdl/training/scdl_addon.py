"""SCDL as an add-on for any trainer built on ``nnUNetTrainerSSL``: network, loss terms and their weights.

Put :class:`SCDLAddon` first in the bases of a host trainer (``class nnUNetTrainerSCDL_X(SCDLAddon, nnUNetTrainerX)``)
and extend the host's ``hyperparameters`` and ``logged_terms`` with :data:`SCDL_HYPERPARAMETERS` and
:data:`SCDL_LOGGED_TERMS`. The host's ``compute_loss`` must call ``forward_student`` and ``auxiliary_loss``; its ``rampup()`` scales the
unlabeled terms.

Loss = host loss + λ_cdba·(L_cdba,l + ramp(t)·L_cdba,u) + λ_kl·ramp(t)·L_kl + λ_sac·L_sac, where L_cdba is the
E2P + P2E + distance proxy loss (CDBA) on labeled tokens (ground-truth class proportions) and on unlabeled tokens
(the detached joint assignment), L_kl the symmetric KL between E2P and P2E, and L_sac the semantic-anchor loss.
The terms that rely on the model's own assignments follow the host's ramp-up, since early assignments are noise.
"""
from typing import Tuple

import torch

from nnunetv2_scdl.networks.scdl_unet import build_scdl_network_from_plans
from nnunetv2_scdl.training.ema import unwrap_network
from nnunetv2_scdl.training.ssl_base import full_resolution

SCDL_HYPERPARAMETERS: Tuple[str, ...] = ("scdl_weight_cdba", "scdl_weight_kl", "scdl_weight_sac")
SCDL_LOGGED_TERMS: Tuple[str, ...] = ("scdl_cdba_labeled", "scdl_cdba_unlabeled", "scdl_kl", "scdl_sac")


class SCDLAddon:
    """Adds SCDL (``nnunetv2_scdl.scdl``) to the plan-generated U-Net of a semi-supervised trainer.

    Loss weights (hyperparameters, env ``SCDL_SCDL_WEIGHT_*``): λ_cdba = λ_kl = λ_sac = 0.1. No weights were
    released with the paper; 0.1 is the spec's starting point (§1.5, the released module's unused ``sup_weight``),
    and it keeps the SCDL terms, whose values lie around 1, an order of magnitude below the segmentation loss.

    Architecture options are class attributes only, never environment variables: ``nnUNetv2_predict`` rebuilds the
    network from the class, and it must be the network that was trained.
    """

    scdl_weight_cdba = 0.1
    scdl_weight_kl = 0.1
    scdl_weight_sac = 0.1
    #: where tokens come from ("decoder": the last decoder feature, spec §7.3; "encoder": the stride-8 stage)
    scdl_token_source = "decoder"
    #: where the priors are injected ("decoder": every decoder stage; "head": the last one; "none": losses only)
    scdl_prior_mode = "decoder"

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        # a classmethod, called exactly like nnU-Net's staticmethod, so that the options above take effect
        return build_scdl_network_from_plans(configuration_manager, num_input_channels, num_output_channels,
                                             enable_deep_supervision, token_source=cls.scdl_token_source,
                                             prior_mode=cls.scdl_prior_mode)

    def forward_student(self, inputs: torch.Tensor):
        return self.network(inputs, return_scdl=True)

    def scdl_loss(self, network, aux, target, n_labeled: int):
        """The weighted SCDL loss of one ``SCDLUNet`` and its raw terms (cdba_labeled, cdba_unlabeled, kl, sac)."""
        terms = network.scdl_loss_terms(aux, full_resolution(target), n_labeled,
                                        ignore_label=self.label_manager.ignore_label)
        ramp = self.rampup()
        loss = (self.scdl_weight_cdba * (terms["cdba_labeled"] + ramp * terms["cdba_unlabeled"])
                + self.scdl_weight_kl * ramp * terms["kl"] + self.scdl_weight_sac * terms["sac"])
        return loss, terms

    def auxiliary_loss(self, aux, target, n_labeled: int):
        loss, terms = self.scdl_loss(unwrap_network(self.network), aux, target, n_labeled)
        return loss, {f"scdl_{name}": value.detach() for name, value in terms.items()}
