"""What the trainers need under nnU-Net's multi-GPU training (``nnUNetv2_train ... -num_gpus N``, one process per GPU
in a ``torch.distributed`` process group, the network wrapped in ``DistributedDataParallel``).

Every function is a no-op (it returns its input, or a one-element list) when no process group is initialised, so that
one-process training is unchanged. See docs/ddp.md.
"""
from typing import Any, List

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    """True when this process belongs to an initialised process group (nnU-Net's ``is_ddp``)."""
    return dist.is_available() and dist.is_initialized()


def _collective_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo (and the CPU test harness) reduces CPU tensors
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks, as a new tensor on ``tensor``'s device and dtype (``tensor`` itself
    when not distributed). Every rank must call it, in the same order."""
    if not is_distributed():
        return tensor
    reduced = tensor.detach().to(_collective_device(), copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(tensor.device)


def gather_objects(value: Any) -> List[Any]:
    """``[value of rank 0, value of rank 1, ...]`` (``[value]`` when not distributed); picklable values only."""
    if not is_distributed():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


@torch.no_grad()
def synchronise_buffers(module: nn.Module) -> None:
    """Make the buffers of ``module`` identical on every rank: floating-point buffers (e.g. BatchNorm running
    statistics) become their mean over ranks, the others (e.g. ``num_batches_tracked``) rank 0's."""
    if not is_distributed():
        return
    world_size = dist.get_world_size()
    for buffer in module.buffers():
        if buffer.dtype.is_floating_point:
            buffer.copy_(all_reduce_sum(buffer) / world_size)
        else:
            shared = buffer.to(_collective_device(), copy=True)
            dist.broadcast(shared, src=0)
            buffer.copy_(shared.to(buffer.device))


def rank_seed(seed: int, rank: int) -> int:
    """A seed for the random draws of process ``rank`` (data loading, augmentation), derived from the run's ``seed``:
    reproducible, and different for every rank."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
