"""The self-training rows of the benchmark runner without training: each model's steps counted, the budgets of the
two rows, their own nnU-Net folders, and how the reports show the steps (on hand-made records and summaries). The
rows end to end on the phantom: tests/test_benchmark_runner.py."""
import argparse
import json
from pathlib import Path

import pytest

from nnunetv2_scdl.cli import benchmark
from nnunetv2_scdl.evaluation.benchmark_report import (REFERENCE_TRAINER, SELF_TRAINING, SELF_TRAINING_HALF_BUDGET,
                                                       TrainerRecord, colour_index, learned_epoch_table,
                                                       model_curves, self_training_table, summary_table)
from nnunetv2_scdl.evaluation.benchmark_summary import make_summary, steps_of, summary_record
from nnunetv2_scdl.evaluation.seed_report import write_seed_report
from nnunetv2_scdl.training.self_training import SelfTrainingResult, TrainedModel, TrainingBudget

from test_benchmark_seeds import evaluation, settings, table

TEACHER_OF_REFERENCE = [{"role": "teacher (the reference)", "trainer": REFERENCE_TRAINER, "steps": 150,
                         "seconds": 60.0}, {"role": "student", "trainer": REFERENCE_TRAINER, "steps": 150,
                                            "seconds": 70.0}]
HALF = [{"role": "teacher", "trainer": REFERENCE_TRAINER, "steps": 75, "seconds": 30.0},
        {"role": "student", "trainer": REFERENCE_TRAINER, "steps": 75, "seconds": 35.0}]


def records():
    return [TrainerRecord(REFERENCE_TRAINER, evaluation(0.6, 0.4), 60.0, 150),
            TrainerRecord(SELF_TRAINING, evaluation(0.7, 0.5), 130.0, 300, models=TEACHER_OF_REFERENCE),
            TrainerRecord(SELF_TRAINING_HALF_BUDGET, evaluation(0.62, 0.4), 65.0, 150, models=HALF)]


def rows_of(markdown_table):
    return table("\n" + markdown_table, "\n")


def test_self_training_rows_show_every_models_steps_against_the_reference():
    rows = rows_of(self_training_table(records()))
    assert rows == {
        SELF_TRAINING: ["teacher (the reference) 150 + student 150", "300", "150", "2× the reference's", "60.0",
                        "+10.0"],
        SELF_TRAINING_HALF_BUDGET: ["teacher 75 + student 75", "150", "150", "equal total steps", "51.0", "+1.0"]}
    assert self_training_table(records()[:1]) == ""  # no self-training row: no table
    summary = rows_of(summary_table(records()))
    assert [summary[name][7:] for name in (REFERENCE_TRAINER[len("nnUNetTrainer"):], SELF_TRAINING)] == \
        [["150", "1.0", "0.40"], ["300", "2.2", "0.43"]]  # steps, minutes, s/it over both models
    colours = {colour_index(name, 0) for name in (REFERENCE_TRAINER, SELF_TRAINING, SELF_TRAINING_HALF_BUDGET,
                                                   "nnUNetTrainerOther")}
    assert len(colours) == 4


def summary(trainer, seed, mean_dice, training):
    return make_summary(trainer, settings(seed), ["nnUNetv2_scdl_benchmark"], evaluation(mean_dice + 0.1,
                                                                                          mean_dice - 0.1), training)


def test_summaries_keep_the_rows_models_and_report_them_over_seeds(tmp_path):
    plain = {"seconds": 60.0, "epochs": 10, "pseudo_dice": None}  # settings(): 10 epochs × 15 iterations
    rows = {SELF_TRAINING: {"seconds": 130.0, "epochs": 20, "pseudo_dice": None, "steps": 300,
                            "models": TEACHER_OF_REFERENCE},
            SELF_TRAINING_HALF_BUDGET: {"seconds": 65.0, "epochs": 10, "pseudo_dice": None, "steps": 150,
                                        "models": HALF}}
    summaries = []
    for seed, offset in enumerate((0.0, 0.02)):
        summaries.append(summary(REFERENCE_TRAINER, seed, 0.5 + offset, plain))
        summaries.append(summary(SELF_TRAINING, seed, 0.6 + offset, rows[SELF_TRAINING]))
        summaries.append(summary(SELF_TRAINING_HALF_BUDGET, seed, 0.52 + offset, rows[SELF_TRAINING_HALF_BUDGET]))
    reference, full = summaries[0], summaries[1]
    assert "models" not in reference["training"] and reference["training"]["steps"] == 150
    assert full["training"]["steps"] == 300 and full["training"]["models"] == TEACHER_OF_REFERENCE
    assert steps_of(full) == steps_of(reference) == 150  # the budget per model: both in one report
    record = summary_record(json.loads(json.dumps(full)))
    assert record.iterations == 300 and record.models == TEACHER_OF_REFERENCE

    markdown = write_seed_report(summaries, tmp_path).read_text()
    overview = table(markdown, "## Summary over seeds")
    assert overview[SELF_TRAINING][0] == "2" and overview[SELF_TRAINING][-3] == "300"  # seeds, steps
    assert overview["Supervised"][-3] == "150"
    budgets = table(markdown, "## Self-training: optimiser steps")
    assert budgets[SELF_TRAINING] == ["teacher (the reference) 150 + student 150", "300", "150",
                                      "2× the reference's", "61.0 ± 1.4", "+10.0 (paired)"]
    assert budgets[SELF_TRAINING_HALF_BUDGET][1:4] == ["150", "150", "equal total steps"]
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["trainers"][SELF_TRAINING]["models"] == TEACHER_OF_REFERENCE
    assert report["trainers"][SELF_TRAINING]["per_seed"]["1"]["steps"] == 300


def test_each_model_of_a_row_is_learned_from_its_own_first_step():
    """The row's pseudo Dice holds the teacher's epochs, then the student's: each model is read on its own."""
    models = [dict(HALF[0], epochs=3), dict(HALF[1], epochs=4)]
    teacher = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.0]]  # never three learned epochs in a row
    student = [[0.0, 0.0], [0.0, 0.3], [0.4, 0.3], [0.4, 0.3]]  # posterior learned from its epoch 1
    training = {"seconds": 7.0, "epochs": 7, "steps": 105, "pseudo_dice": teacher + student, "models": models}
    made = make_summary(SELF_TRAINING_HALF_BUDGET, settings(0, 7, 15), ["cmd"], evaluation(0.6, 0.4), training)
    assert made["learned"]["by_class"] == {"1": None, "2": {"epoch": 1, "step": 30}}  # the student's own steps
    assert made["learned"]["by_network"]["teacher"] == {"1": None, "2": None}
    assert made["learned"]["by_network"]["student"] == made["learned"]["by_class"]
    learned = rows_of(learned_epoch_table([summary_record(made)]))
    assert learned == {"SelfTrainingHalfBudget · teacher": ["never", "never", "25.0"],
                       "SelfTrainingHalfBudget · student": ["never", "30 (1)", "35.0"]}
    with pytest.raises(ValueError, match="neither its epochs nor its steps"):
        model_curves(teacher, [{"role": "teacher"}], 15)


def test_the_two_rows_budgets():
    args = argparse.Namespace(epochs=5, iterations_per_epoch=3, val_iterations=2)
    assert benchmark.self_training_budgets(SELF_TRAINING, args) == (None, TrainingBudget(5, 3, 2))
    teacher, student = benchmark.self_training_budgets(SELF_TRAINING_HALF_BUDGET, args)
    assert (teacher.epochs, student.epochs) == (3, 2)  # the teacher gets the odd epoch
    assert teacher.optimiser_steps + student.optimiser_steps == 5 * 3  # the reference's steps


def test_half_budget_needs_two_epochs(tmp_path, capsys):
    argv = ["-d", "4", "--split", "split.json", "-o", str(tmp_path / "out"), "--epochs", "1",
            "--iterations-per-epoch", "3", "--trainers", SELF_TRAINING_HALF_BUDGET]
    assert benchmark.main(argv) == 1
    assert "needs at least 2 epochs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def fake_checkpoint(fold: Path, epochs: int, seconds_per_epoch: float, dice: float) -> Path:
    import torch

    fold.mkdir(parents=True, exist_ok=True)
    logging = {"epoch_start_timestamps": [100.0 * e for e in range(epochs)],
               "epoch_end_timestamps": [100.0 * e + seconds_per_epoch for e in range(epochs)],
               "dice_per_class_or_region": [[dice, dice] for _ in range(epochs)]}
    torch.save({"logging": logging}, fold / "checkpoint_final.pth")
    return fold


@pytest.mark.parametrize("row", [SELF_TRAINING, SELF_TRAINING_HALF_BUDGET])
def test_row_runs_the_pipeline_in_its_own_folders_and_counts_every_model(row, tmp_path, monkeypatch):
    """The runner's side of a row, with the pipeline replaced by a fake that returns two trained models."""
    import nnunetv2.paths

    from nnunetv2_scdl.training import self_training

    user_raw, user_preprocessed = tmp_path / "raw", tmp_path / "preprocessed"
    for root in (user_raw, user_preprocessed):
        (root / "Dataset004_Hippocampus").mkdir(parents=True)
    monkeypatch.setattr(nnunetv2.paths, "nnUNet_raw", str(user_raw))
    monkeypatch.setattr(nnunetv2.paths, "nnUNet_preprocessed", str(user_preprocessed))
    paths = benchmark.BenchmarkPaths(tmp_path / "bench")
    reference = fake_checkpoint(paths.results / "Dataset004_Hippocampus" / "reference" / "fold_0", 4, 10.0, 0.2)
    monkeypatch.setattr(benchmark, "train", lambda trainer, *_: reference if trainer == REFERENCE_TRAINER else None)
    calls = []

    def fake_pipeline(settings, env, printer):
        calls.append((settings, env))
        results = Path(env["nnUNet_results"])
        teacher = (TrainedModel("teacher", "Dataset004_Hippocampus", REFERENCE_TRAINER, str(reference.parent), 0, 8)
                   if settings.teacher_model_folder else
                   TrainedModel("teacher", "Dataset004_Hippocampus", REFERENCE_TRAINER,
                                str(fake_checkpoint(results / "teacher" / "fold_0", 2, 5.0, 0.1).parent), 0, 4))
        student = fake_checkpoint(results / "Dataset999_Hippocampus_selftrain1" / "student" / "fold_0",
                                  settings.student_budget.epochs, 20.0, 0.5)
        result = SelfTrainingResult(teacher)
        result.rounds.append(self_training.RoundResult(1, "Dataset999_Hippocampus_selftrain1", ["u1"], {}, TrainedModel(
            "student", "Dataset999_Hippocampus_selftrain1", REFERENCE_TRAINER, str(student.parent), 0,
            settings.student_budget.optimiser_steps)))
        return result

    monkeypatch.setattr(self_training, "run_self_training", fake_pipeline)
    args = argparse.Namespace(epochs=4, iterations_per_epoch=2, val_iterations=1, configuration="3d_fullres",
                              plans="nnUNetPlans_cpu", seed=3, device="cpu", tta=False, num_processes=1, verbose=False)
    env = {"SCDL_SEED": "3", "SCDL_SELF_TRAINING_MIN_CONFIDENCE": "0.25"}
    entry = benchmark.train_self_training(row, "Dataset004_Hippocampus", args, paths, env, lambda line: None)

    ((settings, pipeline_env),) = calls
    row_folder = tmp_path / "bench" / "self_training" / row
    assert {k: pipeline_env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")} == \
        {k: str(row_folder / k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    assert (row_folder / "nnUNet_raw" / "Dataset004_Hippocampus").resolve() == \
        (user_raw / "Dataset004_Hippocampus").resolve()
    assert (row_folder / "nnUNet_preprocessed" / "Dataset004_Hippocampus").resolve() == \
        (user_preprocessed / "Dataset004_Hippocampus").resolve()
    assert (settings.seed, settings.min_confidence, settings.final_validation, settings.derived_dataset_id) == \
        (3, 0.25, False, 999)
    assert settings.teacher_trainer == settings.student_trainer == REFERENCE_TRAINER
    if row == SELF_TRAINING:  # the reference is the teacher; the student gets the whole budget
        assert settings.teacher_model_folder == str(reference.parent) and settings.teacher_budget is None
        assert settings.student_budget == TrainingBudget(4, 2, 1)
        assert [(m["role"], m["steps"], m["seconds"]) for m in entry["models"]] == \
            [("teacher (the reference)", 8, 40.0), ("student", 8, 80.0)]
        assert (entry["steps"], entry["epochs"], entry["seconds"]) == (16, 8, 120.0)
        assert entry["pseudo_dice"] == [[0.2, 0.2]] * 4 + [[0.5, 0.5]] * 4  # teacher, then student
    else:  # half the budget each, the teacher trained by the pipeline
        assert settings.teacher_model_folder is None
        assert (settings.teacher_budget, settings.student_budget) == (TrainingBudget(2, 2, 1), TrainingBudget(2, 2, 1))
        assert [(m["role"], m["steps"]) for m in entry["models"]] == [("teacher", 4), ("student", 4)]
        assert (entry["steps"], entry["seconds"]) == (8, 50.0)
    assert entry["final_model"] == {"dataset": "Dataset999_Hippocampus_selftrain1", "trainer": REFERENCE_TRAINER}


def test_report_rows_take_the_rows_steps(tmp_path):
    """records_in_order: a self-training row counts its models' steps; other rows the budget."""
    paths = benchmark.BenchmarkPaths(tmp_path)
    state = {"settings": settings(0), "trainers": {}}
    for trainer, training in ((REFERENCE_TRAINER, {"seconds": 60.0}),
                              (SELF_TRAINING, {"seconds": 130.0, "steps": 300, "models": TEACHER_OF_REFERENCE})):
        (paths.predictions(trainer)).mkdir(parents=True)
        (paths.predictions(trainer) / "evaluation_scdl.json").write_text(json.dumps(evaluation(0.6, 0.4)))
        state["trainers"][trainer] = {"training": training, "predicted": True, "evaluated": True}
    reference, row = benchmark.records_in_order(state, [REFERENCE_TRAINER, SELF_TRAINING], paths)
    assert (reference.iterations, reference.models) == (150, None)
    assert (row.iterations, row.models) == (300, TEACHER_OF_REFERENCE)
