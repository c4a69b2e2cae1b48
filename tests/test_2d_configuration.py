"""Every benchmarked trainer on nnU-Net's 2d configuration (CPU plans of the planned phantom): two training steps, the end of the
epoch, one validation step and an inference forward, in-process as ``nnUNetv2_train`` runs them.

A 2d configuration is a candidate where 3d training is too slow on a CPU (BTCV), so every trainer must support it.
"""
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import copy_planned_dataset, remove_dataset, run_console_command, started_trainer

from nnunetv2_scdl.evaluation.benchmark_report import BENCHMARK_TRAINERS
from nnunetv2_scdl.training.registry import ALL_TRAINERS

pytestmark = pytest.mark.slow  # preprocesses a 2d copy of the phantom and trains every trainer

CONFIGURATION_2D = "2d"


@pytest.fixture(scope="module")
def phantom_2d(planned_phantom):
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

    from nnunetv2_scdl.data.unlabeled_preprocessing import preprocess_unlabeled

    dataset = copy_planned_dataset(planned_phantom)
    try:
        run_console_command("nnUNetv2_preprocess", ["-d", dataset.dataset_id, "-c", CONFIGURATION_2D,
                                                    "-plans_name", dataset.cpu_plans, "-np", 1])
        plans_file = str(dataset.preprocessed_folder / f"{dataset.cpu_plans}.json")
        plans = load_json(plans_file)
        # the phantom's 28 × 28 slices give a 28 × 28 patch, which GA-MagicNet cannot cut into cubes (total stride
        # 4: a cube of 4 keeps one bottleneck voxel, 28 has no other divisor); 32 × 32 gives 4 × 4 cubes of 8 × 8
        plans["configurations"][CONFIGURATION_2D]["patch_size"] = [32, 32]
        save_json(plans, plans_file, sort_keys=False)
        dataset = replace(dataset, configuration=CONFIGURATION_2D,
                          data_identifier=plans["configurations"][CONFIGURATION_2D]["data_identifier"])
        preprocess_unlabeled(dataset.dataset_id, [CONFIGURATION_2D], dataset.cpu_plans, num_processes=1,
                             verbose=False)
        yield dataset
    finally:
        remove_dataset(dataset)


@pytest.mark.parametrize("trainer_name", BENCHMARK_TRAINERS)
def test_trainer_trains_validates_and_predicts_in_2d(trainer_name, phantom_2d, monkeypatch):
    """The supervised reference and every host with and without SCDL (the ``_paper`` and ``_released`` variants
    change losses and options, not how a network meets the data's dimensionality)."""
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    trainer = started_trainer(phantom_2d, ALL_TRAINERS[trainer_name])
    try:
        patch_size = tuple(trainer.configuration_manager.patch_size)
        assert len(patch_size) == 2
        outputs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(2)]
        assert all(np.isfinite(float(output["loss"])) for output in outputs)
        trainer.on_train_epoch_end(outputs)

        trainer.on_validation_epoch_start()
        validation = trainer.validation_step(next(trainer.dataloader_val))
        classes = trainer.label_manager.num_segmentation_heads - 1
        assert np.shape(validation["tp_hard"]) == (classes,)
        trainer.on_validation_epoch_end([validation])

        network = trainer.network
        network.eval()
        with torch.no_grad():
            prediction = network(torch.randn(1, 1, *patch_size))
        prediction = prediction[0] if isinstance(prediction, (list, tuple)) else prediction
        assert tuple(prediction.shape) == (1, classes + 1, *patch_size)
        assert torch.isfinite(prediction).all()
    finally:
        trainer.on_train_end()
