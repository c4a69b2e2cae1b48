"""End to end through nnU-Net's real command lines:

plan_and_preprocess (fixture) → unlabeled preprocessing → nnUNetv2_train (SSL trainer, 2 short epochs, CPU)
→ ``--c`` resume → nnUNetv2_predict; plus benchmark mode with the unlabeled cases' labels destroyed first.
"""
import json

import numpy as np
import pytest
import torch
from conftest import fold_folder, load_checkpoint, predict_test_cases, train, training_env

pytestmark = pytest.mark.slow  # every test runs nnU-Net's commands

TRAINER = "nnUNetTrainerMeanTeacher"


def test_mean_teacher_train_resume_predict(phantom_copy, run_console, tmp_path):
    dataset = phantom_copy()
    run_console("nnUNetv2_scdl_preprocess_unlabeled", ["-d", dataset.dataset_id, "-c", dataset.configuration,
                                                       "-p", dataset.cpu_plans, "-np", 1])
    train(run_console, dataset, 2, "--npz")
    folder = fold_folder(dataset)
    first = load_checkpoint(folder)
    assert first["trainer_name"] == TRAINER and first["current_epoch"] == 2
    state = first["nnunetv2_scdl"]
    assert state["global_iteration"] == 2 * 3
    # network_weights (what nnUNetv2_predict loads) is the EMA teacher; the student is kept for --c
    key = next(k for k in first["network_weights"] if k.endswith("weight"))
    assert not torch.equal(first["network_weights"][key], state["training_network_weights"][key])
    assert len(first["logging"]["consistency"]) == 2 and len(first["logging"]["data_wait_fraction"]) == 2
    assert (folder / "progress.png").is_file()
    log = "".join(p.read_text() for p in folder.glob("training_log_*.txt"))
    assert "ssl terms: supervised" in log and "SCDL_<NAME>" in log and "waiting for batches" in log

    # resume: epoch 2 only, with the student, teacher, counters and curves restored
    result = train(run_console, dataset, 3, "--c", "--npz")
    resumed = load_checkpoint(folder)
    assert resumed["current_epoch"] == 3 and resumed["nnunetv2_scdl"]["global_iteration"] == 3 * 3
    assert "Epoch 2" in result.stdout and "Epoch 0\n" not in result.stdout and "Epoch 1\n" not in result.stdout
    assert resumed["logging"]["consistency"][:2] == first["logging"]["consistency"]
    assert len(resumed["logging"]["consistency"]) == 3

    # nnU-Net's model selection reads the validation results of our trainer like any other
    selection = run_console("nnUNetv2_find_best_configuration", [dataset.dataset_id, "-c", dataset.configuration,
                                                                 "-tr", TRAINER, "-p", dataset.cpu_plans, "-f", 0])
    assert f"*Best*: {TRAINER}__{dataset.cpu_plans}__{dataset.configuration}" in selection.stdout

    predict_test_cases(run_console, dataset, TRAINER, tmp_path / "predictions", training_env(3))


def test_ssl_trainer_without_preprocessed_unlabeled_data_fails_clearly(phantom_copy, run_console):
    dataset = phantom_copy()
    result = train(run_console, dataset, 1, check=False)
    assert result.returncode != 0
    assert "nnUNetv2_scdl_preprocess_unlabeled" in result.stdout


def test_benchmark_mode_never_reads_unlabeled_labels(phantom_copy, run_console):
    """Benchmark mode on the labeled cases: the labels of the 'unlabeled' ones are destroyed, and training works."""
    dataset = phantom_copy()
    cases = sorted(dataset.labeled)
    split_file = dataset.preprocessed_folder / "benchmark_split.json"
    split = {"labeled": cases[:2], "unlabeled": cases[2:5], "val": cases[5:]}
    split_file.write_text(json.dumps(split))
    run_console("nnUNetv2_scdl_make_split", ["-d", dataset.dataset_id, "--split", split_file])
    for case in split["unlabeled"]:
        (dataset.raw_folder / "labelsTr" / f"{case}.nii.gz").write_bytes(b"not a label file")
        (dataset.labeled_data_folder / f"{case}_seg.b2nd").unlink()
    # only the benchmark cases: imagesUnlabeled is emptied so the split is the one source
    for image in (dataset.raw_folder / "imagesUnlabeled").iterdir():
        image.unlink()
    (dataset.raw_folder / "imagesUnlabeled").rmdir()
    run_console("nnUNetv2_scdl_preprocess_unlabeled", ["-d", dataset.dataset_id, "-c", dataset.configuration,
                                                       "-p", dataset.cpu_plans, "-np", 1])
    result = train(run_console, dataset, 1)
    assert "Unlabeled cases: 3" in result.stdout
    assert load_checkpoint(fold_folder(dataset))["nnunetv2_scdl"]["global_iteration"] == 3


@pytest.mark.parametrize("trainer", ["nnUNetTrainerSCDL_MT", "nnUNetTrainerSCDL_GACPS"])
def test_scdl_checkpoint_predicts_deterministically_and_with_its_priors(trainer, cli_trained, run_console,
                                                                        tmp_path):
    """nnUNetv2_predict rebuilds the SCDL network from the trainer class, loads the trained proxies, is deterministic,
    and uses the priors: the same checkpoint with its prior projections zeroed predicts differently."""
    trained = cli_trained(trainer)  # nnUNetv2_train, shared with the other tests of this trainer
    dataset, folder = trained.dataset, trained.folder
    checkpoint = load_checkpoint(folder)
    projections = [k for k in checkpoint["network_weights"] if ".prior_projections." in k]
    assert projections, "the inference network must carry SCDL with priors"
    assert any(checkpoint["network_weights"][k].abs().sum() > 0 for k in projections)
    if trainer == "nnUNetTrainerSCDL_GACPS":  # both networks of the ensemble
        assert {k.split(".")[0] for k in projections} == {"net_a", "net_b"}
    for key in projections:
        checkpoint["network_weights"][key] = torch.zeros_like(checkpoint["network_weights"][key])
    torch.save(checkpoint, folder / "checkpoint_zero_priors.pth")  # the other tests of this model read only _final

    def predict(name: str, checkpoint_name: str) -> np.ndarray:
        output = tmp_path / name
        run_console("nnUNetv2_predict", ["-i", dataset.raw_folder / "imagesTs", "-o", output, "-d", dataset.dataset_id,
                                         "-c", dataset.configuration, "-tr", trainer, "-p", dataset.cpu_plans,
                                         "-f", 0, "-device", "cpu", "--disable_tta", "-npp", 1, "-nps", 1,
                                         "-chk", checkpoint_name, "--save_probabilities"], env=trained.env)
        return np.load(output / f"{dataset.test[0]}.npz")["probabilities"]

    first, second = predict("first", "checkpoint_final.pth"), predict("second", "checkpoint_final.pth")
    assert np.array_equal(first, second), "eval-mode SCDL priors must be deterministic"
    without_priors = predict("zero_priors", "checkpoint_zero_priors.pth")
    assert np.abs(first - without_priors).max() > 1e-6, "prediction must use the SCDL priors"
