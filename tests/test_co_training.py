"""Co-training trainers (GA-CPS, DHC and their SCDL variants): in-process steps, loss formulas, resume state, and one
real ``nnUNetv2_train`` + ``nnUNetv2_predict`` run per method family."""

import os
from unittest.mock import patch

import numpy as np
import pytest
import torch
from conftest import (CLI_TRAINING_EPOCHS, CLI_TRAINING_ITERATIONS, REPO_ROOT, StepsCache,
                      end_epoch_and_check_logged_terms, load_benchmark_script, load_checkpoint, make_trainer,
                      predict_test_cases, started_trainer)
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

from nnunetv2_scdl.networks.dual_network import DualNetwork, xavier_normal_expected_norm
from nnunetv2_scdl.networks.scdl_unet import SCDLUNet
from nnunetv2_scdl.training.co_training import nnUNetTrainerCoTraining
from nnunetv2_scdl.training.dhc import nnUNetTrainerDHC, nnUNetTrainerDHC_paper, nnUNetTrainerSCDL_DHC
from nnunetv2_scdl.training.ga_cps import nnUNetTrainerGACPS, nnUNetTrainerGACPS_paper, nnUNetTrainerSCDL_GACPS
from nnunetv2_scdl.training.registry import nnUNetTrainerGACPS_5epochs

SCDL_TRAINERS = (nnUNetTrainerSCDL_GACPS, nnUNetTrainerSCDL_DHC)


def expected_total(trainer, o):
    """The documented formula (docs/co_training.md) from the logged terms of one step."""
    total = o["supervised_a"] + o["supervised_b"] + o["cps_weight"] * (o["cps_a"] + o["cps_b"])
    if isinstance(trainer, SCDL_TRAINERS):
        ramp = o["cps_weight"] / trainer.cps_weight
        total += 0.1 * (o["scdl_cdba_labeled"] + ramp * o["scdl_cdba_unlabeled"]
                        + o["scdl_sac"])
    return total


def test_network_is_a_dual_unet_with_the_documented_inits(planned_phantom):
    trainer = make_trainer(planned_phantom, nnUNetTrainerGACPS_paper)
    trainer.initialize()
    network = trainer.network
    assert isinstance(network, DualNetwork)
    # the paper variant keeps GA-CPS's inits: A He (fan_in only), B Xavier-normal
    conv_a = next(m for m in network.net_a.modules() if isinstance(m, torch.nn.Conv3d))
    conv_b = next(m for m in network.net_b.modules() if isinstance(m, torch.nn.Conv3d))
    fan_in = conv_a.weight[0].numel()
    fan_out = conv_a.weight.shape[0] * conv_a.weight[0, 0].numel()
    assert conv_a.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.35)  # He (a=0.01) ≈ √(2/fan_in)
    assert conv_b.weight.std().item() == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.35)
    assert "co-training inits (class attributes only): network A 'he', network B 'xavier_normal'" in open(
        trainer.log_file).read()
    # deep supervision toggles both decoders; the stock predictor's call returns the ensemble
    trainer.set_deep_supervision_enabled(False)
    assert not network.net_a.decoder.deep_supervision and not network.net_b.decoder.deep_supervision
    x = torch.randn(1, 1, *trainer.configuration_manager.patch_size)
    with torch.no_grad():
        network.eval()
        assert torch.allclose(network(x), (network.net_a(x) + network.net_b(x)) / 2)
    scdl = nnUNetTrainerSCDL_DHC.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1,
                                                           4, True)
    assert isinstance(scdl.net_a, SCDLUNet) and isinstance(scdl.net_b, SCDLUNet)
    assert scdl.net_a.prior_mode == scdl.net_b.prior_mode == "decoder"  # the paper variant: priors in both nets
    assert any(k.startswith("net_b.scdl.prior_projections.") for k in scdl.state_dict())
    with pytest.raises(NotImplementedError, match="base class"):
        make_trainer(planned_phantom, nnUNetTrainerCoTraining).initialize()


class GACPSHe(nnUNetTrainerGACPS):
    network_a_init = "he"


def build_network(trainer_class, plans_manager, configuration_manager, seed=0):
    torch.manual_seed(seed)
    return trainer_class.build_network_architecture(plans_manager, configuration_manager, 1, 4, True)


@pytest.mark.parametrize("trainer_class", [nnUNetTrainerGACPS, nnUNetTrainerSCDL_GACPS], ids=lambda c: c.__name__)
def test_gacps_a_and_b_start_with_equal_layer_norms_but_different_weights(planned_phantom, trainer_class):
    """The default: A is He's draw rescaled to Xavier's per-layer norm, B Xavier-normal."""
    reference = make_trainer(planned_phantom, trainer_class)
    plans, configuration = reference.plans_manager, reference.configuration_manager
    network = build_network(trainer_class, plans, configuration)
    he = build_network(GACPSHe, plans, configuration)  # same seed: the same He draw for A before rescaling
    convs = [(name, module) for name, module in network.net_a.named_modules()  # the U-Net's, not SCDL's own
             if isinstance(module, torch.nn.modules.conv._ConvNd) and name.split(".")[0] in ("encoder", "decoder")]
    assert len(convs) > 10
    for name, conv_a in convs:
        conv_b = network.net_b.get_submodule(name)
        weight_a, weight_b = conv_a.weight.detach(), conv_b.weight.detach()
        expected = xavier_normal_expected_norm(weight_a)
        assert weight_a.norm().item() == pytest.approx(expected, rel=1e-5), name
        # B's own Xavier draw has that norm up to its sampling spread, about 1/√(2n) for n weights
        assert weight_b.norm().item() == pytest.approx(expected, rel=6 / (2 * weight_b.numel()) ** 0.5), name
        assert not torch.allclose(weight_a, weight_b), name
        he_weight = he.net_a.get_submodule(name).weight.detach()  # A keeps He's draw, only its scale changes
        assert torch.allclose(weight_a / weight_a.norm(), he_weight / he_weight.norm(), atol=1e-6), name
    # without the rescaling, He's norm exceeds Xavier's by √((fan_in + fan_out)/fan_in) >= √2 on square convs
    big = max(convs, key=lambda item: item[1].weight.numel())[0]
    assert he.net_a.get_submodule(big).weight.norm() > 1.3 * network.net_a.get_submodule(big).weight.norm()


@pytest.fixture(scope="module")
def two_steps(phantom_with_unlabeled):
    """``two_steps(trainer_class)``: the trainer after two steps on the phantom, once per class for this module."""
    cache = StepsCache()
    yield lambda trainer_class: cache(phantom_with_unlabeled, trainer_class)
    cache.close()


@pytest.mark.slow
@pytest.mark.parametrize("trainer_class", [nnUNetTrainerGACPS, nnUNetTrainerSCDL_GACPS, nnUNetTrainerDHC,
                                           nnUNetTrainerSCDL_DHC], ids=lambda c: c.__name__)
def test_two_steps_give_finite_terms_and_the_documented_total(two_steps, trainer_class):
    trained = two_steps(trainer_class)
    trainer, outputs = trained.trainer, trained.outputs
    assert trainer.global_iteration == 2
    for o in outputs:
        assert set(trainer.logged_terms) <= set(o)
        assert all(np.isfinite(float(o[name])) for name in trainer.logged_terms), o
        assert float(o["loss"]) == pytest.approx(expected_total(trainer, o), rel=1e-4)
    total_iterations = trainer.num_epochs * trainer.num_iterations_per_epoch
    assert outputs[1]["cps_weight"] == pytest.approx(0.1 * np.exp(-5 * (1 - 1 / total_iterations) ** 2))
    if issubclass(trainer_class, nnUNetTrainerDHC):
        # DiffDW moved away from its initial C·1; DistDW started from the labeled counts (background weight ~0)
        assert not torch.equal(trainer.diff_dw.weights, torch.full((4,), 4.0, dtype=torch.float64))
        assert trainer.dist_dw.weights[0] < 0.1 and trainer.dist_dw.weights[1:].max() > 1
    end_epoch_and_check_logged_terms(trainer, outputs)


class CompiledStandIn(torch.nn.Module):
    """Stands in for torch.compile's wrapper (the plain module is ``_orig_mod``) and counts the calls through it."""

    def __init__(self, module):
        super().__init__()
        self._orig_mod = module
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self._orig_mod(*args, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("trainer_class", [nnUNetTrainerGACPS, nnUNetTrainerSCDL_GACPS], ids=lambda c: c.__name__)
def test_training_forward_goes_through_the_compiled_module(phantom_with_unlabeled, monkeypatch, trainer_class):
    """nnU-Net compiles ``self.network`` on GPUs; a step that called the inner nets directly would run eagerly (the
    SCDL variants once did, while their hosts were compiled)."""
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    trainer = started_trainer(phantom_with_unlabeled, trainer_class)
    trainer.network = CompiledStandIn(trainer.network)
    try:
        trainer.train_step(next(trainer.dataloader_train))
        assert trainer.network.calls == 1
    finally:
        trainer.network = trainer.network._orig_mod
        trainer.on_train_end()


def swapped_gacps():
    """``nnUNetTrainerGACPS_swapAB`` of benchmarks/co_training_swap, found as nnUNetv2_train finds it."""
    with patch.dict(os.environ, {"nnUNet_extTrainer": str(REPO_ROOT / "benchmarks" / "co_training_swap")}):
        return recursive_find_trainer_class_by_name("nnUNetTrainerGACPS_swapAB")


def test_swap_weights_exchanges_every_tensor(planned_phantom):
    trainer = make_trainer(planned_phantom, nnUNetTrainerGACPS)
    network = build_network(nnUNetTrainerGACPS, trainer.plans_manager, trainer.configuration_manager)
    state_a = {k: v.clone() for k, v in network.net_a.state_dict().items()}
    state_b = {k: v.clone() for k, v in network.net_b.state_dict().items()}
    assert network.swap_weights() is network
    assert all(torch.equal(network.net_a.state_dict()[k], state_b[k]) for k in state_b)
    assert all(torch.equal(network.net_b.state_dict()[k], state_a[k]) for k in state_a)


@pytest.mark.slow
def test_gacps_treats_a_and_b_alike(phantom_with_unlabeled, monkeypatch):
    """Started from swapped weights and fed the same batches, GA-CPS gives A the terms and updates that B had,
    exactly: nothing in the step favours one slot (loss order, clipping, CPS targets, optimiser groups)."""
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setenv("SCDL_SEED", "0")  # the same two draws for both trainers
    original = started_trainer(phantom_with_unlabeled, nnUNetTrainerGACPS)
    swapped = started_trainer(phantom_with_unlabeled, swapped_gacps())
    try:
        labeled = [next(original.dataloader_train) for _ in range(2)]
        unlabeled = [next(original.dataloader_unlabeled) for _ in range(2)]
        runs = []
        for trainer in (original, swapped):
            trainer.dataloader_unlabeled = iter(unlabeled)
            runs.append([trainer.train_step(batch) for batch in labeled])
        mirrored = {"supervised_a": "supervised_b", "supervised_b": "supervised_a", "cps_a": "cps_b",
                    "cps_b": "cps_a"}
        for step_original, step_swapped in zip(*runs):
            assert step_original["supervised_a"] != step_original["supervised_b"]  # the two draws differ
            for name, mirror in mirrored.items():
                assert step_swapped[mirror] == pytest.approx(step_original[name], rel=1e-6, abs=1e-7), name
        net_original, net_swapped = original.network, swapped.network
        for name, value in net_original.net_a.state_dict().items():
            torch.testing.assert_close(net_swapped.net_b.state_dict()[name], value, rtol=1e-5, atol=1e-7)
        for name, value in net_original.net_b.state_dict().items():
            torch.testing.assert_close(net_swapped.net_a.state_dict()[name], value, rtol=1e-5, atol=1e-7)
    finally:
        original.on_train_end()
        swapped.on_train_end()


def test_mirror_differences_by_hand():
    module = load_benchmark_script("co_training_mirror")
    original = {"supervised_a": [3.0, 2.0, 1.0], "supervised_b": [2.5, 1.5],
                "pseudo_dice_network_a": [[0.0, 0.0], [0.2, 0.1]], "pseudo_dice_network_b": [[0.0, 0.0], [0.5, 0.4]]}
    swapped = {"supervised_a": [2.5, 1.0], "supervised_b": [3.0, 2.25],
               "pseudo_dice_network_a": [[0.0, 0.0], [0.5, 0.4]], "pseudo_dice_network_b": [[0.0, 0.0], [0.2, 0.3]]}
    assert module.mirror_differences(original, swapped) == pytest.approx({
        "supervised_a ↔ supervised_b": 0.25,  # over the two epochs both logged
        "supervised_b ↔ supervised_a": 0.5,
        "pseudo_dice_network_a ↔ pseudo_dice_network_b": 0.2,
        "pseudo_dice_network_b ↔ pseudo_dice_network_a": 0.0})


@pytest.mark.slow
@pytest.mark.parametrize("trainer_class", [nnUNetTrainerGACPS, nnUNetTrainerDHC], ids=lambda c: c.__name__)
def test_ignore_label_is_left_out_of_supervision_and_class_statistics(phantom_with_ignore_label, monkeypatch,
                                                                      trainer_class):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    trainer = started_trainer(phantom_with_ignore_label, trainer_class)
    assert trainer.label_manager.has_ignore_label
    outputs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(2)]
    for o in outputs:
        assert all(np.isfinite(float(o[name])) for name in trainer.logged_terms), o
        assert float(o["loss"]) == pytest.approx(expected_total(trainer, o), rel=1e-4)
    if trainer_class is nnUNetTrainerDHC:
        assert trainer.labeled_class_counts().numel() == trainer.label_manager.num_segmentation_heads
    trainer.on_train_end()


@pytest.mark.slow
def test_dhc_resume_restores_the_class_weights_exactly(phantom_with_unlabeled, two_steps, monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    trainer = two_steps(nnUNetTrainerDHC).trainer
    saved = trainer.extra_checkpoint_state()
    assert {"diff_dw", "dist_dw", "global_iteration"} <= set(saved)
    trainer.save_checkpoint(str(tmp_path / "checkpoint.pth"))

    resumed = make_trainer(phantom_with_unlabeled, nnUNetTrainerDHC)
    resumed.initialize()
    resumed.load_checkpoint(str(tmp_path / "checkpoint.pth"))
    assert resumed.global_iteration == 2
    assert torch.equal(resumed.diff_dw.weights, trainer.diff_dw.weights)
    assert torch.equal(resumed.dist_dw.weights, trainer.dist_dw.weights)
    restored = resumed.extra_checkpoint_state()
    for name in ("diff_dw", "dist_dw"):
        for key, value in saved[name].items():
            assert torch.equal(value, restored[name][key]) if isinstance(value, torch.Tensor) \
                else value == restored[name][key], (name, key)


@pytest.mark.slow
def test_resume_applies_hyperparameters_given_now_and_logs_the_change(phantom_with_unlabeled, two_steps, monkeypatch,
                                                                      tmp_path):
    """``--c`` with ``SCDL_*_MOMENTUM`` set: the class weights continue from the checkpoint with the new momenta."""
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    trainer = two_steps(nnUNetTrainerDHC).trainer
    trainer.save_checkpoint(str(tmp_path / "checkpoint.pth"))

    monkeypatch.setenv("SCDL_DIFF_DW_MOMENTUM", "0.5")
    monkeypatch.setenv("SCDL_DIST_DW_MOMENTUM", "0.9")
    resumed = make_trainer(phantom_with_unlabeled, nnUNetTrainerDHC)
    resumed.initialize()
    resumed.load_checkpoint(str(tmp_path / "checkpoint.pth"))
    assert (resumed.diff_dw.momentum, resumed.dist_dw.momentum) == (0.5, 0.9)
    assert torch.equal(resumed.diff_dw.weights, trainer.diff_dw.weights)
    log = open(resumed.log_file).read()
    assert "Resuming with diff_dw_momentum = 0.5 (env SCDL_DIFF_DW_MOMENTUM)" in log
    assert "Resuming with dist_dw_momentum = 0.9" in log and log.count("Resuming with") == 2  # nothing else changed


@pytest.mark.slow
def test_paper_option_sets_sgd_and_a_per_iteration_poly_lr(phantom_with_unlabeled, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    assert make_trainer(phantom_with_unlabeled, nnUNetTrainerGACPS_5epochs).num_epochs == 5
    ga = make_trainer(phantom_with_unlabeled, nnUNetTrainerGACPS_paper)
    assert ga.num_epochs * ga.num_iterations_per_epoch == 17000
    dhc = make_trainer(phantom_with_unlabeled, nnUNetTrainerDHC_paper)
    assert dhc.num_epochs * dhc.num_iterations_per_epoch == 2400
    dhc.initialize()
    group = dhc.optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.03, 0.9, True, 3e-5)
    monkeypatch.setenv("SCDL_NUM_EPOCHS", "1")
    monkeypatch.setenv("SCDL_NUM_ITERATIONS_PER_EPOCH", "4")
    trainer = started_trainer(phantom_with_unlabeled, nnUNetTrainerGACPS_paper)
    group = trainer.optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, False, 1e-4)
    assert group["lr"] == pytest.approx(0.01)
    trainer.train_step(next(trainer.dataloader_train))
    assert group["lr"] == pytest.approx(0.01 * (1 - 1 / 4) ** 0.9)  # stepped after the optimiser step, not per epoch
    trainer.on_train_end()


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["nnUNetTrainerGACPS", "nnUNetTrainerSCDL_GACPS", "nnUNetTrainerDHC",
                                     "nnUNetTrainerSCDL_DHC"])
def test_each_co_training_trainer_trains_and_predicts_through_the_cli(cli_trained, run_console, tmp_path, trainer):
    trained = cli_trained(trainer)  # nnUNetv2_train, 1 epoch × 2 iterations
    checkpoint = load_checkpoint(trained.folder)
    assert checkpoint["nnunetv2_scdl"]["global_iteration"] == CLI_TRAINING_EPOCHS * CLI_TRAINING_ITERATIONS
    weights = checkpoint["network_weights"]
    assert any(k.startswith("net_a.") for k in weights) and any(k.startswith("net_b.") for k in weights)
    assert np.isfinite(checkpoint["logging"]["cps_a"][0])
    if "SCDL" in trainer:
        assert any(k.startswith("net_a.scdl.") for k in weights) and np.isfinite(checkpoint["logging"]["scdl_sac"][0])
    if "DHC" in trainer:
        assert {"diff_dw", "dist_dw"} <= set(checkpoint["nnunetv2_scdl"])
    predict_test_cases(run_console, trained.dataset, trainer, tmp_path / trainer, trained.env)
