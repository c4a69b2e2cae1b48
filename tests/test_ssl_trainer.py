"""nnUNetTrainerSSL / nnUNetTrainerMeanTeacher built in-process: setup checks, unlabeled-case selection, steps."""
import copy
import json

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from conftest import (add_ignore_label, assert_checkpoint_restores_teacher_and_student,
                      end_epoch_and_check_logged_terms, make_trainer)

from nnunetv2_scdl.data.unlabeled_preprocessing import preprocess_unlabeled
from nnunetv2_scdl.networks.scdl_unet import SCDLUNet
from nnunetv2_scdl.training.mean_teacher import nnUNetTrainerMeanTeacher
from nnunetv2_scdl.training.registry import nnUNetTrainerMeanTeacher_5epochs
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


@pytest.mark.slow
@pytest.mark.parametrize("trainer_class,ignore_label", [(nnUNetTrainerMeanTeacher, False),
                                                        (nnUNetTrainerMeanTeacher, True),
                                                        (nnUNetTrainerSCDL_MT, False)],
                         ids=["mean_teacher", "mean_teacher_ignore_label", "scdl_mean_teacher"])
def test_training_steps_update_teacher_and_log_terms(phantom_copy, run_console, monkeypatch, trainer_class,
                                                     ignore_label):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    dataset = phantom_copy()
    preprocess_unlabeled(dataset.dataset_id, [dataset.configuration], dataset.cpu_plans, num_processes=1,
                         verbose=False)
    if ignore_label:
        add_ignore_label(dataset, run_console)
    dataset_json = load_json(str(dataset.preprocessed_folder / "dataset.json"))
    trainer = make_trainer(dataset, trainer_class, dataset_json=dataset_json)
    assert trainer.label_manager.has_ignore_label == ignore_label
    trainer.initialize()
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
    teacher_before = copy.deepcopy(trainer.teacher.state_dict())
    trainer.on_train_epoch_start()
    outputs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(2)]
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
    trainer.on_train_end()


@pytest.mark.slow
@pytest.mark.parametrize("trainer_class", [nnUNetTrainerMeanTeacher, nnUNetTrainerSCDL_MT])
def test_checkpoint_restores_student_teacher_and_counters(phantom_copy, monkeypatch, tmp_path, trainer_class):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    dataset = phantom_copy()
    preprocess_unlabeled(dataset.dataset_id, [dataset.configuration], dataset.cpu_plans, num_processes=1,
                         verbose=False)
    trainer = make_trainer(dataset, trainer_class)
    trainer.initialize()
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
    trainer.on_train_epoch_start()
    for _ in range(2):
        trainer.train_step(next(trainer.dataloader_train))
    resumed = assert_checkpoint_restores_teacher_and_student(trainer, dataset, trainer_class, tmp_path)
    assert resumed.global_iteration == 2
    trainer.on_train_end()
