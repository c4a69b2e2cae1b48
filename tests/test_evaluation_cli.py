"""End-to-end: nnUNetv2_scdl_evaluate on a tiny fake nnU-Net dataset written to a temporary folder."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_scdl.cli.evaluate import main

SHAPE_ZYX = (10, 14, 14)
SPACING_XYZ = (0.8, 0.8, 2.5)  # SimpleITK order; (z, y, x) spacing is (2.5, 0.8, 0.8)
CLASSES = {"background": 0, "liver": 1, "pancreas": 2, "kidney": 3}


def write_labels(path: Path, labels: np.ndarray, spacing_xyz=SPACING_XYZ) -> None:
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    image.SetSpacing(spacing_xyz)
    sitk.WriteImage(image, str(path))


def case_labels(kidney_side: int, with_pancreas: bool = True) -> np.ndarray:
    labels = np.zeros(SHAPE_ZYX, np.uint8)
    labels[1:7, 1:7, 1:7] = 1                 # liver: 216 voxels
    if with_pancreas:
        labels[7:10, 8:11, 8:11] = 2          # pancreas: 27 voxels
    labels[1:1 + kidney_side, 8:8 + kidney_side, 1:1 + kidney_side] = 3  # kidney: kidney_side**3 voxels
    return labels


@pytest.fixture()
def fake_dataset(tmp_path, monkeypatch):
    """Raw dataset with 3 cases. Labeled case_a: liver 216, pancreas 27, kidney 8 voxels (kidney is tail).
    case_b/case_c: kidney 216 voxels each, so over all three cases kidney (440) outnumbers pancreas (81)."""
    raw = tmp_path / "raw"
    dataset = raw / "Dataset979_EvalFake"
    (dataset / "labelsTr").mkdir(parents=True)
    (dataset / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": CLASSES, "numTraining": 3, "file_ending": ".nii.gz"}))
    refs = {"case_a": case_labels(2), "case_b": case_labels(6), "case_c": case_labels(6)}
    for case_id, labels in refs.items():
        write_labels(dataset / "labelsTr" / f"{case_id}.nii.gz", labels)
    predictions = tmp_path / "pred"
    predictions.mkdir()
    write_labels(predictions / "case_a.nii.gz", refs["case_a"])                          # perfect
    write_labels(predictions / "case_b.nii.gz", case_labels(6, with_pancreas=False))     # pancreas missed
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"dataset": "Dataset979_EvalFake", "labeled": ["case_a"], "unlabeled": ["case_b"],
                                 "val": ["case_c"]}))
    monkeypatch.setenv("nnUNet_raw", str(raw))
    return {"raw": raw, "dataset": dataset, "pred": predictions, "split": split, "out": tmp_path / "out"}


def run_main(args):
    main([str(a) for a in args] + ["--no-progress"])


def test_end_to_end_reports(fake_dataset, capsys):
    out = fake_dataset["out"]
    run_main([fake_dataset["pred"], fake_dataset["dataset"] / "labelsTr", "-d", "979", "--split",
              fake_dataset["split"], "-o", out])
    report = json.loads((out / "evaluation_scdl.json").read_text())
    # grouping from the labeled case only: frequencies 216, 27, 8 -> median 27 -> tail = kidney
    assert report["class_groups"]["tail"] == [3] and report["class_groups"]["head"] == [1, 2]
    assert report["class_groups"]["voxel_counts"] == {"1": 216, "2": 27, "3": 8}
    assert report["class_groups"]["labeled_cases"] == ["case_a"]
    cases = {case["case"]: case for case in report["per_case"]}
    assert set(cases) == {"case_a", "case_b"}
    assert cases["case_a"]["original"]["1"] == {"dice": 1.0, "assd_mm": 0.0, "hd95_mm": 0.0}
    diagonal = math.sqrt((9 * 2.5) ** 2 + (13 * 0.8) ** 2 + (13 * 0.8) ** 2)
    assert cases["case_b"]["original"]["2"]["dice"] == 0.0
    assert cases["case_b"]["original"]["2"]["assd_mm"] == pytest.approx(diagonal)
    assert cases["case_b"]["spacing_mm_zyx"] == pytest.approx([2.5, 0.8, 0.8])
    # paper protocol on the default (80, 160, 160) grid
    assert cases["case_a"]["paper"]["3"] == {"dice": 1.0, "asd_voxels": 0.0}
    assert cases["case_b"]["paper"]["2"] == {"dice": 0.0, "asd_voxels": 128.0}
    assert report["settings"]["paper_grid_zyx"] == [80, 160, 160]
    summary = report["summary"]
    assert summary["original"]["per_class"]["2"]["dice"] == pytest.approx(0.5)
    assert summary["original"]["tail"]["dice"] == pytest.approx(1.0)
    assert summary["paper"]["per_class"]["2"]["asd_voxels"] == pytest.approx(64.0)
    assert summary["paper"]["n_empty_prediction_volumes"] == 0
    markdown = (out / "evaluation_scdl.md").read_text()
    assert "| 2 | pancreas | head | 50.00 |" in markdown and "tail mean" in markdown
    assert (out / "evaluation_scdl_per_class.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pancreas" in capsys.readouterr().out


def test_grouping_without_split_uses_every_label_file(fake_dataset):
    # all three cases: liver 648, pancreas 81, kidney 440 -> median 440 -> tail = pancreas
    run_main([fake_dataset["pred"], fake_dataset["dataset"] / "labelsTr", "-d", fake_dataset["dataset"],
              "-o", fake_dataset["out"], "--no-paper-protocol"])
    report = json.loads((fake_dataset["out"] / "evaluation_scdl.json").read_text())
    assert report["class_groups"]["tail"] == [2]
    assert "paper" not in report["summary"]


def test_tail_override_by_name(fake_dataset):
    run_main([fake_dataset["pred"], fake_dataset["dataset"] / "labelsTr", "-d", "Dataset979_EvalFake",
              "-o", fake_dataset["out"], "--tail-classes", "pancreas,3", "--paper-grid", "10,14,14"])
    report = json.loads((fake_dataset["out"] / "evaluation_scdl.json").read_text())
    assert report["class_groups"]["tail"] == [2, 3] and report["class_groups"]["head"] == [1]


def test_missing_reference_is_named(fake_dataset):
    write_labels(fake_dataset["pred"] / "case_x.nii.gz", case_labels(2))
    with pytest.raises(SystemExit, match=r"labelsTr/case_x\.nii\.gz"):
        run_main([fake_dataset["pred"], fake_dataset["dataset"] / "labelsTr", "-d", "979", "-o", fake_dataset["out"]])


def test_grid_mismatch_names_both_files(fake_dataset):
    write_labels(fake_dataset["pred"] / "case_c.nii.gz", case_labels(2), spacing_xyz=(1.0, 0.8, 2.5))
    with pytest.raises(SystemExit, match=r"pred/case_c\.nii\.gz.*labelsTr/case_c\.nii\.gz.*spacing"):
        run_main([fake_dataset["pred"], fake_dataset["dataset"] / "labelsTr", "-d", "979", "-o", fake_dataset["out"]])


def test_unknown_label_value_is_named(fake_dataset):
    labels = case_labels(2)
    labels[0, 0, 0] = 9
    write_labels(fake_dataset["pred"] / "case_a.nii.gz", labels)
    with pytest.raises(SystemExit, match=r"case_a\.nii\.gz contains label values \[9\]"):
        run_main([fake_dataset["pred"], fake_dataset["dataset"] / "labelsTr", "-d", "979", "-o", fake_dataset["out"]])


def test_unknown_dataset_and_bad_split(fake_dataset, tmp_path):
    with pytest.raises(SystemExit, match="Dataset978"):
        run_main([fake_dataset["pred"], fake_dataset["dataset"] / "labelsTr", "-d", "978"])
    bad_split = tmp_path / "bad.json"
    bad_split.write_text(json.dumps({"train": ["case_a"]}))
    with pytest.raises(SystemExit, match="no 'labeled' list"):
        run_main([fake_dataset["pred"], fake_dataset["dataset"] / "labelsTr", "-d", "979", "--split", bad_split])
    nnunet_split = tmp_path / "splits_final.json"
    nnunet_split.write_text(json.dumps([{"train": ["case_a"], "val": ["case_c"], "unlabeled": ["case_b"]}]))
    run_main([fake_dataset["pred"], fake_dataset["dataset"] / "labelsTr", "-d", "979", "--split", nnunet_split,
              "-o", fake_dataset["out"], "--no-paper-protocol"])
    report = json.loads((fake_dataset["out"] / "evaluation_scdl.json").read_text())
    assert report["class_groups"]["labeled_cases"] == ["case_a"] and report["class_groups"]["tail"] == [3]
    missing_case_split = tmp_path / "missing.json"
    missing_case_split.write_text(json.dumps({"labeled": ["case_z"], "unlabeled": [], "val": []}))
    with pytest.raises(SystemExit, match=r"case_z\.nii\.gz"):
        run_main([fake_dataset["pred"], fake_dataset["dataset"] / "labelsTr", "-d", "979", "--split",
                  missing_case_split])
