"""derive_cpu_plans: smaller networks and batches that reuse nnU-Net's preprocessed data."""
import json

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2_scdl.data.cpu_plans import derive_cpu_plans


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
