"""Multi-GPU training (nnU-Net's DDP, ``nnUNetv2_train ... -num_gpus N``) of every trainer family, on the CPU.

Two processes in a ``gloo`` process group run the trainer as nnU-Net's DDP path does, but on the CPU
(tests/ddp_harness.py): two optimiser steps on the phantom, a checkpoint, then a new process group that resumes from
it (``--c``) and takes one more step. No CUDA/NCCL code runs here (see docs/ddp.md).
"""
import math

import numpy as np
import pytest
import torch
from ddp_harness import load_results, spawn

from nnunetv2_scdl.training.distributed import all_reduce_sum, gather_objects, rank_seed, synchronise_buffers

TRAINERS = ["nnUNetTrainerMeanTeacher", "nnUNetTrainerSCDL_MT", "nnUNetTrainerGACPS", "nnUNetTrainerSCDL_GACPS",
            "nnUNetTrainerDHC", "nnUNetTrainerSCDL_DHC", "nnUNetTrainerGAMagicNet", "nnUNetTrainerSCDL_GAMagicNet",
            "nnUNetTrainerGenericSSL", "nnUNetTrainerSCDL_GenericSSL"]


def assert_equal_states(a, b, what: str) -> None:
    assert a.keys() == b.keys(), what
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{what} differ in {different[:5]}"


def assert_equal_nested(a, b, what: str) -> None:
    """Bit-identical tensors (and equal everything else) in nested dicts/lists."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), what
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            assert_equal_nested(a[k], b[k], f"{what}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_nested(x, y, f"{what}[{i}]")
    else:
        assert a == b, what


def assert_same_training_state(a: dict, b: dict, what: str) -> None:
    assert_equal_states(a["student"], b["student"], f"{what}: student weights")
    if a["teacher"] is not None or b["teacher"] is not None:
        assert_equal_states(a["teacher"], b["teacher"], f"{what}: EMA teacher weights")
    assert_equal_nested(a["optimizer"], b["optimizer"], f"{what}: optimiser state")
    assert_equal_nested(a["class_weights"], b["class_weights"], f"{what}: class-weight state")
    assert a["global_iteration"] == b["global_iteration"], f"{what}: global_iteration"


@pytest.fixture(scope="module")
def ddp_results(request, phantom_with_unlabeled, tmp_path_factory):
    """``{trainer: [rank 0's result, rank 1's result]}`` for the trainers of the selected tests, from one pair of
    spawned processes (a result is ``{"error": traceback}`` when the trainer failed on that rank)."""
    dataset = phantom_with_unlabeled
    selected = {item.callspec.params["trainer"] for item in request.session.items
                if getattr(item, "callspec", None) is not None and "trainer" in item.callspec.params
                and item.module is request.module}
    jobs = {}
    for trainer in [t for t in TRAINERS if t in selected]:
        folder = tmp_path_factory.mktemp(f"ddp_{trainer}")
        jobs[trainer] = {"trainer": trainer, "configuration": dataset.configuration,
                         "plans_file": str(dataset.preprocessed_folder / f"{dataset.cpu_plans}.json"),
                         "dataset_json": str(dataset.preprocessed_folder / "dataset.json"),
                         "checkpoint": str(folder / "checkpoint.pth"), "output": str(folder),
                         "init_files": [str(folder / "group_train"), str(folder / "group_resume")],
                         "env": {"nnUNet_n_proc_DA": "0", "nnUNet_compile": "f", "OMP_NUM_THREADS": "1"}}
    spawn(list(jobs.values()))
    return {trainer: load_results(job) for trainer, job in jobs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("trainer", TRAINERS)
def test_two_ranks_stay_identical_and_resume(ddp_results, trainer):
    rank0, rank1 = ddp_results[trainer]
    for rank, result in enumerate((rank0, rank1)):
        if "error" in result:
            pytest.fail(f"{trainer} failed on rank {rank}:\n{result['error']}", pytrace=False)

    # nnU-Net splits the planned batch (2) over the ranks
    assert rank0["batch_size"] == rank1["batch_size"] == 1

    # every trainable parameter got a gradient in every step (DDP needs that), and the gradients were all-reduced:
    # the ranks trained on different patches yet hold the same gradients
    for rank in (rank0, rank1):
        assert rank["steps"]["without_gradient"] == [[], []]
    assert_equal_states(rank0["steps"]["gradients"], rank1["steps"]["gradients"], "gradients")

    # the ranks drew different unlabeled patches, step by step, reproducibly from (seed, rank): the resumed run
    # reseeds its new loaders and draws each rank's first patches again
    for step, (batch0, batch1) in enumerate(zip(rank0["unlabeled"], rank1["unlabeled"])):
        assert not torch.equal(batch0["data"], batch1["data"]), f"step {step}: both ranks drew the same patches"
    for rank in (rank0, rank1):
        assert torch.equal(rank["resumed_unlabeled"][0]["data"], rank["unlabeled"][0]["data"])

    # after two steps: student, EMA teacher, optimiser and class statistics identical on both ranks
    assert rank0["trained"]["global_iteration"] == 2
    assert_same_training_state(rank0["trained"], rank1["trained"], "ranks after two steps")

    # logging: every rank logs the mean over all ranks' steps (as nnU-Net does for its loss)
    outputs = rank0["steps"]["outputs"] + rank1["steps"]["outputs"]
    for name, value in rank0["logged"].items():
        assert value == rank1["logged"][name] or (math.isnan(value) and math.isnan(rank1["logged"][name])), name
        if name == "train_losses":
            expected = float(np.mean([o["loss"] for o in outputs]))  # nnU-Net's own gathering
        elif name == "data_wait_fraction":
            expected = sum(o["data_wait_s"] for o in outputs) / sum(o["step_s"] for o in outputs)
        else:
            expected = float(np.mean([o[name] for o in outputs]))
        assert value == pytest.approx(expected, rel=1e-6), name
    assert any(o0[name] != o1[name] for o0, o1 in zip(rank0["steps"]["outputs"], rank1["steps"]["outputs"])
               for name in ("loss",)), "the ranks' losses should differ (different patches)"

    # --c under DDP: every rank restored the saved state, and training continues in step
    for rank in (rank0, rank1):
        assert_same_training_state(rank0["trained"], rank["resumed"], "resumed rank vs saved")
        assert rank["resumed"]["current_epoch"] == rank0["trained"]["current_epoch"] + 1  # nnU-Net saves epoch + 1
    assert rank0["continued"]["global_iteration"] == 3
    assert_same_training_state(rank0["continued"], rank1["continued"], "ranks after the resumed step")


def test_rank_seeds_are_reproducible_and_distinct():
    assert rank_seed(12345, 1) == rank_seed(12345, 1)
    seeds = {rank_seed(seed, rank) for seed in (0, 12345) for rank in range(8)}
    assert len(seeds) == 16


def test_helpers_do_nothing_without_a_process_group():
    counts = torch.tensor([1.0, 2.0])
    assert all_reduce_sum(counts) is counts
    assert gather_objects({"a": 1}) == [{"a": 1}]
    module = torch.nn.BatchNorm1d(2)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    synchronise_buffers(module)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
