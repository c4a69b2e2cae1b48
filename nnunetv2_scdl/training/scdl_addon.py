"""SCDL as an add-on for any trainer built on ``nnUNetTrainerSSL``: network options, loss terms and their weights.

Put :class:`SCDLAddon` first in the bases of a host trainer (``class nnUNetTrainerSCDL_X(SCDLAddon, nnUNetTrainerX)``)
and extend the host's ``hyperparameters`` and ``logged_terms`` with :data:`SCDL_HYPERPARAMETERS` and
:data:`SCDL_LOGGED_TERMS`. The host wraps its U-Net(s) through ``nnUNetTrainerSSL.attach_scdl`` (GenericSSL builds its
SCDL network from the same options), as :meth:`SCDLAddon.scdl_network_options` says; its ``compute_loss`` gets the
SCDL outputs from its student forward (``forward_student``; GenericSSL: ``labeled_psi_forward`` and
``theta_forward``; GA-MagicNet: the network's ``heads(..., return_scdl=True)``) and calls ``auxiliary_loss``; its
``rampup()`` scales the unlabeled term.

Loss = host loss + λ_cdba·(L_cdba,l + ramp(t)·L_cdba,u) + λ_sac·L_sac, where L_cdba is CDBA (E2P + P2E in the
paper variant) on labeled tokens (ground-truth class proportions) and on unlabeled tokens (the detached joint
assignment), and L_sac the semantic-anchor loss. The unlabeled term relies on the model's own assignments and
follows the host's ramp-up, since early assignments are noise. See docs/scdl.md.

Each epoch also logs the proxies' geometry (:data:`SCDL_PROXY_LOG_KEYS`): the largest cosine between two classes'
proxy means over every SCDL module of the training network(s), and the mean σ. Proxies of two classes that point the
same way (cosine near 1) give those classes the same priors.
"""
from typing import Dict, Optional, Tuple

import torch

from nnunetv2_scdl.networks.scdl_unet import PRIOR_MODES
from nnunetv2_scdl.scdl.proxies import ClassProxies, proxy_separation
from nnunetv2_scdl.scdl.variants import get_variant
from nnunetv2_scdl.training.ema import unwrap_network
from nnunetv2_scdl.training.ssl_base import full_resolution

SCDL_HYPERPARAMETERS: Tuple[str, ...] = ("scdl_weight_cdba", "scdl_weight_sac")
SCDL_LOGGED_TERMS: Tuple[str, ...] = ("scdl_cdba_labeled", "scdl_cdba_unlabeled", "scdl_sac")
#: per epoch: the largest cos(μ_a, μ_b) over class pairs and SCDL modules, and the mean σ over them
SCDL_PROXY_LOG_KEYS: Tuple[str, ...] = ("scdl_proxy_max_cosine", "scdl_proxy_sigma")


class SCDLAddon:
    """Adds SCDL (``nnunetv2_scdl.scdl``) to the network(s) of a semi-supervised trainer.

    Loss weights (hyperparameters, env ``SCDL_SCDL_WEIGHT_*``): λ_cdba = λ_sac = 0.1. The paper gives no weights;
    0.1 is the released module's (unused) ``sup_weight``, and it keeps the SCDL terms, whose values lie around 1, an
    order of magnitude below the segmentation loss.

    Architecture options are class attributes only, never environment variables: ``nnUNetv2_predict`` rebuilds the
    network from the class, and it must be the network that was trained. ``scdl_variant`` is one of them ("paper",
    the default, or "released"; the ``_released`` trainer variants set it), because the released variant also
    changes where the priors go.
    """

    scdl_weight_cdba = 0.1
    scdl_weight_sac = 0.1
    #: "paper" (the paper's formulas) or "released" (the released code's behaviour); see docs/scdl.md
    scdl_variant = "paper"
    #: where tokens come from ("decoder": the last decoder feature; "encoder": the stride-8 encoder stage)
    scdl_token_source = "decoder"
    #: where the priors go, per variant ("decoder": every decoder stage; "head": the last one; "none": losses only)
    scdl_prior_modes: Dict[str, str] = {"paper": "decoder", "released": "decoder"}
    #: τ_prior, the temperature at which the priors weight the classes (``SCDL(prior_temperature=...)``); None: the
    #: losses' temperatures (τ_e2p = τ_p2e = 0.2), as in the paper and the released code
    scdl_prior_temperature: Optional[float] = None

    @classmethod
    def scdl_network_options(cls) -> dict:
        """Keyword arguments of ``SCDLUNet`` for this trainer's variant."""
        get_variant(cls.scdl_variant)  # a clear error for an unknown variant
        prior_mode = cls.scdl_prior_modes[cls.scdl_variant]
        if prior_mode not in PRIOR_MODES:
            raise ValueError(f"{cls.__name__}.scdl_prior_modes[{cls.scdl_variant!r}] must be one of {PRIOR_MODES}, "
                             f"got {prior_mode!r}.")
        return {"token_source": cls.scdl_token_source, "prior_mode": prior_mode, "variant": cls.scdl_variant,
                "prior_temperature": cls.scdl_prior_temperature}

    def reject_unsupported_setups(self) -> None:
        super().reject_unsupported_setups()
        num_classes = self.label_manager.num_segmentation_heads
        if num_classes < 2:
            ignore = self.label_manager.ignore_label
            raise ValueError(f"{type(self).__name__} needs at least two label classes (background and one "
                             f"structure) to learn class proxies; dataset.json gives {num_classes}"
                             + (f" besides the ignore label {ignore}" if ignore is not None else "")
                             + ". Add the structures' labels, or train a host without SCDL.")

    def hyperparameter_report(self) -> str:
        options = ", ".join(f"{name}={value}" for name, value in self.scdl_network_options().items())
        return super().hyperparameter_report() + f"\n  SCDL network (class attributes only): {options}"

    def register_log_keys(self) -> None:
        super().register_log_keys()
        self.logger.local_logger.register(SCDL_PROXY_LOG_KEYS)

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        # every SCDL of the training network(s): both networks of a co-training pair
        separations = [proxy_separation(m.mu, m.rho) for m in unwrap_network(self.network).modules()
                       if isinstance(m, ClassProxies)]
        if not separations:
            return
        closest = max(separations, key=lambda s: s["max_cosine"])
        sigma = sum(s["sigma_mean"] for s in separations) / len(separations)
        norm = sum(s["norm_mean"] for s in separations) / len(separations)
        self.logger.log("scdl_proxy_max_cosine", closest["max_cosine"], self.current_epoch)
        self.logger.log("scdl_proxy_sigma", sigma, self.current_epoch)
        self.print_to_log_file(f"SCDL proxies: max cos(μ_a, μ_b) {closest['max_cosine']:.3f} (classes "
                               f"{closest['max_pair'][0]}, {closest['max_pair'][1]}), mean σ {sigma:.4g}, "
                               f"mean ‖μ‖ {norm:.3g}")

    def forward_student(self, inputs: torch.Tensor):
        return self.network(inputs, return_scdl=True)

    def scdl_loss(self, network, aux, target, n_labeled: int):
        """The weighted SCDL loss of one ``SCDLUNet`` and its raw terms (cdba_labeled, cdba_unlabeled, sac)."""
        terms = network.scdl_loss_terms(aux, full_resolution(target), n_labeled,
                                        ignore_label=self.label_manager.ignore_label)
        loss = (self.scdl_weight_cdba * (terms["cdba_labeled"] + self.rampup() * terms["cdba_unlabeled"])
                + self.scdl_weight_sac * terms["sac"])
        return loss, terms

    def auxiliary_loss(self, aux, target, n_labeled: int):
        loss, terms = self.scdl_loss(unwrap_network(self.network), aux, target, n_labeled)
        return loss, {f"scdl_{name}": value.detach() for name, value in terms.items()}
