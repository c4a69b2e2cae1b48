"""``nnUNetv2_scdl_benchmark`` end to end on the phantom: train, predict, evaluate, report; resume; refuse changes;
the self-training rows (their own nnU-Net folders, the reference as teacher, every model's steps counted).

The runner's ``main`` runs in this process; every nnU-Net command it starts (preprocessing, nnUNetv2_train,
nnUNetv2_predict, the self-training stages) runs as the real subprocess. The console script's wiring is tested in
tests/test_package.py."""
import json
import math
import os

import numpy as np
import pytest
from conftest import load_checkpoint, tree_digest

from nnunetv2_scdl.cli import benchmark, benchmark_report, commands
from nnunetv2_scdl.cli.benchmark import STATE_FILE

pytestmark = pytest.mark.slow  # trains through nnUNetv2_scdl_benchmark

REFERENCE = "nnUNetTrainerSupervised"
HOST = "nnUNetTrainerMeanTeacher"
SCDL = "nnUNetTrainerSCDL_MT"
SELF_TRAINING, SELF_TRAINING_HALF = "SelfTraining", "SelfTrainingHalfBudget"


def independent_mean_dice(prediction_folder, reference_folder, labels):
    """Mean over classes of the mean over cases of Dice, with nnU-Net's own metric code (not ours)."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    per_class = {label: [] for label in labels}
    for reference in sorted(reference_folder.glob("*.nii.gz")):
        metrics = compute_metrics(str(reference), str(prediction_folder / reference.name), SimpleITKIO(), labels)
        for label in labels:
            dice = metrics["metrics"][label]["Dice"]
            if not np.isnan(dice):
                per_class[label].append(dice)
    return float(np.mean([np.mean(values) for values in per_class.values() if values]))


def run_in_process(command, args, env, monkeypatch, capsys, check=True):
    """``command.main(args)`` (the console script's own entry) in this process, with ``env`` set: (exit code, stdout
    and stderr). The training, prediction and preprocessing it starts still run nnU-Net's commands as subprocesses;
    only the orchestration skips an interpreter start. With ``check``, a non-zero exit fails with the output's end."""
    capsys.readouterr()  # what came before is not this command's
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        code = command.main([str(a) for a in args])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    if check and code != 0:
        pytest.fail(f"{command.__name__}.main exited with {code}. Output's end:\n{output[-4000:]}", pytrace=False)
    return code, output


def interrupt_after_first_epoch(fold):
    """Leave ``fold`` as nnUNetv2_train leaves it when killed during epoch 1: only a checkpoint_latest.pth of epoch 0."""
    import torch

    checkpoint = load_checkpoint(fold)
    checkpoint["current_epoch"] = 1
    checkpoint["logging"] = {key: values[:1] for key, values in checkpoint["logging"].items()}
    checkpoint["nnunetv2_scdl"]["global_iteration"] //= 2
    torch.save(checkpoint, fold / "checkpoint_latest.pth")
    for name in ("checkpoint_final.pth", "checkpoint_best.pth"):
        os.remove(fold / name)




@pytest.mark.slow
def test_benchmark_trains_reports_resumes_and_refuses_other_settings(phantom_copy, nnunet_folders, monkeypatch,
                                                                     capsys, tmp_path):
    dataset = phantom_copy()
    cases = sorted(dataset.labeled)
    split_file = tmp_path / "split.json"
    split = {"labeled": cases[:2], "unlabeled": cases[2:4], "val": cases[4:]}
    split_file.write_text(json.dumps(split))
    output = tmp_path / "benchmark"
    base = ["-d", dataset.dataset_id, "--split", split_file, "-c", dataset.configuration, "-p", dataset.cpu_plans,
            "--epochs", 2, "--iterations-per-epoch", 2, "--val-iterations", 1, "-o", output, "-device", "cpu",
            "-np", 1]
    # a teacher of 4 steps is not confident: keep every case it gives foreground
    env = {"nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0", "SCDL_SELF_TRAINING_MIN_CONFIDENCE": "0"}
    for case in split["unlabeled"]:  # self-training must not read them: what would, fails
        (dataset.raw_folder / "labelsTr" / f"{case}.nii.gz").write_bytes(b"not a label file")
        (dataset.preprocessed_folder / "gt_segmentations" / f"{case}.nii.gz").write_bytes(b"not a label file")
    user_roots = (nnunet_folders.raw, nnunet_folders.preprocessed, nnunet_folders.results)
    user_datasets = sorted(p.name for root in user_roots for p in root.iterdir())
    source_digest = tree_digest(dataset.raw_folder)
    run_in_process(benchmark, base + ["--trainers", HOST, SELF_TRAINING], env, monkeypatch, capsys)

    state = json.loads((output / STATE_FILE).read_text())
    assert list(state["trainers"]) == [REFERENCE, HOST, SELF_TRAINING]  # the reference row is always added, first
    assert all(entry["predicted"] and entry["evaluated"] for entry in state["trainers"].values())
    assert state["settings"]["split"]["labeled"] == cases[:2]
    folders = {t: output / "nnUNet_results" / dataset.dataset_name / f"{t}__{dataset.cpu_plans}__3d_fullres" /
               "fold_0" for t in (REFERENCE, HOST, SCDL)}
    for trainer in (REFERENCE, HOST):
        checkpoint = load_checkpoint(folders[trainer])
        assert checkpoint["current_epoch"] == 2
        assert checkpoint["logging"]["epoch_end_timestamps"][-1] > checkpoint["logging"]["epoch_start_timestamps"][0]
        log = "".join(p.read_text() for p in folders[trainer].glob("training_log_*.txt"))
        assert "seed" in log and "[env SCDL_SEED]" in log and "Final validation skipped" in log
        assert not (folders[trainer] / "validation").exists()
    # only the labeled cases trained; the split's val cases were predicted and evaluated
    assert sorted(p.name for p in (output / "predictions" / HOST).glob("*.nii.gz")) == \
        [f"{c}.nii.gz" for c in cases[4:]]

    report = json.loads((output / "benchmark.json").read_text())
    labels = [int(label) for label in report["classes"]]
    for trainer in (REFERENCE, HOST):
        ours = report["trainers"][trainer]["summary"]["original"]["mean"]["dice"]
        expected = independent_mean_dice(output / "predictions" / trainer, output / "inputs" / "labelsVal", labels)
        assert abs(ours - expected) < 1e-6
        assert report["trainers"][trainer]["training_seconds"] > 0
    markdown = (output / "benchmark.md").read_text()
    assert "| Supervised |" in markdown and "| MeanTeacher |" in markdown and "| reference |" in markdown
    assert "no host trainer ran together with its SCDL variant" in markdown
    assert (output / "benchmark_dice_per_class.png").is_file() and (output / "benchmark_dice_vs_time.png").is_file()
    # the learning curve comes from the checkpoint's log: one pseudo Dice per epoch and foreground class
    reference_curve = state["trainers"][REFERENCE]["training"]["pseudo_dice"]
    assert reference_curve == [[None if math.isnan(v) else round(float(v), 5) for v in epoch] for epoch in
                               load_checkpoint(folders[REFERENCE])["logging"]["dice_per_class_or_region"]]
    assert len(reference_curve) == 2 and all(len(epoch) == len(labels) for epoch in reference_curve)
    assert "## When each class was learned" in markdown and (output / "benchmark_pseudo_dice.png").is_file()
    assert report["trainers"][REFERENCE]["pseudo_dice_per_epoch"] == reference_curve

    # self-training: the reference is the teacher (not retrained), the student trains with the same budget in the
    # row's own nnU-Net folders; the row counts both models' steps, time and pseudo Dice
    row = state["trainers"][SELF_TRAINING]
    assert [(m["role"], m["steps"]) for m in row["training"]["models"]] == [("teacher (the reference)", 4),
                                                                             ("student", 4)]
    assert row["training"]["steps"] == 8 and row["predicted"] and row["evaluated"]
    assert row["training"]["pseudo_dice"] == reference_curve + row["training"]["pseudo_dice"][2:]
    assert len(row["training"]["pseudo_dice"]) == 4
    row_results = output / "self_training" / SELF_TRAINING / "nnUNet_results"
    derived = row["training"]["final_model"]["dataset"]
    assert derived.endswith("_selftrain1") and row["training"]["final_model"]["trainer"] == REFERENCE
    student = row_results / derived / f"{REFERENCE}__{dataset.cpu_plans}__3d_fullres" / "fold_0"
    assert load_checkpoint(student)["current_epoch"] == 2
    assert not (row_results / dataset.dataset_name).exists()  # no teacher trained
    assert row["training"]["seconds"] == pytest.approx(
        state["trainers"][REFERENCE]["training"]["seconds"] + row["training"]["models"][1]["seconds"], abs=0.1)
    (entry,) = json.loads((output / "self_training" / SELF_TRAINING / "nnUNet_preprocessed" / derived /
                           "splits_final.json").read_text())
    assert entry["train"] == sorted(split["labeled"] + entry["pseudo_labeled"]) and entry["val"] == split["val"]
    assert entry["pseudo_labeled"] and set(entry["pseudo_labeled"]) <= set(split["unlabeled"] + dataset.unlabeled)
    # nothing landed among the user's nnU-Net datasets
    assert sorted(p.name for root in user_roots for p in root.iterdir()) == user_datasets
    assert sorted(p.name for p in (output / "predictions" / SELF_TRAINING).glob("*.nii.gz")) == \
        [f"{c}.nii.gz" for c in cases[4:]]
    ours = report["trainers"][SELF_TRAINING]["summary"]["original"]["mean"]["dice"]
    assert abs(ours - independent_mean_dice(output / "predictions" / SELF_TRAINING, output / "inputs" / "labelsVal",
                                            labels)) < 1e-6
    assert report["trainers"][SELF_TRAINING]["iterations"] == 8
    assert "| SelfTraining | teacher (the reference) 4 + student 4 | 8 | 4 | 2× the reference's |" in markdown

    # resume a half-finished benchmark: the host as if interrupted after its first epoch, SCDL and self-training at
    # half the budget added, and the self-training row as if interrupted before the runner recorded it
    reference_checkpoint = folders[REFERENCE] / "checkpoint_final.pth"
    reference_mtime = os.path.getmtime(reference_checkpoint)
    student_mtime = os.path.getmtime(student / "checkpoint_final.pth")
    interrupt_after_first_epoch(folders[HOST])
    state["trainers"].pop(HOST)
    state["trainers"].pop(SELF_TRAINING)
    (output / STATE_FILE).write_text(json.dumps(state))
    _, resumed = run_in_process(benchmark, base + ["--trainers", HOST, SCDL, SELF_TRAINING, SELF_TRAINING_HALF], env,
                                monkeypatch, capsys)
    assert os.path.getmtime(reference_checkpoint) == reference_mtime  # not retrained
    assert os.path.getmtime(student / "checkpoint_final.pth") == student_mtime  # every stage skipped
    assert "the teacher's predictions are scored already" in resumed
    assert tree_digest(dataset.raw_folder) == source_digest
    host_log = (output / "logs" / f"train_{HOST}.log").read_text()
    assert "Epoch 1" in host_log and "Epoch 0\n" not in host_log  # continued from checkpoint_latest
    assert load_checkpoint(folders[SCDL])["current_epoch"] == 2
    report = json.loads((output / "benchmark.json").read_text())
    assert list(report["trainers"]) == [REFERENCE, HOST, SCDL, SELF_TRAINING, SELF_TRAINING_HALF]
    # half the budget each: the teacher (1 epoch) trained in the row's own folders; as many steps as the reference
    half = json.loads((output / STATE_FILE).read_text())["trainers"][SELF_TRAINING_HALF]["training"]
    assert [(m["role"], m["steps"]) for m in half["models"]] == [("teacher", 2), ("student", 2)]
    half_teacher = output / "self_training" / SELF_TRAINING_HALF / "nnUNet_results" / dataset.dataset_name / \
        f"{REFERENCE}__{dataset.cpu_plans}__3d_fullres" / "fold_0"
    assert load_checkpoint(half_teacher)["current_epoch"] == 1
    assert report["trainers"][SELF_TRAINING_HALF]["iterations"] == 4
    state = json.loads((output / STATE_FILE).read_text())
    assert state["trainers"][REFERENCE]["training"]["pseudo_dice"] == reference_curve  # kept across the resume
    (effect,) = report["scdl_effect"]
    assert effect["host"] == HOST and effect["scdl"] == SCDL
    markdown = (output / "benchmark.md").read_text()
    assert "| MeanTeacher |" in markdown.split("What SCDL adds")[1]
    assert "| SelfTrainingHalfBudget | teacher 2 + student 2 | 4 | 4 | equal total steps |" in markdown
    # both commands are named: the first alone would not reproduce the appended trainer
    assert len(report["commands"]) == 2 and SCDL not in report["commands"][0] and SCDL in report["commands"][1]
    assert all(f"`{c}`" in markdown for c in report["commands"])

    # another budget in the same folder is refused, naming the setting and the original command
    code, refused = run_in_process(benchmark, [a if a != 2 else 3 for a in base], env, monkeypatch, capsys,
                                   check=False)
    assert code == 1
    assert "other settings (epochs, iterations_per_epoch)" in refused and "resume it with" in refused


@pytest.mark.slow
def test_stop_after_epochs_gives_plateau_rows_and_the_full_run_continues(phantom_copy, monkeypatch, capsys, tmp_path):
    dataset = phantom_copy()
    cases = sorted(dataset.labeled)
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"labeled": cases[:2], "unlabeled": cases[2:4], "val": cases[4:]}))
    output = tmp_path / "benchmark"
    base = ["-d", dataset.dataset_id, "--split", split_file, "-c", dataset.configuration, "-p", dataset.cpu_plans,
            "--epochs", 3, "--iterations-per-epoch", 1, "--val-iterations", 1, "-o", output, "-device", "cpu",
            "-np", 1, "--trainers", HOST]
    env = {"nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0"}
    code, refused = run_in_process(benchmark, base + ["--stop-after-epochs", 3], env, monkeypatch, capsys, check=False)
    assert code == 1 and "--stop-after-epochs must be between 1 and --epochs - 1 (2)" in refused

    _, probed = run_in_process(benchmark, base + ["--stop-after-epochs", 2], env, monkeypatch, capsys)
    folders = {t: output / "nnUNet_results" / dataset.dataset_name / f"{t}__{dataset.cpu_plans}__3d_fullres" /
               "fold_0" for t in (REFERENCE, HOST)}
    for trainer, folder in folders.items():
        assert not (folder / "checkpoint_final.pth").exists(), trainer
        assert load_checkpoint(folder, "checkpoint_latest.pth")["current_epoch"] == 2
    assert "| trainer · network |" in probed and "| MeanTeacher · student |" in probed
    assert probed.count("| 2, training |") == 3  # reference, teacher, student: 2 of the schedule's 3 steps read
    state = json.loads((output / STATE_FILE).read_text())
    assert all("training" not in entry for entry in state["trainers"].values())
    assert not (output / "predictions" / HOST).exists()
    # a probe that ends earlier than the runs are trains nothing
    latest = {t: os.path.getmtime(f / "checkpoint_latest.pth") for t, f in folders.items()}
    _, again = run_in_process(benchmark, base + ["--stop-after-epochs", 1], env, monkeypatch, capsys)
    assert {t: os.path.getmtime(f / "checkpoint_latest.pth") for t, f in folders.items()} == latest
    assert again.count("| 2, training |") == 3

    # the same command without the stop continues both runs (the stop is no setting of the folder)
    run_in_process(benchmark, base, env, monkeypatch, capsys)
    for trainer, folder in folders.items():
        assert load_checkpoint(folder)["current_epoch"] == 3, trainer
    host_log = (output / "logs" / f"train_{HOST}.log").read_text()
    assert "Epoch 2" in host_log and "Epoch 0\n" not in host_log and "Epoch 1\n" not in host_log
    state = json.loads((output / STATE_FILE).read_text())
    assert all(entry["predicted"] and entry["evaluated"] for entry in state["trainers"].values())
    assert len(state["commands"]) == 3 and "--stop-after-epochs 2" in state["commands"][0]


@pytest.mark.slow
def test_learning_curve_resumes_a_plainly_started_budget_and_exports(phantom_copy, monkeypatch, capsys, tmp_path):
    """--learning-curve 2 4: steps_0002, started by the plain command, is recognised (not refused, not retrained,
    no new command); steps_0004 is trained; the learning-curve report matches the folders' own reports and is rebuilt
    identically from the exported summaries alone."""
    dataset = phantom_copy()
    cases = sorted(dataset.labeled)
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"labeled": cases[:2], "unlabeled": cases[2:4], "val": cases[4:]}))
    root = tmp_path / "curve"
    env = {"nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0"}
    # the plain command, spelled as the learning-curve mode records it for this folder
    plain = ["-d", dataset.dataset_id, "--split", split_file, "-p", dataset.cpu_plans, "--epochs", 2,
             "--iterations-per-epoch", 1, "--val-iterations", 1, "--trainers", REFERENCE, "--seed", 0,
             "-o", root / "steps_0002", "-device", "cpu", "--no-paper-protocol", "-np", 1]
    run_in_process(benchmark, plain, env, monkeypatch, capsys)
    first = root / "steps_0002"
    fold = first / "nnUNet_results" / dataset.dataset_name / f"{REFERENCE}__{dataset.cpu_plans}__3d_fullres" / "fold_0"
    trained_at = os.path.getmtime(fold / "checkpoint_final.pth")
    state_before = json.loads((first / STATE_FILE).read_text())

    summaries = tmp_path / "results"
    curve = ["-d", dataset.dataset_id, "--split", split_file, "-p", dataset.cpu_plans, "--learning-curve", 4, 2,
             "--iterations-per-epoch", 1, "--val-iterations", 1, "--seed", 0, "-o", root, "-device", "cpu",
             "--no-paper-protocol", "-np", 1, "--summaries", summaries]
    run_in_process(benchmark, curve, env, monkeypatch, capsys)
    assert os.path.getmtime(fold / "checkpoint_final.pth") == trained_at  # recognised, not retrained
    state_after = json.loads((first / STATE_FILE).read_text())
    assert state_after["settings"] == state_before["settings"] and len(state_after["commands"]) == 1
    second = json.loads((root / "steps_0004" / STATE_FILE).read_text())
    assert list(second["trainers"]) == [REFERENCE] and second["trainers"][REFERENCE]["evaluated"]
    assert (second["settings"]["epochs"], second["settings"]["iterations_per_epoch"]) == (4, 1)
    assert second["commands"] == [state_before["commands"][0].replace("--epochs 2", "--epochs 4")
                                  .replace("steps_0002", "steps_0004")]

    report = json.loads((root / "learning_curve.json").read_text())
    dice = {}
    for steps in (2, 4):
        folder_report = json.loads((root / f"steps_{steps:04d}" / "benchmark.json").read_text())
        dice[steps] = folder_report["trainers"][REFERENCE]["summary"]["original"]["mean"]["dice"]
    assert [(b["steps"], b["mean_dice"]["mean"]) for b in report["budgets"]] == list(dice.items())
    assert report["protocol"]["budget"] == (2 if abs(dice[4] - dice[2]) < 0.01 else None)
    assert "## Protocol budget" in (root / "learning_curve.md").read_text()
    assert (root / "learning_curve.png").is_file()

    exported = sorted(p.relative_to(summaries).as_posix() for p in summaries.rglob("*.json"))
    assert exported == [f"steps_{s:04d}/seed_0/{REFERENCE}.json" for s in (2, 4)]
    assert all(p.stat().st_size < 20_000 for p in summaries.rglob("*.json"))
    # each summary says what trained its model: one record per invocation that trained it
    code = commands.code_provenance()
    for steps in (2, 4):
        records = json.loads((summaries / f"steps_{steps:04d}/seed_0/{REFERENCE}.json").read_text())["training"]["code"]
        assert records == [code]
    run_in_process(benchmark_report, [summaries], {}, monkeypatch, capsys)
    rebuilt = json.loads((summaries / "learning_curve.json").read_text())
    assert rebuilt["budgets"] == report["budgets"] and rebuilt["protocol"] == report["protocol"]
