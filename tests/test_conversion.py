"""Conversion of Synapse/BTCV and AMOS22 (tiny fake files laid out like the originals) and the papers' splits."""
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_scdl.cli.convert_dataset import main
from nnunetv2_scdl.data.conversion import convert_amos, convert_synapse
from nnunetv2_scdl.data.paper_splits import (AMOS_5PCT_LABELED, amos_split_from_txt_dir, paper_split, synapse_split)

SHARED_SPLIT = Path(__file__).resolve().parents[2] / "shared" / "data" / "splits" / "Dataset011_BTCV_20pct.json"
ALL_SCANS = list(range(1, 11)) + list(range(21, 41))


def ids(prefix, numbers):
    return [f"{prefix}{n:04d}" for n in numbers]


# ------------------------------------------------------------------------------------------------------ split facts
def test_synapse_ga_20pct_is_the_papers_list():
    split = synapse_split("synapse_ga_20pct")
    assert sorted(split.labeled) == ids("synapse_", [2, 23, 34, 39])
    assert sorted(split.unlabeled) == ids("synapse_", [1, 3, 5, 8, 9, 21, 22, 24, 27, 28, 29, 30, 31, 32, 37, 38])
    assert sorted(split.val) == ids("synapse_", [6, 25, 26, 40])
    assert sorted(split.test) == ids("synapse_", [4, 7, 10, 33, 35, 36])


def test_synapse_ga_10pct_keeps_the_20pct_training_pool():
    split10, split20 = synapse_split("synapse_ga_10pct"), synapse_split("synapse_ga_20pct")
    assert sorted(split10.labeled) == ids("synapse_", [23, 28])
    assert len(split10.unlabeled) == 18
    assert sorted(split10.labeled + split10.unlabeled) == sorted(split20.labeled + split20.unlabeled)
    assert split10.val == split20.val and split10.test == split20.test


@pytest.mark.parametrize("name", ["synapse_ga_20pct", "synapse_ga_10pct", "synapse_genericssl_20pct"])
def test_synapse_splits_partition_the_30_scans(name):
    split = synapse_split(name)
    roles = [split.labeled, split.unlabeled, split.val, split.test]
    assert sum(len(r) for r in roles) == 30
    assert sorted(c for r in roles for c in r) == ids("synapse_", ALL_SCANS)
    assert (len(split.val), len(split.test)) == (4, 6)


def test_genericssl_split():
    split = synapse_split("synapse_genericssl_20pct")
    assert sorted(split.labeled) == ids("synapse_", [9, 21, 25, 34])
    assert sorted(split.val) == ids("synapse_", [1, 7, 23, 30])
    assert sorted(split.test) == ids("synapse_", [8, 27, 29, 33, 37, 39])


def test_sabs_case_ids_follow_sorted_scan_order():
    # btcv_NN is the NN-th (0-based) of the 30 scans in sorted order: 0002 -> 01, 0023 -> 12, 0034 -> 23, 0039 -> 28
    split = synapse_split("synapse_ga_20pct", case_id_style="sabs")
    assert sorted(split.labeled) == ["btcv_01", "btcv_12", "btcv_23", "btcv_28"]
    assert sorted(split.val) == ["btcv_05", "btcv_14", "btcv_15", "btcv_29"]


@pytest.mark.skipif(not SHARED_SPLIT.is_file(), reason=f"shared split file not found: {SHARED_SPLIT}")
def test_sabs_split_equals_the_shared_split_file():
    shared = json.loads(SHARED_SPLIT.read_text())
    split = synapse_split("synapse_ga_20pct", case_id_style="sabs")
    for role in ("labeled", "unlabeled", "val"):
        assert sorted(getattr(split, role)) == sorted(shared[role])


def test_amos_splits_are_not_invented():
    with pytest.raises(ValueError, match="not built in"):
        paper_split("amos_5pct")


def write_amos_txt_dir(folder: Path, labeled, unlabeled, val, test, percent=5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, cases in ((f"labeled_{percent}p.txt", labeled), (f"unlabeled_{percent}p.txt", unlabeled),
                        ("eval.txt", val), ("test.txt", test)):
        (folder / name).write_text("".join(f"{c}\n" for c in cases))
    return folder


def test_amos_txt_import_checks_the_papers_facts(tmp_path):
    # synthetic stand-in lists with the papers' sizes: 216 training (the spec's 10 labeled + 206), 24 val, 120 test
    pool = [f"amos_{n:04d}" for n in range(1, 401) if f"amos_{n:04d}" not in AMOS_5PCT_LABELED]
    unlabeled, val, test = pool[:206], pool[206:230], pool[230:350]
    good = write_amos_txt_dir(tmp_path / "good", AMOS_5PCT_LABELED, unlabeled, val, test)
    split = amos_split_from_txt_dir(good, 5)
    assert sorted(split.labeled) == sorted(AMOS_5PCT_LABELED) and len(split.unlabeled) == 206
    wrong_labeled = write_amos_txt_dir(tmp_path / "wrong", pool[350:360], unlabeled, val, test)
    with pytest.raises(ValueError, match="labeled cases"):
        amos_split_from_txt_dir(wrong_labeled, 5)
    assert len(amos_split_from_txt_dir(wrong_labeled, 5, verify=False).labeled) == 10
    short_val = write_amos_txt_dir(tmp_path / "short", AMOS_5PCT_LABELED, unlabeled, val[:20], test)
    with pytest.raises(ValueError, match="20 val cases instead of 24"):
        amos_split_from_txt_dir(short_val, 5)
    two_percent = write_amos_txt_dir(tmp_path / "two", pool[350:355], unlabeled, val, test, 2)
    with pytest.raises(ValueError, match="5 labeled cases instead of 4"):
        amos_split_from_txt_dir(two_percent, 2)


# ------------------------------------------------------------------------------------------------ fake source data
SPACING_XYZ = (0.75, 0.75, 3.0)
ORIGIN_XYZ = (-120.0, 40.5, 10.0)


def write_image(path: Path, array_zyx: np.ndarray, spacing=SPACING_XYZ, origin=ORIGIN_XYZ, dtype=np.int16) -> None:
    image = sitk.GetImageFromArray(array_zyx.astype(dtype))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path), True)


def fake_label(number: int, max_label: int, shape=(4, 6, 5)) -> np.ndarray:
    """A small label map whose voxel k holds (number + k) % (max_label + 1): every label value occurs."""
    return ((np.arange(np.prod(shape)) + number) % (max_label + 1)).reshape(shape)


@pytest.fixture()
def synapse_source(tmp_path):
    training = tmp_path / "BTCV" / "RawData" / "Training"
    (training / "img").mkdir(parents=True)
    (training / "label").mkdir()
    for n in ALL_SCANS:
        write_image(training / "img" / f"img{n:04d}.nii.gz", np.full((4, 6, 5), n))
        # labels stored as float32 with a float32-rounded spacing, as some BTCV files are
        write_image(training / "label" / f"label{n:04d}.nii.gz", fake_label(n, 13), dtype=np.float32,
                    spacing=tuple(float(np.float32(s + 1e-6)) for s in SPACING_XYZ))
    return tmp_path / "BTCV"


def test_convert_synapse_ga(synapse_source, tmp_path):
    raw = tmp_path / "raw"
    result = convert_synapse(synapse_source, raw, 111, show_progress=False)
    dataset = raw / "Dataset111_Synapse"
    assert result.dataset_dir == dataset
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == [
        f"synapse_{n:04d}_0000.nii.gz" for n in (4, 7, 10, 33, 35, 36)]
    assert len(list((dataset / "imagesTr").iterdir())) == 24 and len(list((dataset / "labelsTr").iterdir())) == 24
    assert len(list((dataset / "labelsTs").iterdir())) == 6
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["numTraining"] == 24 and meta["labels"]["left_adrenal_gland"] == 13
    assert meta["channel_names"] == {"0": "CT"} and meta["file_ending"] == ".nii.gz"
    # image copied unchanged; label values kept, written as uint8 on the image's exact geometry
    image = sitk.ReadImage(str(dataset / "imagesTr" / "synapse_0023_0000.nii.gz"))
    label = sitk.ReadImage(str(dataset / "labelsTr" / "synapse_0023.nii.gz"))
    assert np.all(sitk.GetArrayFromImage(image) == 23)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), fake_label(23, 13))
    assert label.GetPixelID() == sitk.sitkUInt8
    assert label.GetSpacing() == image.GetSpacing() and label.GetOrigin() == image.GetOrigin()
    # split files for the GA test set
    assert sorted(p.name for p in result.written_splits) == ["synapse_ga_10pct.json", "synapse_ga_20pct.json"]
    split = json.loads((dataset / "paper_splits" / "synapse_ga_20pct.json").read_text())
    assert split["dataset"] == "Dataset111_Synapse"
    assert sorted(split["labeled"]) == ids("synapse_", [2, 23, 34, 39])
    for case in split["labeled"] + split["unlabeled"] + split["val"]:
        assert (dataset / "labelsTr" / f"{case}.nii.gz").is_file()


def test_converted_split_files_are_accepted_by_the_split_command(synapse_source, tmp_path):
    from nnunetv2_scdl.data.splits import load_split_file, raw_case_files, validate_split

    result = convert_synapse(synapse_source, tmp_path / "raw", 116, show_progress=False)
    for path in result.written_splits:
        split = load_split_file(str(path))
        validate_split(split, raw_case_files(str(result.dataset_dir)), result.dataset_dir.name)
        assert len(split.val) == 4 and len(split.labeled) + len(split.unlabeled) == 20


def test_converted_synapse_passes_nnunet_checks(synapse_source, tmp_path):
    # the per-case checks nnU-Net's verify_dataset_integrity runs (called directly: it would spawn worker processes)
    from nnunetv2.experiment_planning.verify_dataset_integrity import check_cases, verify_labels
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    convert_synapse(synapse_source, tmp_path / "raw", 112, test_set="genericssl", show_progress=False)
    dataset = tmp_path / "raw" / "Dataset112_Synapse"
    meta = json.loads((dataset / "dataset.json").read_text())
    cases = get_filenames_of_train_images_and_targets(str(dataset), meta)
    assert len(cases) == meta["numTraining"] == 24
    assert "synapse_0008" not in cases and "synapse_0004" in cases
    for case in cases.values():
        assert verify_labels(case["label"], SimpleITKIO, list(range(14)))
        assert check_cases(case["images"], case["label"], 1, SimpleITKIO)
    assert (dataset / "paper_splits" / "synapse_genericssl_20pct.json").is_file()


def test_synapse_errors_name_the_files(synapse_source, tmp_path):
    label_dir = synapse_source / "RawData" / "Training" / "label"
    write_image(label_dir / "label0005.nii.gz", fake_label(5, 13, shape=(4, 6, 6)))
    with pytest.raises(ValueError, match=r"label0005\.nii\.gz does not match image .*img0005\.nii\.gz: size"):
        convert_synapse(synapse_source, tmp_path / "raw1", 113, show_progress=False)
    write_image(label_dir / "label0005.nii.gz", fake_label(5, 14))
    with pytest.raises(ValueError, match=r"label0005\.nii\.gz holds values \[14\]"):
        convert_synapse(synapse_source, tmp_path / "raw2", 113, show_progress=False)
    (label_dir / "label0005.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"label0005\.nii\.gz"):
        convert_synapse(synapse_source, tmp_path / "raw3", 113, show_progress=False)


def test_synapse_subset_skips_incomplete_splits_and_refuses_existing_folder(synapse_source, tmp_path):
    for n in (2, 3):
        (synapse_source / "RawData" / "Training" / "img" / f"img{n:04d}.nii.gz").unlink()
    result = convert_synapse(synapse_source, tmp_path / "raw", 114, show_progress=False)
    assert result.written_splits == [] and "synapse_ga_20pct" in result.skipped_splits
    assert "synapse_0002" in result.skipped_splits["synapse_ga_20pct"]
    with pytest.raises(FileExistsError):
        convert_synapse(synapse_source, tmp_path / "raw", 114, show_progress=False)
    with pytest.raises(ValueError, match="already used"):
        convert_synapse(synapse_source, tmp_path / "raw", 114, name="Other", show_progress=False)


# ---------------------------------------------------------------------------------------------------------- AMOS
AMOS_LABELS = {"0": "background", "1": "spleen", "2": "right kidney", "3": "left kidney", "4": "gall bladder",
               "5": "esophagus", "6": "liver", "7": "stomach", "8": "arota", "9": "postcava", "10": "pancreas",
               "11": "right adrenal gland", "12": "left adrenal gland", "13": "duodenum", "14": "bladder",
               "15": "prostate/uterus"}


@pytest.fixture()
def amos_source(tmp_path):
    source = tmp_path / "amos22"
    for folder in ("imagesTr", "labelsTr", "imagesVa", "labelsVa"):
        (source / folder).mkdir(parents=True)
    train, val = [1, 5, 9, 14, 508], [8, 13]
    for n in train:
        write_image(source / "imagesTr" / f"amos_{n:04d}.nii.gz", np.full((4, 6, 5), n))
        write_image(source / "labelsTr" / f"amos_{n:04d}.nii.gz", fake_label(n, 15), dtype=np.uint8)
    for n in val:
        write_image(source / "imagesVa" / f"amos_{n:04d}.nii.gz", np.full((4, 6, 5), n))
    write_image(source / "labelsVa" / "amos_0008.nii.gz", fake_label(8, 15), dtype=np.uint8)
    meta = {"name": "AMOS", "modality": {"0": "CT"}, "labels": AMOS_LABELS, "numTraining": len(train),
            "training": [{"image": f"./imagesTr/amos_{n:04d}.nii.gz", "label": f"./labelsTr/amos_{n:04d}.nii.gz"}
                         for n in train],
            "validation": [{"image": f"./imagesVa/amos_{n:04d}.nii.gz"} for n in val]}
    (source / "dataset.json").write_text(json.dumps(meta))
    return source


def test_convert_amos_with_split_text_files(amos_source, tmp_path):
    txt_dir = write_amos_txt_dir(tmp_path / "splits", ["amos_0005", "amos_0508"], ["amos_0001", "amos_0009"],
                                 ["amos_0014"], ["amos_0008", "amos_0013"])
    result = convert_amos(amos_source, tmp_path / "raw", 120, splits_txt_dir=txt_dir, verify_splits=False,
                          show_progress=False)
    dataset = tmp_path / "raw" / "Dataset120_AMOS"
    assert sorted(result.training_cases) == ["amos_0001", "amos_0005", "amos_0009", "amos_0014", "amos_0508"]
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == ["amos_0008_0000.nii.gz",
                                                                        "amos_0013_0000.nii.gz"]
    assert [p.name for p in (dataset / "labelsTs").iterdir()] == ["amos_0008.nii.gz"]
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["labels"]["prostate_uterus"] == 15 and meta["labels"]["right_kidney"] == 2
    assert meta["numTraining"] == 5 and meta["channel_names"] == {"0": "CT"}
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "labelsTr" /
                                                                             "amos_0508.nii.gz"))), fake_label(508, 15))
    split = json.loads((dataset / "paper_splits" / "amos_5pct.json").read_text())
    assert split["labeled"] == ["amos_0005", "amos_0508"] and split["test"] == ["amos_0008", "amos_0013"]
    # the same fake lists are rejected when they must match the papers' protocol
    with pytest.raises(ValueError, match="disagree with the papers"):
        convert_amos(amos_source, tmp_path / "raw_strict", 121, splits_txt_dir=txt_dir, show_progress=False)


def test_amos_missing_training_label_is_named(amos_source, tmp_path):
    (amos_source / "labelsTr" / "amos_0009.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"amos_0009\.nii\.gz"):
        convert_amos(amos_source, tmp_path / "raw", 122, show_progress=False)


# ------------------------------------------------------------------------------------------------------------ CLI
def test_cli_split_and_conversion(synapse_source, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ga10_sabs.json"
    main(["split", "synapse_ga_10pct", "--dataset-name", "Dataset011_BTCV", "--case-ids", "sabs", "-o", str(out)])
    split = json.loads(out.read_text())
    assert split["dataset"] == "Dataset011_BTCV" and sorted(split["labeled"]) == ["btcv_12", "btcv_17"]
    with pytest.raises(SystemExit, match="not built in"):
        main(["split", "amos_5pct", "--dataset-name", "Dataset112_AMOS", "-o", str(tmp_path / "a.json")])
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "env_raw"))
    main(["synapse", str(synapse_source), "-d", "115", "--test-set", "none", "--no-progress"])
    dataset = tmp_path / "env_raw" / "Dataset115_Synapse"
    assert len(list((dataset / "imagesTr").iterdir())) == 30 and not (dataset / "imagesTs").exists()
    assert len(list((dataset / "paper_splits").iterdir())) == 3
    main(["list-splits"])
    assert "amos_2pct: not built in" in capsys.readouterr().out
