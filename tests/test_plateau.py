"""The plateau table (``nnUNetv2_scdl_plateau``) on hand-made runs: finished summaries and a model folder still
training, steps over the reference's, and clear errors."""
import json

import pytest
import torch
from test_benchmark_seeds import MT, make_summary, settings, evaluation, summary

from nnunetv2_scdl.cli import plateau as plateau_cli
from nnunetv2_scdl.evaluation.benchmark_report import REFERENCE_TRAINER
from nnunetv2_scdl.evaluation.plateau import load_sources, plateau_table

# anterior stays ≥ 0.1 from epoch 3 (the blip at epoch 1 is too short), posterior from epoch 4
REFERENCE_DICE = [[0.0, 0.0], [0.2, 0.0], [0.0, 0.0], [0.3, 0.0], [0.4, 0.2], [0.5, 0.3], [0.6, 0.4]]
# anterior from epoch 1, posterior from epoch 2 (epoch 3 has no posterior patch and neither counts nor breaks)
TEACHER_DICE = [[0.0, 0.0], [0.2, 0.0], [0.3, 0.1], [0.3, None], [0.4, 0.2], [0.5, 0.3], [0.6, 0.4]]
STUDENT_DICE = [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.3, 0.2], [0.4, 0.2]]


def write_summary(path, made):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(made))
    return path


def model_folder(root, trainer, logging, iterations=10, seed=0):
    """An nnU-Net model folder of a run still training: checkpoint_latest.pth, debug.json, dataset.json."""
    fold = root / "Dataset004_Hippocampus" / f"{trainer}__nnUNetPlans_cpu__3d_fullres" / "fold_0"
    fold.mkdir(parents=True)
    torch.save({"logging": logging}, fold / "checkpoint_latest.pth")
    (fold / "debug.json").write_text(json.dumps({"num_iterations_per_epoch": str(iterations), "seed": str(seed)}))
    (fold.parent / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "Anterior": 1,
                                                                     "Posterior": 2}}))
    return fold


def test_finished_summaries_give_steps_and_ratios(tmp_path):
    reference = write_summary(tmp_path / "seed_0" / f"{REFERENCE_TRAINER}.json",
                              summary(REFERENCE_TRAINER, 0, 0.8, epochs=7, pseudo_dice=REFERENCE_DICE))
    made = make_summary(MT, settings(0, 7, 15), ["cmd"], evaluation(0.8, 0.7),
                        {"seconds": 60.0, "epochs": 7, "pseudo_dice": TEACHER_DICE,
                         "network_pseudo_dice": {"student": STUDENT_DICE}})
    write_summary(tmp_path / "seed_0" / f"{MT}.json", made)
    sources = load_sources([reference, tmp_path / "seed_0"])  # the reference twice: listed once
    assert [s.trainer for s in sources] == [REFERENCE_TRAINER, MT]
    table = plateau_table(sources).splitlines()
    assert table[0] == "| trainer · network | anterior | posterior † | steps read |"
    # reference: anterior (3 + 1)·15 = 60, posterior 75; teacher 30 and 45; the student never learns the anterior
    # class within the last 3 epochs it has (only 2 are learned), and a finished run says "never"
    assert table[2] == "| Supervised (reference) | 60 (1.00) | 75 (1.00) | 105, finished |"
    assert table[3] == "| MeanTeacher | 30 (0.50) | 45 (0.60) | 105, finished |"
    assert table[4] == "| MeanTeacher · student | never | never | 105, finished |"


def test_a_run_still_training_is_read_from_its_latest_checkpoint(tmp_path):
    nan = float("nan")
    logging = {"epoch_start_timestamps": [0.0] * 5, "epoch_end_timestamps": [1.0] * 5,
               "dice_per_class_or_region": [[0.0, 0.0], [0.2, 0.0], [0.3, 0.0], [0.4, 0.1], [0.5, 0.2]],
               "pseudo_dice_network_a": [nan, [0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [0.3, 0.0]],
               "pseudo_dice_network_b": [nan, [0.2, 0.1], [0.3, 0.2], [0.4, 0.3], [0.5, 0.4]]}
    fold = model_folder(tmp_path / "nnUNet_results", "nnUNetTrainerGACPS", logging)
    reference = write_summary(tmp_path / "ref.json",
                              summary(REFERENCE_TRAINER, 0, 0.8, epochs=7, iterations=10, pseudo_dice=REFERENCE_DICE))
    # a folder without summaries is searched for model folders
    sources = load_sources([reference, tmp_path / "nnUNet_results"])
    assert sources[1].origin == str(fold / "checkpoint_latest.pth") and not sources[1].finished
    table = plateau_table(sources).splitlines()
    # reference: 40 and 50 steps at 10 iterations per epoch; GACPS ensemble: anterior from epoch 1 (20 steps),
    # posterior not learned within the 5 epochs (50 steps) read so far
    assert table[3] == "| GACPS | 20 (0.50) | not by 50 | 50, training |"
    assert table[4] == "| GACPS · network_a | 30 (0.75) | not by 50 | 50, training |"
    assert table[5] == "| GACPS · network_b | 20 (0.50) | 20 (0.40) | 50, training |"


def test_cli_writes_the_table_and_refuses_what_it_cannot_read(tmp_path, capsys):
    write_summary(tmp_path / "s" / "ref.json", summary(REFERENCE_TRAINER, 0, 0.8, epochs=7, pseudo_dice=REFERENCE_DICE))
    assert plateau_cli.main([str(tmp_path / "s"), "-o", str(tmp_path / "out" / "plateau.md")]) == 0
    assert "| Supervised (reference) | 60 (1.00) | 75 (1.00) |" in (tmp_path / "out" / "plateau.md").read_text()
    (tmp_path / "empty").mkdir()
    assert plateau_cli.main([str(tmp_path / "empty")]) == 1
    assert "holds no trainer summary and no model folder" in capsys.readouterr().err
    fold = model_folder(tmp_path / "r", "nnUNetTrainerGACPS", {"epoch_start_timestamps": [], "epoch_end_timestamps": [],
                                                               "dice_per_class_or_region": []})
    (fold / "debug.json").unlink()
    assert plateau_cli.main([str(fold)]) == 1
    assert "give the iterations per epoch" in capsys.readouterr().err


def test_sources_of_different_datasets_are_refused(tmp_path):
    first = write_summary(tmp_path / "a.json", summary(REFERENCE_TRAINER, 0, 0.8, epochs=7, pseudo_dice=REFERENCE_DICE))
    other = summary(MT, 0, 0.8, epochs=7, pseudo_dice=[[0.1, 0.1, 0.1]] * 7)
    other["classes"] = {"1": "a", "2": "b", "3": "c"}
    second = write_summary(tmp_path / "b.json", other)
    with pytest.raises(ValueError, match="one table compares one dataset"):
        plateau_table(load_sources([first, second]))


def test_self_training_models_are_rows_of_their_own_and_each_seed_has_its_reference(tmp_path):
    late = write_summary(tmp_path / "seed_0" / "ref.json",
                         summary(REFERENCE_TRAINER, 0, 0.8, epochs=7, pseudo_dice=REFERENCE_DICE))
    early = [[0.0, 0.0], [0.2, 0.2], [0.3, 0.3], [0.4, 0.4], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]
    write_summary(tmp_path / "seed_1" / "ref.json", summary(REFERENCE_TRAINER, 1, 0.8, epochs=7, pseudo_dice=early))
    write_summary(tmp_path / "seed_1" / "mt.json", summary(MT, 1, 0.8, epochs=7, pseudo_dice=TEACHER_DICE))
    # teacher 3 epochs (never 3 learned epochs in a row), then student 4 epochs (learned from its first)
    models = [{"role": "teacher", "trainer": REFERENCE_TRAINER, "steps": 45, "seconds": 1.0},
              {"role": "student", "trainer": REFERENCE_TRAINER, "steps": 60, "seconds": 1.0}]
    curve = [[0.0, 0.0], [0.2, 0.2], [0.3, 0.3]] + [[0.2, 0.2], [0.3, 0.3], [0.4, 0.4], [0.5, 0.5]]
    made = make_summary("SelfTrainingHalfBudget", settings(0, 7, 15), ["cmd"], evaluation(0.8, 0.7),
                        {"seconds": 2.0, "epochs": 7, "pseudo_dice": curve, "models": models})
    write_summary(tmp_path / "seed_0" / "st.json", made)
    table = plateau_table(load_sources([late, tmp_path / "seed_0", tmp_path / "seed_1"])).splitlines()
    rows = {line.split(" | ")[0][2:]: line for line in table[2:]}
    assert rows["Supervised (seed 0) (reference)"].endswith("| 60 (1.00) | 75 (1.00) | 105, finished |")
    assert rows["Supervised (seed 1) (reference)"].endswith("| 30 (1.00) | 30 (1.00) | 105, finished |")
    # seed 1's mean teacher against seed 1's reference, not seed 0's
    assert rows["MeanTeacher (seed 1)"].endswith("| 30 (1.00) | 45 (1.50) | 105, finished |")
    # the self-training row's teacher and student are read separately, each from its own first epoch
    assert rows["SelfTrainingHalfBudget · teacher (seed 0)"].endswith("| never | never | 45, finished |")
    assert rows["SelfTrainingHalfBudget · student (seed 0)"].endswith("| 15 | 15 | 60, finished |")
