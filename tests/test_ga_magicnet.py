"""GA-MagicNet trainers (plain and SCDL): network wrapper, cube grid from the plans, in-process steps, faithful vs
corrected within-image recovery, resume state, and one real ``nnUNetv2_train`` + ``nnUNetv2_predict`` run each."""
import math
from dataclasses import dataclass, field

import pytest
import torch
from conftest import (CLI_TRAINING_EPOCHS, CLI_TRAINING_ITERATIONS, StepsCache,
                      assert_checkpoint_restores_teacher_and_student, end_epoch_and_check_logged_terms,
                      load_checkpoint, make_trainer, predict_test_cases, started_trainer)

from nnunetv2_scdl.networks.magic_cube_network import MagicCubeNetwork
from nnunetv2_scdl.networks.magic_cubes import partition_cubes
from nnunetv2_scdl.networks.scdl_unet import SCDLUNet
from nnunetv2_scdl.training.ga_magicnet import (blend_distribution, nnUNetTrainerGAMagicNet,
                                                nnUNetTrainerGAMagicNet_paper, nnUNetTrainerSCDL_GAMagicNet,
                                                nnUNetTrainerSCDL_GAMagicNet_paper)
from nnunetv2_scdl.training.registry import nnUNetTrainerGAMagicNet_5epochs, nnUNetTrainerSCDL_GAMagicNet_1epoch

# The phantom's CPU plans: patch (20, 28, 28), encoder total stride (2, 4, 4). The default grid is (2, 1, 1); the
# in-process tests use a finer grid (2, 7, 7) on which the faithful read order differs from the exact inverse, and a
# narrow location head to keep CPU steps fast.
FINE_CUBE = (10, 4, 4)


class SmallMagicNet(nnUNetTrainerGAMagicNet):
    cube_size = FINE_CUBE
    location_hidden_features = 64
    blend_start_iteration = 0  # blend from the second step on, so the tests run the blending path


class SmallFaithfulMagicNet(SmallMagicNet):
    faithful = True


class SmallSCDLMagicNet(nnUNetTrainerSCDL_GAMagicNet):
    cube_size = FINE_CUBE
    location_hidden_features = 64
    blend_start_iteration = 0


def test_network_wrapper_grid_and_errors(planned_phantom):
    trainer = make_trainer(planned_phantom, nnUNetTrainerGAMagicNet_5epochs)
    assert trainer.num_epochs == 5
    grid = trainer.cube_grid  # the plan's default grid
    assert grid.patch_size == (20, 28, 28) and grid.total_stride == (2, 4, 4) and grid.n_cubes >= 2
    small = make_trainer(planned_phantom, SmallMagicNet)
    small.initialize()
    network = small.network
    assert isinstance(network, MagicCubeNetwork) and small.cube_grid.grid == (2, 7, 7)
    assert network.location_head.n_cubes == 98
    assert any(k.startswith("location_head.") for k in network.state_dict())
    x = torch.randn(2, 1, 20, 28, 28)
    with torch.no_grad():
        # forward = the plan U-Net's forward; decode + heads reproduce it exactly
        plain = network.segmenter(x)
        assert all(torch.equal(a, b) for a, b in zip(network(x), plain))
        assert all(torch.allclose(a, b) for a, b in zip(network.heads(network.features(x)), plain))
        assert torch.allclose(network.full_resolution_head(network.features(x)[-1]), plain[0])
        small.set_deep_supervision_enabled(False)  # nnU-Net's toggle reaches the decoder through the wrapper
        assert not network.decoder.deep_supervision and network(x).shape == (2, 4, 20, 28, 28)
        small.set_deep_supervision_enabled(True)
        cubes = partition_cubes(x, small.cube_grid)
        assert cubes.shape == (2 * 98, 1, 10, 4, 4)
        network.train()
        assert network.locate(network.encoder(cubes), 2).shape == (2 * 98, 98)
        # the fine cubes reach the bottleneck as 5×1×1: the head reads stage 1, where a cube is 10×2×2
        assert network.location_stage == 1 and network.location_feature_size == (10, 2, 2)
        assert network.location_head.in_features == network.encoder.output_channels[1] * 10 * 2 * 2
        bottleneck = MagicCubeNetwork(network.segmenter, small.cube_grid, 64, location_stage=-1)
        assert bottleneck.location_stage == len(network.encoder.strides) - 1
        assert bottleneck.location_head.in_features == network.encoder.output_channels[-1] * 5

        def stage_only(stage):  # encoder outputs in which only ``stage`` holds the cubes' features
            return [torch.zeros_like(f) if s != stage else f for s, f in enumerate(network.encoder(cubes))]

        network.eval()
        assert not torch.equal(network.locate(stage_only(1), 2), network.locate(stage_only(0), 2))
        assert torch.equal(network.locate(stage_only(1), 2), network.locate(network.encoder(cubes), 2))

    class Impossible(nnUNetTrainerGAMagicNet):
        cube_size = (10, 6, 4)  # 6 is not a multiple of the stride 4 on axis 1

    with pytest.raises(ValueError, match=r"patch size \[20, 28, 28\].*strides"):
        make_trainer(planned_phantom, Impossible)
    scdl = nnUNetTrainerSCDL_GAMagicNet.build_network_architecture(small.plans_manager, small.configuration_manager,
                                                                   1, 4, True)
    assert isinstance(scdl.segmenter, SCDLUNet) and scdl.segmenter.prior_mode == "head"
    assert any(k.startswith("segmenter.scdl.") for k in scdl.state_dict())


def test_blend_distribution():
    d = blend_distribution(torch.tensor([100.0, 50.0, 0.0, 25.0]))
    assert torch.allclose(d, torch.tensor([1.0, 0.5, 0.0, 0.25]))
    assert torch.allclose(blend_distribution(torch.tensor([4.0, 1.0]), temperature=2.0), torch.tensor([1.0, 0.5]))
    assert not blend_distribution(torch.zeros(3)).any()


class _IdentityCubes:
    """Stands in for the network in ``within_image_logits``: decode = the cubes themselves, head = identity."""

    def decode(self, skips):
        return [skips[0]]

    def full_resolution_head(self, feature):
        return feature


def test_faithful_flag_changes_within_image_recovery(phantom_with_unlabeled):
    x = torch.arange(2 * 20 * 28 * 28, dtype=torch.float32).reshape(2, 1, 20, 28, 28)
    recovered = {}
    for trainer_class in (SmallMagicNet, SmallFaithfulMagicNet):
        trainer = make_trainer(phantom_with_unlabeled, trainer_class)
        cubes = partition_cubes(x, trainer.cube_grid)
        recovered[trainer.faithful] = trainer.within_image_logits(_IdentityCubes(), [cubes])
    assert torch.equal(recovered[False], x)  # corrected: the exact inverse of the partition
    assert not torch.equal(recovered[True], x)  # released: the transposed read order misplaces cubes
    assert torch.equal(recovered[True].flatten().sort().values, x.flatten())  # ... but loses no voxel


@dataclass
class Spied:
    """What the two steps' spies saw: the teacher before them, the labels counted into the class histogram and the
    targets of the consistency loss."""
    teacher_before: dict
    counted: list = field(default_factory=list)
    consistency_targets: list = field(default_factory=list)


def install_spies(trainer) -> Spied:
    spied = Spied({k: v.clone() for k, v in trainer.teacher.state_dict().items()})
    count, consistency = trainer.update_class_distribution, trainer.consistency_loss
    trainer.update_class_distribution = lambda labels: (spied.counted.append(labels), count(labels))
    trainer.consistency_loss = \
        lambda logits, target: (spied.consistency_targets.append(target), consistency(logits, target))[1]
    return spied


@pytest.fixture(scope="module")
def two_steps(phantom_with_unlabeled):
    """``two_steps(trainer_class)``: the trainer after two steps, spied on (:class:`Spied`, as ``prepared``), once per
    class for this module."""
    cache = StepsCache(prepare=install_spies)
    yield lambda trainer_class: cache(phantom_with_unlabeled, trainer_class)
    cache.close()


@pytest.mark.slow
@pytest.mark.parametrize("trainer_class", [SmallMagicNet, SmallFaithfulMagicNet, SmallSCDLMagicNet],
                         ids=["corrected", "faithful", "scdl"])
def test_training_steps_have_finite_terms_and_documented_total(two_steps, trainer_class):
    trained = two_steps(trainer_class)
    trainer, outputs, teacher_before = trained.trainer, trained.outputs, trained.prepared.teacher_before
    assert trainer.global_iteration == 2
    for o in outputs:
        assert set(trainer.logged_terms) <= set(o)
        assert all(math.isfinite(float(v)) for k, v in o.items()), o
        assert 0 <= o["location_accuracy"] <= 1 and o["location"] > 0
    assert outputs[0]["blend_fraction"] == 0 and 0 < outputs[1]["blend_fraction"] <= 1  # blending from step 2
    # step 0 recounted d (iteration 0 is a recount) and cleared the counts; step 1's labels are counted since
    assert trainer.class_counts.sum() == trainer.unlabeled_batch_size * 20 * 28 * 28
    assert trainer.class_distribution.max() == 1
    o = outputs[-1]
    assert o["supervised"] == pytest.approx((o["supervised_main"] + o["dice_unmix"] + o["dice_within"]) / 4,
                                            rel=1e-5)
    expected = o["supervised"] + 0.1 * o["location"] + o["consistency_weight"] * o["consistency"]
    if trainer_class is SmallSCDLMagicNet:
        ramp = o["consistency_weight"] / trainer.consistency_weight
        expected += 0.1 * (o["scdl_cdba_labeled"] + ramp * o["scdl_cdba_unlabeled"]
                           + o["scdl_sac"])
    assert float(o["loss"]) == pytest.approx(expected, rel=1e-4)
    moved = [k for k, v in trainer.teacher.state_dict().items() if not torch.equal(v, teacher_before[k])]
    assert any(k.startswith("location_head.") for k in moved) and any(k.startswith("segmenter.") for k in moved)
    assert trainer.inference_network() is trainer.teacher.module
    end_epoch_and_check_logged_terms(trainer, outputs)


def test_class_histogram_is_cleared_at_every_recount(planned_phantom):
    """As in the released code, d follows the labels of the last ``blend_update_every`` steps, not of the run."""
    trainer = make_trainer(planned_phantom, SmallMagicNet)
    labels = {c: torch.full((1, 1, 4, 4, 4), c) for c in (1, 2)}
    trainer.global_iteration = 0
    trainer.update_class_distribution(labels[1])  # iteration 0 recounts: only class 1 so far
    assert trainer.class_distribution.tolist() == [0, 1, 0, 0] and trainer.class_counts.sum() == 0
    for iteration in range(1, trainer.blend_update_every + 1):
        trainer.global_iteration = iteration
        trainer.update_class_distribution(labels[2])
        if iteration < trainer.blend_update_every:  # d changes only at a recount
            assert trainer.class_distribution.tolist() == [0, 1, 0, 0]
    # a cumulative histogram would still give class 1 a weight of 1/20 here
    assert trainer.class_distribution.tolist() == [0, 0, 1, 0] and trainer.class_counts.sum() == 0


@pytest.mark.slow
def test_histogram_counts_the_labels_the_consistency_loss_uses(two_steps):
    """Before blending starts that is the teacher's ŷ_T, after it the blended ŷ (released code)."""
    trained = two_steps(SmallMagicNet)
    spied = trained.prepared
    assert trained.outputs[1]["blend_fraction"] > 0  # the second step blends
    assert len(spied.counted) == 2 and all(c is t for c, t in zip(spied.counted, spied.consistency_targets))


@pytest.mark.slow
def test_resume_restores_teacher_student_and_blend_state(phantom_with_unlabeled, two_steps, tmp_path):
    trainer = two_steps(SmallMagicNet).trainer
    resumed = assert_checkpoint_restores_teacher_and_student(trainer, phantom_with_unlabeled, SmallMagicNet, tmp_path)
    assert resumed.global_iteration == 2
    assert torch.equal(resumed.class_counts, trainer.class_counts)
    assert torch.equal(resumed.class_distribution, trainer.class_distribution)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["nnUNetTrainerGAMagicNet", "nnUNetTrainerSCDL_GAMagicNet"])
def test_cli_train_and_predict(cli_trained, run_console, tmp_path, trainer):
    """``nnUNetv2_train`` (1 epoch × 2 iterations) and ``nnUNetv2_predict`` with the trainer's checkpoint."""
    trained = cli_trained(trainer)
    checkpoint = load_checkpoint(trained.folder)
    assert checkpoint["trainer_name"] == trainer
    assert checkpoint["nnunetv2_scdl"]["global_iteration"] == CLI_TRAINING_EPOCHS * CLI_TRAINING_ITERATIONS
    weights = checkpoint["network_weights"]  # the EMA teacher, location head included
    assert any(k.startswith("location_head.") for k in weights)
    assert any(k.startswith("segmenter.scdl.") for k in weights) == ("SCDL" in trainer)
    assert len(checkpoint["logging"]["location"]) == CLI_TRAINING_EPOCHS
    predict_test_cases(run_console, trained.dataset, trainer, tmp_path / f"predictions_{trainer}", trained.env)


def test_epoch_variants_exist():
    assert nnUNetTrainerSCDL_GAMagicNet_1epoch.num_epochs == 1
    assert issubclass(nnUNetTrainerSCDL_GAMagicNet_1epoch, nnUNetTrainerGAMagicNet)


class SmallPaperMagicNet(nnUNetTrainerGAMagicNet_paper):
    cube_size = FINE_CUBE
    location_hidden_features = 64


@pytest.mark.slow
def test_paper_option_keeps_the_released_70000_iteration_constants(phantom_with_unlabeled, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    scdl = make_trainer(phantom_with_unlabeled, nnUNetTrainerSCDL_GAMagicNet_paper)
    assert scdl.num_epochs * scdl.num_iterations_per_epoch == 17000 and scdl.consistency_rampup_step == 350
    trainer = started_trainer(phantom_with_unlabeled, SmallPaperMagicNet)
    group = trainer.optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.01, 0.9, False, 1e-4)
    trainer.train_step(next(trainer.dataloader_train))
    assert group["lr"] == pytest.approx(0.01 * (1 - 1 / 70000) ** 0.9)  # poly over 70 000, per iteration
    trainer.global_iteration = 17000  # the end of the run: w_c = 0.1·sigmoid_rampup(48, 200) ≈ 0.0056
    assert trainer.consistency_weight * trainer.rampup() == pytest.approx(0.1 * math.exp(-5 * (1 - 48 / 200) ** 2))
    trainer.on_train_end()
