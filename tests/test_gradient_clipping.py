"""Gradient clipping per network: co-training clips A and B separately, GA-MagicNet the U-Net and the location head,
single-network trainers the whole network; the ``_paper`` variants do not clip; the AMP path unscales first."""
import pytest
import torch
from conftest import make_trainer

from nnunetv2_scdl.training.dhc import nnUNetTrainerDHC, nnUNetTrainerDHC_paper
from nnunetv2_scdl.training.ga_cps import nnUNetTrainerGACPS, nnUNetTrainerGACPS_paper, nnUNetTrainerSCDL_GACPS
from nnunetv2_scdl.training.ga_magicnet import (nnUNetTrainerGAMagicNet, nnUNetTrainerGAMagicNet_paper,
                                                nnUNetTrainerSCDL_GAMagicNet)
from nnunetv2_scdl.training.mean_teacher import nnUNetTrainerMeanTeacher

SMALL_NORM, LARGE_NORM = 1.0, 1000.0  # below and far above the clipping threshold 12


class SmallMagicNet(nnUNetTrainerGAMagicNet):
    cube_size = (10, 4, 4)
    location_hidden_features = 64


class SmallSCDLMagicNet(nnUNetTrainerSCDL_GAMagicNet):
    cube_size = (10, 4, 4)
    location_hidden_features = 64


class SmallPaperMagicNet(nnUNetTrainerGAMagicNet_paper):
    cube_size = (10, 4, 4)
    location_hidden_features = 64


def network_parts(trainer):
    """(parameters that get small gradients, parameters that get large ones): one network against the other."""
    network = trainer.network
    if hasattr(network, "net_a"):
        return list(network.net_a.parameters()), list(network.net_b.parameters())
    return list(network.segmenter.parameters()), list(network.location_head.parameters())


def group_norm(parameters):
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters])).item()


def fill_gradients(parameters, norm: float) -> None:
    """Uniform gradients whose total norm over ``parameters`` is ``norm``."""
    count = sum(p.numel() for p in parameters)
    for p in parameters:
        p.grad = torch.full_like(p, norm / count ** 0.5)


def trainer_with_gradients(planned_phantom, trainer_class):
    """(initialised trainer, small network's parameters, large network's parameters), their gradient norms
    SMALL_NORM and LARGE_NORM."""
    trainer = make_trainer(planned_phantom, trainer_class)
    trainer.initialize()
    small, large = network_parts(trainer)
    fill_gradients(small, SMALL_NORM)
    fill_gradients(large, LARGE_NORM)
    return trainer, small, large


@pytest.mark.parametrize("trainer_class", [nnUNetTrainerGACPS, nnUNetTrainerSCDL_GACPS, nnUNetTrainerDHC,
                                           SmallMagicNet, SmallSCDLMagicNet], ids=lambda c: c.__name__)
def test_each_network_is_clipped_on_its_own(planned_phantom, trainer_class):
    trainer, small, large = trainer_with_gradients(planned_phantom, trainer_class)
    assert trainer.gradient_clip_norm == 12
    small_before = [p.grad.clone() for p in small]
    trainer.clip_gradients()
    # clipping the union would have scaled the small network's gradients by 12/1000 too
    assert all(torch.equal(p.grad, g) for p, g in zip(small, small_before))
    assert group_norm(large) == pytest.approx(12, rel=1e-3)


def test_a_single_network_is_one_group(planned_phantom):
    trainer = make_trainer(planned_phantom, nnUNetTrainerMeanTeacher)
    trainer.initialize()
    parameters = list(trainer.network.parameters())
    assert [len(group) for group in trainer.gradient_clip_groups()] == [len(parameters)]
    half = len(parameters) // 2
    fill_gradients(parameters[:half], SMALL_NORM)
    fill_gradients(parameters[half:], LARGE_NORM)
    trainer.clip_gradients()
    assert group_norm(parameters) == pytest.approx(12, rel=1e-3)


@pytest.mark.parametrize("trainer_class", [nnUNetTrainerGACPS_paper, nnUNetTrainerDHC_paper, SmallPaperMagicNet],
                         ids=lambda c: c.__name__)
def test_paper_variants_do_not_clip(planned_phantom, trainer_class):
    trainer, small, large = trainer_with_gradients(planned_phantom, trainer_class)
    assert trainer.gradient_clip_norm == 0
    trainer.clip_gradients()
    assert group_norm(large) == pytest.approx(LARGE_NORM, rel=1e-3)


def test_clipping_applies_to_unscaled_gradients_on_the_amp_path(planned_phantom):
    trainer = make_trainer(planned_phantom, nnUNetTrainerGACPS)
    trainer.initialize()
    trainer.grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    small, large = network_parts(trainer)
    count_small, count_large = sum(p.numel() for p in small), sum(p.numel() for p in large)
    # d loss / d p = SMALL_NORM/√n on A and LARGE_NORM/√n on B: the gradient norms before clipping
    loss = (SMALL_NORM / count_small ** 0.5 * sum(p.sum() for p in small)
            + LARGE_NORM / count_large ** 0.5 * sum(p.sum() for p in large))
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.optimizer_step(loss)
    assert group_norm(small) == pytest.approx(SMALL_NORM, rel=1e-3)  # unscaled, and not clipped
    assert group_norm(large) == pytest.approx(12, rel=1e-3)


def test_groups_that_miss_a_parameter_are_refused(planned_phantom):
    class OnlyNetworkA(nnUNetTrainerGACPS):
        def gradient_clip_groups(self):
            return [list(self.network.net_a.parameters())]

    trainer = make_trainer(planned_phantom, OnlyNetworkA)
    trainer.initialize()
    fill_gradients(list(trainer.network.parameters()), SMALL_NORM)
    with pytest.raises(RuntimeError, match="exactly one group"):
        trainer.clip_gradients()
