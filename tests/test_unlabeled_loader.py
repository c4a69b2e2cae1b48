"""The unlabeled loader: two views that share nnU-Net's spatial augmentation, no labels needed."""
import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.base.basic_transform import ImageOnlyTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunetv2_scdl.data.unlabeled_loader import StoreTeacherView, UnlabeledDataLoader, build_unlabeled_transforms

LABELS = LabelManager({"background": 0, "organ": 1}, regions_class_order=None)


class AddConstant(ImageOnlyTransform):
    def _apply_to_image(self, img, **params):
        return img + 100.0


def _save_unlabeled_cases(folder, shape=(1, 12, 20, 20), n=3):
    rng = np.random.default_rng(0)
    for i in range(n):
        data = rng.normal(size=shape).astype(np.float32)
        nonzero_mask = np.zeros(shape, dtype=np.int16)  # what run_case(seg_file=None) leaves: no labels
        # properties without class_locations: the loader must not need them
        nnUNetDatasetBlosc2.save_case(data, nonzero_mask, {"spacing": [1, 1, 1]}, str(folder / f"case_{i}"))
    return nnUNetDatasetBlosc2(str(folder))


def test_pipeline_is_reordered_spatial_then_teacher_copy_then_photometric():
    pipeline = nnUNetTrainer.get_training_transforms(
        (8, 16, 16), (-0.5, 0.5), [[1, 1, 1], [0.5, 0.5, 0.5]], (0, 1, 2), False, use_mask_for_norm=[True])
    names = [type(t).__name__ for t in build_unlabeled_transforms(pipeline).transforms]
    assert names[:4] == ["SpatialTransform", "MirrorTransform", "MaskImageTransform", "StoreTeacherView"]
    assert names[-1] == "MaskImageTransform"
    assert all(n == "RandomTransform" for n in names[4:-1]) and len(names[4:-1]) == 7
    assert "DownsampleSegForDSTransform" not in names and "RemoveLabelTansform" not in names


def test_build_unlabeled_transforms_rejects_non_pipelines():
    with pytest.raises(TypeError):
        build_unlabeled_transforms(MirrorTransform((0,)))


def test_views_share_spatial_augmentation_and_differ_photometrically(tmp_path):
    dataset = _save_unlabeled_cases(tmp_path)
    transforms = build_unlabeled_transforms(ComposeTransforms([
        RandomTransform(AddConstant(), apply_probability=1.0), MirrorTransform(allowed_axes=(0, 1, 2)),
        RemoveLabelTansform(-1, 0), DownsampleSegForDSTransform([[1, 1, 1]])]))
    assert isinstance(transforms.transforms[1], StoreTeacherView)
    loader = UnlabeledDataLoader(dataset, 4, (8, 16, 16), (8, 16, 16), LABELS, transforms)
    batch = next(loader)
    assert batch["data"].shape == batch["teacher_data"].shape == (4, 1, 8, 16, 16)
    assert torch.allclose(batch["data"] - batch["teacher_data"], torch.full_like(batch["data"], 100.0))
    assert len(batch["keys"]) == 4 and set(batch["keys"]) <= set(dataset.identifiers)


def test_real_nnunet_pipeline_and_2d_patches(tmp_path):
    dataset = _save_unlabeled_cases(tmp_path, shape=(1, 5, 24, 24))
    pipeline = nnUNetTrainer.get_training_transforms((16, 16), (-0.5, 0.5), None, (0, 1), False)
    loader = UnlabeledDataLoader(dataset, 2, (20, 20), (16, 16), LABELS, build_unlabeled_transforms(pipeline))
    for _ in range(5):  # rotation, scaling and the photometric transforms are random: draw several batches
        batch = next(loader)
        assert batch["data"].shape == (2, 1, 16, 16) and batch["teacher_data"].shape == (2, 1, 16, 16)
        assert torch.isfinite(batch["data"]).all()


def test_ignore_label_does_not_make_the_loader_look_for_annotations(tmp_path):
    dataset = _save_unlabeled_cases(tmp_path)
    labels_with_ignore = LabelManager({"background": 0, "organ": 1, "ignore": 2}, regions_class_order=None)
    transforms = build_unlabeled_transforms(ComposeTransforms([MirrorTransform(allowed_axes=(0,))]))
    batch = next(UnlabeledDataLoader(dataset, 2, (8, 16, 16), (8, 16, 16), labels_with_ignore, transforms))
    assert torch.equal(batch["data"], batch["teacher_data"])
