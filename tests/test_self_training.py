"""Self-training (``nnUNetv2_scdl_self_train``): confidence scoring and case selection, the derived dataset, bad
input refused before anything is trained or written, and one round end to end through nnU-Net's real commands on the
phantom (benchmark mode with the unlabeled cases' labels destroyed, plus imagesUnlabeled), resumed, and with an
interrupted prediction."""
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import copy_planned_dataset, run_console_command, tree_digest

from nnunetv2_scdl.cli import self_train as self_train_cli
from nnunetv2_scdl.data.derived_dataset import (PSEUDO_LABELED_KEY, STATE_FILENAME, carried_labeled_cases,
                                                derived_dataset_name, derived_splits, write_derived_raw_dataset,
                                                write_state)
from nnunetv2_scdl.data.pseudo_labels import (CaseConfidence, PredictionFileError, case_confidence,
                                              read_case_confidence, select_confident_cases)
from nnunetv2_scdl.training.self_training import (SelfTrainingError, SelfTrainingSettings, TrainingBudget,
                                                  run_self_training)

PLANS = "nnUNetPlans_cpu"
DERIVED_ID = 980  # far above the IDs of conftest's copies (901, 902, ...)
INTERRUPTED_ID = 985
BUDGET = ["--epochs", 2, "--iterations-per-epoch", 2, "--val-iterations", 1, "--seed", 0]
CPU_ENV = {"nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0", "nnUNet_compile": "f"}


# ----------------------------------------------------------------------------------------------------------------------
# confidence and selection
# ----------------------------------------------------------------------------------------------------------------------
def test_case_confidence_averages_top_probability_over_predicted_foreground():
    probabilities = np.zeros((3, 2, 2, 2), dtype=np.float32)
    probabilities[0] = 0.99  # background, predicted with near certainty: left out of the score
    probabilities[1] = 0.01
    probabilities[:, 0, 0, 0] = [0.2, 0.7, 0.1]
    probabilities[:, 1, 1, 1] = [0.05, 0.05, 0.9]
    score = case_confidence(probabilities)
    assert score.confidence == pytest.approx(0.8)
    assert (score.foreground_voxels, score.voxels) == (2, 8)


def test_case_without_predicted_foreground_has_no_confidence():
    probabilities = np.stack([np.full((4, 4), 0.6), np.full((4, 4), 0.4)])
    assert case_confidence(probabilities) == CaseConfidence(None, 0, 16)


def test_selection_keeps_confident_cases_most_confident_first_and_says_why_others_left():
    scores = {"a": CaseConfidence(0.95, 10, 100), "b": CaseConfidence(0.85, 10, 100),
              "c": CaseConfidence(0.7, 10, 100), "d": CaseConfidence(None, 0, 100), "e": CaseConfidence(0.9, 5, 100)}
    everything = select_confident_cases(scores, min_confidence=0.8, keep_fraction=1.0)
    assert everything.selected == ["a", "e", "b"]
    assert everything.rejected == {"c": "confidence 0.7000 < 0.8", "d": "no foreground predicted"}
    capped = select_confident_cases(scores, min_confidence=0.8, keep_fraction=0.4)  # ceil(0.4 * 5) = 2
    assert capped.selected == ["a", "e"]
    assert "only the 2 most confident" in capped.rejected["b"]
    assert select_confident_cases(scores, min_confidence=0.0).selected == ["a", "e", "b", "c"]
    for bad in ({"min_confidence": 1.5}, {"keep_fraction": 0.0}):
        with pytest.raises(ValueError):
            select_confident_cases(scores, **bad)


def _write_prediction(folder: Path, case: str, probabilities: np.ndarray) -> None:
    np.savez_compressed(folder / f"{case}.npz", probabilities=probabilities)
    (folder / f"{case}.pkl").write_bytes(b"properties")
    sitk.WriteImage(sitk.GetImageFromArray(probabilities.argmax(0).astype(np.uint8)), str(folder / f"{case}.nii.gz"))


def _read_seg(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(path))[None]


def test_read_case_confidence_refuses_missing_truncated_or_mismatched_files(tmp_path):
    probabilities = np.random.RandomState(0).dirichlet([1, 1, 1], size=(4, 5, 6)).transpose(3, 0, 1, 2)
    probabilities = probabilities.astype(np.float32)
    for case in ("good", "no_pkl", "cut_npz", "cut_seg", "other_shape"):
        _write_prediction(tmp_path, case, probabilities)
    assert read_case_confidence(str(tmp_path), "good", ".nii.gz", _read_seg) == case_confidence(probabilities)
    (tmp_path / "no_pkl.pkl").unlink()
    for name in ("cut_npz.npz", "cut_seg.nii.gz"):
        content = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(content[:len(content) // 2])
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 7), np.uint8)), str(tmp_path / "other_shape.nii.gz"))
    for case, problem in (("no_pkl", "missing no_pkl.pkl"), ("cut_npz", "unreadable cut_npz.npz"),
                          ("cut_seg", "unreadable cut_seg.nii.gz"), ("other_shape", "does not match")):
        with pytest.raises(PredictionFileError, match=problem):
            read_case_confidence(str(tmp_path), case, ".nii.gz", _read_seg)


# ----------------------------------------------------------------------------------------------------------------------
# the derived dataset
# ----------------------------------------------------------------------------------------------------------------------
def test_derived_splits_add_pseudo_labeled_cases_to_training_only():
    # fold 0 is the teacher's; u1 is unlabeled there, so its label is left out even where another fold trains on it
    source = [{"train": ["b", "a"], "val": ["v"], "unlabeled": ["u1", "u2"]},
              {"train": ["a", "u1"], "val": ["b", "v"], "unlabeled": ["u2"]}]
    assert carried_labeled_cases(source, 0) == ["a", "b", "v"]
    assert carried_labeled_cases(source, 1) == ["a", "b", "u1", "v"]
    assert derived_splits(source, 0, ["u2", "u1"]) == [
        {"train": ["a", "b", "u1", "u2"], "val": ["v"], PSEUDO_LABELED_KEY: ["u1", "u2"]},
        {"train": ["a", "u1", "u2"], "val": ["b", "v"], PSEUDO_LABELED_KEY: ["u1", "u2"]}]
    assert derived_splits(source, 0, [])[1] == {"train": ["a"], "val": ["b", "v"], PSEUDO_LABELED_KEY: []}
    with pytest.raises(ValueError, match="may not be training or validation"):
        derived_splits(source, 0, ["v"])
    assert derived_dataset_name("Dataset004_Hippocampus", 7, 2) == "Dataset007_Hippocampus_selftrain2"


def test_write_derived_raw_dataset_links_images_and_labels_and_copies_pseudo_labels(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("l_0000.nii.gz", "l.nii.gz", "u_0000.nii.gz", "pseudo_u.nii.gz"):
        (source / name).write_text(name)
    dataset_json = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "x": 1}, "file_ending": ".nii.gz",
                    "numTraining": 9, "name": "Dataset001_Source", "dataset": {"ignored": {}}}
    target = tmp_path / "Dataset002_Source_selftrain1"
    (target / "labelsTr").mkdir(parents=True)
    (target / "labelsTr" / "stale.nii.gz").write_text("left by an interrupted write")
    write_derived_raw_dataset(str(target), target.name, dataset_json,
                              {"l": ([str(source / "l_0000.nii.gz")], str(source / "l.nii.gz"))},
                              {"u": ([str(source / "u_0000.nii.gz")], str(source / "pseudo_u.nii.gz"))}, "why")
    assert sorted(p.name for p in (target / "imagesTr").iterdir()) == ["l_0000.nii.gz", "u_0000.nii.gz"]
    assert sorted(p.name for p in (target / "labelsTr").iterdir()) == ["l.nii.gz", "u.nii.gz"]
    assert (target / "imagesTr" / "u_0000.nii.gz").resolve() == (source / "u_0000.nii.gz").resolve()
    assert (target / "labelsTr" / "l.nii.gz").is_symlink()
    assert not (target / "labelsTr" / "u.nii.gz").is_symlink()
    assert (target / "labelsTr" / "u.nii.gz").read_text() == "pseudo_u.nii.gz"
    written = json.loads((target / "dataset.json").read_text())
    assert written["numTraining"] == 2 and written["name"] == target.name and "dataset" not in written
    with pytest.raises(ValueError, match="not found"):
        write_derived_raw_dataset(str(target), target.name, dataset_json, {},
                                  {"u": ([str(source / "u_0000.nii.gz")], str(source / "missing.nii.gz"))}, "why")


# ----------------------------------------------------------------------------------------------------------------------
# bad input: refused before anything is trained or written
# ----------------------------------------------------------------------------------------------------------------------


def _refused(dataset, capsys, *extra, derived_id=DERIVED_ID - 10) -> str:
    """Run the command in-process; it must fail with exit code 1 and write nothing. Returns its error message."""
    before = tree_digest(dataset.raw_folder, dataset.preprocessed_folder)
    results_before = tree_digest(dataset.results_folder) if dataset.results_folder.exists() else None
    code = self_train_cli.main(["-d", str(dataset.dataset_id), "-c", dataset.configuration, "-f", "0", "-p", PLANS,
                                "--derived-id", str(derived_id), "-device", "cpu", *map(str, extra)])
    error = capsys.readouterr().err
    assert code == 1, error
    assert tree_digest(dataset.raw_folder, dataset.preprocessed_folder) == before
    if results_before is None:
        assert not dataset.results_folder.exists(), "a teacher was trained or a folder written"
    else:
        assert tree_digest(dataset.results_folder) == results_before
    return error


def _derived_folders(nnunet_folders, dataset_id):
    prefix = f"Dataset{dataset_id:03d}_"
    return [p for root in (nnunet_folders.raw, nnunet_folders.preprocessed, nnunet_folders.results)
            for p in root.iterdir() if p.name.startswith(prefix)]


def test_no_unlabeled_images_is_refused(phantom_copy, nnunet_folders, capsys):
    dataset = phantom_copy()
    shutil.rmtree(dataset.raw_folder / "imagesUnlabeled")
    error = _refused(dataset, capsys)
    assert "No unlabeled cases found" in error and "imagesUnlabeled" in error
    assert _derived_folders(nnunet_folders, DERIVED_ID - 10) == []


def _fake_teacher(folder: Path, plans: dict, dataset_json: dict, trained_configuration: str) -> Path:
    import torch

    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    torch.save({"init_args": {"configuration": trained_configuration}, "trainer_name": "nnUNetTrainer",
                "current_epoch": 1}, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def test_teacher_of_other_plans_or_configuration_is_refused(phantom_copy, nnunet_folders, capsys, tmp_path):
    dataset = phantom_copy()
    plans = json.loads((dataset.preprocessed_folder / f"{PLANS}.json").read_text())
    dataset_json = json.loads((dataset.raw_folder / "dataset.json").read_text())

    other_plans = json.loads(json.dumps(plans))
    other_plans["configurations"][dataset.configuration]["batch_size"] += 1
    teacher = _fake_teacher(tmp_path / f"nnUNetTrainer__{PLANS}__3d_fullres", other_plans, dataset_json, "3d_fullres")
    error = _refused(dataset, capsys, "--teacher-model-folder", teacher)
    assert "does not fit" in error and "configuration 3d_fullres differs" in error

    teacher = _fake_teacher(tmp_path / "trained_as_2d" / f"nnUNetTrainer__{PLANS}__2d", plans, dataset_json, "2d")
    assert "trained with configuration 2d" in _refused(dataset, capsys, "--teacher-model-folder", teacher)

    # a teacher in the default place, trained before the plans were changed, is not reused (nor overwritten)
    default_place = dataset.results_folder / f"nnUNetTrainer__{PLANS}__{dataset.configuration}"
    other_plans = dict(plans, transpose_forward=[2, 1, 0])
    _fake_teacher(default_place, other_plans, dataset_json, dataset.configuration)
    assert "plans differ from nnUNetPlans_cpu.json in transpose_forward" in _refused(dataset, capsys)
    assert _derived_folders(nnunet_folders, DERIVED_ID - 10) == []


def test_taken_derived_id_is_refused(phantom_copy, nnunet_folders, capsys):
    dataset = phantom_copy()
    taken = nnunet_folders.raw / f"Dataset{DERIVED_ID - 10:03d}_SomethingElse"
    taken.mkdir()
    (taken / "dataset.json").write_text("{}")
    try:
        error = _refused(dataset, capsys)
        assert "is already taken" in error and str(taken) in error
        assert [p.name for p in taken.iterdir()] == ["dataset.json"]
        shutil.rmtree(taken)

        # a round of this tool, made with other settings, is refused too
        ours = nnunet_folders.raw / derived_dataset_name(dataset.dataset_name, DERIVED_ID - 10, 1)
        write_state(str(ours), {"settings": {"min_confidence": 0.5}, "stages": {}})
        state = (ours / STATE_FILENAME).read_text()
        assert "other settings" in _refused(dataset, capsys)
        assert (ours / STATE_FILENAME).read_text() == state
        shutil.rmtree(ours)
        # rounds take consecutive IDs: the second round's ID must be free as well
        taken.mkdir()
        assert "is already taken" in _refused(dataset, capsys, "--rounds", 2, derived_id=DERIVED_ID - 11)
        assert "source dataset's own ID" in _refused(dataset, capsys, derived_id=dataset.dataset_id)
    finally:
        shutil.rmtree(taken, ignore_errors=True)


def test_budget_for_a_trainer_that_ignores_it_is_refused(phantom_copy, capsys):
    dataset = phantom_copy()
    error = _refused(dataset, capsys, "--teacher-trainer", "nnUNetTrainer", *BUDGET)
    assert "does not read the SCDL_* budget variables" in error and "nnUNetTrainerSupervised" in error


# ----------------------------------------------------------------------------------------------------------------------
# one round end to end (slow)
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def self_trained(planned_phantom, tmp_path_factory):
    """A phantom copy in benchmark mode (3 labeled, 2 unlabeled whose labels are destroyed, 1 val) plus its 6
    imagesUnlabeled cases, self-trained once through the real command (with fine-tuning)."""
    from nnunetv2_scdl.cli import make_split

    dataset = copy_planned_dataset(planned_phantom)
    derived_name = derived_dataset_name(dataset.dataset_name, DERIVED_ID, 1)
    try:
        cases = sorted(dataset.labeled)
        split = {"labeled": cases[:3], "unlabeled": cases[3:5], "val": cases[5:]}
        split_file = tmp_path_factory.mktemp("split") / "split.json"
        split_file.write_text(json.dumps(split))
        assert make_split.main(["-d", dataset.dataset_name, "--split", str(split_file)]) == 0
        for case in split["unlabeled"]:  # what reads these fails
            (dataset.raw_folder / "labelsTr" / f"{case}.nii.gz").write_bytes(b"not a label file")
            (dataset.preprocessed_folder / "gt_segmentations" / f"{case}.nii.gz").write_bytes(b"not a label file")
            (dataset.labeled_data_folder / f"{case}_seg.b2nd").unlink()
        source_digest = tree_digest(dataset.raw_folder, dataset.preprocessed_folder)
        arguments = ["-d", dataset.dataset_id, "-c", dataset.configuration, "-f", 0, "-p", PLANS,
                     "--derived-id", DERIVED_ID, *BUDGET, "--finetune", "--finetune-epochs", 1,
                     "--min-confidence", 0, "--no-final-validation", "-device", "cpu", "--disable-tta", "-np", 1]
        first = run_console_command("nnUNetv2_scdl_self_train", arguments, env=CPU_ENV, timeout=1200)
        yield dataset, split, derived_name, arguments, first, source_digest
    finally:
        for root in (dataset.raw_folder.parent, dataset.preprocessed_folder.parent, dataset.results_folder.parent):
            for name in (dataset.dataset_name, derived_name,
                         derived_dataset_name(dataset.dataset_name, INTERRUPTED_ID, 1)):
                shutil.rmtree(root / name, ignore_errors=True)


@pytest.mark.slow
def test_one_round_end_to_end_never_reads_unlabeled_labels(self_trained, nnunet_folders, run_console, tmp_path):
    dataset, split, derived_name, _, first, source_digest = self_trained
    assert tree_digest(dataset.raw_folder, dataset.preprocessed_folder) == source_digest, "the source changed"
    unlabeled = sorted(split["unlabeled"] + dataset.unlabeled)
    raw = nnunet_folders.raw / derived_name
    state = json.loads((raw / STATE_FILENAME).read_text())
    assert sorted(state["confidences"]) == unlabeled  # both modes: the split's cases and imagesUnlabeled

    # the scores are those of the teacher's saved probabilities
    predictions = nnunet_folders.results / derived_name / "self_training" / "teacher_predictions"
    for case in unlabeled:
        probabilities = np.load(predictions / f"{case}.npz")["probabilities"]
        foreground = probabilities.argmax(0) != 0
        expected = probabilities.max(0)[foreground].mean() if foreground.any() else None
        assert state["confidences"][case]["confidence"] == pytest.approx(expected, rel=1e-5)
    kept = sorted(c for c in unlabeled if state["confidences"][c]["confidence"] is not None)  # --min-confidence 0
    assert kept, "the teacher predicted no foreground at all: the test needs a larger budget"

    # the derived dataset: true labels of the labeled and val cases, the teacher's segmentations for the others
    labels = raw / "labelsTr"
    assert sorted(p.name for p in labels.iterdir()) == sorted(f"{c}.nii.gz" for c in
                                                              split["labeled"] + split["val"] + kept)
    for case in kept:
        assert (labels / f"{case}.nii.gz").read_bytes() == (predictions / f"{case}.nii.gz").read_bytes()
    for case in split["labeled"] + split["val"]:
        assert (labels / f"{case}.nii.gz").resolve() == (dataset.raw_folder / "labelsTr" / f"{case}.nii.gz").resolve()
    assert json.loads((raw / "dataset.json").read_text())["numTraining"] == 4 + len(kept)

    # plans copied unchanged (but for the dataset name), and the split adds the pseudo-labeled cases to train only
    preprocessed = nnunet_folders.preprocessed / derived_name
    source_plans = json.loads((dataset.preprocessed_folder / f"{PLANS}.json").read_text())
    derived_plans = json.loads((preprocessed / f"{PLANS}.json").read_text())
    assert {k: v for k, v in derived_plans.items() if k != "dataset_name"} == \
        {k: v for k, v in source_plans.items() if k != "dataset_name"}
    (entry,) = json.loads((preprocessed / "splits_final.json").read_text())
    assert entry == {"train": sorted(split["labeled"] + kept), "val": split["val"], PSEUDO_LABELED_KEY: kept}

    # teacher on the labeled cases, student on labeled + pseudo-labeled, fine-tuning on the labeled ones only
    from conftest import load_checkpoint

    teacher = dataset.results_folder / f"nnUNetTrainerSupervised__{PLANS}__3d_fullres" / "fold_0"
    student = nnunet_folders.results / derived_name / f"nnUNetTrainerSupervised__{PLANS}__3d_fullres" / "fold_0"
    finetuned = nnunet_folders.results / derived_name / \
        f"nnUNetTrainerSupervisedLabeledOnly__{PLANS}__3d_fullres" / "fold_0"
    assert [load_checkpoint(f)["current_epoch"] for f in (teacher, student, finetuned)] == [2, 2, 1]
    logs = {f: "".join(p.read_text() for p in f.glob("training_log_*.txt")) for f in (teacher, student, finetuned)}
    assert "This split has 3 training and 1 validation cases" in logs[teacher]
    assert f"This split has {3 + len(kept)} training" in logs[student]
    assert f"Training on the 3 labeled cases of the split's {3 + len(kept)}" in logs[finetuned]
    finetune_log = (nnunet_folders.results / derived_name / "self_training" / "logs" / "train_finetune.log").read_text()
    assert "-pretrained_weights" in finetune_log.splitlines()[0]

    summary = json.loads((nnunet_folders.results / derived_name / "self_training" / "summary.json").read_text())
    assert summary["total_optimiser_steps"] == 2 * 2 + 2 * 2 + 1 * 2
    assert summary["final_model"]["model_folder"] == str(finetuned.parent)
    assert "nnUNetv2_predict -i INPUT -o OUTPUT -d " + derived_name in first.stdout

    # the student predicts through plain nnUNetv2_predict of the derived dataset
    from nnunetv2_scdl.cli.trainers_path import trainers_dir

    output = tmp_path / "predictions"
    run_console("nnUNetv2_predict", ["-i", dataset.raw_folder / "imagesTs", "-o", output, "-d", DERIVED_ID,
                                     "-c", dataset.configuration, "-tr", "nnUNetTrainerSupervisedLabeledOnly",
                                     "-p", PLANS, "-f", 0, "-device", "cpu", "--disable_tta", "-npp", 1, "-nps", 1],
                env=dict(CPU_ENV, nnUNet_extTrainer=str(trainers_dir())))
    assert sorted(p.name for p in output.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in dataset.test)


@pytest.mark.slow
def test_second_run_skips_every_finished_stage(self_trained, nnunet_folders, run_console):
    dataset, _, derived_name, arguments, _, source_digest = self_trained
    checkpoints = sorted((nnunet_folders.results / derived_name).rglob("checkpoint_final.pth")) + \
        sorted(dataset.results_folder.rglob("checkpoint_final.pth"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    second = run_console("nnUNetv2_scdl_self_train", arguments, env=CPU_ENV)
    assert "the teacher is trained already" in second.stdout
    assert "scored already" in second.stdout
    assert "training the" not in second.stdout and "predicting" not in second.stdout
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps
    assert tree_digest(dataset.raw_folder, dataset.preprocessed_folder) == source_digest


@pytest.mark.slow
def test_interrupted_prediction_is_redone_only_where_incomplete(self_trained, nnunet_folders, monkeypatch):
    """Predictions cut short (a truncated segmentation, a missing .npz, a case not predicted) are redone; the others
    are kept as they are."""
    import nnunetv2_scdl.training.self_training as pipeline

    dataset, split, _, _, _, _ = self_trained
    settings = SelfTrainingSettings(
        dataset=dataset.dataset_name, configuration=dataset.configuration, fold=0, derived_dataset_id=INTERRUPTED_ID,
        plans=PLANS, teacher_budget=TrainingBudget(2, 2, 1), student_budget=TrainingBudget(2, 2, 1), seed=0,
        min_confidence=0.0, device="cpu", tta=False, num_processes=1, stop_after="predict")
    env = dict(os.environ, **CPU_ENV)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "read_case_confidence", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_self_training(settings, env, printer=lambda line: None)

    derived_name = derived_dataset_name(dataset.dataset_name, INTERRUPTED_ID, 1)
    predictions = nnunet_folders.results / derived_name / "self_training" / "teacher_predictions"
    unlabeled = sorted(split["unlabeled"] + dataset.unlabeled)
    truncated, without_npz, not_predicted = unlabeled[:3]
    segmentation = predictions / f"{truncated}.nii.gz"
    segmentation.write_bytes(segmentation.read_bytes()[:100])
    (predictions / f"{without_npz}.npz").unlink()
    for path in predictions.glob(f"{not_predicted}.*"):
        path.unlink()
    untouched = {p: p.stat().st_mtime_ns for c in unlabeled[3:] for p in predictions.glob(f"{c}.*")}

    lines = []
    result = run_self_training(settings, env, printer=lines.append)
    assert f"predicting 2 of {len(unlabeled)} unlabeled cases with the teacher" in lines
    assert any(truncated in line and "unreadable" in line for line in lines)
    assert f"predicting 1 of {len(unlabeled)} unlabeled cases with the teacher" in lines
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    state = json.loads((nnunet_folders.raw / derived_name / STATE_FILENAME).read_text())
    assert sorted(state["confidences"]) == unlabeled
    assert result.rounds[0].student is None and result.final_model is None  # stopped after the prediction
    with pytest.raises(SelfTrainingError, match="other settings"):
        run_self_training(replace(settings, min_confidence=0.5), env, printer=lambda line: None)
