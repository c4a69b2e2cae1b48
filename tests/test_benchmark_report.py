"""The benchmark report: tables, the SCDL-versus-host comparison and the plots, on hand-made evaluations."""
import math

import pytest

import numpy as np

from nnunetv2_scdl.evaluation.benchmark_report import (BENCHMARK_TRAINERS, REFERENCE_TRAINER, SCDL_PAIRS,
                                                       TrainerRecord, _group_curve, check_comparable, colour_index,
                                                       first_learned_epoch, learned_epoch_table, per_class_table,
                                                       plot_benchmark, plot_learning_curves, scdl_effect,
                                                       scdl_effect_table, short_name, summary_table)

CLASSES = {"1": "liver", "2": "gland", "3": "kidney"}


def evaluation(per_class_dice, cases=("a", "b")):
    """An evaluation_scdl.json-like dict; head = liver, kidney; tail = gland. ``None`` marks an undefined value."""
    per_class = {label: {"dice": dice, "assd_mm": 2.0, "hd95_mm": 5.0} for label, dice in per_class_dice.items()}
    defined = [d for d in per_class_dice.values() if d is not None]

    def mean(labels):
        values = [per_class_dice[label] for label in labels if per_class_dice[label] is not None]
        return {"dice": sum(values) / len(values) if values else None, "assd_mm": 2.0, "hd95_mm": 5.0}

    return {"classes": dict(CLASSES), "class_groups": {"head": [1, 3], "tail": [2]},
            "per_case": [{"case": c} for c in cases],
            "summary": {"original": {"per_class": per_class, "mean": {**mean(["1", "2", "3"]),
                                                                      "dice": sum(defined) / len(defined)},
                                     "head": mean(["1", "3"]), "tail": mean(["2"]),
                                     "case_mean_std": {"dice": 0.05}}}}


@pytest.fixture
def records():
    return [TrainerRecord(REFERENCE_TRAINER, evaluation({"1": 0.90, "2": 0.10, "3": 0.70}), 60.0, 100),
            TrainerRecord("nnUNetTrainerMeanTeacher", evaluation({"1": 0.92, "2": 0.20, "3": 0.70}), 120.0, 100),
            TrainerRecord("nnUNetTrainerSCDL_MT", evaluation({"1": 0.92, "2": 0.35, "3": 0.64}), 150.0, 100)]


def test_trainer_lists():
    assert BENCHMARK_TRAINERS[0] == REFERENCE_TRAINER and len(BENCHMARK_TRAINERS) == 1 + 2 * len(SCDL_PAIRS)
    assert all(scdl.startswith("nnUNetTrainerSCDL_") for _, scdl in SCDL_PAIRS)
    assert short_name("nnUNetTrainerSCDL_GACPS") == "SCDL_GACPS"


def test_plot_colours_pair_each_host_with_its_scdl_variant():
    """tab20 holds a dark and a light shade per hue at indices 2h and 2h + 1."""
    indices = [colour_index(t, i) for i, t in enumerate(BENCHMARK_TRAINERS + ("nnUNetTrainerOther",))]
    assert len(set(indices)) == len(indices)  # every trainer its own colour
    for host, scdl in SCDL_PAIRS:
        assert colour_index(host, 0) // 2 == colour_index(scdl, 0) // 2  # same hue
        assert colour_index(scdl, 0) % 2 == 0 and colour_index(host, 0) % 2 == 1  # SCDL dark, host light
    assert colour_index(REFERENCE_TRAINER, 5) == 14


def table_rows(table):
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines()[2:]}


def test_summary_table_values(records):
    table = summary_table(records)
    assert "paper" not in table.splitlines()[0]  # no record has the paper protocol: no such columns
    rows = table_rows(table)
    assert rows["Supervised"][0] == "56.7" and rows["Supervised"][6] == "reference"
    assert rows["MeanTeacher"][0] == "60.7" and rows["MeanTeacher"][6] == "+4.0"
    assert rows["SCDL_MT"][3] == "35.0"  # tail Dice %
    assert rows["SCDL_MT"][7] == "100"  # optimiser steps
    assert rows["SCDL_MT"][8] == "2.5" and rows["SCDL_MT"][9] == "1.50"  # minutes, s/it
    records[1].evaluation["summary"]["paper"] = {"mean": {"dice": 0.5, "asd_voxels": 3.0}}
    rows = table_rows(summary_table(records))
    assert rows["MeanTeacher"][6:8] == ["50.0", "3.00"] and rows["Supervised"][6:8] == ["n/a", "n/a"]


def test_per_class_table_marks_tail_and_best(records):
    lines = per_class_table(records).splitlines()
    assert lines[0] == "| trainer | liver | gland † | kidney |"
    scdl = lines[4].split("|")
    assert scdl[3].strip() == "**35.0**" and scdl[4].strip() == "64.0"
    teacher = lines[3].split("|")
    # a tie is bold in both rows
    assert teacher[2].strip() == "**92.0**" and scdl[2].strip() == "**92.0**"
    assert lines[2].split("|")[4].strip() == "**70.0**" and teacher[4].strip() == "**70.0**"


def test_per_class_table_bolds_printed_ties_and_never_zero(records):
    records[1].evaluation["summary"]["original"]["per_class"]["1"]["dice"] = 0.92004  # prints as 92.0
    records[0].evaluation["summary"]["original"]["per_class"]["2"]["dice"] = 0.0
    for r in records:
        r.evaluation["summary"]["original"]["per_class"]["3"]["dice"] = 0.0  # no trainer found the kidney
    rows = table_rows(per_class_table(records))
    assert rows["MeanTeacher"][0] == "**92.0**" and rows["SCDL_MT"][0] == "**92.0**"
    assert [row[2] for row in rows.values()] == ["0.0", "0.0", "0.0"]
    assert rows["Supervised"][1] == "0.0" and rows["SCDL_MT"][1] == "**35.0**"


def test_scdl_effect(records):
    (effect,) = scdl_effect(records)
    assert effect["host"] == "nnUNetTrainerMeanTeacher"
    assert math.isclose(effect["delta_tail"], 0.15) and math.isclose(effect["delta_head"], -0.03)
    assert effect["classes_better"] == 1 and effect["classes_worse"] == 1  # gland +15, kidney -6, liver 0
    assert math.isclose(effect["time_ratio"], 1.25)
    assert "| MeanTeacher | 60.7 | 63.7 | +3.0 | -3.0 | +15.0 | 1 / 1 | 1.25 |" in scdl_effect_table(records)
    assert "no host" in scdl_effect_table(records[:2])


def test_undefined_values_and_incomparable_records(records):
    odd = TrainerRecord("nnUNetTrainerGACPS", evaluation({"1": 0.5, "2": None, "3": 0.5}), 10.0, 10)
    assert "n/a" in per_class_table(records + [odd]).splitlines()[-1]
    with pytest.raises(ValueError, match="other cases"):
        check_comparable(records + [TrainerRecord("x", evaluation({"1": 1, "2": 1, "3": 1}, cases=("a",)), 1, 1)])
    with pytest.raises(ValueError, match="No trainer"):
        check_comparable([])


def test_plots_are_written(records, tmp_path):
    plot_benchmark(records, tmp_path / "per_class.png", tmp_path / "time.png")
    for name in ("per_class.png", "time.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_first_learned_epoch():
    # the blip at epoch 0 (an untrained network) is not learning; epoch 3 starts a run of three
    assert first_learned_epoch(np.array([0.12, 0.0, 0.05, 0.1, 0.2, 0.3, 0.0])) == 3
    assert first_learned_epoch(np.array([0.0, 0.2, np.nan, 0.3, 0.4])) == 1  # absent epochs neither count nor break
    assert first_learned_epoch(np.array([0.0, 0.0, 0.2, 0.3])) is None  # a run cut short by the end of training
    assert first_learned_epoch(np.array([0.0, 0.2, 0.3, 0.4])) == 1  # ... but one that ends with it counts
    assert first_learned_epoch(np.array([0.2, 0.0, 0.2, 0.0, np.nan])) is None
    assert first_learned_epoch(np.array([0.2, 0.5, 0.6]), threshold=0.4, sustain=1) == 1


def test_learned_epoch_table(records):
    # epochs x (liver, gland, kidney); None: the class was absent from that epoch's validation patches
    records[1].pseudo_dice = [[0.0, 0.0, 0.0], [0.2, None, 0.0], [0.5, 0.0, 0.12], [0.5, 0.0, 0.05]]
    records[2].pseudo_dice = [[0.0, 0.3, 0.0], [0.4, 0.2, 0.1], [0.6, 0.5, 0.1], [0.6, 0.5, 0.2], [0.7, 0.5, None]]
    table = learned_epoch_table(records)
    lines = table.splitlines()
    assert lines[0] == "| trainer | liver | gland † | kidney | last epoch: mean pseudo Dice % |"
    rows = table_rows(table)
    assert "Supervised" not in rows  # no pseudo-Dice log: left out rather than guessed
    assert rows["MeanTeacher"] == ["1", "never", "never", "18.3"]  # kidney: 0.12 once, then 0.05
    assert rows["SCDL_MT"] == ["1", "0", "1", "60.0"]  # the last epoch's mean ignores the absent kidney
    records[2].iterations_per_epoch = 5  # known steps per epoch: step (epoch), step = (epoch + 1) x 5
    assert table_rows(learned_epoch_table(records))["SCDL_MT"] == ["10 (1)", "5 (0)", "10 (1)", "60.0"]
    records[2].pseudo_dice = [[0.5, 0.5]]  # two classes for a three-class evaluation: not matched to labels
    assert "SCDL_MT" not in table_rows(learned_epoch_table(records))
    assert learned_epoch_table(records[:1]) == ""


def test_learned_epoch_table_lists_each_monitored_network(records):
    records[2].pseudo_dice = [[0.0, 0.0, 0.0], [0.3, 0.2, 0.2], [0.6, 0.5, 0.2], [0.6, 0.5, 0.2]]
    # the ensemble learned everything at epoch 1; network A only the liver, network B everything but later
    records[2].network_pseudo_dice = {"network_a": [[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.5, 0.0, None],
                                                    [0.6, 0.0, 0.0]],
                                      "network_b": [[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.6, 0.5, 0.3],
                                                    [0.6, 0.5, 0.3], [0.6, 0.5, 0.3]]}
    rows = table_rows(learned_epoch_table(records))
    assert rows["SCDL_MT"] == ["1", "1", "1", "43.3"]
    assert rows["SCDL_MT · network_a"] == ["1", "never", "never", "20.0"]
    assert rows["SCDL_MT · network_b"] == ["1", "2", "2", "46.7"]
    records[2].network_pseudo_dice["network_b"] = [[0.5, 0.5]]  # classes do not match: that row is left out
    rows = table_rows(learned_epoch_table(records))
    assert "SCDL_MT · network_a" in rows and "SCDL_MT · network_b" not in rows


def test_group_curve_ignores_absent_classes():
    curves = {1: np.array([0.2, np.nan, np.nan]), 3: np.array([0.4, 0.6, np.nan])}
    np.testing.assert_allclose(_group_curve(curves, [1, 3]), [0.3, 0.6, np.nan])


def test_learning_curve_plot(records, tmp_path):
    assert not plot_learning_curves(records, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
    records[2].pseudo_dice = [[0.0, 0.1, 0.0], [0.3, 0.2, None]]
    assert plot_learning_curves(records, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
