"""nnUNetTrainerGenericSSL: in-process steps (documented total, aggregation), resume state, and one real
``nnUNetv2_train`` + ``nnUNetv2_predict`` run per trainer."""

import numpy as np
import pytest
import torch
from conftest import (CLI_TRAINING_EPOCHS, CLI_TRAINING_ITERATIONS, CPU_DDIM_STEPS, StepsCache,
                      end_epoch_and_check_logged_terms, load_checkpoint, make_trainer, predict_test_cases)

from nnunetv2_scdl.networks.generic_ssl_net import GenericSSLNet
from nnunetv2_scdl.networks.generic_ssl_scdl_net import GenericSSLSCDLNet
from nnunetv2_scdl.networks.scdl_unet import SCDLUNet, concatenate_aux
from nnunetv2_scdl.training.generic_ssl import gaussian_smooth, nnUNetTrainerGenericSSL, nnUNetTrainerSCDL_GenericSSL
from nnunetv2_scdl.training.registry import nnUNetTrainerGenericSSL_5epochs, nnUNetTrainerSCDL_GenericSSL_10epochs


def test_gaussian_smooth_keeps_probabilities_and_constants():
    probabilities = torch.softmax(torch.randn(2, 3, 5, 6, 7), dim=1)
    smoothed = gaussian_smooth(probabilities)
    assert smoothed.shape == probabilities.shape
    assert torch.allclose(smoothed.sum(1), torch.ones(2, 5, 6, 7), atol=1e-5)
    assert torch.allclose(gaussian_smooth(torch.full((1, 2, 4, 4), 0.5)), torch.full((1, 2, 4, 4), 0.5))


def test_network_is_built_from_the_plans_and_predicts_with_d_theta(planned_phantom):
    trainer = make_trainer(planned_phantom, nnUNetTrainerGenericSSL_5epochs)
    assert trainer.num_epochs == 5
    trainer.initialize()
    network = trainer.network
    assert isinstance(network, GenericSSLNet)
    trainer.set_deep_supervision_enabled(False)
    assert not any(d.deep_supervision for d in (network.decoder, network.decoder_psi, network.decoder_xi))
    x = torch.randn(1, 1, *trainer.configuration_manager.patch_size)
    network.eval()
    with torch.no_grad():
        out = network(x)
        assert torch.equal(out, network.forward_theta(x)) and out.shape == (1, 4, *x.shape[2:])
    # the predictor's call: the classmethod without DS rebuilds a module that loads the weights strictly
    rebuilt = nnUNetTrainerGenericSSL.build_network_architecture(trainer.plans_manager, trainer.configuration_manager,
                                                                 1, 4, False)
    rebuilt.load_state_dict(network.state_dict())

    # SCDL variant: D_θ carries SCDL (head injection); only scdl.* keys are added to GenericSSLNet's
    assert make_trainer(planned_phantom, nnUNetTrainerSCDL_GenericSSL_10epochs).num_epochs == 10
    scdl = nnUNetTrainerSCDL_GenericSSL.build_network_architecture(trainer.plans_manager, trainer.configuration_manager,
                                                                   1, 4, False)
    assert isinstance(scdl, GenericSSLSCDLNet) and isinstance(scdl._theta_scdl, SCDLUNet)
    assert scdl._theta_scdl.prior_mode == "head" and scdl._theta_scdl.decoder is scdl.decoder
    extra = set(scdl.state_dict()) - set(network.state_dict())
    assert extra and all(k.startswith("scdl.") for k in extra)
    scdl.eval()
    with torch.no_grad():
        assert torch.equal(scdl(x), scdl(x)) and scdl(x).shape == (1, 4, *x.shape[2:])
    rebuilt = nnUNetTrainerSCDL_GenericSSL.build_network_architecture(trainer.plans_manager,
                                                                      trainer.configuration_manager, 1, 4, True)
    rebuilt.load_state_dict(scdl.state_dict())


def test_scdl_reads_labeled_tokens_from_d_psi_and_unlabeled_tokens_from_d_theta(planned_phantom):
    trainer = make_trainer(planned_phantom, nnUNetTrainerSCDL_GenericSSL)
    torch.manual_seed(0)
    network = nnUNetTrainerSCDL_GenericSSL.build_network_architecture(trainer.plans_manager,
                                                                      trainer.configuration_manager, 1, 4, False)
    assert network._psi_scdl.decoder is network.decoder_psi and network._psi_scdl.scdl is network.scdl
    assert network._psi_scdl.prior_mode == "none"
    patch = trainer.configuration_manager.patch_size
    labeled, unlabeled = torch.randn(2, 1, *patch), torch.randn(2, 1, *patch)
    target = torch.randint(0, 4, (2, 1, *patch))
    network.eval()
    with torch.no_grad():  # D_ψ with SCDL is D_ψ: nothing injected
        assert torch.equal(network.forward_psi(labeled, return_scdl=True)[0], network.forward_psi(labeled))
    network.train()
    _, psi_aux = network.forward_psi(labeled, return_scdl=True)
    _, theta_aux = network.forward_theta(unlabeled, return_scdl=True)
    aux = concatenate_aux([psi_aux, theta_aux])
    assert aux.scdl.log_joint.shape[0] == 4 and aux.scdl.priors is None  # D_ψ's tokens carry no prior
    terms = network.scdl_loss_terms(aux, target, n_labeled=2)

    def gradient_norms(loss):
        network.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        return [sum(float(p.grad.abs().sum()) for p in decoder.stages.parameters() if p.grad is not None)
                for decoder in (network.decoder_psi, network.decoder)]

    psi_labeled, theta_labeled = gradient_norms(terms["cdba_labeled"])
    assert psi_labeled > 0 and theta_labeled == 0  # ground-truth terms train D_ψ, not D_θ
    psi_unlabeled, theta_unlabeled = gradient_norms(terms["cdba_unlabeled"])
    assert theta_unlabeled > 0 and psi_unlabeled == 0


def expected_total(trainer, o):
    """The documented formula (docs/generic_ssl.md) from the logged terms of one step."""
    total = o["deno"] + o["diff"] + o["unsup_weight"] * o["unsup"]
    if isinstance(trainer, nnUNetTrainerSCDL_GenericSSL):
        ramp = o["unsup_weight"] / trainer.unsupervised_weight
        total += 0.1 * (o["scdl_cdba_labeled"] + ramp * o["scdl_cdba_unlabeled"]
                        + o["scdl_sac"])
    return total


class Spied:
    """What the spies saw during the two steps: the weights before them, each aggregation (momentum, the parameter
    names it returned, whether θ became 0.99·θ + 0.01·(ξ + ψ)/2 exactly) and D_θ's batch size in each forward."""

    def __init__(self, network):
        self.before = {k: v.detach().clone() for k, v in network.state_dict().items()}
        self.calls, self.theta_batches = [], []
        aggregate = network.aggregate_decoders

        def spy(momentum):  # the aggregation must run at the start of every step
            snapshot = [m.seg_layers[-1].weight.detach().clone()
                        for m in (network.decoder, network.decoder_xi, network.decoder_psi)]
            names = aggregate(momentum)
            theta, xi, psi = snapshot
            self.calls.append((momentum, names, torch.allclose(network.decoder.seg_layers[-1].weight,
                                                               momentum * theta + (1 - momentum) * (xi + psi) / 2)))
            return names

        network.aggregate_decoders = spy
        network.decoder.stages[0].register_forward_hook(lambda m, i, o: self.theta_batches.append(o.shape[0]))


@pytest.fixture(scope="module")
def two_steps(phantom_with_unlabeled):
    """``two_steps(trainer_class)``: the trainer after two steps (``SCDL_DDIM_STEPS`` = :data:`CPU_DDIM_STEPS`), spied
    on (:class:`Spied`, as ``prepared``), once per class for this module."""
    cache = StepsCache(env={"SCDL_DDIM_STEPS": CPU_DDIM_STEPS}, prepare=lambda trainer: Spied(trainer.network))
    yield lambda trainer_class: cache(phantom_with_unlabeled, trainer_class)
    cache.close()


@pytest.mark.slow
@pytest.mark.parametrize("trainer_class", [nnUNetTrainerGenericSSL, nnUNetTrainerSCDL_GenericSSL],
                         ids=lambda c: c.__name__)
def test_two_steps_give_finite_terms_the_documented_total_and_aggregate(two_steps, trainer_class):
    trained = two_steps(trainer_class)
    trainer, outputs, network = trained.trainer, trained.outputs, trained.trainer.network
    before, calls, theta_batches = trained.prepared.before, trained.prepared.calls, trained.prepared.theta_batches
    # decoupling: D_θ trains on unlabeled patches only, with or without SCDL
    assert theta_batches == [trainer.unlabeled_batch_size] * 2
    assert len(calls) == 2 and all(m == 0.99 and exact for m, _, exact in calls)
    names = calls[0][1]
    assert names == [n for n, _ in network.decoder.named_parameters() if not n.startswith("encoder.")]
    assert trainer.global_iteration == 2
    for o in outputs:
        assert set(trainer.logged_terms) <= set(o)
        assert all(np.isfinite(float(o[name])) for name in trainer.logged_terms), o
        assert float(o["loss"]) == pytest.approx(expected_total(trainer, o), rel=1e-4)
    total_iterations = trainer.num_epochs * trainer.num_iterations_per_epoch
    assert outputs[1]["unsup_weight"] == pytest.approx(10 * np.exp(-5 * (1 - 1 / total_iterations) ** 2))
    assert not torch.equal(trainer.difficulty.weights, torch.full((4,), 4.0, dtype=torch.float64))
    moved = [k for k, v in network.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("decoder.stages.") for k in moved) and any(k.startswith("decoder_xi.") for k in moved)
    end_epoch_and_check_logged_terms(trainer, outputs)


@pytest.mark.slow
def test_resume_restores_difficulty_and_theta(phantom_with_unlabeled, two_steps, monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setenv("SCDL_DDIM_STEPS", CPU_DDIM_STEPS)
    trainer = two_steps(nnUNetTrainerGenericSSL).trainer
    saved = trainer.extra_checkpoint_state()
    assert {"difficulty", "global_iteration"} <= set(saved)
    theta = {k: v.detach().clone() for k, v in trainer.network.decoder.state_dict().items()}
    trainer.save_checkpoint(str(tmp_path / "checkpoint.pth"))

    resumed = make_trainer(phantom_with_unlabeled, nnUNetTrainerGenericSSL)
    resumed.initialize()
    resumed.load_checkpoint(str(tmp_path / "checkpoint.pth"))
    assert resumed.global_iteration == 2
    assert torch.equal(resumed.difficulty.weights, trainer.difficulty.weights)
    restored = resumed.extra_checkpoint_state()["difficulty"]
    for key, value in saved["difficulty"].items():
        assert torch.equal(value, restored[key]) if isinstance(value, torch.Tensor) else value == restored[key], key
    assert all(torch.equal(resumed.network.decoder.state_dict()[k], v) for k, v in theta.items()), "θ not restored"


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["nnUNetTrainerGenericSSL", "nnUNetTrainerSCDL_GenericSSL"])
def test_generic_ssl_trainer_trains_and_predicts_through_the_cli(cli_trained, run_console, tmp_path, trainer):
    trained = cli_trained(trainer)  # SCDL_DDIM_STEPS = CPU_DDIM_STEPS, for training and prediction
    assert trained.env["SCDL_DDIM_STEPS"] == CPU_DDIM_STEPS
    checkpoint = load_checkpoint(trained.folder)
    assert checkpoint["nnunetv2_scdl"]["global_iteration"] == CLI_TRAINING_EPOCHS * CLI_TRAINING_ITERATIONS
    assert "difficulty" in checkpoint["nnunetv2_scdl"]
    weights = checkpoint["network_weights"]
    assert {"decoder_xi.", "decoder_psi.", "stem_diffusion."} <= {k.split(".")[0] + "." for k in weights}
    assert np.isfinite(checkpoint["logging"]["unsup"][0]) and np.isfinite(checkpoint["logging"]["deno"][0])
    if "SCDL" in trainer:
        assert any(k.startswith("scdl.") for k in weights) and np.isfinite(checkpoint["logging"]["scdl_sac"][0])
    predict_test_cases(run_console, trained.dataset, trainer, tmp_path / trainer, trained.env)
