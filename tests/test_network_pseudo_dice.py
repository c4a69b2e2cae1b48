"""Online pseudo Dice of every network that learns: co-training's A and B besides their ensemble, an EMA teacher's
student besides the teacher; logged per epoch, restored on resume, read by the benchmark runner."""
import numpy as np
import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from conftest import make_trainer

from nnunetv2_scdl.evaluation.benchmark_summary import training_summary
from nnunetv2_scdl.training.ga_cps import nnUNetTrainerGACPS
from nnunetv2_scdl.training.mean_teacher import nnUNetTrainerMeanTeacher
from nnunetv2_scdl.training.progress_logging import per_class_rows


def validation_batch(trainer):
    if not trainer.was_initialized:
        trainer.initialize()
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
    batch = next(trainer.dataloader_val)
    trainer.on_validation_epoch_start()
    return batch


def predict_background_everywhere(network) -> None:
    """Every segmentation head outputs a large background logit whatever its input."""
    for head in network.decoder.seg_layers:
        torch.nn.init.zeros_(head.weight)
        with torch.no_grad():
            head.bias.copy_(torch.tensor([10.0] + [0.0] * (head.bias.numel() - 1)))


def hard_dice(network, batch, num_classes: int) -> list:
    """2·TP / (2·TP + FP + FN) per foreground class of ``network``'s argmax on the batch (NaN where undefined)."""
    with torch.no_grad():
        output = network(batch["data"])
    output = output[0] if isinstance(output, (list, tuple)) else output
    prediction, target = output.argmax(1), batch["target"][0][:, 0].long()
    dice = []
    for c in range(1, num_classes):
        tp = ((prediction == c) & (target == c)).sum().item()
        fp = ((prediction == c) & (target != c)).sum().item()
        fn = ((prediction != c) & (target == c)).sum().item()
        dice.append(2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else float("nan"))
    return dice


def copy_batch(batch):
    return {**batch, "target": [t.clone() for t in batch["target"]]}


def test_co_training_logs_network_a_and_b_apart_from_their_ensemble(phantom_with_unlabeled):
    trainer = make_trainer(phantom_with_unlabeled, nnUNetTrainerGACPS)
    trainer.initialize()
    batch = validation_batch(trainer)
    predict_background_everywhere(trainer.network.net_a)
    classes = trainer.label_manager.num_segmentation_heads
    expected_b = hard_dice(trainer.network.net_b, copy_batch(batch), classes)
    assert np.nanmax(expected_b) > 0  # B predicts some foreground, so "A = B" would be caught

    outputs = trainer.validation_step(copy_batch(batch))
    trainer.on_validation_epoch_end([outputs])
    logged_a = trainer.logger.get_value("pseudo_dice_network_a", step=0)
    logged_b = trainer.logger.get_value("pseudo_dice_network_b", step=0)
    present = [i for i in range(classes - 1) if (batch["target"][0] == i + 1).any()]
    assert present and all(logged_a[i] == 0.0 for i in present)  # A predicts background: it learned nothing
    np.testing.assert_allclose(logged_b, expected_b, rtol=1e-6)
    # nnU-Net's own pseudo Dice stays that of the ensemble, the network that inference uses
    np.testing.assert_allclose(trainer.logger.get_value("dice_per_class_or_region", step=0),
                               hard_dice(trainer.network, copy_batch(batch), classes), rtol=1e-6)


def test_mean_teacher_logs_the_student_besides_the_teacher(phantom_with_unlabeled):
    trainer = make_trainer(phantom_with_unlabeled, nnUNetTrainerMeanTeacher)
    trainer.initialize()
    batch = validation_batch(trainer)
    predict_background_everywhere(trainer.network)  # the student only; the teacher is a copy made at initialize
    classes = trainer.label_manager.num_segmentation_heads
    expected_teacher = hard_dice(trainer.teacher.module, copy_batch(batch), classes)

    trainer.on_validation_epoch_end([trainer.validation_step(copy_batch(batch))])
    student = trainer.logger.get_value("pseudo_dice_student", step=0)
    present = [i for i in range(classes - 1) if (batch["target"][0] == i + 1).any()]
    assert present and all(student[i] == 0.0 for i in present)
    np.testing.assert_allclose(trainer.logger.get_value("dice_per_class_or_region", step=0), expected_teacher,
                               rtol=1e-6)
    assert trainer.network is not trainer.teacher.module  # validation put the student back


def test_monitored_passes_see_the_ignore_label(phantom_with_unlabeled):
    """nnU-Net's validation step zeroes ignored voxels of the target in place; every pass must still mask them."""
    dataset_json = load_json(str(phantom_with_unlabeled.preprocessed_folder / "dataset.json"))
    ignore = max(dataset_json["labels"].values()) + 1
    dataset_json = {**dataset_json, "labels": {**dataset_json["labels"], "ignore": ignore}}
    batch = validation_batch(make_trainer(phantom_with_unlabeled, nnUNetTrainerGACPS))
    trainer = make_trainer(phantom_with_unlabeled, nnUNetTrainerGACPS, dataset_json=dataset_json)
    trainer.initialize()
    trainer.on_validation_epoch_start()
    batch["target"] = [t.clone() for t in batch["target"]]
    batch["target"][0][..., :4, :, :] = ignore
    unmasked = trainer.validation_step({**batch, "target": [torch.where(t == ignore, 0, t) for t in batch["target"]]})
    masked = trainer.validation_step(batch)
    for name in ("network_a", "network_b", ""):
        prefix = f"{name}:" if name else ""
        total = {key: outputs[f"{prefix}tp_hard"] + outputs[f"{prefix}fp_hard"] + outputs[f"{prefix}fn_hard"]
                 for key, outputs in (("masked", masked), ("unmasked", unmasked))}
        assert total["masked"].sum() < total["unmasked"].sum(), name or "ensemble"


def test_runner_reads_network_curves_from_the_checkpoint(tmp_path):
    nan = float("nan")
    logging = {"epoch_start_timestamps": [0.0, 10.0, 20.0], "epoch_end_timestamps": [5.0, 15.0, 26.0],
               "dice_per_class_or_region": [[0.0, nan], [0.2, 0.1], [0.5, 0.3]],
               # a run resumed with this code: the epochs before it are padded with a scalar NaN
               "pseudo_dice_network_a": [nan, [0.1, nan], [0.4, 0.2]],
               "pseudo_dice_network_b": [nan, [0.0, 0.0], [0.0, 0.1], [0.0, 0.2]]}  # one epoch past the checkpoint
    torch.save({"logging": logging}, tmp_path / "checkpoint.pth")
    summary = training_summary(tmp_path / "checkpoint.pth")
    assert summary["seconds"] == 16.0 and summary["epochs"] == 3
    assert summary["network_pseudo_dice"] == {"network_a": [[None, None], [0.1, None], [0.4, 0.2]],
                                              "network_b": [[None, None], [0.0, 0.0], [0.0, 0.1]]}
    del logging["pseudo_dice_network_a"], logging["pseudo_dice_network_b"]
    torch.save({"logging": logging}, tmp_path / "checkpoint.pth")
    assert "network_pseudo_dice" not in training_summary(tmp_path / "checkpoint.pth")


def test_per_class_rows_pads_scalar_epochs():
    rows = per_class_rows([float("nan"), [0.1, 0.2]])
    assert rows.shape == (2, 2) and np.isnan(rows[0]).all() and rows[1].tolist() == [0.1, 0.2]
    assert per_class_rows([]).shape[0] == 0
