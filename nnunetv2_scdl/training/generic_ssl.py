"""GenericSSL (NeurIPS'23, "aggregating & decoupling") on nnU-Net. See docs/generic_ssl.md.

Network: :class:`~nnunetv2_scdl.networks.generic_ssl_net.GenericSSLNet` built from the plans' ``PlainConvUNet``
arguments in the classmethod ``build_network_architecture`` (the predictor calls it too). ``forward(x)`` is the D_θ
path only, so ``nnUNetv2_predict``, online validation and the final validation see a plain segmentation network;
``network_weights`` holds all three decoders (strict loading rebuilds the identical module).

One step (x_l, y: labeled batch; x_u: unlabeled batch; C classes; DS = nnU-Net's deep-supervision wrapper):

0. Aggregating (before the forward): θ ← m·θ + (1 − m)·(ξ + ψ)/2 over D_θ parameters whose name and shape match
   in D_ξ and D_ψ (``GenericSSLNet.aggregate_decoders``), m = ``aggregation_momentum`` (0.99).
1. L_deno = DS[DC_CE(D_ξ(x_t, t, x_l), y)], t ~ U{0..999}, x_t = q_sample(x₀ = 2·onehot(y) − 1, t)
   (nnU-Net's Dice+CE, ``self.loss``; ignore-label voxels get class 0 in x₀ and are ignored by the loss).
2. w = "Difficulty" weights from argmax(D_ξ labeled output, full resolution) vs y: DHC's DiffDW **without** the max
   normalisation, w = C·diff⊙dw (``DiffDW(normalise_by_max=False)``); L_diff = DS[wCE + wDice](D_ψ(x_l), y).
3. Pseudo-labels, no gradient: s = DDIM(D_ξ(·, ·, x_u), ``ddim_steps`` = 10 steps, η = 0, clipped x₀),
   p_ξ = GaussianSmooth_{k3, σ1}(gumbel_softmax(s)), p_ψ = softmax(D_ψ(x_u)), ŷ = argmax(p_ξ + p_ψ).
4. L_u = DC_CE(D_θ(x_u)[full resolution], ŷ) (nnU-Net's Dice+CE without DS; decoupling: only D_θ — with the shared
   encoder — learns from unlabeled data).
5. L = L_deno + L_diff + μ(t)·L_u, μ(t) = ``unsupervised_weight`` (10) · sigmoid_rampup(t, T), t = global iteration,
   T = all iterations of the run.

The difficulty state is saved in ``checkpoint['nnunetv2_scdl']['difficulty']``; θ (the aggregation state) is part of
``network_weights``, so ``--c`` resumes exactly. Only ``PlainConvUNet`` plans are supported (the three decoders are
``UNetDecoder``s on a ``PlainConvEncoder``).

``nnUNetTrainerSCDL_GenericSSL`` adds SCDL to the D_θ path (tokens from D_θ's last decoder feature, prior injected at
D_θ's full-resolution head; :class:`~nnunetv2_scdl.networks.generic_ssl_scdl_net.GenericSSLSCDLNet`). Its labeled
tokens come from D_ψ's last decoder feature on the labeled batch (the forward of L_diff), its unlabeled tokens from
D_θ's on the unlabeled batch (the forward of L_u), through one SCDL. Decoupling is kept, D_θ sees no labeled patch,
and SCDL adds no decoder pass. L gains SCDLAddon's weighted terms.
"""

import torch
import torch.nn.functional as F
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn

from nnunetv2_scdl.losses import DiffDW, WeightedDiceCELoss
from nnunetv2_scdl.networks.diffusion import DiffusionSchedule, ddim_sample, labels_to_x0
from nnunetv2_scdl.networks.generic_ssl_net import GenericSSLNet, build_generic_ssl_network
from nnunetv2_scdl.networks.generic_ssl_scdl_net import GenericSSLSCDLNet
from nnunetv2_scdl.networks.scdl_unet import concatenate_aux
from nnunetv2_scdl.training.distributed import all_reduce_sum
from nnunetv2_scdl.training.ema import unwrap_network
from nnunetv2_scdl.training.scdl_addon import SCDL_HYPERPARAMETERS, SCDL_LOGGED_TERMS, SCDLAddon
from nnunetv2_scdl.training.ssl_base import full_resolution, nnUNetTrainerSSL

__all__ = ["gaussian_smooth", "nnUNetTrainerGenericSSL", "nnUNetTrainerSCDL_GenericSSL"]


def gaussian_smooth(x: torch.Tensor, sigma: float = 1.0, kernel_size: int = 3) -> torch.Tensor:
    """Separable Gaussian smoothing of each channel of x [B, C, *spatial] (2-D or 3-D), replicate padding.

    The 1-D kernel exp(−k²/(2σ²)), k = −r..r (r = kernel_size // 2), is normalised to sum 1, so probabilities stay
    probabilities."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}.")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}.")
    radius = kernel_size // 2
    if radius == 0:
        return x
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).to(x.dtype)
    spatial = x.dim() - 2
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    channels = x.shape[1]
    for axis in range(spatial):
        shape = [1, 1] + [1] * spatial
        shape[2 + axis] = kernel_size
        weight = kernel.reshape(shape).expand(channels, *shape[1:])
        pad = [0, 0] * spatial
        pad[2 * (spatial - 1 - axis)] = pad[2 * (spatial - 1 - axis) + 1] = radius  # F.pad lists the last axis first
        x = conv(F.pad(x, pad, mode="replicate"), weight, groups=channels)
    return x


class nnUNetTrainerGenericSSL(nnUNetTrainerSSL):
    """GenericSSL. Hyperparameters (class attributes, env ``SCDL_<NAME>``):

    - ``unsupervised_weight`` (10): μ_max (Synapse README ``-w 10``).
    - ``aggregation_momentum`` (0.99): m in θ ← m·θ + (1 − m)·(ξ + ψ)/2.
    - ``ddim_steps`` (10): DDIM steps for the pseudo-labels (fewer is cheaper, e.g. on CPU).
    - ``difficulty_momentum`` (0.98 = 49/50): EMA momentum of the difficulty statistics.
    - ``gumbel_tau`` (1.0): temperature of the Gumbel-softmax on the DDIM sample.
    - ``smooth_sigma`` (1.0), ``smooth_kernel`` (3): Gaussian smoothing of p_ξ.

    Logged: ``deno``, ``diff``, ``unsup``, ``unsup_weight`` (μ(t)), ``difficulty_foreground`` (mean foreground
    weight). The step's ``loss`` = deno + diff + unsup_weight·unsup.
    """

    hyperparameters = nnUNetTrainerSSL.hyperparameters + (
        "unsupervised_weight", "aggregation_momentum", "ddim_steps", "difficulty_momentum", "gumbel_tau",
        "smooth_sigma", "smooth_kernel")
    unsupervised_weight = 10.0
    aggregation_momentum = 0.99
    ddim_steps = 10
    difficulty_momentum = 49 / 50
    gumbel_tau = 1.0
    smooth_sigma = 1.0
    smooth_kernel = 3
    logged_terms = ("deno", "diff", "unsup", "unsup_weight", "difficulty_foreground")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.ddim_steps < 1:
            raise ValueError(f"ddim_steps must be >= 1, got {self.ddim_steps}.")
        self.num_classes = self.label_manager.num_segmentation_heads
        # GenericSSL's "Difficulty" weights: DHC's DiffDW without the max normalisation
        self.difficulty = DiffDW(self.num_classes, momentum=self.difficulty_momentum, normalise_by_max=False)
        self.schedule = DiffusionSchedule()
        self.difficulty_loss = None
        self.unlabeled_loss = None
        self.last_aggregated = []  # names of the D_θ parameters aggregated in the last step

    # ---------------------------------------------------------------------------------------------- network
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        # a classmethod, called exactly like nnU-Net's staticmethod
        options = cls.scdl_network_options()
        if options is None:
            return build_generic_ssl_network(configuration_manager, num_input_channels, num_output_channels,
                                             enable_deep_supervision)
        return build_generic_ssl_network(configuration_manager, num_input_channels, num_output_channels,
                                         enable_deep_supervision, network_class=GenericSSLSCDLNet,
                                         patch_size=configuration_manager.patch_size, **options)

    def set_deep_supervision_enabled(self, enabled: bool):
        """All three decoders follow nnU-Net's deep-supervision switch (nnU-Net itself only sets ``.decoder``)."""
        unwrap_network(self.network).set_deep_supervision(enabled)

    # ---------------------------------------------------------------------------------------------- losses
    def initialize(self):
        super().initialize()
        self.difficulty_dice_ce = WeightedDiceCELoss(ignore_index=self.label_manager.ignore_label)
        self.difficulty_loss = self.wrap_deep_supervision(self.difficulty_dice_ce)
        # pseudo-labels carry no ignore label; same Dice+CE as nnU-Net's supervised loss, full resolution only
        self.unlabeled_loss = DC_and_CE_loss({"batch_dice": self.configuration_manager.batch_dice, "smooth": 1e-5,
                                              "do_bg": False, "ddp": self.is_ddp}, {}, weight_ce=1, weight_dice=1,
                                             ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)

    def rampup(self) -> float:
        """GenericSSL ramps μ over the whole run (its max_epoch)."""
        return self.whole_run_rampup()

    # ---------------------------------------------------------------------------------------------- step
    def _diffusion_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Full-resolution integer labels [B, 1, *S] with the ignore label mapped to 0 (for x₀ only)."""
        labels = labels.long()
        if self.label_manager.ignore_label is not None:
            labels = torch.where(labels == self.label_manager.ignore_label, torch.zeros_like(labels), labels)
        return labels

    @torch.no_grad()
    def pseudo_labels(self, network: GenericSSLNet, image: torch.Tensor) -> torch.Tensor:
        """ŷ = argmax(GaussianSmooth(gumbel_softmax(DDIM sample)) + softmax(D_ψ)) as [B, 1, *S] (long); no graph."""
        psi_logits = full_resolution(network.forward_psi(image))
        shape = (image.shape[0], self.num_classes, *image.shape[2:])
        sample = ddim_sample(network.denoiser(image), shape, self.schedule, num_steps=self.ddim_steps,
                             device=image.device).sample.float()
        p_xi = gaussian_smooth(F.gumbel_softmax(sample, tau=self.gumbel_tau, hard=False, dim=1),
                               self.smooth_sigma, self.smooth_kernel)
        p_psi = torch.softmax(psi_logits.float(), dim=1)
        return (p_xi + p_psi).argmax(1, keepdim=True)

    def compute_loss(self, data, target, unlabeled):
        # the whole step is one forward of self.network, so that DDP all-reduces every gradient
        return self.network(data, target, unlabeled, training_pass=self.loss_on_network)

    def theta_forward(self, network: GenericSSLNet, inputs: torch.Tensor):
        """D_θ's training forward on ``inputs``: ``(outputs, aux)``; aux is what :meth:`auxiliary_loss` needs."""
        return network.forward_theta(inputs), None

    def loss_on_network(self, network: GenericSSLNet, data, target, unlabeled):
        """:meth:`compute_loss` on the plain ``network`` (called inside its forward)."""
        self.last_aggregated = network.aggregate_decoders(self.aggregation_momentum)
        image_u = unlabeled["data"]
        labels = full_resolution(target)

        # 1. denoising loss on the labeled batch
        x0 = labels_to_x0(self._diffusion_labels(labels), self.num_classes, dtype=torch.float32)
        t = self.schedule.sample_timesteps(data.shape[0], device=data.device)
        x_t = self.schedule.q_sample(x0, t)
        xi_out = network.forward_xi(x_t, t, data)
        deno = self.loss(xi_out, target)

        # 2. difficulty-weighted supervised loss of D_ψ, weights from D_ξ's labeled prediction
        with torch.no_grad():
            self.difficulty.update_from_labels(full_resolution(xi_out).argmax(1), labels[:, 0],
                                               ignore_index=self.label_manager.ignore_label,
                                               reduce_counts=all_reduce_sum)
        self.difficulty_dice_ce.set_class_weights(self.difficulty.weights)
        psi_out, psi_aux = self.labeled_psi_forward(network, data)
        diff = self.difficulty_loss(psi_out, target)

        # 3./4. pseudo-labels on the unlabeled batch and D_θ's unsupervised loss
        pseudo = self.pseudo_labels(network, image_u)  # before D_θ's forward: its activations are not alive yet
        theta_out, theta_aux = self.theta_forward(network, image_u)
        unsup = self.unlabeled_loss(full_resolution(theta_out), pseudo)

        weight = self.unsupervised_weight * self.rampup()
        aux = None if psi_aux is None else concatenate_aux([psi_aux, theta_aux])
        auxiliary, auxiliary_terms = self.auxiliary_loss(aux, target, data.shape[0])
        terms = {"deno": deno.detach(), "diff": diff.detach(), "unsup": unsup.detach(), "unsup_weight": weight,
                 "difficulty_foreground": float(self.difficulty.weights[1:].mean()), **auxiliary_terms}
        return deno + diff + weight * unsup + auxiliary, terms

    def labeled_psi_forward(self, network: GenericSSLNet, data: torch.Tensor):
        """D_ψ on the labeled batch: ``(outputs, aux)``; aux (None here) carries an add-on's labeled features."""
        return network.forward_psi(data), None

    # ---------------------------------------------------------------------------------------------- checkpoints
    def extra_checkpoint_state(self) -> dict:
        state = super().extra_checkpoint_state()
        state["difficulty"] = self.difficulty.state_dict()
        return state

    def load_extra_checkpoint_state(self, state: dict) -> None:
        super().load_extra_checkpoint_state(state)
        self.difficulty.load_state_dict(state["difficulty"])


# -------------------------------------------------------------------------------------------------- SCDL variant
class nnUNetTrainerSCDL_GenericSSL(SCDLAddon, nnUNetTrainerGenericSSL):
    """GenericSSL with SCDL on D_θ (head injection). D_ψ's labeled tokens give SCDL its ground-truth terms (CDBA on
    labeled tokens, SAC), D_θ's unlabeled tokens its unlabeled terms, through the one SCDL that D_θ's prior comes from.
    Loss = GenericSSL's + SCDLAddon's weighted SCDL terms (ramp = μ(t)/μ_max)."""

    hyperparameters = nnUNetTrainerGenericSSL.hyperparameters + SCDL_HYPERPARAMETERS
    logged_terms = nnUNetTrainerGenericSSL.logged_terms + SCDL_LOGGED_TERMS
    scdl_prior_modes = {"paper": "head", "released": "head"}

    def theta_forward(self, network, inputs: torch.Tensor):
        return network.forward_theta(inputs, return_scdl=True)

    def labeled_psi_forward(self, network, data: torch.Tensor):
        return network.forward_psi(data, return_scdl=True)
