"""derive_cpu_plans: smaller networks and batches that reuse nnU-Net's preprocessed data."""
import json

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2_scdl.data.cpu_plans import coarser_patch_size, derive_cpu_plans, total_strides


def _plans_with_inheritance() -> dict:
    architecture = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": {"n_stages": 3, "features_per_stage": [32, 64, 12]},
                    "_kw_requires_import": []}
    return {
        "dataset_name": "Dataset001_X", "plans_name": "nnUNetPlans",
        "configurations": {
            "2d": {"data_identifier": "nnUNetPlans_2d", "batch_size": 40, "architecture": json.loads(
                json.dumps(architecture))},
            "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "batch_size": 2,
                           "architecture": architecture},
            "3d_child": {"inherits_from": "3d_fullres", "data_identifier": "nnUNetPlans_3d_child"},
        },
    }


@pytest.fixture
def plans_folder(tmp_path):
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(_plans_with_inheritance()))
    return tmp_path


def test_features_batch_and_name_change_data_identifier_stays(plans_folder):
    target = derive_cpu_plans(str(plans_folder), feature_divisor=4, batch_size=3)
    assert target == str(plans_folder / "nnUNetPlans_cpu.json")
    plans = load_json(target)
    assert plans["plans_name"] == "nnUNetPlans_cpu"
    manager = PlansManager(plans)
    for name, identifier in (("2d", "nnUNetPlans_2d"), ("3d_fullres", "nnUNetPlans_3d_fullres"),
                             ("3d_child", "nnUNetPlans_3d_child")):
        configuration = manager.get_configuration(name)
        assert configuration.data_identifier == identifier
        assert configuration.batch_size == 3
        assert configuration.network_arch_init_kwargs["features_per_stage"] == [8, 16, 4]  # 12 // 4 = 3 -> min 4
    source = load_json(str(plans_folder / "nnUNetPlans.json"))
    assert source == _plans_with_inheritance()  # the source plans are not modified


def test_only_selected_configurations_change(plans_folder):
    plans = load_json(derive_cpu_plans(str(plans_folder), "nnUNetPlans", "small", 2, 1, configurations=["3d_fullres"]))
    assert plans["plans_name"] == "small"
    assert plans["configurations"]["2d"] == _plans_with_inheritance()["configurations"]["2d"]
    assert plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] == [16, 32, 6]
    assert plans["configurations"]["3d_fullres"]["batch_size"] == 1


def test_errors(plans_folder):
    with pytest.raises(FileNotFoundError, match="nnUNetv2_plan_and_preprocess"):
        derive_cpu_plans(str(plans_folder), source_plans="Missing")
    with pytest.raises(ValueError, match="3d_lowres"):
        derive_cpu_plans(str(plans_folder), configurations=["3d_lowres"])
    with pytest.raises(ValueError, match="new name"):
        derive_cpu_plans(str(plans_folder), target_plans="nnUNetPlans")
    with pytest.raises(ValueError):
        derive_cpu_plans(str(plans_folder), feature_divisor=0)


def test_real_plans_build_a_smaller_network_that_runs(planned_phantom):
    source = PlansManager(str(planned_phantom.preprocessed_folder / "nnUNetPlans.json"))
    cpu = PlansManager(str(planned_phantom.preprocessed_folder / f"{planned_phantom.cpu_plans}.json"))
    config, cpu_config = (m.get_configuration(planned_phantom.configuration) for m in (source, cpu))
    assert cpu_config.data_identifier == config.data_identifier == planned_phantom.data_identifier
    assert cpu_config.patch_size == config.patch_size and cpu_config.spacing == config.spacing
    assert cpu_config.batch_size == 2
    assert cpu_config.network_arch_init_kwargs["features_per_stage"] == [
        max(4, f // 4) for f in config.network_arch_init_kwargs["features_per_stage"]]
    network = get_network_from_plans(cpu_config.network_arch_class_name, cpu_config.network_arch_init_kwargs,
                                      cpu_config.network_arch_init_kwargs_req_import, input_channels=1,
                                      output_channels=4, allow_init=True, deep_supervision=False)
    with torch.no_grad():
        output = network(torch.zeros(1, 1, *cpu_config.patch_size))
    assert output.shape == (1, 4, *cpu_config.patch_size)


def test_coarser_patch_size_rounds_to_the_total_stride():
    assert total_strides([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]], 3) == [16, 32, 32]
    assert total_strides([1, 2, 2], 2) == [4, 4]
    # BTCV's default plan, 1.5x coarser in z and 3x in-plane: 42.7 -> 48, 53.3 -> 64, 64 -> 64
    assert coarser_patch_size([64, 160, 192], [1.5, 3, 3], [16, 32, 32]) == [48, 64, 64]
    assert coarser_patch_size([16, 32], [8, 8], [16, 16]) == [16, 16]  # never below one stride


def test_coarser_spacing_changes_spacing_patch_and_data_identifier(planned_phantom, tmp_path):
    source = PlansManager(str(planned_phantom.preprocessed_folder / "nnUNetPlans.json"))
    config = source.get_configuration(planned_phantom.configuration)
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(source.plans))
    target = derive_cpu_plans(str(tmp_path), target_plans="coarse", configurations=[planned_phantom.configuration],
                              spacing_factor=(1, 2, 2))
    coarse = PlansManager(target).get_configuration(planned_phantom.configuration)
    assert coarse.data_identifier == f"coarse_{planned_phantom.configuration}"  # nnU-Net's naming: preprocess again
    assert coarse.spacing == [config.spacing[0], 2 * config.spacing[1], 2 * config.spacing[2]]
    assert coarse.median_image_size_in_voxels[1] == pytest.approx(config.median_image_size_in_voxels[1] / 2)
    strides = total_strides(config.network_arch_init_kwargs["strides"], 3)
    assert coarse.patch_size == coarser_patch_size(config.patch_size, (1, 2, 2), strides)
    assert all(p % s == 0 for p, s in zip(coarse.patch_size, strides))
    assert load_json(target)["derived_from"]["spacing_factor"] == [1, 2, 2]
    network = get_network_from_plans(coarse.network_arch_class_name, coarse.network_arch_init_kwargs,
                                      coarse.network_arch_init_kwargs_req_import, input_channels=1,
                                      output_channels=4, allow_init=True, deep_supervision=False)
    with torch.no_grad():
        assert network(torch.zeros(1, 1, *coarse.patch_size)).shape == (1, 4, *coarse.patch_size)
    with pytest.raises(ValueError, match="2 values but configuration"):
        derive_cpu_plans(str(tmp_path), target_plans="bad", spacing_factor=(1, 2))


@pytest.mark.slow
def test_cpu_plans_command_preprocesses_the_coarser_configuration(phantom_copy, run_console):
    dataset = phantom_copy()
    result = run_console("nnUNetv2_scdl_cpu_plans", ["-d", dataset.dataset_id, "-c", dataset.configuration, "-o",
                                                     "nnUNetPlans_coarse", "--spacing-factor", 1, 2, 2,
                                                     "--preprocess", "-np", 1], env={"nnUNet_n_proc_DA": "1"})
    assert "nnUNetPlans_coarse_3d_fullres" in result.stdout
    folder = dataset.preprocessed_folder / "nnUNetPlans_coarse_3d_fullres"
    assert sorted(p.name for p in folder.glob("*.pkl")) == sorted(f"{c}.pkl" for c in dataset.labeled)
    same = run_console("nnUNetv2_scdl_cpu_plans", ["-d", dataset.dataset_id, "-o", "nnUNetPlans_small"])
    assert "data nnUNetPlans_3d_fullres" in same.stdout  # unchanged spacing: the existing data are reused
    assert "nnUNetv2_preprocess" not in same.stdout
    bad = run_console("nnUNetv2_scdl_cpu_plans", ["-d", dataset.dataset_id, "-p", "Missing"], check=False)
    assert bad.returncode == 1 and "nnUNetv2_plan_and_preprocess" in bad.stdout
