"""Benchmark splits (nnUNetv2_scdl_make_split) and the honesty of benchmark-mode unlabeled preprocessing."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from nnunetv2_scdl.cli import make_split as make_split_cli
from nnunetv2_scdl.cli import preprocess_unlabeled as preprocess_cli
from nnunetv2_scdl.data.phantoms import make_phantom_dataset
from nnunetv2_scdl.data.splits import (BenchmarkSplit, SplitError, benchmark_unlabeled_cases, load_split_file,
                                       random_split, raw_case_files, validate_split)
from nnunetv2_scdl.data.unlabeled_preprocessing import get_unlabeled_folder, load_unlabeled_manifest

SHAPE = (12, 16, 16)  # raw-only datasets: never planned, so any small size works
_ids = iter(range(930, 990))


@pytest.fixture
def raw_dataset(nnunet_folders):
    """A fresh, unplanned 10-case phantom dataset; returns (dataset name, case IDs, preprocessed folder)."""
    written = make_phantom_dataset(str(nnunet_folders.raw), next(_ids), "SplitTest", n_labeled=10, n_unlabeled=0,
                                   n_test=0, shape=SHAPE, spacing=(1, 1, 1), seed=0)
    return written.dataset_name, written.labeled, nnunet_folders.preprocessed / written.dataset_name


def read_splits(preprocessed: Path):
    return json.loads((preprocessed / "splits_final.json").read_text())


def write_split_file(path: Path, labeled, unlabeled, val, **extra) -> Path:
    path.write_text(json.dumps(dict(extra, labeled=labeled, unlabeled=unlabeled, val=val)))
    return path


def test_split_file_becomes_a_one_fold_nnunet_split(raw_dataset, tmp_path, capsys):
    name, cases, preprocessed = raw_dataset
    assert not preprocessed.exists()  # before nnUNetv2_plan_and_preprocess: the folder is created
    split_file = write_split_file(tmp_path / "s.json", cases[:2], cases[2:8], cases[8:], dataset=name,
                                  protocol="test")
    assert make_split_cli.main(["-d", name, "--split", str(split_file)]) == 0
    assert read_splits(preprocessed) == [{"train": cases[:2], "val": cases[8:], "unlabeled": cases[2:8]}]
    assert "2 labeled, 6 unlabeled, 2 validation" in capsys.readouterr().out
    assert benchmark_unlabeled_cases(str(preprocessed)) == cases[2:8]


def test_labeled_count_draws_disjoint_lists_covering_every_case(raw_dataset):
    name, cases, preprocessed = raw_dataset
    assert make_split_cli.main(["-d", name, "--labeled", "3", "--num-val", "2", "--seed", "4"]) == 0
    (entry,) = read_splits(preprocessed)
    assert (len(entry["train"]), len(entry["val"]), len(entry["unlabeled"])) == (3, 2, 5)
    assert sorted(entry["train"] + entry["val"] + entry["unlabeled"]) == sorted(cases)


def test_fraction_and_seed_are_deterministic():
    cases = [f"case_{i:02d}" for i in range(40)]
    a = random_split(cases, labeled_fraction=0.25, val_fraction=0.2, seed=1)
    b = random_split(list(reversed(cases)), labeled_fraction=0.25, val_fraction=0.2, seed=1)
    c = random_split(cases, labeled_fraction=0.25, val_fraction=0.2, seed=2)
    assert (a.labeled, a.unlabeled, a.val) == (b.labeled, b.unlabeled, b.val)  # input order does not matter
    assert a.labeled != c.labeled
    assert (len(a.val), len(a.labeled), len(a.unlabeled)) == (8, 8, 24)  # 25 % of the 32 non-validation cases


def test_fraction_cli_is_reproducible(raw_dataset):
    name, _, preprocessed = raw_dataset
    assert make_split_cli.main(["-d", name, "--fraction", "0.3", "--val-fraction", "0.2", "--seed", "9"]) == 0
    first = read_splits(preprocessed)
    assert make_split_cli.main(["-d", name, "--fraction", "0.3", "--val-fraction", "0.2", "--seed", "9"]) == 0
    assert read_splits(preprocessed) == first
    assert not list(preprocessed.glob("splits_final.backup-*"))  # same split: nothing replaced, no backup


@pytest.mark.parametrize("bad_counts", [["--labeled", "9", "--num-val", "2"], ["--labeled", "0"],
                                        ["--labeled", "2", "--num-val", "0"], ["--fraction", "1.5"]])
def test_impossible_counts_are_refused(raw_dataset, bad_counts, capsys):
    name, _, preprocessed = raw_dataset
    assert make_split_cli.main(["-d", name] + bad_counts) == 1
    assert "error" in capsys.readouterr().err
    assert not (preprocessed / "splits_final.json").exists()


def test_unknown_cases_are_named(raw_dataset, tmp_path, capsys):
    name, cases, preprocessed = raw_dataset
    split_file = write_split_file(tmp_path / "s.json", cases[:2] + ["ghost_01"], ["ghost_02"] + cases[2:8], cases[8:])
    assert make_split_cli.main(["-d", name, "--split", str(split_file)]) == 1
    error = capsys.readouterr().err
    assert "ghost_01" in error and "ghost_02" in error and "not in imagesTr" in error
    assert not (preprocessed / "splits_final.json").exists()


def test_overlapping_lists_are_refused(raw_dataset, tmp_path, capsys):
    name, cases, preprocessed = raw_dataset
    split_file = write_split_file(tmp_path / "s.json", cases[:3], cases[2:8], cases[8:])
    assert make_split_cli.main(["-d", name, "--split", str(split_file)]) == 1
    error = capsys.readouterr().err
    assert "overlap" in error and cases[2] in error
    assert not (preprocessed / "splits_final.json").exists()


def test_labeled_case_without_label_file_is_refused(raw_dataset, nnunet_folders, tmp_path, capsys):
    name, cases, _ = raw_dataset
    os.remove(nnunet_folders.raw / name / "labelsTr" / f"{cases[0]}.nii.gz")
    split_file = write_split_file(tmp_path / "s.json", cases[:2], cases[2:8], cases[8:])
    assert make_split_cli.main(["-d", name, "--split", str(split_file)]) == 1
    assert cases[0] in capsys.readouterr().err
    # an unlabeled case needs no label file at all
    split_file = write_split_file(tmp_path / "t.json", cases[1:3], [cases[0]] + cases[3:8], cases[8:])
    assert make_split_cli.main(["-d", name, "--split", str(split_file)]) == 0


def test_split_for_another_dataset_is_refused(raw_dataset, tmp_path, capsys):
    name, cases, _ = raw_dataset
    split_file = write_split_file(tmp_path / "s.json", cases[:2], cases[2:8], cases[8:], dataset="Dataset004_Other")
    assert make_split_cli.main(["-d", name, "--split", str(split_file)]) == 1
    assert "Dataset004_Other" in capsys.readouterr().err


def test_existing_different_split_is_protected_and_backed_up(raw_dataset, capsys):
    name, _, preprocessed = raw_dataset
    assert make_split_cli.main(["-d", name, "--labeled", "2", "--num-val", "2", "--seed", "0"]) == 0
    original = read_splits(preprocessed)
    assert make_split_cli.main(["-d", name, "--labeled", "4", "--num-val", "2", "--seed", "0"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert read_splits(preprocessed) == original

    assert make_split_cli.main(["-d", name, "--labeled", "4", "--num-val", "2", "--seed", "0", "--overwrite"]) == 0
    assert len(read_splits(preprocessed)[0]["train"]) == 4
    (backup,) = preprocessed.glob("splits_final.backup-*.json")
    assert json.loads(backup.read_text()) == original


def test_plain_nnunet_split_is_protected_too(raw_dataset):
    name, cases, preprocessed = raw_dataset
    preprocessed.mkdir(parents=True)
    nnunet_split = [{"train": cases[:8], "val": cases[8:]}]
    (preprocessed / "splits_final.json").write_text(json.dumps(nnunet_split))
    assert make_split_cli.main(["-d", name, "--labeled", "2", "--num-val", "2"]) == 1
    assert read_splits(preprocessed) == nnunet_split
    assert benchmark_unlabeled_cases(str(preprocessed)) == []  # a plain nnU-Net split lists no unlabeled cases


def test_validate_split_rules():
    cases = {f"c{i}": {"has_image": True, "has_label": True} for i in range(6)}
    validate_split(BenchmarkSplit(["c0"], ["c1", "c2"], ["c3"]), cases)
    with pytest.raises(SplitError, match="more than once"):
        validate_split(BenchmarkSplit(["c0", "c0"], ["c1"], ["c3"]), cases)
    with pytest.raises(SplitError, match="no validation"):
        validate_split(BenchmarkSplit(["c0"], ["c1"], []), cases)
    with pytest.raises(SplitError, match="no labeled"):
        validate_split(BenchmarkSplit([], ["c1"], ["c3"]), cases)


def test_load_split_file_reports_format_problems(tmp_path):
    (tmp_path / "a.json").write_text("[1, 2]")
    (tmp_path / "b.json").write_text(json.dumps({"labeled": ["x"], "val": ["y"]}))
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(SplitError, match="JSON object"):
        load_split_file(str(tmp_path / "a.json"))
    with pytest.raises(SplitError, match="unlabeled"):
        load_split_file(str(tmp_path / "b.json"))
    with pytest.raises(SplitError, match="not valid JSON"):
        load_split_file(str(tmp_path / "c.json"))
    with pytest.raises(SplitError, match="not found"):
        load_split_file(str(tmp_path / "missing.json"))


@pytest.mark.shared_data
@pytest.mark.parametrize("dataset, split_name", [("Dataset011_BTCV", "Dataset011_BTCV_20pct.json"),
                                                 ("Dataset004_Hippocampus", "Dataset004_Hippocampus_5pct.json")])
def test_shared_split_files_fit_the_shared_datasets(shared_data_dir, dataset, split_name):
    split = load_split_file(str(shared_data_dir / "splits" / split_name))
    validate_split(split, raw_case_files(str(shared_data_dir / dataset)), dataset)  # listings only
    assert split.description["dataset"] == dataset


def test_benchmark_unlabeled_preprocessing_never_reads_labels(phantom_copy, monkeypatch):
    """Benchmark mode: the labels of 'unlabeled' cases may be deleted or garbage; they are never opened."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    dataset = phantom_copy()
    # pure benchmark mode: no imagesUnlabeled folder
    for image in (dataset.raw_folder / "imagesUnlabeled").iterdir():
        image.unlink()
    (dataset.raw_folder / "imagesUnlabeled").rmdir()
    assert make_split_cli.main(["-d", dataset.dataset_name, "--labeled", "2", "--num-val", "1", "--seed", "0"]) == 0
    (entry,) = read_splits(dataset.preprocessed_folder)
    unlabeled = entry["unlabeled"]
    assert len(unlabeled) == 3

    labels = dataset.raw_folder / "labelsTr"
    (labels / f"{unlabeled[0]}.nii.gz").unlink()
    (labels / f"{unlabeled[1]}.nii.gz").write_bytes(b"this is not an image")
    (labels / f"{unlabeled[2]}.nii.gz").unlink()
    (labels / f"{unlabeled[2]}.nii.gz").mkdir()  # even its path is not a file any more

    def no_label_reading(*args, **kwargs):
        raise AssertionError(f"a label file was read: {args}")
    monkeypatch.setattr(SimpleITKIO, "read_seg", no_label_reading)

    assert preprocess_cli.main(["-d", dataset.dataset_name, "-c", dataset.configuration, "-np", "1"]) == 0
    folder = Path(get_unlabeled_folder(str(dataset.preprocessed_folder), dataset.data_identifier))
    manifest = load_unlabeled_manifest(str(folder))
    assert manifest["cases"] == {c: {"source": "imagesTr", "images": [f"imagesTr/{c}_0000.nii.gz"]}
                                 for c in unlabeled}
    # the image data equal what nnU-Net preprocessed for these cases (same pipeline); the seg is only the mask
    labeled_data = nnUNetDatasetBlosc2(str(dataset.labeled_data_folder))
    unlabeled_data = nnUNetDatasetBlosc2(str(folder), list(unlabeled))
    for case in unlabeled:
        data, seg, _, properties = unlabeled_data.load_case(case)
        reference, _, _, _ = labeled_data.load_case(case)
        np.testing.assert_array_equal(data[:], reference[:])
        assert set(np.unique(seg[:])) <= {-1, 0}
        assert "class_locations" not in properties
