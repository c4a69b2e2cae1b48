"""benchmarks/predict_cost.py: the model folder it writes is one that nnUNetPredictor loads (the trainer's own
inference weights, mirroring on) and predicts a phantom image with; the case list and the overhead statistic."""
import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, load_benchmark_script

BENCHMARKS = REPO_ROOT / "benchmarks"


@pytest.fixture
def predict_cost(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports trainer_pairs from its own folder
    return load_benchmark_script("predict_cost")


def test_model_folder_loads_in_nnunet_predictor_and_predicts_a_phantom_image(planned_phantom, predict_cost, tmp_path):
    import SimpleITK as sitk

    trainer = predict_cost.build_trainer("nnUNetTrainerSCDL_MT", str(planned_phantom.dataset_id),
                                         planned_phantom.cpu_plans, planned_phantom.configuration,
                                         str(tmp_path / "results"))
    inference = trainer.inference_network()
    with torch.no_grad():  # weights no fresh initialisation has: the folder must hold these
        for linear in inference.scdl.prior_projections.maps:
            linear.weight.normal_()
    folder = predict_cost.write_model_folder(trainer, str(tmp_path / "model"))

    predictor = predict_cost.load_predictor(folder)
    assert predictor.trainer_name == "nnUNetTrainerSCDL_MT"
    assert predictor.use_mirroring and predictor.allowed_mirroring_axes == (0, 1, 2)  # TTA as after training
    loaded = predictor.network.state_dict()
    expected = inference.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key

    cases = predict_cost.raw_cases(str(planned_phantom.raw_folder / "imagesTs"), ".nii.gz", 1)
    assert cases == [[str(planned_phantom.raw_folder / "imagesTs" / f"{planned_phantom.test[0]}_0000.nii.gz")]]
    seconds = predict_cost.predict_seconds(predictor, cases, str(tmp_path / "predictions"))
    assert seconds > 0
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "predictions" /
                                                           f"{planned_phantom.test[0]}.nii.gz")))
    assert prediction.shape == sitk.GetArrayFromImage(sitk.ReadImage(cases[0][0])).shape
    assert set(np.unique(prediction)) <= {0, 1, 2, 3}
    total, projection = predict_cost.patch_flops(predictor)
    assert total > projection > 0  # SCDL's projection MLP is found and counted inside the whole forward


def test_raw_cases_names_a_missing_folder_and_too_few_cases(planned_phantom, predict_cost, tmp_path):
    with pytest.raises(SystemExit, match="no raw images at"):
        predict_cost.raw_cases(str(tmp_path / "absent"), ".nii.gz", 1)
    available = len(planned_phantom.test)
    with pytest.raises(SystemExit, match=f"holds {available} cases"):
        predict_cost.raw_cases(str(planned_phantom.raw_folder / "imagesTs"), ".nii.gz", available + 1)


def test_overhead_is_the_median_of_paired_round_ratios(predict_cost):
    from trainer_pairs import median_overhead

    # ratios per round: +1 %, +10 %, 0 % → median +1 % (the ratio of the medians would say +10 %)
    assert median_overhead([1.0, 2.0, 4.0], [1.01, 2.2, 4.0]) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="as many"):
        median_overhead([1.0, 2.0], [1.0])
