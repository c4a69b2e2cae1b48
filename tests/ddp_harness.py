"""A CPU harness for nnU-Net's multi-GPU (DDP) path, used by tests/test_ddp.py.

``nnUNetv2_train ... -num_gpus N`` starts one process per GPU in an NCCL process group; nnU-Net's trainer then moves
to ``cuda:<rank>`` and wraps the network in ``DistributedDataParallel(device_ids=[rank])``. Here each process joins a
``gloo`` group instead, and :class:`CPUDistributedTrainer` keeps everything else of that path (``is_ddp``, the batch
split over ranks, SyncBatchNorm conversion, the DDP wrapper, rank-0 checkpoints, gathered logging) while staying on the
CPU: the device stays ``cpu`` and DDP wraps without ``device_ids``.

:func:`run_rank` is the entry point of each spawned process. For each trainer: two optimiser steps, a checkpoint, a
new process group and a resume from that checkpoint (``nnUNetv2_train ... --c``), then one more step. Each rank saves
what it saw to ``<output>/rank<r>.pt`` for the test to compare.
"""
import copy
import os
import traceback
from datetime import timedelta
from typing import Dict, List

import torch
import torch.distributed as dist
from batchgenerators.utilities.file_and_folder_operations import load_json

import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module
from nnunetv2_scdl.training.ema import unwrap_network

WORLD_SIZE = 2


class CPUDistributedTrainer:
    """Mixin (first base): a trainer that nnU-Net treats as distributed but that runs on the CPU."""

    seed = 12345  # the case the per-rank seeding exists for: seeded, in-process loaders

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # nnU-Net sets cuda:<rank> (and a CUDA grad scaler) for a distributed trainer
        self.device = torch.device("cpu")
        self.grad_scaler = None
        # nnU-Net's batch split gives rank 0 random and rank 1 foreground-forced labeled patches, whose different
        # numbers of random draws would separate the ranks' streams even with equal seeds: switch oversampling off,
        # so that only the per-rank seeds can make the ranks draw different patches
        self.oversample_foreground_percent = 0.0

    def initialize(self):
        ddp = nnunet_trainer_module.DDP
        # nnU-Net wraps with device_ids=[rank], which a CPU module does not take
        nnunet_trainer_module.DDP = lambda module, device_ids=None, **kwargs: ddp(module, **kwargs)
        try:
            super().initialize()
        finally:
            nnunet_trainer_module.DDP = ddp


def small_trainer_class(trainer_class):
    """``trainer_class`` on the CPU under DDP, with the settings that keep a CPU step short."""
    settings = {}
    if hasattr(trainer_class, "location_hidden_features"):  # GA-MagicNet
        settings.update(location_hidden_features=64, blend_start_iteration=0)  # the 2nd step blends with d
    if hasattr(trainer_class, "ddim_steps"):  # GenericSSL
        settings.update(ddim_steps=2)
    return type(f"CPUDDP_{trainer_class.__name__}", (CPUDistributedTrainer, trainer_class), settings)


class RecordingLoader:
    """Passes batches of an unlabeled loader through and keeps a copy of each."""

    def __init__(self, loader):
        self.loader, self.batches = loader, []

    def __next__(self):
        batch = next(self.loader)
        self.batches.append({"data": batch["data"].clone(), "keys": list(batch["keys"])})
        return batch


def class_weight_state(trainer) -> Dict[str, object]:
    """The running class statistics a trainer updates from its batches."""
    state = {}
    for name in ("diff_dw", "dist_dw", "difficulty"):  # DHC, GenericSSL
        if hasattr(trainer, name):
            state[name] = copy.deepcopy(getattr(trainer, name).state_dict())
    for name in ("class_counts", "class_distribution"):  # GA-MagicNet
        if hasattr(trainer, name):
            state[name] = getattr(trainer, name).clone()
    return state


def snapshot(trainer) -> Dict[str, object]:
    def cloned(state):
        return {k: v.detach().clone() for k, v in state.items()}

    return {"student": cloned(unwrap_network(trainer.network).state_dict()),
            "teacher": cloned(trainer.teacher.state_dict()) if getattr(trainer, "teacher", None) else None,
            "optimizer": copy.deepcopy(trainer.optimizer.state_dict()),
            "class_weights": class_weight_state(trainer),
            "global_iteration": trainer.global_iteration,
            "current_epoch": trainer.current_epoch}


def build_trainer(job: dict):
    from nnunetv2_scdl.training.registry import ALL_TRAINERS

    plans = load_json(job["plans_file"])
    plans["continue_training"] = False
    trainer_class = small_trainer_class(ALL_TRAINERS[job["trainer"]])
    return trainer_class(plans, job["configuration"], 0, load_json(job["dataset_json"]), torch.device("cpu"))


def start_training(trainer) -> None:
    """What ``on_train_start`` and ``on_train_epoch_start`` do before the first step, minus the file output."""
    if not trainer.was_initialized:
        trainer.initialize()
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
    trainer.dataloader_unlabeled = RecordingLoader(trainer.dataloader_unlabeled)
    trainer.on_train_epoch_start()


def train_steps(trainer, n_steps: int) -> Dict[str, object]:
    outputs, without_gradient = [], []
    for _ in range(n_steps):
        outputs.append(trainer.train_step(next(trainer.dataloader_train)))
        network = unwrap_network(trainer.network)
        without_gradient.append([name for name, p in network.named_parameters() if p.requires_grad and p.grad is None])
    gradients = {name: p.grad.clone() for name, p in unwrap_network(trainer.network).named_parameters()
                 if p.grad is not None}
    return {"outputs": [{k: float(v) for k, v in o.items()} for o in outputs], "without_gradient": without_gradient,
            "gradients": gradients}


def join_group(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE,
                            timeout=timedelta(seconds=120))


def run_trainer(rank: int, job: dict, init_files: List[str]) -> dict:
    """Two steps, a checkpoint, a new process group, a resume and one more step; what this rank saw."""
    result = {}
    join_group(rank, init_files[0])
    try:
        trainer = build_trainer(job)
        start_training(trainer)
        result["batch_size"] = trainer.batch_size
        result["steps"] = train_steps(trainer, 2)
        trainer.on_train_epoch_end(result["steps"]["outputs"])
        result["logged"] = {name: trainer.logger.get_value(name, step=-1)
                            for name in trainer.logged_terms + ("data_wait_fraction", "train_losses")}
        result["unlabeled"] = trainer.dataloader_unlabeled.batches
        result["trained"] = snapshot(trainer)
        trainer.save_checkpoint(job["checkpoint"])  # rank 0 writes it
        dist.barrier()
    finally:
        dist.destroy_process_group()

    # nnUNetv2_train ... -num_gpus 2 --c: a new group and a new trainer that loads the checkpoint
    join_group(rank, init_files[1])
    try:
        resumed = build_trainer(job)
        resumed.load_checkpoint(job["checkpoint"])
        result["resumed"] = snapshot(resumed)
        start_training(resumed)
        resumed.train_step(next(resumed.dataloader_train))
        result["continued"] = snapshot(resumed)
        result["resumed_unlabeled"] = resumed.dataloader_unlabeled.batches
    finally:
        dist.destroy_process_group()
    return result


def run_rank(rank: int, jobs: List[dict]) -> None:
    """Entry point of a spawned process: every job (trainer) in turn, each in process groups of its own. A failing
    trainer is recorded (its traceback saved instead of its result) and the next one runs."""
    torch.set_num_threads(1)
    for job in jobs:
        os.environ.update(job["env"])
        try:
            result = run_trainer(rank, job, job["init_files"])
        except Exception:
            result = {"error": traceback.format_exc()}
            if dist.is_initialized():
                dist.destroy_process_group()
        torch.save(result, os.path.join(job["output"], f"rank{rank}.pt"))


def spawn(jobs: List[dict]) -> None:
    """Run :func:`run_rank` in ``WORLD_SIZE`` processes (one interpreter start for all jobs); each rank saves its
    result of job j to ``<job output>/rank<r>.pt``, read back with :func:`load_results`."""
    import torch.multiprocessing as mp

    mp.spawn(run_rank, args=(jobs,), nprocs=WORLD_SIZE, join=True)


def load_results(job: dict) -> List[dict]:
    """What each rank saved for ``job``, rank 0 first."""
    return [torch.load(os.path.join(job["output"], f"rank{r}.pt"), weights_only=False) for r in range(WORLD_SIZE)]
