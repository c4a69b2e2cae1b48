"""nnUNetTrainerSSL / nnUNetTrainerMeanTeacher built in-process: setup checks, unlabeled-case selection, steps."""
import copy
import json
import re

import numpy as np
import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from conftest import (StepsCache, assert_checkpoint_restores_teacher_and_student, end_epoch_and_check_logged_terms,
                      make_trainer)

from nnunetv2_scdl.data.unlabeled_preprocessing import preprocess_unlabeled
from nnunetv2_scdl.networks.scdl_unet import SCDLUNet
from nnunetv2_scdl.training.mean_teacher import nnUNetTrainerMeanTeacher
from nnunetv2_scdl.training.registry import nnUNetTrainerMeanTeacher_5epochs
from nnunetv2_scdl.training.schedules import sigmoid_rampup
from nnunetv2_scdl.training.scdl_mean_teacher import nnUNetTrainerSCDL_MT
from nnunetv2_scdl.training.ssl_base import full_resolution, split_batch


def test_split_batch_and_full_resolution():
    deep_supervision = [torch.arange(4.0).view(4, 1), torch.arange(4.0, 8.0).view(4, 1)]
    first, rest = split_batch(deep_supervision, 1)
    assert [t.tolist() for t in first] == [[[0.0]], [[4.0]]] and rest[1].tolist() == [[5.0], [6.0], [7.0]]
    assert torch.equal(full_resolution(deep_supervision), deep_supervision[0])
    single_first, single_rest = split_batch(torch.arange(3.0), 2)
    assert single_first.tolist() == [0.0, 1.0] and single_rest.tolist() == [2.0]


def test_region_based_training_is_rejected(planned_phantom):
    dataset_json = load_json(str(planned_phantom.preprocessed_folder / "dataset.json"))
    dataset_json = copy.deepcopy(dataset_json)
    dataset_json["labels"] = {"background": 0, "any_structure": [1, 2, 3], "small_structures": [2, 3]}
    dataset_json["regions_class_order"] = [1, 2]
    with pytest.raises(NotImplementedError, match="region-based"):
        make_trainer(planned_phantom, nnUNetTrainerMeanTeacher, dataset_json=dataset_json)


def test_epoch_variant_and_env_override(planned_phantom, monkeypatch):
    monkeypatch.setenv("SCDL_CONFIDENCE_THRESHOLD", "0.6")
    trainer = make_trainer(planned_phantom, nnUNetTrainerMeanTeacher_5epochs)
    assert trainer.num_epochs == 5 and trainer.confidence_threshold == 0.6
    monkeypatch.setenv("SCDL_CONSISTENCY", "kl")
    with pytest.raises(ValueError, match="consistency"):
        make_trainer(planned_phantom, nnUNetTrainerMeanTeacher)


def validation_outputs(dice_per_class):
    """nnU-Net validation_step outputs whose pooled hard Dice per foreground class is ``dice_per_class``."""
    tp = np.array(dice_per_class, dtype=float) * 100
    counts = {"tp_hard": tp, "fp_hard": 200 - 2 * tp, "fn_hard": np.zeros_like(tp)}
    return [{"loss": np.array(1.0), **counts, **{f"student:{key}": value for key, value in counts.items()}}]


def test_consistency_gate_starts_the_ramp_when_the_teacher_learns(planned_phantom, monkeypatch):
    monkeypatch.setenv("SCDL_CONSISTENCY_GATE_DICE", "0.1")
    trainer = make_trainer(planned_phantom, nnUNetTrainerMeanTeacher)
    ramp_length = trainer.consistency_rampup_fraction * trainer.num_epochs * trainer.num_iterations_per_epoch
    assert re.search(r"consistency_gate_dice += 0.1 +\[env SCDL_CONSISTENCY_GATE_DICE\]",
                     trainer.hyperparameter_report())
    trainer.global_iteration = 30
    assert trainer.rampup() == 0.0  # gate closed: no consistency
    trainer.on_validation_epoch_end(validation_outputs([0.02, 0.15]))  # mean 0.085: still closed
    assert trainer.logger.get_value("mean_fg_dice", step=0) == pytest.approx(0.085)
    assert trainer.consistency_start_iteration is None and trainer.rampup() == 0.0
    trainer.current_epoch, trainer.global_iteration = 1, 45
    trainer.on_validation_epoch_end(validation_outputs([0.08, 0.14]))  # mean 0.11: opens at iteration 45
    assert trainer.consistency_start_iteration == 45
    trainer.global_iteration = 45 + round(ramp_length / 2)
    assert trainer.rampup() == pytest.approx(sigmoid_rampup(round(ramp_length / 2), ramp_length))
    trainer.current_epoch = 2
    trainer.on_validation_epoch_end(validation_outputs([0.9, 0.9]))  # opened once: the start does not move
    assert trainer.consistency_start_iteration == 45
    # a resumed run keeps the start (from its state, or else from the logged pseudo Dice); no network is built here
    monkeypatch.setattr(trainer, "inference_network", lambda: None)
    resumed = make_trainer(planned_phantom, nnUNetTrainerMeanTeacher)
    for epoch, dice in enumerate([0.085, 0.11, 0.9]):
        resumed.logger.log("mean_fg_dice", dice, epoch)
    resumed.load_extra_checkpoint_state(trainer.extra_checkpoint_state())
    assert resumed.consistency_start_iteration == 45
    state = dict(trainer.extra_checkpoint_state(), consistency_start_iteration=None)
    resumed.load_extra_checkpoint_state(state)
    assert resumed.consistency_start_iteration == 2 * trainer.num_iterations_per_epoch


def test_without_the_gate_the_ramp_starts_at_step_zero(planned_phantom, monkeypatch):
    monkeypatch.setenv("SCDL_CONSISTENCY_GATE_DICE", "0")
    trainer = make_trainer(planned_phantom, nnUNetTrainerMeanTeacher)
    ramp_length = trainer.consistency_rampup_fraction * trainer.num_epochs * trainer.num_iterations_per_epoch
    trainer.global_iteration = 7
    assert trainer.rampup() == pytest.approx(sigmoid_rampup(7, ramp_length)) and trainer.rampup() > 0
    monkeypatch.setenv("SCDL_CONSISTENCY_GATE_DICE", "1.5")
    with pytest.raises(ValueError, match="consistency_gate_dice"):
        make_trainer(planned_phantom, nnUNetTrainerMeanTeacher)


def test_unlabeled_case_that_is_also_a_training_case_is_refused(phantom_copy):
    dataset = phantom_copy()
    preprocess_unlabeled(dataset.dataset_id, [dataset.configuration], dataset.cpu_plans, num_processes=1,
                         verbose=False)
    leaked = dataset.unlabeled[0]
    splits = [{"train": dataset.labeled[:4] + [leaked], "val": dataset.labeled[4:]}]
    (dataset.preprocessed_folder / "splits_final.json").write_text(json.dumps(splits))
    trainer = make_trainer(dataset, nnUNetTrainerMeanTeacher)
    trainer.initialize()
    with pytest.raises(RuntimeError, match=leaked):
        trainer.get_unlabeled_dataloader()


def test_missing_unlabeled_data_names_the_command(phantom_copy):
    trainer = make_trainer(phantom_copy(), nnUNetTrainerMeanTeacher)
    trainer.initialize()
    with pytest.raises(FileNotFoundError, match="nnUNetv2_scdl_preprocess_unlabeled"):
        trainer.get_unlabeled_dataloader()


@pytest.fixture(scope="module")
def two_steps(phantom_with_unlabeled, phantom_with_ignore_label):
    """``two_steps(trainer_class, ignore_label=False)``: the trainer after two steps on the phantom (with nnU-Net's
    ignore label if asked), with its teacher's weights from before them (``prepared``), once per class and dataset
    for this module."""
    cache = StepsCache(prepare=lambda trainer: copy.deepcopy(trainer.teacher.state_dict()))
    yield lambda trainer_class, ignore_label=False: cache(
        phantom_with_ignore_label if ignore_label else phantom_with_unlabeled, trainer_class)
    cache.close()


@pytest.mark.slow
@pytest.mark.parametrize("trainer_class,ignore_label", [(nnUNetTrainerMeanTeacher, False),
                                                        (nnUNetTrainerMeanTeacher, True),
                                                        (nnUNetTrainerSCDL_MT, False)],
                         ids=["mean_teacher", "mean_teacher_ignore_label", "scdl_mean_teacher"])
def test_training_steps_update_teacher_and_log_terms(two_steps, trainer_class, ignore_label):
    trained = two_steps(trainer_class, ignore_label)
    trainer, outputs, teacher_before = trained.trainer, trained.outputs, trained.prepared
    assert trainer.label_manager.has_ignore_label == ignore_label
    assert trainer.global_iteration == 2
    assert {"loss", "supervised", "consistency", "consistency_weight", "pseudo_label_coverage"} <= set(outputs[0])
    assert all(0 <= o["data_wait_s"] <= o["step_s"] for o in outputs)
    moved = [k for k, v in trainer.teacher.state_dict().items() if not torch.equal(v, teacher_before[k])]
    assert moved, "the EMA teacher did not follow the student"
    # the total is the supervised term plus the ramped consistency term (plus SCDL's weighted terms)
    o = outputs[-1]
    expected = o["supervised"] + o["consistency_weight"] * o["consistency"]
    if trainer_class is nnUNetTrainerSCDL_MT:
        assert isinstance(trainer.network, SCDLUNet) and isinstance(trainer.teacher.module, SCDLUNet)
        ramp = o["consistency_weight"] / trainer.consistency_weight  # the ramp at the time of that step
        expected += 0.1 * (o["scdl_cdba_labeled"] + ramp * o["scdl_cdba_unlabeled"]
                           + o["scdl_sac"])
        assert all(torch.isfinite(torch.tensor(o[k])) for k in o if k.startswith("scdl_"))
    assert float(o["loss"]) == pytest.approx(expected, rel=1e-4)
    end_epoch_and_check_logged_terms(trainer, outputs)
    assert trainer.inference_network() is trainer.teacher.module


@pytest.mark.slow
@pytest.mark.parametrize("trainer_class", [nnUNetTrainerMeanTeacher, nnUNetTrainerSCDL_MT])
def test_checkpoint_restores_student_teacher_and_counters(phantom_with_unlabeled, two_steps, tmp_path,
                                                          trainer_class):
    trainer = two_steps(trainer_class).trainer
    resumed = assert_checkpoint_restores_teacher_and_student(trainer, phantom_with_unlabeled, trainer_class, tmp_path)
    assert resumed.global_iteration == 2
