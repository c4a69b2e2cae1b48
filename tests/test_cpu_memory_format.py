"""On the CPU the trainers keep their convolution weights channels-last (``cpu_channels_last``), which changes the
speed of a step, not its result."""
import pytest
import torch
from conftest import make_trainer, started_trainer

from nnunetv2_scdl.training.mean_teacher import nnUNetTrainerMeanTeacher
from nnunetv2_scdl.training.ga_cps import nnUNetTrainerSCDL_GACPS
from nnunetv2_scdl.training.hyperparameters import set_convolution_layout
from nnunetv2_scdl.training.scdl_mean_teacher import nnUNetTrainerSCDL_MT
from nnunetv2_scdl.training.supervised import nnUNetTrainerSupervised


def convolution_weights(module):
    return [p for p in module.parameters() if p.dim() == 5]


def trained_modules(trainer):
    return [trainer.network] + ([trainer.teacher.module] if getattr(trainer, "teacher", None) else [])


@pytest.mark.parametrize("trainer_class", [nnUNetTrainerSupervised, nnUNetTrainerMeanTeacher,
                                           nnUNetTrainerSCDL_GACPS])
def test_cpu_training_keeps_convolution_weights_channels_last(phantom_with_unlabeled, trainer_class, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    trainer = make_trainer(phantom_with_unlabeled, trainer_class)
    trainer.initialize()
    for module in trained_modules(trainer):  # the EMA teacher, copied from the network, inherits the layout
        weights = convolution_weights(module)
        assert weights and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in weights)
        assert not any(p.is_contiguous() for p in weights if p.shape[1] > 1 and p.shape[2:].numel() > 1)
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in convolution_weights(trainer.network)} <= optimised  # the same parameters, converted

    monkeypatch.setenv("SCDL_CPU_CHANNELS_LAST", "0")
    plain = make_trainer(phantom_with_unlabeled, trainer_class)
    plain.initialize()
    assert all(p.is_contiguous() for p in convolution_weights(plain.network))


@pytest.mark.parametrize("trainer_class", [nnUNetTrainerSCDL_MT, nnUNetTrainerSCDL_GACPS])
def test_channels_last_step_equals_the_contiguous_step(phantom_with_unlabeled, trainer_class, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setenv("SCDL_SEED", "0")
    trainer = started_trainer(phantom_with_unlabeled, trainer_class)
    try:
        batch, unlabeled = next(trainer.dataloader_train), next(trainer.dataloader_unlabeled)
        unlabeled = {k: unlabeled[k] for k in ("data", "teacher_data")}
        results = []
        for channels_last in (True, False):
            for module in trained_modules(trainer):  # the EMA teacher's forward is part of the step
                set_convolution_layout(module, channels_last)
            trainer.optimizer.zero_grad(set_to_none=True)
            torch.manual_seed(0)  # SCDL's proxy samples
            loss, _ = trainer.compute_loss(batch["data"], batch["target"], unlabeled)
            loss.backward()
            results.append((loss.detach(), [None if p.grad is None else p.grad.clone()
                                            for p in trainer.network.parameters()]))
        (loss_cl, grads_cl), (loss_plain, grads_plain) = results
        assert torch.allclose(loss_cl, loss_plain, rtol=1e-5, atol=1e-6)
        assert [g is None for g in grads_cl] == [g is None for g in grads_plain]
        assert sum(g is not None for g in grads_plain) > len(grads_plain) // 2
        total = float(torch.stack([g.norm() for g in grads_plain if g is not None]).norm())
        for g_cl, g_plain in zip(grads_cl, grads_plain):
            if g_plain is None:
                continue
            # rounding: relative to the tensor, and to the whole gradient for tensors whose gradient is rounding
            # noise around 0 (conv biases before instance norm)
            assert float((g_cl - g_plain).norm()) <= 1e-3 * float(g_plain.norm()) + 1e-5 * total
    finally:
        trainer.on_train_end()
