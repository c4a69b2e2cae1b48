"""``nnUNetTrainerSSL``: the base of every semi-supervised trainer in this package.

It keeps nnU-Net's supervised training as it is (plans-generated network, deep supervision, Dice+CE, foreground
oversampling, poly learning rate, checkpoints) and adds what semi-supervised methods share:

- a second data loader that draws patches of the preprocessed unlabeled cases with nnU-Net's own augmentation, in
  background workers (single-threaded when ``nnUNet_n_proc_DA=0``), see
  :mod:`nnunetv2_scdl.data.unlabeled_loader`;
- a training step built around :meth:`nnUNetTrainerSSL.compute_loss`, the one method a subclass must write;
- per-epoch logging of the named loss terms (training log and a fourth panel in ``progress.png``), plus the
  fraction of step time spent waiting for batches;
- extra checkpoint state (``checkpoint['nnunetv2_scdl']``), restored by ``nnUNetv2_train ... --c``;
- an optional separate inference network (e.g. an EMA teacher): whatever :meth:`inference_network` returns is what
  online validation, the final validation and ``checkpoint['network_weights']`` (hence ``nnUNetv2_predict``) use;
- the online pseudo Dice of every other network that learns (:attr:`monitored_networks`: each network of a
  co-training ensemble, the student of an EMA teacher), logged per epoch as ``pseudo_dice_<name>``, so that a
  network stuck on the "everything is background" plateau cannot hide behind its ensemble or its teacher;
- multi-GPU training (``nnUNetv2_train ... -num_gpus N``): per-rank data seeds, buffers synchronised after each step,
  SSL terms averaged over ranks (docs/ddp.md).
"""
import os
from contextlib import contextmanager
from time import perf_counter
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn

from nnunetv2_scdl.data.unlabeled_loader import UnlabeledDataLoader, build_unlabeled_transforms
from nnunetv2_scdl.data.unlabeled_preprocessing import assert_unlabeled_preprocessed, get_unlabeled_folder
from nnunetv2_scdl.networks.scdl_unet import SCDLUNet
from nnunetv2_scdl.scdl.module import no_weight_decay_parameters
from nnunetv2_scdl.training.distributed import all_reduce_sum, gather_objects, rank_seed, synchronise_buffers
from nnunetv2_scdl.training.ema import unwrap_network
from nnunetv2_scdl.training.hyperparameters import ConfigurableHyperparameters, seed_everything
from nnunetv2_scdl.training.progress_logging import SSLLocalLogger, network_dice_key
from nnunetv2_scdl.training.schedules import sigmoid_rampup

#: the counts nnU-Net's validation step returns per foreground class, summed into its pseudo Dice
HARD_COUNTS = ("tp_hard", "fp_hard", "fn_hard")
CHECKPOINT_KEY = "nnunetv2_scdl"
Logits = Union[torch.Tensor, List[torch.Tensor]]


def split_batch(output: Logits, n_first: int) -> Tuple[Logits, Logits]:
    """Split network output (a tensor, or nnU-Net's deep-supervision list) into the first ``n_first`` samples and
    the rest."""
    if isinstance(output, (list, tuple)):
        firsts, rests = zip(*(split_batch(o, n_first) for o in output))
        return list(firsts), list(rests)
    return output[:n_first], output[n_first:]


def full_resolution(output: Logits) -> torch.Tensor:
    """The highest-resolution logits: nnU-Net's deep-supervision list puts them first."""
    return output[0] if isinstance(output, (list, tuple)) else output


class nnUNetTrainerSSL(ConfigurableHyperparameters, nnUNetTrainer):
    """Base class: labeled batch from nnU-Net's loader plus ``unlabeled_batch_ratio`` × as many unlabeled patches.

    Subclasses implement :meth:`compute_loss` and list the names of the terms it returns in ``logged_terms``. With
    ``unlabeled_batch_ratio = 1`` and nnU-Net's planned batch size B, each step sees B labeled and B unlabeled patches
    (the papers use 2 + 2). The planned B was chosen to fit GPU memory for B patches; the student now runs on
    (1 + ratio)·B, so lower the ratio or the plans' batch size if memory is tight.
    """

    hyperparameters = ConfigurableHyperparameters.hyperparameters + ("unlabeled_batch_ratio", "gradient_clip_norm")
    unlabeled_batch_ratio = 1.0
    #: gradient-norm clipping threshold of each of gradient_clip_groups() (nnU-Net: 12); <= 0 switches clipping off
    gradient_clip_norm = 12.0
    #: names of the scalar terms returned by compute_loss, logged per epoch and drawn in progress.png
    logged_terms: Tuple[str, ...] = ("supervised",)
    #: networks besides the inference network whose online pseudo Dice is logged (see :meth:`monitored_network`)
    monitored_networks: Tuple[str, ...] = ()

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.reject_unsupported_setups()
        self.logger.local_logger = SSLLocalLogger()
        self.register_log_keys()
        self.apply_hyperparameters()
        if self.unlabeled_batch_ratio <= 0:
            raise ValueError(f"unlabeled_batch_ratio must be > 0, got {self.unlabeled_batch_ratio}")
        self.dataloader_unlabeled = None
        self.global_iteration = 0  # optimiser steps done, across epochs and resumes; ramps are functions of it
        self._previous_step_end = None
        self._split_keys = None
        self._clip_groups_checked = False

    # ---------------------------------------------------------------------------------------------- setup checks
    def reject_unsupported_setups(self) -> None:
        if self.label_manager.has_regions:
            raise NotImplementedError(f"{type(self).__name__} does not support region-based training: its "
                                      f"pseudo-labels assume one softmax over mutually exclusive classes.")
        if self.is_cascaded:
            raise NotImplementedError(f"{type(self).__name__} does not support the cascade (3d_cascade_fullres): "
                                      f"unlabeled cases have no previous-stage predictions. Train 3d_fullres or "
                                      f"3d_lowres instead.")

    # ---------------------------------------------------------------------------------------------- network
    @classmethod
    def scdl_network_options(cls) -> Optional[dict]:
        """Keyword arguments of ``SCDLUNet`` for the network(s) that carry SCDL; None (here): no SCDL.
        ``SCDLAddon`` returns its variant's options; the hosts wrap their U-Nets through :meth:`attach_scdl`."""
        return None

    @classmethod
    def attach_scdl(cls, network: nn.Module, configuration_manager, num_output_channels: int,
                    rng_stream: int = 0) -> nn.Module:
        """``network`` (a plan-generated U-Net) wrapped in ``SCDLUNet`` when this trainer has SCDL, else itself.
        Give each SCDL of one model its own ``rng_stream`` (co-training: 0 for A, 1 for B)."""
        options = cls.scdl_network_options()
        if options is None:
            return network
        return SCDLUNet(network, num_output_channels, configuration_manager.patch_size, rng_stream=rng_stream,
                        **options)

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        # a classmethod, called exactly like nnU-Net's staticmethod, so that class attributes take effect
        network = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                           num_output_channels, enable_deep_supervision)
        return cls.attach_scdl(network, configuration_manager, num_output_channels)

    @property
    def unlabeled_batch_size(self) -> int:
        return max(1, round(self.batch_size * self.unlabeled_batch_ratio))

    # ---------------------------------------------------------------------------------------------- data
    def do_split(self):
        if self._split_keys is None:
            self._split_keys = super().do_split()
        return self._split_keys

    def unlabeled_identifiers(self, folder: str) -> List[str]:
        """Cases in the preprocessed unlabeled folder that this fold may use.

        A benchmark split (``nnUNetv2_scdl_make_split``) lists the fold's unlabeled cases in ``splits_final.json``;
        then only those are used. Otherwise every preprocessed unlabeled case is. Either way none of them may be a
        training or validation case of the fold.
        """
        available = nnUNetDatasetBlosc2.get_identifiers(folder)
        tr_keys, val_keys = self.do_split()
        identifiers = available
        splits_file = join(self.preprocessed_dataset_folder_base, "splits_final.json")
        if self.fold != "all" and isfile(splits_file):
            splits = load_json(splits_file)
            if self.fold < len(splits) and "unlabeled" in splits[self.fold]:
                wanted = splits[self.fold]["unlabeled"]
                missing = sorted(set(wanted) - set(available))
                if missing:
                    raise FileNotFoundError(
                        f"{splits_file} lists {len(missing)} unlabeled case(s) for fold {self.fold} that are not "
                        f"preprocessed in {folder} (e.g. {missing[:3]}). Run nnUNetv2_scdl_preprocess_unlabeled "
                        f"-d {self.plans_manager.dataset_name} -c {self.configuration_name} "
                        f"-p {self.plans_manager.plans_name} again.")
                identifiers = list(wanted)
        leaked = sorted(set(identifiers) & (set(tr_keys) | set(val_keys)))
        if leaked:
            raise RuntimeError(f"Unlabeled cases {leaked[:5]} are also training/validation cases of fold {self.fold}. "
                               f"An unlabeled case must not be a labeled one: fix splits_final.json or the "
                               f"imagesUnlabeled folder, then rerun nnUNetv2_scdl_preprocess_unlabeled.")
        if not identifiers:
            raise FileNotFoundError(f"No unlabeled cases for fold {self.fold} in {folder}.")
        return identifiers

    def get_unlabeled_dataloader(self):
        folder = get_unlabeled_folder(self.preprocessed_dataset_folder_base, self.configuration_manager.data_identifier)
        assert_unlabeled_preprocessed(folder)
        identifiers = self.unlabeled_identifiers(folder)
        self.print_to_log_file(f"Unlabeled cases: {len(identifiers)} from {folder}; unlabeled batch size "
                               f"{self.unlabeled_batch_size} (labeled: {self.batch_size})")
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        training_transforms = self.get_training_transforms(
            self.configuration_manager.patch_size, rotation, None, mirror_axes, dummy_2d,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm)
        loader = UnlabeledDataLoader(nnUNetDatasetBlosc2(folder, identifiers), self.unlabeled_batch_size,
                                     initial_patch_size, self.configuration_manager.patch_size, self.label_manager,
                                     build_unlabeled_transforms(training_transforms))
        workers = get_allowed_n_proc_DA()
        if workers == 0:
            augmenter = SingleThreadedAugmenter(loader, None)
        else:
            augmenter = NonDetMultiThreadedAugmenter(loader, None, num_processes=workers,
                                                     num_cached=max(6, workers // 2), seeds=None,
                                                     pin_memory=self.device.type == "cuda", wait_time=0.002)
        next(augmenter)  # start the workers now rather than in the first training step
        return augmenter

    def get_dataloaders(self):
        if self.is_ddp and self.seed >= 0:
            # apply_hyperparameters seeded every rank alike (the network is built from it, and DDP broadcasts rank
            # 0's anyway); in-process loaders would then draw the same patches on every rank
            seed_everything(rank_seed(self.seed, self.local_rank))
        dataloaders = super().get_dataloaders()
        self.dataloader_unlabeled = self.get_unlabeled_dataloader()
        return dataloaders

    def on_train_end(self):
        super().on_train_end()
        self.shut_down_unlabeled_loader()

    def shut_down_data_loaders(self) -> None:
        super().shut_down_data_loaders()
        self.shut_down_unlabeled_loader()

    def shut_down_unlabeled_loader(self) -> None:
        if isinstance(self.dataloader_unlabeled, NonDetMultiThreadedAugmenter):
            self.dataloader_unlabeled._finish()
        self.dataloader_unlabeled = None

    # ---------------------------------------------------------------------------------------------- training step
    def compute_loss(self, data: torch.Tensor, target: Logits, unlabeled: Dict[str, torch.Tensor]
                     ) -> Tuple[torch.Tensor, Dict[str, Union[float, torch.Tensor]]]:
        """Return the total loss and the named terms listed in ``logged_terms``.

        ``data``/``target`` are nnU-Net's labeled batch (target is a deep-supervision list when DS is on);
        ``unlabeled`` has ``data`` (student view) and ``teacher_data`` (same patch without photometric
        augmentation), already on the device. Runs under nnU-Net's autocast.
        """
        raise NotImplementedError

    def rampup(self) -> float:
        """The method's ramp-up factor in [0, 1] for terms that trust the model's own predictions (1 = no ramp)."""
        return 1.0

    def whole_run_rampup(self) -> float:
        """sigmoid_rampup(t, T) with t = ``global_iteration`` and T = all iterations of the run: the ramp of the
        co-training papers and GenericSSL, whose ramps span the whole run."""
        return sigmoid_rampup(self.global_iteration, self.num_epochs * self.num_iterations_per_epoch)

    def deep_supervision_weights(self) -> Optional[np.ndarray]:
        """nnU-Net's DS weights (``nnUNetTrainer._build_loss``): 1/2^i per scale, the lowest set to 0 (1e-6 under
        multi-GPU training, where DDP needs a gradient for every parameter), normalised; None without deep
        supervision."""
        if not self.enable_deep_supervision:
            return None
        weights = np.array([1 / (2 ** i) for i in range(len(self._get_deep_supervision_scales()))])
        weights[-1] = 1e-6 if self.is_ddp else 0
        return weights / weights.sum()

    def _build_loss(self):
        # nnU-Net's loss with our DS weights: nnU-Net keeps the lowest weight 0 under DDP with torch.compile, but the
        # training passes of GA-MagicNet and GenericSSL run uncompiled, where DDP needs that head's gradient
        loss = super()._build_loss()
        if isinstance(loss, DeepSupervisionWrapper):
            loss.weight_factors = tuple(self.deep_supervision_weights())
        return loss

    def wrap_deep_supervision(self, loss: nn.Module) -> nn.Module:
        """``loss`` under nnU-Net's ``DeepSupervisionWrapper`` with :meth:`deep_supervision_weights` (itself when DS
        is off)."""
        weights = self.deep_supervision_weights()
        return loss if weights is None else DeepSupervisionWrapper(loss, weights)

    def forward_student(self, inputs: torch.Tensor) -> Tuple[Logits, object]:
        """The training network's forward on a batch: ``(outputs, aux)``. ``aux`` is whatever
        :meth:`auxiliary_loss` needs (None here); add-ons such as SCDL override both."""
        return self.network(inputs), None

    def auxiliary_loss(self, aux, target: Logits, n_labeled: int) -> Tuple[Union[float, torch.Tensor], dict]:
        """Loss terms an add-on (e.g. SCDL) puts on top of the host method: ``(weighted sum, named terms)``."""
        return 0.0, {}

    def optimizer_parameter_groups(self, weight_decay: float) -> List[dict]:
        """The network's parameters as optimiser groups: SCDL's distribution parameters (μ, ρ, σ_emb) without weight
        decay, everything else with ``weight_decay``."""
        exempt = {id(p) for p in no_weight_decay_parameters(self.network)}
        parameters = list(self.network.parameters())
        groups = [{"params": [p for p in parameters if id(p) not in exempt], "weight_decay": weight_decay}]
        if exempt:
            groups.append({"params": [p for p in parameters if id(p) in exempt], "weight_decay": 0.0})
        return groups

    def configure_optimizers(self):
        """nnU-Net's SGD and poly schedule, with the parameter groups of :meth:`optimizer_parameter_groups`."""
        optimizer = torch.optim.SGD(self.optimizer_parameter_groups(self.weight_decay), self.initial_lr,
                                    momentum=0.99, nesterov=True)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def autocast(self):
        # as nnU-Net: autocast on CUDA only (slow on CPU, unsupported on MPS)
        return autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def gradient_clip_groups(self) -> List[List[nn.Parameter]]:
        """The parameter groups whose gradient norms are clipped separately, each at ``gradient_clip_norm``.

        One group, the whole network, as nnU-Net does. Trainers that hold several networks in ``self.network`` (two
        co-training nets, a U-Net and a location head) return one group per network, so that one network's large
        gradients do not shrink another's step. Every parameter of ``self.network`` must be in exactly one group.
        """
        return [list(self.network.parameters())]

    def clip_gradients(self) -> None:
        """Clip the gradient norm of each of :meth:`gradient_clip_groups` at ``gradient_clip_norm`` (<= 0: none)."""
        if self.gradient_clip_norm <= 0:
            return
        groups = self.gradient_clip_groups()
        if not self._clip_groups_checked:
            self._check_clip_groups(groups)
        for group in groups:
            torch.nn.utils.clip_grad_norm_(group, self.gradient_clip_norm)

    def _check_clip_groups(self, groups: List[List[nn.Parameter]]) -> None:
        grouped = [id(p) for group in groups for p in group]
        network = {id(p) for p in self.network.parameters()}
        if len(grouped) != len(set(grouped)) or set(grouped) != network:
            raise RuntimeError(f"{type(self).__name__}.gradient_clip_groups() must put every parameter of "
                               f"self.network in exactly one group; it lists {len(grouped)} parameters "
                               f"({len(set(grouped))} distinct, {len(set(grouped) - network)} not in the network) for "
                               f"a network of {len(network)}.")
        self._clip_groups_checked = True

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward pass, gradient clipping (:meth:`clip_gradients`) and optimiser step, with AMP scaling on CUDA (as
        nnU-Net: the gradients are unscaled before they are clipped)."""
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            self.clip_gradients()
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            self.clip_gradients()
            self.optimizer.step()

    def after_optimizer_step(self) -> None:
        """Hook after each optimiser step (EMA updates etc.); ``global_iteration`` already counts this step."""

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._previous_step_end = perf_counter()

    def train_step(self, batch: dict) -> dict:
        # the labeled batch was fetched by nnU-Net's loop between the previous step and this one
        started = perf_counter()
        unlabeled = next(self.dataloader_unlabeled)
        fetched = perf_counter()
        previous_end = self._previous_step_end if self._previous_step_end is not None else started
        waited = (started - previous_end) + (fetched - started)

        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        unlabeled = {k: unlabeled[k].to(self.device, non_blocking=True) for k in ("data", "teacher_data")}

        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, terms = self.compute_loss(data, target, unlabeled)
        self.optimizer_step(loss)
        self.global_iteration += 1
        if self.is_ddp:
            # gradients are all-reduced, so the weights agree; buffers (BatchNorm statistics) are per rank until
            # DDP's next forward broadcasts rank 0's. Agree now, before an EMA teacher copies them.
            synchronise_buffers(unwrap_network(self.network))
        self.after_optimizer_step()

        ended = perf_counter()
        cycle = ended - previous_end
        self._previous_step_end = ended
        outputs = {name: float(value) for name, value in terms.items()}
        outputs.update(loss=loss.detach().cpu().numpy(), data_wait_s=waited, step_s=cycle)
        return outputs

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        # as nnU-Net's own loss: every rank's steps count (one list per rank under DDP)
        local = {"terms": {name: [float(o[name]) for o in train_outputs if name in o] for name in self.logged_terms},
                 "data_wait_s": sum(o["data_wait_s"] for o in train_outputs),
                 "step_s": sum(o["step_s"] for o in train_outputs)}
        ranks = gather_objects(local)
        summary = []
        for name in self.logged_terms:
            values = [value for rank in ranks for value in rank["terms"][name]]
            value = float(np.mean(values)) if values else float("nan")
            self.logger.log(name, value, self.current_epoch)
            summary.append(f"{name} {value:.4g}")
        wait_fraction = sum(r["data_wait_s"] for r in ranks) / max(sum(r["step_s"] for r in ranks), 1e-12)
        self.logger.log("data_wait_fraction", wait_fraction, self.current_epoch)
        self.print_to_log_file("ssl terms: " + ", ".join(summary))
        self.print_to_log_file(f"waiting for batches: {100 * wait_fraction:.1f}% of step time")

    # ---------------------------------------------------------------------------------------------- inference net
    def inference_network(self) -> nn.Module:
        """The module whose weights inference should use; saved as ``checkpoint['network_weights']``."""
        return unwrap_network(self.network)

    @contextmanager
    def evaluating_inference_network(self):
        """Temporarily make :meth:`inference_network` ``self.network``, so nnU-Net's validation code evaluates it."""
        inference = self.inference_network()
        if inference is unwrap_network(self.network):
            yield
            return
        with self.evaluating(inference):
            yield

    def monitored_network(self, name: str) -> nn.Module:
        """The network ``name`` of :attr:`monitored_networks` (in eval mode during validation, like the others)."""
        raise NotImplementedError(f"{type(self).__name__} lists {name!r} in monitored_networks but does not "
                                  f"implement monitored_network.")

    @contextmanager
    def evaluating(self, network: nn.Module):
        """Temporarily make ``network`` ``self.network``, so nnU-Net's validation code evaluates it."""
        current, self.network = self.network, network
        try:
            yield
        finally:
            self.network = current

    def validation_step(self, batch: dict) -> dict:
        """nnU-Net's validation step of the inference network, plus, for each monitored network, its hard
        true/false positive/negative counts under ``<name>:tp_hard`` etc. (one more forward per network)."""
        outputs = {}
        for name in self.monitored_networks:
            # nnU-Net's step zeroes the ignore label of the target in place: each pass gets its own copy
            target = batch["target"]
            copy = dict(batch, target=[t.clone() for t in target] if isinstance(target, list) else target.clone())
            with self.evaluating(self.monitored_network(name)):
                counts = super().validation_step(copy)
            outputs.update({f"{name}:{key}": counts[key] for key in HARD_COUNTS})
        with self.evaluating_inference_network():
            outputs.update(super().validation_step(batch))
        return outputs

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        network_dice = {name: self.monitored_pseudo_dice(val_outputs, name) for name in self.monitored_networks}
        super().on_validation_epoch_end(val_outputs)
        for name, dice in network_dice.items():
            self.logger.log(network_dice_key(name), dice, self.current_epoch)
            self.print_to_log_file(f"Pseudo dice {name}", [round(d, 4) for d in dice])

    def monitored_pseudo_dice(self, val_outputs: List[dict], name: str) -> List[float]:
        """Per foreground class, 2·TP / (2·TP + FP + FN) of network ``name`` over the epoch's validation batches
        (and ranks), as nnU-Net computes its own pseudo Dice; NaN for a class absent from prediction and target."""
        tp, fp, fn = (all_reduce_sum(torch.as_tensor(np.sum([o[f"{name}:{key}"] for o in val_outputs], axis=0),
                                                     dtype=torch.float64)).numpy() for key in HARD_COUNTS)
        with np.errstate(divide="ignore", invalid="ignore"):
            return [float(d) for d in 2 * tp / (2 * tp + fp + fn)]

    def register_log_keys(self) -> None:
        self.logger.local_logger.register(self.logged_terms + ("data_wait_fraction",) +
                                          tuple(network_dice_key(name) for name in self.monitored_networks))

    def perform_actual_validation(self, save_probabilities: bool = False):
        with self.evaluating_inference_network():
            super().perform_actual_validation(save_probabilities)

    # ---------------------------------------------------------------------------------------------- checkpoints
    def extra_checkpoint_state(self) -> dict:
        """State beyond nnU-Net's (teacher, second network, running weights, counters). Extend with super()."""
        state = {"global_iteration": self.global_iteration,
                 "hyperparameters": {name: value for name, (value, _) in self.resolved_hyperparameters.items()}}
        training_network = unwrap_network(self.network)
        if self.inference_network() is not training_network:
            # network_weights holds the inference network; resuming needs the trained one too
            state["training_network_weights"] = training_network.state_dict()
        return state

    def load_extra_checkpoint_state(self, state: dict) -> None:
        """Restore the state; hyperparameters are not state: the values resolved now (class attributes and
        ``SCDL_*`` variables) apply, and those that differ from the checkpoint's are printed to the log."""
        self.global_iteration = state["global_iteration"]
        self.report_changed_hyperparameters(state["hyperparameters"])
        if "training_network_weights" in state:
            unwrap_network(self.network).load_state_dict(state["training_network_weights"])

    def report_changed_hyperparameters(self, saved: Dict[str, object]) -> None:
        for name, (value, source) in self.resolved_hyperparameters.items():
            if name in saved and saved[name] != value and name != "stop_after_epochs":  # not a setting of the run
                self.print_to_log_file(f"Resuming with {name} = {value!r} ({source}); the checkpoint was trained "
                                       f"with {saved[name]!r}.")

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus our state, written to a temporary file in the same folder and then renamed
        over ``filename`` (``os.replace``): a crash while writing leaves the previous checkpoint as it was."""
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)
            return
        folder, name = os.path.split(os.path.abspath(filename))
        temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")  # same file system: the rename is atomic
        try:
            # nnU-Net builds and writes its checkpoint dict in one go; add our state to the file it wrote
            super().save_checkpoint(temporary)
            checkpoint = torch.load(temporary, map_location="cpu", weights_only=False)
            checkpoint["network_weights"] = self.inference_network().state_dict()
            checkpoint[CHECKPOINT_KEY] = self.extra_checkpoint_state()
            torch.save(checkpoint, temporary)
            os.replace(temporary, filename)
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        checkpoint = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
            torch.load(filename_or_checkpoint, map_location=self.device, weights_only=False)
        if CHECKPOINT_KEY not in checkpoint:
            raise RuntimeError(f"This checkpoint has no '{CHECKPOINT_KEY}' state, so it was not written by an "
                               f"nnunetv2_scdl semi-supervised trainer and {type(self).__name__} cannot resume it. "
                               f"To start from its weights use nnUNetv2_train ... -pretrained_weights instead.")
        self.register_log_keys()
        inference = self.inference_network()
        training_network = unwrap_network(self.network)
        if inference is not training_network:
            # nnU-Net just loaded network_weights, the inference network's, into the training network: move them
            # to where they belong; load_extra_checkpoint_state then restores the training network's own weights
            inference.load_state_dict(training_network.state_dict())
        self.load_extra_checkpoint_state(checkpoint[CHECKPOINT_KEY])
