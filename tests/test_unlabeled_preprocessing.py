"""nnUNetv2_scdl_preprocess_unlabeled: same preprocessing as nnU-Net's, safe against bad input."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import load_json, load_pickle

from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2_scdl.cli import preprocess_unlabeled as cli
from nnunetv2_scdl.data.unlabeled_preprocessing import (MANIFEST_FILENAME, UnlabeledDataError,
                                                        assert_unlabeled_preprocessed, get_unlabeled_folder,
                                                        list_unlabeled_identifiers, load_unlabeled_manifest,
                                                        preprocess_unlabeled, source_file_record)


def snapshot(folder: Path) -> dict:
    """{relative path: sha256} of every file under ``folder`` (empty if it does not exist)."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def unlabeled_folder(dataset) -> Path:
    return Path(get_unlabeled_folder(str(dataset.preprocessed_folder), dataset.data_identifier))


def run_cli(dataset, *extra) -> int:
    return cli.main(["-d", dataset.dataset_name, "-c", dataset.configuration, "-np", "1", *extra])


def _image(dataset, case: str, channel: int = 0, ending: str = ".nii.gz") -> Path:
    return dataset.raw_folder / "imagesUnlabeled" / f"{case}_{channel:04d}{ending}"


@pytest.fixture
def preprocessed_copy(phantom_copy):
    """A private copy of the planned phantom whose unlabeled cases are already preprocessed (-np 1)."""
    dataset = phantom_copy()
    assert run_cli(dataset) == 0
    return dataset


def test_output_is_a_sibling_with_manifest_and_every_case(preprocessed_copy):
    dataset = preprocessed_copy
    folder = unlabeled_folder(dataset)
    assert folder.parent == dataset.labeled_data_folder.parent
    assert folder.name == dataset.data_identifier + "_unlabeled"
    manifest = load_json(str(folder / MANIFEST_FILENAME))
    assert manifest["plans_identifier"] == "nnUNetPlans"
    assert manifest["configuration"] == dataset.configuration
    assert manifest["data_identifier"] == dataset.data_identifier
    assert manifest["cases"] == {c: {"source": "imagesUnlabeled", "images": [f"imagesUnlabeled/{c}_0000.nii.gz"]}
                                 for c in dataset.unlabeled}
    assert list_unlabeled_identifiers(str(folder)) == sorted(dataset.unlabeled)
    assert sorted(nnUNetDatasetBlosc2.get_identifiers(str(folder))) == sorted(dataset.unlabeled)
    assert not [p for p in dataset.preprocessed_folder.iterdir() if ".tmp-" in p.name]


def test_cases_equal_nnunets_own_preprocessing(preprocessed_copy):
    dataset = preprocessed_copy
    plans_manager = PlansManager(str(dataset.preprocessed_folder / "nnUNetPlans.json"))
    configuration_manager = plans_manager.get_configuration(dataset.configuration)
    dataset_json = load_json(str(dataset.preprocessed_folder / "dataset.json"))
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    stored = nnUNetDatasetBlosc2(str(unlabeled_folder(dataset)))
    for case in dataset.unlabeled[:3]:
        image = str(dataset.raw_folder / "imagesUnlabeled" / f"{case}_0000.nii.gz")
        data, seg, properties = preprocessor.run_case([image], None, plans_manager, configuration_manager,
                                                      dataset_json)
        stored_data, stored_seg, _, stored_properties = stored.load_case(case)
        assert stored_data.dtype == np.float32 and stored_seg.dtype == np.int16
        np.testing.assert_array_equal(stored_data[:], data)
        np.testing.assert_array_equal(stored_seg[:], seg)
        assert set(np.unique(stored_seg[:])) <= {-1, 0}
        assert stored_properties.keys() == properties.keys() and "class_locations" not in stored_properties
        np.testing.assert_array_equal(stored_properties["spacing"], properties["spacing"])
        assert stored_properties["bbox_used_for_cropping"] == properties["bbox_used_for_cropping"]


def test_labeled_folder_is_untouched(phantom_copy):
    dataset = phantom_copy()
    before = snapshot(dataset.labeled_data_folder)
    assert len(before) == 3 * len(dataset.labeled)
    assert run_cli(dataset) == 0
    assert run_cli(dataset, "--overwrite") == 0
    assert snapshot(dataset.labeled_data_folder) == before


def test_pool_gives_the_same_data_as_in_process(preprocessed_copy):
    dataset = preprocessed_copy
    in_process = nnUNetDatasetBlosc2(str(unlabeled_folder(dataset)))
    reference = {c: in_process.load_case(c)[0][:] for c in dataset.unlabeled}
    assert cli.main(["-d", dataset.dataset_name, "-c", dataset.configuration, "-np", "2", "--overwrite"]) == 0
    pooled = nnUNetDatasetBlosc2(str(unlabeled_folder(dataset)))
    for case, data in reference.items():
        np.testing.assert_array_equal(pooled.load_case(case)[0][:], data)


def test_cpu_plans_reuse_the_same_folder(preprocessed_copy, capsys):
    dataset = preprocessed_copy
    before = snapshot(unlabeled_folder(dataset))
    assert preprocess_unlabeled(dataset.dataset_name, [dataset.configuration], dataset.cpu_plans, 1) == {
        dataset.configuration: "up to date"}
    assert snapshot(unlabeled_folder(dataset)) == before


def record_preprocessed_cases(dataset, monkeypatch) -> list:
    """Make the plans' preprocessor record the ID of every case it runs (in-process runs only, -np 1)."""
    preprocessor_class = PlansManager(str(dataset.preprocessed_folder / "nnUNetPlans.json")).get_configuration(
        dataset.configuration).preprocessor_class
    original_run_case = preprocessor_class.run_case
    seen = []

    def recording_run_case(self, image_files, *args, **kwargs):
        seen.append(Path(image_files[0]).name.rsplit("_", 1)[0])
        return original_run_case(self, image_files, *args, **kwargs)
    monkeypatch.setattr(preprocessor_class, "run_case", recording_run_case)
    return seen


def brighten(image_file: Path) -> None:
    """Replace the image by a brighter copy of itself (same grid, new content)."""
    image = sitk.ReadImage(str(image_file))
    brighter = sitk.GetImageFromArray(sitk.GetArrayFromImage(image) * 2 + 1)
    brighter.CopyInformation(image)
    sitk.WriteImage(brighter, str(image_file))


def case_files(folder_snapshot: dict, case: str) -> dict:
    """The entries of one case in a :func:`snapshot`."""
    return {name: digest for name, digest in folder_snapshot.items()
            if name in (case + suffix for suffix in (".b2nd", "_seg.b2nd", ".pkl"))}


def test_rerun_preprocesses_only_added_and_changed_images_and_drops_removed_ones(preprocessed_copy, monkeypatch):
    dataset = preprocessed_copy
    folder = unlabeled_folder(dataset)
    before = snapshot(folder)
    added, removed, changed, touched = "extra_case", dataset.unlabeled[1], dataset.unlabeled[2], dataset.unlabeled[3]
    shutil.copy(_image(dataset, dataset.unlabeled[0]), _image(dataset, added))
    _image(dataset, removed).unlink()
    # new content under the old name and with the old modification time: the content hash still sees it
    original = _image(dataset, changed)
    old_times = original.stat()
    brighten(original)
    os.utime(original, ns=(old_times.st_atime_ns, old_times.st_mtime_ns))
    os.utime(_image(dataset, touched))  # same content, new time: nothing to redo

    seen = record_preprocessed_cases(dataset, monkeypatch)
    assert preprocess_unlabeled(dataset.dataset_name, [dataset.configuration], num_processes=1) == {
        dataset.configuration: "updated"}
    assert sorted(seen) == sorted([added, changed])
    after = snapshot(folder)
    expected = sorted(set(dataset.unlabeled) - {removed} | {added})
    assert list_unlabeled_identifiers(str(folder)) == expected
    assert sorted(nnUNetDatasetBlosc2.get_identifiers(str(folder))) == expected  # the removed case's files are gone
    for case in set(expected) - {added, changed}:
        assert len(case_files(after, case)) == 3 and case_files(after, case) == case_files(before, case), case
    assert after[f"{changed}.b2nd"] != before[f"{changed}.b2nd"]
    manifest = load_unlabeled_manifest(str(folder))
    record = manifest["source_files"][f"imagesUnlabeled/{touched}_0000.nii.gz"]
    assert record["mtime_ns"] == _image(dataset, touched).stat().st_mtime_ns

    seen.clear()
    assert preprocess_unlabeled(dataset.dataset_name, [dataset.configuration], num_processes=1) == {
        dataset.configuration: "up to date"}
    assert seen == [] and snapshot(folder) == after


def test_a_benchmark_split_adds_its_unlabeled_training_cases_to_the_folder(preprocessed_copy, monkeypatch):
    from nnunetv2_scdl.cli import make_split

    dataset = preprocessed_copy
    assert make_split.main(["-d", dataset.dataset_name, "--labeled", "2", "--num-val", "1", "--seed", "0"]) == 0
    (entry,) = load_json(str(dataset.preprocessed_folder / "splits_final.json"))
    seen = record_preprocessed_cases(dataset, monkeypatch)
    assert run_cli(dataset) == 0
    assert sorted(seen) == sorted(entry["unlabeled"])
    cases = load_unlabeled_manifest(str(unlabeled_folder(dataset)))["cases"]
    assert {c: v["source"] for c, v in cases.items()} == {
        **{c: "imagesUnlabeled" for c in dataset.unlabeled}, **{c: "imagesTr" for c in entry["unlabeled"]}}


def test_missing_output_files_are_redone_and_overwrite_redoes_everything(preprocessed_copy, monkeypatch):
    dataset = preprocessed_copy
    folder = unlabeled_folder(dataset)
    (folder / f"{dataset.unlabeled[0]}.pkl").unlink()
    seen = record_preprocessed_cases(dataset, monkeypatch)
    assert run_cli(dataset) == 0
    assert seen == [dataset.unlabeled[0]]
    seen.clear()
    assert run_cli(dataset, "--overwrite") == 0
    assert sorted(seen) == sorted(dataset.unlabeled)


def test_changed_preprocessing_redoes_every_case(preprocessed_copy, monkeypatch):
    dataset = preprocessed_copy
    plans_file = dataset.preprocessed_folder / "nnUNetPlans.json"
    plans = load_json(str(plans_file))
    plans["foreground_intensity_properties_per_channel"]["0"]["mean"] += 1.0
    plans_file.write_text(json.dumps(plans))
    seen = record_preprocessed_cases(dataset, monkeypatch)
    assert preprocess_unlabeled(dataset.dataset_name, [dataset.configuration], num_processes=1) == {
        dataset.configuration: "overwritten"}
    assert sorted(seen) == sorted(dataset.unlabeled)


def test_source_file_record_reuses_the_hash_only_while_size_and_times_are_unchanged(tmp_path):
    image = tmp_path / "case_0000.nii"
    image.write_bytes(b"a" * 100)
    first = source_file_record(str(image))
    assert first["sha256"] == hashlib.sha256(b"a" * 100).hexdigest() and first["size"] == 100
    assert source_file_record(str(image), {**first, "sha256": "kept"})["sha256"] == "kept"
    image.write_bytes(b"b" * 100)  # same size; the old modification time put back
    os.utime(image, ns=(first["mtime_ns"], first["mtime_ns"]))
    assert source_file_record(str(image), first)["sha256"] == hashlib.sha256(b"b" * 100).hexdigest()


def test_blank_and_almost_empty_images_are_preprocessed_with_a_warning(preprocessed_copy, capsys):
    dataset = preprocessed_copy
    reference = sitk.ReadImage(str(_image(dataset, dataset.unlabeled[0])))
    shape = sitk.GetArrayFromImage(reference).shape
    sparse = np.zeros(shape, dtype=np.float32)
    sparse[:2, :2, :2] = 100  # 8 of 15680 voxels: 99.95 % zeros, like a truncated file read as zeros
    for name, array in (("blank", np.full(shape, 7.0, dtype=np.float32)), ("sparse", sparse)):
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(reference)
        sitk.WriteImage(image, str(_image(dataset, name)))
    capsys.readouterr()
    assert run_cli(dataset) == 0
    error = capsys.readouterr().err
    assert "blank_0000.nii.gz: every voxel has the same value (7)" in error
    assert "sparse_0000.nii.gz: 99.95% of its voxels are 0" in error
    assert not [c for c in dataset.unlabeled if c in error]
    assert {"blank", "sparse"} <= set(list_unlabeled_identifiers(str(unlabeled_folder(dataset))))


# ------------------------------------------------------------------------------------------------------------------
# bad input: a clear error naming the file and the problem; nothing preprocessed before is lost
# ------------------------------------------------------------------------------------------------------------------
def _extra_channel(dataset):
    shutil.copy(_image(dataset, dataset.unlabeled[1]), _image(dataset, dataset.unlabeled[1], channel=1))
    return [f"{dataset.unlabeled[1]}_0001.nii.gz", "wrong number of channels"]


def _wrong_ending(dataset):
    sitk.WriteImage(sitk.ReadImage(str(_image(dataset, dataset.unlabeled[2]))),
                    str(_image(dataset, "other_case", ending=".nrrd")))
    return ["other_case_0000.nrrd", "file ending"]


def _no_channel_suffix(dataset):
    shutil.copy(_image(dataset, dataset.unlabeled[2]), dataset.raw_folder / "imagesUnlabeled" / "plain.nii.gz")
    return ["plain.nii.gz", "file ending"]


def _unreadable(dataset):
    _image(dataset, dataset.unlabeled[3]).write_bytes(b"\x00 definitely not a NIfTI file " * 20)
    return [f"{dataset.unlabeled[3]}_0000.nii.gz", "unreadable"]


def _channels_of_different_size(dataset):
    # every case gets a second channel (and dataset.json asks for two), but one case's second channel is smaller
    for case in dataset.unlabeled[1:]:
        shutil.copy(_image(dataset, case), _image(dataset, case, channel=1))
    small = sitk.GetImageFromArray(np.zeros((4, 5, 6), dtype=np.float32))
    sitk.WriteImage(small, str(_image(dataset, dataset.unlabeled[0], channel=1)))
    for folder in (dataset.raw_folder, dataset.preprocessed_folder):
        dataset_json = load_json(str(folder / "dataset.json"))
        dataset_json["channel_names"]["1"] = "second"
        (folder / "dataset.json").write_text(json.dumps(dataset_json))
    return [dataset.unlabeled[0], f"{dataset.unlabeled[0]}_0001.nii.gz", "differ in size or spacing"]


def _id_also_in_imagesTr(dataset):
    shutil.copy(dataset.raw_folder / "imagesTr" / f"{dataset.labeled[0]}_0000.nii.gz",
                _image(dataset, dataset.labeled[0]))
    return [dataset.labeled[0], "imagesTr"]


def _empty_folder(dataset):
    for image in (dataset.raw_folder / "imagesUnlabeled").iterdir():
        image.unlink()
    return ["imagesUnlabeled", "is empty", "nnUNetv2_scdl_make_split"]


def _missing_folder(dataset):
    shutil.rmtree(dataset.raw_folder / "imagesUnlabeled")
    return ["imagesUnlabeled", "does not exist"]


def _two_d_image(dataset):
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((40, 40), dtype=np.float32)), str(_image(dataset, "flat")))
    return ["flat_0000.nii.gz", "2-D, size 40x40", "imagesTr is 3-D"]


def _rgb_image(dataset):
    rgb = sitk.GetImageFromArray(np.ones((20, 28, 28, 3), dtype=np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(_image(dataset, "colour")))
    return ["colour_0000.nii.gz", "3 components per voxel"]


BAD_INPUTS = [_extra_channel, _wrong_ending, _no_channel_suffix, _unreadable, _channels_of_different_size,
              _id_also_in_imagesTr, _empty_folder, _missing_folder, _two_d_image, _rgb_image]


@pytest.mark.parametrize("break_input", BAD_INPUTS, ids=[f.__name__.strip("_") for f in BAD_INPUTS])
def test_bad_input_is_named_and_loses_nothing(preprocessed_copy, break_input, capsys):
    dataset = preprocessed_copy
    labeled_before = snapshot(dataset.labeled_data_folder)
    unlabeled_before = snapshot(unlabeled_folder(dataset))
    expected_fragments = break_input(dataset)
    capsys.readouterr()
    for extra in ([], ["--overwrite"]):
        assert run_cli(dataset, *extra) == 1
        error = capsys.readouterr().err
        for fragment in expected_fragments:
            assert fragment in error, (fragment, error)
        assert "Traceback" not in error
        assert snapshot(unlabeled_folder(dataset)) == unlabeled_before
        assert snapshot(dataset.labeled_data_folder) == labeled_before
        assert not [p for p in dataset.preprocessed_folder.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("extra", [[], ["--overwrite"]], ids=["incremental", "overwrite"])
def test_failure_while_preprocessing_keeps_the_old_data(preprocessed_copy, monkeypatch, capsys, extra):
    """An error after validation (here: the preprocessor fails on an added case, after a changed case succeeded)
    discards the partial new folder."""
    dataset = preprocessed_copy
    before = snapshot(unlabeled_folder(dataset))
    brighten(_image(dataset, dataset.unlabeled[0]))
    bad_case = "zz_added_case"  # sorted last: preprocessed after the changed case
    shutil.copy(_image(dataset, dataset.unlabeled[1]), _image(dataset, bad_case))
    preprocessor_class = PlansManager(str(dataset.preprocessed_folder / "nnUNetPlans.json")).get_configuration(
        dataset.configuration).preprocessor_class
    original_run_case = preprocessor_class.run_case

    def failing_run_case(self, image_files, *args, **kwargs):
        if bad_case in image_files[0]:
            raise RuntimeError("simulated reader failure")
        return original_run_case(self, image_files, *args, **kwargs)
    monkeypatch.setattr(preprocessor_class, "run_case", failing_run_case)
    assert run_cli(dataset, *extra) == 1
    error = capsys.readouterr().err
    assert bad_case in error and "simulated reader failure" in error
    assert snapshot(unlabeled_folder(dataset)) == before
    assert not [p for p in dataset.preprocessed_folder.iterdir() if ".tmp-" in p.name]


def test_missing_plans_or_configuration_say_to_plan_first(preprocessed_copy, capsys):
    dataset = preprocessed_copy
    assert cli.main(["-d", dataset.dataset_name, "-c", dataset.configuration, "-p", "NoSuchPlans"]) == 1
    error = capsys.readouterr().err
    assert "NoSuchPlans.json" in error and "nnUNetv2_plan_and_preprocess" in error
    assert cli.main(["-d", dataset.dataset_name, "-c", "3d_nonexistent"]) == 1
    error = capsys.readouterr().err
    assert "3d_nonexistent" in error and "nnUNetv2_plan_and_preprocess" in error
    assert cli.main(["-d", "987", "-c", dataset.configuration]) == 1  # no such dataset at all
    assert "987" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_prints_the_error_without_traceback(phantom_copy, run_console):
    dataset = phantom_copy()
    shutil.rmtree(dataset.raw_folder / "imagesUnlabeled")
    result = run_console("nnUNetv2_scdl_preprocess_unlabeled",
                         ["-d", dataset.dataset_id, "-c", dataset.configuration, "-np", "1"], check=False)
    assert result.returncode == 1
    assert "imagesUnlabeled" in result.stdout and "does not exist" in result.stdout
    assert "Traceback" not in result.stdout


def test_helpers_for_trainers(preprocessed_copy, tmp_path):
    dataset = preprocessed_copy
    missing = get_unlabeled_folder(str(dataset.preprocessed_folder), "nnUNetPlans_2d")
    with pytest.raises(FileNotFoundError) as raised:
        assert_unlabeled_preprocessed(missing)
    assert f"nnUNetv2_scdl_preprocess_unlabeled -d {dataset.dataset_name} -c 2d -p nnUNetPlans" in str(raised.value)

    folder = unlabeled_folder(dataset)
    assert_unlabeled_preprocessed(str(folder))
    assert load_unlabeled_manifest(str(folder))["data_identifier"] == dataset.data_identifier
    (folder / f"{dataset.unlabeled[0]}.pkl").unlink()
    with pytest.raises(UnlabeledDataError, match=dataset.unlabeled[0]):
        list_unlabeled_identifiers(str(folder))
    # a properties file written by the unlabeled preprocessing loads like nnU-Net's
    assert "spacing" in load_pickle(str(folder / f"{dataset.unlabeled[1]}.pkl"))
