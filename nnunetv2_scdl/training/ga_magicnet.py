"""GA-MagicNet (MagicNet, CVPR'23, with GALoss' gradient-aware losses) on nnU-Net v2. See docs/magicnet.md.

Per step, with x = cat(x_l, x_u) (B_l labeled + B_u unlabeled patches), K magic cubes per patch (``CubeGrid``) and
the student S = plan U-Net (or ``SCDLUNet``) + a location head on each cube's bottleneck:

1. main:  outputs = S(x) (deep-supervision list);
2. cross-image partition/recovery: cube k of mixed image b comes from image π_k[b] (independent random permutations
   per cube position); the student's full-resolution decoder feature F of the mixed batch is unmixed with π⁻¹ and
   the segmentation head is applied → ``unmix`` logits;
3. teacher (EMA of the student, α = min(1 − 1/(t+1), ema_decay)) on x_u + clamp(N(0, σ²), ±2σ) → logits, ŷ_T;
4. location: each patch's K cubes go through the encoder; the location head predicts each cube's position
   (cross-entropy against ``location_labels``);
5. within-image recovery: the cubes' encoder outputs are decoded cube by cube, the features reassembled
   (``recover_cubes``) and the head applied → ``within`` logits;
6. cube-wise pseudo-label blending (after ``blend_start_iteration`` steps): d = class frequency h of the pseudo-labels
   counted since the previous recount (h^{1/T} normalised, divided by its max), recounted every
   ``blend_update_every`` steps; ω = d[ŷ_T] per voxel; ŷ = argmax((1 − ω)·teacher + ω·cube-wise logits). As in the
   released code, h counts the teacher's labels ŷ_T before blending starts and the blended labels ŷ after;
7. L = [DS(GACE_k + GADice)(outputs_l, y) + GADice(unmix_l, y) + GADice(within_l, y)] / 4
       + location_weight·L_loc + w_c(t)·GADice(unmix_u, ŷ)  [+ SCDL terms],
   w_c(t) = consistency_weight·sigmoid_rampup(t, T), T = ``consistency_rampup_iterations`` or the whole run.

``faithful`` (default False) switches to the released code's behaviour: the within-image recovery reads
the cube list in the transposed order (``recover_cubes(faithful=True)``), and the blend uses the **student's**
cube-wise logits of the first B_u images of the batch (the labeled ones) instead of the teacher's cube-wise
prediction of the unlabeled images. Corrected mode uses the exact inverse and the teacher on the unlabeled cubes.

Inference (online validation, ``checkpoint['network_weights']``, ``nnUNetv2_predict``) uses the teacher. The network
is a :class:`~nnunetv2_scdl.networks.magic_cube_network.MagicCubeNetwork`: its ``forward(x)`` is the plain
segmentation forward, so the stock predictor works. User documentation: docs/magicnet.md.
"""
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_scdl.losses import GADiceLoss
from nnunetv2_scdl.networks.magic_cube_network import (MagicCubeNetwork, build_magic_cube_network,
                                                       cube_grid_from_configuration)
from nnunetv2_scdl.networks.magic_cubes import (location_labels, mix_cubes_across_images, partition_cubes,
                                                random_cube_permutations, recover_cubes, unmix_cubes_across_images)
from nnunetv2_scdl.training.co_training import IterationPolyLR, PaperOptimiser
from nnunetv2_scdl.training.distributed import all_reduce_sum
from nnunetv2_scdl.training.ema import TEACHER_HYPERPARAMETERS, EMATeacherMixin, unwrap_network
from nnunetv2_scdl.training.ga_cps import GASupervisedLoss
from nnunetv2_scdl.training.schedules import sigmoid_rampup
from nnunetv2_scdl.training.scdl_addon import SCDL_HYPERPARAMETERS, SCDL_LOGGED_TERMS, SCDLAddon
from nnunetv2_scdl.training.ssl_base import full_resolution, nnUNetTrainerSSL, split_batch

__all__ = ["blend_distribution", "nnUNetTrainerGAMagicNet", "nnUNetTrainerSCDL_GAMagicNet",
           "nnUNetTrainerGAMagicNet_paper", "nnUNetTrainerSCDL_GAMagicNet_paper"]


def blend_distribution(class_counts: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """MagicNet's class-frequency weights: d = h^{1/T} / Σ h^{1/T}, then d / max d (the most frequent class gets 1,
    absent classes 0). All zeros when nothing has been counted yet."""
    counts = class_counts.double().clamp_min(0)
    if counts.sum() <= 0:
        return torch.zeros_like(counts, dtype=torch.float32)
    powered = counts ** (1.0 / temperature)
    distribution = powered / powered.sum()
    return (distribution / distribution.max()).float()


class nnUNetTrainerGAMagicNet(EMATeacherMixin, nnUNetTrainerSSL):
    """GA-MagicNet; see the module docstring for the loss.

    Hyperparameters (class attributes, env ``SCDL_<NAME>``): ``ema_decay`` 0.99, ``teacher_input_noise`` 0.1 (σ; the
    noise is clamped to ±2σ), ``location_weight`` 0.1, ``consistency_weight`` 0.1, ``consistency_rampup_iterations``
    0 (0 = the whole run; the released GA code used 70 000), ``consistency_rampup_step`` 1 (the ramp advances every
    that many iterations: w_c = weight·sigmoid_rampup(⌊t/step⌋, T/step); the released code used 350), ``ga_k`` 10
    (% of voxels GACE keeps), ``ga_gamma`` 0.5, ``blend_start_iteration`` 100, ``blend_update_every`` 20,
    ``blend_temperature`` 1.0, ``faithful`` False.

    Architecture options (class attributes only; ``nnUNetv2_predict`` rebuilds the network from the class):
    ``cube_size`` (None = ``CubeGrid.from_plan``'s default: 32 per axis where valid, else ~3 cubes per axis; an int
    or a per-axis tuple), ``location_hidden_features`` (4096, MagicNet's FcLayer width) and ``location_stage`` (the
    encoder stage the location head reads; None = the deepest stage at which a cube spans at least 2 voxels along
    every axis, which is the bottleneck for MagicNet's own cubes; -1 = the bottleneck, as in the released code).
    """

    hyperparameters = nnUNetTrainerSSL.hyperparameters + TEACHER_HYPERPARAMETERS + (
        "location_weight", "consistency_weight", "consistency_rampup_iterations",
        "consistency_rampup_step", "ga_k", "ga_gamma", "blend_start_iteration", "blend_update_every",
        "blend_temperature", "faithful")
    teacher_input_noise = 0.1
    location_weight = 0.1
    consistency_weight = 0.1
    consistency_rampup_iterations = 0
    consistency_rampup_step = 1
    ga_k = 10.0
    ga_gamma = 0.5
    blend_start_iteration = 100
    blend_update_every = 20
    blend_temperature = 1.0
    faithful = False

    cube_size: Optional[Union[int, Tuple[int, ...]]] = None
    location_hidden_features = 4096
    location_stage: Optional[int] = None

    logged_terms = ("supervised", "supervised_main", "dice_unmix", "dice_within", "location", "location_accuracy",
                    "consistency", "consistency_weight", "blend_fraction")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.ga_k <= 0 or self.ga_k > 100:
            raise ValueError(f"ga_k is a percentage in (0, 100], got {self.ga_k}")
        if self.consistency_rampup_step < 1:
            raise ValueError(f"consistency_rampup_step must be >= 1, got {self.consistency_rampup_step}")
        if self.blend_update_every < 1:
            raise ValueError(f"blend_update_every must be >= 1, got {self.blend_update_every}")
        if self.blend_temperature <= 0:
            raise ValueError(f"blend_temperature must be > 0, got {self.blend_temperature}")
        self.cube_grid = cube_grid_from_configuration(self.configuration_manager, self.cube_size)
        num_classes = self.label_manager.num_segmentation_heads
        self.class_counts = torch.zeros(num_classes, dtype=torch.float64)  # pseudo-labels since the last recount
        self.class_distribution = torch.zeros(num_classes)  # d, recounted every blend_update_every steps
        self.supervised_loss = self.dice_loss = self.consistency_loss = None

    # ---------------------------------------------------------------------------------------------- network
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        # a classmethod, called exactly like nnU-Net's staticmethod, so that the class attributes take effect
        return build_magic_cube_network(
            configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision, cls.cube_size,
            cls.location_hidden_features, cls.location_stage,
            lambda segmenter: cls.attach_scdl(segmenter, configuration_manager, num_output_channels))

    def initialize(self):
        super().initialize()
        network = unwrap_network(self.network)
        self.print_to_log_file(f"GA-MagicNet cubes: patch {list(self.cube_grid.patch_size)} → cube "
                               f"{list(self.cube_grid.cube_size)}, grid {list(self.cube_grid.grid)} "
                               f"({self.cube_grid.n_cubes} cubes), location head on encoder stage "
                               f"{network.location_stage} (a cube is "
                               f"{'×'.join(map(str, network.location_feature_size))} there), "
                               f"faithful={self.faithful}")
        ignore = self.label_manager.ignore_label
        self.supervised_loss = self.wrap_deep_supervision(GASupervisedLoss(self.ga_k, self.ga_gamma, ignore))
        self.dice_loss = GADiceLoss(softmax=True, ignore_index=ignore)
        self.consistency_loss = GADiceLoss(softmax=True)

    def gradient_clip_groups(self):
        """The U-Net (with SCDL in the SCDL variant) and the location head are clipped separately: the head's
        4096-wide layers must not shrink the U-Net's step."""
        network = unwrap_network(self.network)
        return [list(network.segmenter.parameters()), list(network.location_head.parameters())]

    # ---------------------------------------------------------------------------------------------- schedules
    def rampup(self) -> float:
        """sigmoid_rampup(⌊t/step⌋, T/step), T = ``consistency_rampup_iterations`` (0: all iterations of the run),
        step = ``consistency_rampup_step``."""
        length = self.consistency_rampup_iterations or self.num_epochs * self.num_iterations_per_epoch
        step = self.consistency_rampup_step
        return sigmoid_rampup(self.global_iteration // step, length / step)

    def update_class_distribution(self, pseudo_label: torch.Tensor) -> None:
        """Count this step's pseudo-labels (the ones the consistency loss uses; under multi-GPU training those of
        every rank); every ``blend_update_every`` steps (iteration 0 included) set d from the counts since the
        previous recount and clear them, as the released code does (d then follows the last ``blend_update_every``
        steps' labels, not the whole run's)."""
        counts = torch.bincount(pseudo_label.reshape(-1), minlength=self.class_counts.numel())
        self.class_counts += all_reduce_sum(counts.to(torch.float64)).cpu()
        if self.global_iteration % self.blend_update_every == 0:
            self.class_distribution = blend_distribution(self.class_counts, self.blend_temperature)
            self.class_counts.zero_()

    # ---------------------------------------------------------------------------------------------- steps
    def within_image_logits(self, network: MagicCubeNetwork, skips: List[torch.Tensor]) -> torch.Tensor:
        """Decode every cube on its own, reassemble F (``recover_cubes``, faithful or exact) and apply the head."""
        cube_features = network.decode(skips)[-1]
        return network.full_resolution_head(recover_cubes(cube_features, self.cube_grid, faithful=self.faithful))

    def compute_loss(self, data, target, unlabeled):
        # the whole step is one forward of self.network, so that DDP all-reduces every gradient
        return self.network(data, target, unlabeled, training_pass=self.loss_on_network)

    def loss_on_network(self, network: MagicCubeNetwork, data, target, unlabeled):
        """:meth:`compute_loss` on the plain ``network`` (called inside its forward)."""
        grid = self.cube_grid
        n_labeled, n_unlabeled = data.shape[0], unlabeled["data"].shape[0]
        x = torch.cat((data, unlabeled["data"]))
        n_images = x.shape[0]
        labels = full_resolution(target)

        # 1 + 2. main and cross-image-mixed batches in one pass (instance norm: images do not interact)
        perms = random_cube_permutations(n_images, grid.n_cubes, device=x.device)
        features = network.features(torch.cat((x, mix_cubes_across_images(x, grid, perms))))
        main_features = [f[:n_images] for f in features]
        outputs, aux = network.heads(main_features, return_scdl=True)
        unmixed = unmix_cubes_across_images(features[-1][n_images:], grid, perms)
        unmix_logits = network.full_resolution_head(unmixed)

        # 4 + 5. location reasoning and within-image recovery share the cubes' encoder pass
        cube_skips = network.encoder(partition_cubes(x, grid))
        location_logits = network.locate(cube_skips, n_images)
        location_targets = location_labels(grid, n_images, device=x.device)
        location = F.cross_entropy(location_logits.float(), location_targets)
        within_logits = self.within_image_logits(network, cube_skips)

        # 3 + 6. teacher pseudo-labels, blended with cube-wise predictions once the teacher has warmed up
        with torch.no_grad():
            teacher_input = self.teacher_view(unlabeled["teacher_data"])
            teacher_logits = full_resolution(self.teacher(teacher_input)).float()
            pseudo_label = teacher_logits.argmax(1, keepdim=True)
            blend_fraction = 0.0
            if self.global_iteration > self.blend_start_iteration:
                if self.faithful:  # released code: the student's cube-wise logits of the first B_u batch images
                    cube_logits = within_logits[:n_unlabeled].detach().float()
                else:  # the teacher's cube-wise prediction of the unlabeled images themselves
                    teacher_net = self.teacher.module
                    cube_skips_u = teacher_net.encoder(partition_cubes(teacher_input, grid))
                    cube_logits = self.within_image_logits(teacher_net, cube_skips_u).float()
                omega = self.class_distribution.to(x.device)[pseudo_label]
                pseudo_label = ((1 - omega) * teacher_logits + omega * cube_logits).argmax(1, keepdim=True)
                blend_fraction = float(omega.mean())
            self.update_class_distribution(pseudo_label)  # after blending: this step used the previous d

        # 7. losses
        labeled_outputs, _ = split_batch(outputs, n_labeled)
        supervised_main = self.supervised_loss(labeled_outputs, target)
        dice_unmix = self.dice_loss(unmix_logits[:n_labeled], labels)
        dice_within = self.dice_loss(within_logits[:n_labeled], labels)
        supervised = (supervised_main + dice_unmix + dice_within) / 4
        consistency = self.consistency_loss(unmix_logits[n_labeled:], pseudo_label)
        weight = self.consistency_weight * self.rampup()
        auxiliary, auxiliary_terms = self.auxiliary_loss(aux, target, n_labeled)
        total = supervised + self.location_weight * location + weight * consistency + auxiliary
        with torch.no_grad():
            location_accuracy = (location_logits.argmax(1) == location_targets).float().mean()
        terms = {"supervised": supervised.detach(), "supervised_main": supervised_main.detach(),
                 "dice_unmix": dice_unmix.detach(), "dice_within": dice_within.detach(),
                 "location": location.detach(), "location_accuracy": location_accuracy,
                 "consistency": consistency.detach(), "consistency_weight": weight,
                 "blend_fraction": blend_fraction, **auxiliary_terms}
        return total, terms

    # ---------------------------------------------------------------------------------------------- checkpoints
    def extra_checkpoint_state(self) -> dict:
        state = super().extra_checkpoint_state()
        state["magicnet_class_counts"] = self.class_counts.clone()
        state["magicnet_class_distribution"] = self.class_distribution.clone()
        return state

    def load_extra_checkpoint_state(self, state: dict) -> None:
        super().load_extra_checkpoint_state(state)
        self.class_counts = state["magicnet_class_counts"].detach().to("cpu", torch.float64).clone()
        self.class_distribution = state["magicnet_class_distribution"].detach().to("cpu").float().clone()


class nnUNetTrainerSCDL_GAMagicNet(SCDLAddon, nnUNetTrainerGAMagicNet):
    """GA-MagicNet with SCDL: the segmenter is an ``SCDLUNet`` (decoder tokens) whose prior is injected at the head
    (``scdl_prior_modes``: "head" in both variants, the released Synapse GA-MagicNet path) on every path that applies the head (main,
    cross-image unmix, within-image unmix; each with the prior of the feature it receives); the teacher's
    pseudo-labels come from its own prior-injected forward. SCDL losses (weights as ``SCDLAddon``) come from the
    main path only."""

    hyperparameters = nnUNetTrainerGAMagicNet.hyperparameters + SCDL_HYPERPARAMETERS
    logged_terms = nnUNetTrainerGAMagicNet.logged_terms + SCDL_LOGGED_TERMS
    scdl_prior_modes = {"paper": "head", "released": "head"}

    def auxiliary_loss(self, aux, target, n_labeled: int):
        loss, terms = self.scdl_loss(unwrap_network(self.network).segmenter, aux, target, n_labeled)
        return loss, {f"scdl_{name}": value.detach() for name, value in terms.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Paper option
# ---------------------------------------------------------------------------------------------------------------------
class GAMagicNetPaperSchedule(PaperOptimiser):
    """GALoss' MagicNet optimisation: SGD lr 0.01, momentum 0.9, wd 1e-4, poly 0.9 per iteration,
    17 000 iterations (68 epochs × 250), with the two constants the released code kept from MagicNet's 70 000-iteration
    run: the poly horizon (lr ends at ≈0.78× base) and the consistency ramp sigmoid_rampup(⌊t/350⌋, 200), so w_c never
    exceeds ≈0.0056. Combine with ``faithful = True`` for the released within-image recovery and blend as well."""

    num_epochs = 68
    num_iterations_per_epoch = 250
    paper_lr_horizon = 70000  # iterations of the poly schedule (the released code's constant, not the run length)
    consistency_rampup_iterations = 70000
    consistency_rampup_step = 350

    def configure_optimizers(self):
        optimizer, _ = super().configure_optimizers()
        scheduler = IterationPolyLR(optimizer, self.paper_lr, lambda: self.paper_lr_horizon,
                                    lambda: self.global_iteration, self.paper_poly_exponent)
        return optimizer, scheduler


class nnUNetTrainerGAMagicNet_paper(GAMagicNetPaperSchedule, nnUNetTrainerGAMagicNet):
    pass


class nnUNetTrainerSCDL_GAMagicNet_paper(GAMagicNetPaperSchedule, nnUNetTrainerSCDL_GAMagicNet):
    pass
