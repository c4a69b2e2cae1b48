"""Trainer hyperparameters as class attributes, overridable by environment variables and printed to the log.

nnU-Net configures trainers by subclassing (``nnUNetTrainer_5epochs`` only changes ``num_epochs``). We keep that idiom:
every tunable value is a class attribute listed in ``hyperparameters``. For quick experiments without a new class,
``SCDL_<NAME>`` (the attribute name in upper case) overrides it, e.g. ``SCDL_NUM_ITERATIONS_PER_EPOCH=5``.
"""
import os
import random
from typing import Any, Dict, Tuple

import numpy as np
import torch

ENV_PREFIX = "SCDL_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_name(attribute: str) -> str:
    """The environment variable that overrides ``attribute``: ``num_epochs`` → ``SCDL_NUM_EPOCHS``."""
    return ENV_PREFIX + attribute.upper()


def parse_like(default: Any, text: str, variable: str) -> Any:
    """Parse ``text`` into the type of ``default`` (bool, int, float or str); ``None`` defaults accept a number."""
    text = text.strip()
    try:
        if isinstance(default, bool):
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float) or default is None:
            return float(text)
        return text
    except ValueError:
        expected = "bool (1/0/true/false)" if isinstance(default, bool) else \
            "number" if default is None else type(default).__name__
        raise ValueError(f"Environment variable {variable}={text!r} is not a valid {expected}.") from None


def set_convolution_layout(module: torch.nn.Module, channels_last: bool) -> int:
    """Put every 4-D and 5-D parameter of ``module`` in channels-last layout (``channels_last`` /
    ``channels_last_3d``), or back to the default contiguous layout, in place (``.data``: the parameter objects, and
    so an optimiser's references to them, stay). Returns the number of parameters set."""
    layouts = {4: torch.channels_last, 5: torch.channels_last_3d}
    count = 0
    for parameter in module.parameters():
        if parameter.dim() in layouts:
            layout = layouts[parameter.dim()] if channels_last else torch.contiguous_format
            parameter.data = parameter.data.contiguous(memory_format=layout)
            count += 1
    return count


class ConfigurableHyperparameters:
    """Mixin for nnUNetTrainer subclasses: resolves ``hyperparameters`` from class attributes and ``SCDL_*`` env vars.

    Call :meth:`apply_hyperparameters` at the end of ``__init__``. It sets each value on the instance (so the class
    attribute wins over the instance attributes nnU-Net's ``__init__`` assigns, e.g. ``num_epochs``) and returns the
    resolved values with their source.
    """

    #: names of the class attributes that are hyperparameters; subclasses extend the tuple
    hyperparameters: Tuple[str, ...] = ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch",
                                        "save_every", "seed", "final_validation", "stop_after_epochs",
                                        "cpu_channels_last")

    # nnU-Net's defaults, as class attributes so that ``_Xepochs`` variants can override them in one line
    num_epochs = 1000
    num_iterations_per_epoch = 250
    num_val_iterations_per_epoch = 50
    save_every = 50  # epochs between checkpoint_latest.pth writes
    #: seeds Python, NumPy and torch before the network is built; negative: unseeded, as in nnU-Net
    seed = -1
    #: nnU-Net's sliding-window validation of the fold's validation cases after training. Benchmarks that predict
    #: those cases with nnUNetv2_predict anyway switch it off (SCDL_FINAL_VALIDATION=0) to save the time.
    final_validation = True
    #: end the invocation once this many epochs of the run are done, with checkpoint_latest.pth written and the
    #: learning rate still on the schedule of num_epochs (an invocation that starts there trains nothing);
    #: ``nnUNetv2_train --c`` with a larger value, or 0, continues the run. For a run trained in stretches, or a
    #: probe of a run's first epochs. 0: train to the end.
    stop_after_epochs = 0
    #: on the CPU, keep the convolution weights in channels-last layout (``channels_last_3d`` for 3-D convs), in
    #: which oneDNN's convolutions make a training step 19-26 % cheaper (benchmarks/cpu_memory_format.py); the
    #: results equal the contiguous layout's up to floating-point rounding. Loading and prediction do not depend on
    #: the layout of the saved weights.
    cpu_channels_last = True

    def apply_hyperparameters(self) -> Dict[str, Tuple[Any, str]]:
        """Resolve, set, print to the training log and return ``{name: (value, source)}``."""
        resolved = {}
        for name in self.hyperparameters:
            default = getattr(type(self), name)
            variable = env_name(name)
            if os.environ.get(variable, "").strip():
                value, source = parse_like(default, os.environ[variable], variable), f"env {variable}"
            else:
                value, source = default, "class attribute"
            setattr(self, name, value)
            resolved[name] = (value, source)
        self.resolved_hyperparameters = resolved
        self.print_to_log_file(self.hyperparameter_report(), add_timestamp=False)
        if self.seed >= 0:
            seed_everything(self.seed)
        self.apply_cpu_thread_limit()
        self.logger.update_config({"nnunetv2_scdl_hyperparameters": {k: v for k, (v, _) in resolved.items()}})
        return resolved

    def initialize(self):
        super().initialize()
        self.apply_cpu_memory_format()

    def apply_cpu_memory_format(self) -> None:
        """With ``cpu_channels_last`` on the CPU: every 4-D and 5-D parameter of the network in channels-last layout,
        in place (the optimiser keeps the same parameters; modules copied from the network later inherit it). Not
        under DDP, whose gradient buckets were laid out for the parameters as they were."""
        device = getattr(self, "device", None)
        if not self.cpu_channels_last or device is None or device.type != "cpu" or self.is_ddp:
            return
        converted = set_convolution_layout(self.network, channels_last=True)
        self.print_to_log_file(f"CPU: {converted} convolution weights in channels-last layout (cpu_channels_last)")

    def apply_cpu_thread_limit(self) -> None:
        """On the CPU, an explicit ``OMP_NUM_THREADS`` sets torch's thread count. ``nnUNetv2_train -device cpu`` sets
        it to every core, which on a machine shared with other jobs made training several times slower."""
        device = getattr(self, "device", None)
        requested = os.environ.get("OMP_NUM_THREADS", "").strip()
        if device is None or device.type != "cpu" or not requested.isdigit() or int(requested) < 1:
            return
        before = torch.get_num_threads()
        if before != int(requested):
            torch.set_num_threads(int(requested))
            self.print_to_log_file(f"CPU threads: {requested} (OMP_NUM_THREADS), not the {before} that "
                                   f"nnUNetv2_train set")

    def hyperparameter_report(self) -> str:
        width = max(len(n) for n in self.resolved_hyperparameters)
        lines = [f"{type(self).__name__} hyperparameters (class attributes; override with {ENV_PREFIX}<NAME>):"]
        lines += [f"  {name:<{width}} = {value!r}  [{source}]"
                  for name, (value, source) in self.resolved_hyperparameters.items()]
        return "\n".join(lines)

    def on_train_start(self):
        if self.stop_after_epochs > 0 and self.disable_checkpointing:
            raise RuntimeError("stop_after_epochs needs checkpoint_latest.pth to continue the run from; it cannot be "
                               "used with --disable_checkpointing.")
        super().on_train_start()
        if 0 < self.stop_after_epochs <= self.current_epoch < self.num_epochs:
            raise TrainingStopped(self.stop_message())
        if self.seed >= 0 and self.current_epoch > 0:
            # the generators were seeded as for a fresh run and the checkpoint holds no generator state: without a
            # new seed, a continued run would draw again the patches and augmentations of its first epochs
            seed_everything(continued_run_seed(self.seed, self.current_epoch, getattr(self, "local_rank", 0)))

    def on_epoch_end(self):
        stopping = 0 < self.stop_after_epochs == self.current_epoch + 1 < self.num_epochs
        if stopping:  # nnU-Net's periodic save then writes checkpoint_latest.pth for this epoch
            save_every, self.save_every = self.save_every, 1
        try:
            super().on_epoch_end()
        finally:
            if stopping:
                self.save_every = save_every
        self.stop_requested = stopping

    def on_epoch_start(self):
        # stop before the next epoch starts, so that every override of on_epoch_end has finished its work
        if getattr(self, "stop_requested", False):
            raise TrainingStopped(self.stop_message())
        super().on_epoch_start()

    def stop_message(self) -> str:
        return (f"Stopped after {self.current_epoch} of {self.num_epochs} epochs (stop_after_epochs = "
                f"{self.stop_after_epochs}); checkpoint_latest.pth holds the run: continue it with "
                f"SCDL_STOP_AFTER_EPOCHS=0 (or a larger value) nnUNetv2_train ... --c")

    def run_training(self):
        try:
            super().run_training()
        except TrainingStopped as stop:
            self.stopped_early = True
            self.shut_down_data_loaders()
            self.print_to_log_file(str(stop))
            if self.is_ddp:  # rank 0 may still be writing the checkpoint that the others' exit should not outrun
                import torch.distributed as dist
                dist.barrier()

    def shut_down_data_loaders(self) -> None:
        """Stop background augmentation workers: what nnU-Net's ``on_train_end`` does besides the final checkpoint."""
        from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
        from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter

        for loader in (self.dataloader_train, self.dataloader_val):
            if isinstance(loader, (NonDetMultiThreadedAugmenter, MultiThreadedAugmenter)):
                loader._finish()

    def perform_actual_validation(self, save_probabilities: bool = False):
        if getattr(self, "stopped_early", False):
            return  # the run is not finished: nothing to validate yet
        if not self.final_validation:
            self.print_to_log_file("Final validation skipped (final_validation = False): predict the validation "
                                   "cases with nnUNetv2_predict instead.")
            return
        super().perform_actual_validation(save_probabilities)


class TrainingStopped(Exception):
    """Raised before the epoch after the one ``stop_after_epochs`` names; ``run_training`` ends the invocation."""


def continued_run_seed(seed: int, epochs_done: int, rank: int = 0) -> int:
    """The seed of a run continued after ``epochs_done`` epochs (``--c``), for process ``rank``: reproducible, and
    different from the run's start and from every other continuation point."""
    return int(np.random.SeedSequence([seed, epochs_done, rank]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (nnU-Net's in-process data loading draws from them)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
