"""The SSL pipeline on real MRI: a few cases of ../shared/data/Dataset004_Hippocampus in benchmark mode.

Skipped, with a message, where ../shared/data is absent. The labels of the cases used as unlabeled are overwritten
with garbage (raw) and deleted (preprocessed) before anything of ours runs on them.
"""
import json
import shutil

import pytest
import SimpleITK as sitk

from conftest import CONFIGURATION, fold_folder, load_checkpoint, train, training_env

DATASET_ID = 994
pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


@pytest.fixture
def hippocampus_subset(shared_data_dir, nnunet_folders):
    """4 labeled, 4 unlabeled and 2 validation cases of the paper's 5 % split, as an nnU-Net raw dataset."""
    source = shared_data_dir / "Dataset004_Hippocampus"
    paper_split = json.loads((shared_data_dir / "splits" / "Dataset004_Hippocampus_5pct.json").read_text())
    split = {"labeled": paper_split["labeled"][:4], "unlabeled": paper_split["unlabeled"][:4],
             "val": paper_split["val"][:2]}
    name = f"Dataset{DATASET_ID:03d}_HippocampusSubset"
    raw = nnunet_folders.raw / name
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    cases = split["labeled"] + split["unlabeled"] + split["val"]
    for case in cases:
        shutil.copy(source / "imagesTr" / f"{case}_0000.nii.gz", raw / "imagesTr")
        shutil.copy(source / "labelsTr" / f"{case}.nii.gz", raw / "labelsTr")
    dataset_json = json.loads((source / "dataset.json").read_text())
    dataset_json["numTraining"] = len(cases)
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    yield name, raw, split
    for folder in (raw, nnunet_folders.preprocessed / name, nnunet_folders.results / name):
        shutil.rmtree(folder, ignore_errors=True)


def test_mean_teacher_on_hippocampus_benchmark_split(hippocampus_subset, nnunet_folders, run_console, tmp_path):
    from nnunetv2_scdl.data.cpu_plans import derive_cpu_plans

    name, raw, split = hippocampus_subset
    run_console("nnUNetv2_plan_and_preprocess", ["-d", DATASET_ID, "-c", CONFIGURATION, "-np", 1, "-npfp", 1],
                env={"nnUNet_n_proc_DA": "1"})
    preprocessed = nnunet_folders.preprocessed / name
    derive_cpu_plans(str(preprocessed), "nnUNetPlans", "nnUNetPlans_cpu", feature_divisor=4, batch_size=2)
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps(split))
    run_console("nnUNetv2_scdl_make_split", ["-d", DATASET_ID, "--split", split_file])

    for case in split["unlabeled"]:
        (raw / "labelsTr" / f"{case}.nii.gz").write_bytes(b"corrupted: must never be read")
        (preprocessed / "nnUNetPlans_3d_fullres" / f"{case}_seg.b2nd").unlink()
    run_console("nnUNetv2_scdl_preprocess_unlabeled", ["-d", DATASET_ID, "-c", CONFIGURATION, "-p",
                                                       "nnUNetPlans_cpu", "-np", 1])

    class Dataset:  # what the helpers of test_end_to_end need
        dataset_id, configuration, cpu_plans = DATASET_ID, CONFIGURATION, "nnUNetPlans_cpu"
        results_folder = nnunet_folders.results / name

    result = train(run_console, Dataset, 1)
    assert "Unlabeled cases: 4" in result.stdout
    assert load_checkpoint(fold_folder(Dataset))["nnunetv2_scdl"]["global_iteration"] == 3

    images = tmp_path / "images"
    images.mkdir()
    case = split["val"][0]
    shutil.copy(raw / "imagesTr" / f"{case}_0000.nii.gz", images)
    output = tmp_path / "predictions"
    run_console("nnUNetv2_predict", ["-i", images, "-o", output, "-d", DATASET_ID, "-c", CONFIGURATION,
                                     "-tr", "nnUNetTrainerMeanTeacher", "-p", "nnUNetPlans_cpu", "-f", 0, "-device", "cpu",
                                     "--disable_tta", "-npp", 1, "-nps", 1], env=training_env(1))
    prediction = sitk.ReadImage(str(output / f"{case}.nii.gz"))
    reference = sitk.ReadImage(str(raw / "labelsTr" / f"{case}.nii.gz"))
    assert prediction.GetSize() == reference.GetSize()
    assert prediction.GetSpacing() == pytest.approx(reference.GetSpacing())
