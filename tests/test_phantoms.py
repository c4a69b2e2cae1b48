"""The synthetic phantom generator: class imbalance, variability, determinism and the nnU-Net raw layout."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization
from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme
from nnunetv2_scdl.data.phantoms import (PHANTOM_LABELS, STRUCTURES, generate_phantom_case, label_fractions,
                                         make_phantom_dataset)

SHAPE = (20, 28, 28)
SPACING = (2.0, 1.0, 1.0)
EXPECTED_RANGES = {"large": (0.15, 0.25), "medium": (0.02, 0.04), "tiny": (0.001, 0.003)}


@pytest.mark.parametrize("case_index", range(6))
def test_each_class_has_its_share_of_voxels(case_index):
    _, label = generate_phantom_case(seed=3, case_index=case_index, shape=SHAPE, spacing=SPACING)
    fractions = label_fractions(label)
    one_voxel = 1 / label.size
    for name, (low, high) in EXPECTED_RANGES.items():
        assert low - one_voxel <= fractions[name] <= high + one_voxel, (name, fractions[name])
    assert set(np.unique(label)) == {0, 1, 2, 3}


def test_tiny_structure_is_one_compact_blob():
    from scipy.ndimage import label as connected_components
    for case_index in range(4):
        _, label = generate_phantom_case(seed=0, case_index=case_index, shape=(32, 48, 48), spacing=SPACING)
        _, n_components = connected_components(label == 3)
        assert n_components == 1


def test_same_seed_same_case_other_seed_other_case():
    image_a, label_a = generate_phantom_case(seed=7, case_index=2, shape=SHAPE, spacing=SPACING)
    image_b, label_b = generate_phantom_case(seed=7, case_index=2, shape=SHAPE, spacing=SPACING)
    image_c, label_c = generate_phantom_case(seed=8, case_index=2, shape=SHAPE, spacing=SPACING)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(label_a, label_b)
    assert not np.array_equal(label_a, label_c)
    assert image_a.dtype == np.float32 and label_a.dtype == np.uint8 and image_a.shape == SHAPE


def test_positions_and_sizes_vary_between_cases():
    centroids, tiny_sizes = [], []
    for case_index in range(6):
        _, label = generate_phantom_case(seed=0, case_index=case_index, shape=SHAPE, spacing=SPACING)
        centroids.append(np.argwhere(label == 2).mean(axis=0))
        tiny_sizes.append(int((label == 3).sum()))
    spread = np.std(np.array(centroids), axis=0)
    assert np.all(spread > 1.0), spread  # the medium structure moves along every axis
    assert len(set(tiny_sizes)) > 3


def test_intensities_separate_classes_only_statistically():
    image, label = generate_phantom_case(seed=0, case_index=0, shape=(32, 48, 48), spacing=SPACING)
    means = {value: float(image[label == value].mean()) for value in PHANTOM_LABELS.values()}
    # each structure differs from the background on average ...
    for spec in STRUCTURES:
        assert abs(means[spec.label] - means[0]) > 25, means
    # ... but no single threshold separates the large structure from the background (noise, blur, bias field)
    background, large = image[label == 0], image[label == 1]
    threshold = (means[0] + means[1]) / 2
    errors = (np.mean(background > threshold) + np.mean(large <= threshold)) / 2
    assert 0.05 < errors < 0.4, errors


def test_dataset_layout_and_dataset_json(tmp_path):
    written = make_phantom_dataset(str(tmp_path), 7, "Tiny", n_labeled=3, n_unlabeled=2, n_test=1, shape=SHAPE,
                                   spacing=SPACING, seed=0)
    folder = tmp_path / "Dataset007_Tiny"
    assert written.dataset_folder == str(folder) and written.dataset_name == "Dataset007_Tiny"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"{i}_0000.nii.gz" for i in written.labeled]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [f"{i}.nii.gz" for i in written.labeled]
    assert sorted(p.name for p in (folder / "imagesUnlabeled").iterdir()) == [f"{i}_0000.nii.gz"
                                                                               for i in written.unlabeled]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [f"{i}_0000.nii.gz" for i in written.test]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == [f"{i}.nii.gz" for i in written.test]
    all_ids = written.labeled + written.unlabeled + written.test
    assert len(set(all_ids)) == 6

    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "large": 1, "medium": 2, "tiny": 3}
    assert dataset_json["numTraining"] == 3 and dataset_json["file_ending"] == ".nii.gz"
    assert len(dataset_json["channel_names"]) == 1
    assert get_normalization_scheme(dataset_json["channel_names"]["0"]) is ZScoreNormalization

    image = sitk.ReadImage(str(folder / "imagesTr" / f"{written.labeled[0]}_0000.nii.gz"))
    label = sitk.ReadImage(str(folder / "labelsTr" / f"{written.labeled[0]}.nii.gz"))
    assert image.GetSpacing() == pytest.approx(tuple(reversed(SPACING)))
    assert sitk.GetArrayFromImage(image).shape == SHAPE
    expected_image, expected_label = generate_phantom_case(0, 0, SHAPE, SPACING)
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), expected_image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), expected_label)


def test_cases_do_not_depend_on_the_size_of_other_subsets(tmp_path):
    small = make_phantom_dataset(str(tmp_path / "a"), 1, "A", n_labeled=2, n_unlabeled=0, n_test=0, shape=SHAPE,
                                 spacing=SPACING, seed=5)
    large = make_phantom_dataset(str(tmp_path / "b"), 1, "A", n_labeled=2, n_unlabeled=3, n_test=1, shape=SHAPE,
                                 spacing=SPACING, seed=5)
    assert small.labeled == large.labeled
    for case in small.labeled:
        a = sitk.GetArrayFromImage(sitk.ReadImage(f"{small.dataset_folder}/imagesTr/{case}_0000.nii.gz"))
        b = sitk.GetArrayFromImage(sitk.ReadImage(f"{large.dataset_folder}/imagesTr/{case}_0000.nii.gz"))
        np.testing.assert_array_equal(a, b)


def test_nnunet_integrity_checks_accept_the_cases(tmp_path):
    """nnU-Net's own per-case checks (what --verify_dataset_integrity runs, without its process pool)."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import check_cases, verify_labels
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    written = make_phantom_dataset(str(tmp_path), 8, "Check", n_labeled=2, n_unlabeled=0, n_test=1, shape=SHAPE,
                                   spacing=SPACING, seed=0)
    for images, labels, case in [("imagesTr", "labelsTr", written.labeled[0]),
                                 ("imagesTs", "labelsTs", written.test[0])]:
        image_files = [f"{written.dataset_folder}/{images}/{case}_0000.nii.gz"]
        label_file = f"{written.dataset_folder}/{labels}/{case}.nii.gz"
        assert check_cases(image_files, label_file, 1, SimpleITKIO)
        assert verify_labels(label_file, SimpleITKIO, [0, 1, 2, 3])


def test_refuses_existing_folder_and_bad_arguments(tmp_path):
    make_phantom_dataset(str(tmp_path), 9, "X", n_labeled=1, n_unlabeled=0, n_test=0, shape=SHAPE, spacing=SPACING)
    with pytest.raises(FileExistsError):
        make_phantom_dataset(str(tmp_path), 9, "X", n_labeled=1, n_unlabeled=0, n_test=0, shape=SHAPE)
    with pytest.raises(ValueError):
        make_phantom_dataset(str(tmp_path), 10, "X", n_labeled=0)
    with pytest.raises(ValueError):
        make_phantom_dataset(str(tmp_path), 11, "X", n_labeled=1, shape=(4, 28, 28))
