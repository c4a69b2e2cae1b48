"""Random patches of unlabeled cases, augmented with nnU-Net's own training pipeline, in two views.

Semi-supervised methods compare predictions on two views of the same patch. Both views share nnU-Net's spatial
augmentation (rotation, scaling, mirroring), so voxel (i, j, k) is the same anatomy in both:

- ``data``: the student view, which also gets nnU-Net's photometric augmentation (noise, blur, brightness,
  contrast, low resolution, gamma);
- ``teacher_data``: the same patch before the photometric augmentation (the "clean" view).
"""
from typing import List

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from threadpoolctl import threadpool_limits

TEACHER_VIEW_KEY = "teacher_image"

_SPATIAL = (Convert3DTo2DTransform, SpatialTransform, Convert2DTo3DTransform, MirrorTransform)
# transforms that only act on labels; an unlabeled patch has none
_LABEL_ONLY = (DownsampleSegForDSTransform, RemoveLabelTansform)


class StoreTeacherView(BasicTransform):
    """Keeps a copy of the image as it is now (after the spatial transforms) under ``teacher_image``."""

    def apply(self, data_dict, **params):
        data_dict[TEACHER_VIEW_KEY] = data_dict["image"].clone()
        return data_dict


def build_unlabeled_transforms(training_transforms: ComposeTransforms) -> ComposeTransforms:
    """Reorder nnU-Net's training pipeline into spatial → copy teacher view → photometric.

    nnU-Net mirrors after the photometric transforms; they act voxel-wise or isotropically, so mirroring first gives
    the same distribution. The nonzero-mask step (``use_mask_for_norm``) runs on both views. Label-only transforms are
    dropped. Cascade and region transforms are not expected here (the SSL trainers reject those setups).
    """
    if not isinstance(training_transforms, ComposeTransforms):
        raise TypeError(f"Expected nnU-Net's ComposeTransforms, got {type(training_transforms).__name__}")
    spatial, photometric, masking = [], [], []
    for transform in training_transforms.transforms:
        if isinstance(transform, _SPATIAL):
            spatial.append(transform)
        elif isinstance(transform, MaskImageTransform):
            masking.append(transform)
        elif not isinstance(transform, _LABEL_ONLY):
            photometric.append(transform)
    return ComposeTransforms(spatial + masking + [StoreTeacherView()] + photometric + masking)


class UnlabeledDataLoader(nnUNetDataLoader):
    """nnU-Net's data loader for cases without labels: uniform random patches, no foreground oversampling.

    ``data`` must hold the unlabeled cases (their ``_seg`` file is only the nonzero mask written by the unlabeled
    preprocessing). Each batch is ``{'data': [B,C,*patch], 'teacher_data': [B,C,*patch], 'keys': [...]}``.
    """

    def __init__(self, data, batch_size: int, patch_size, final_patch_size, label_manager,
                 transforms: ComposeTransforms):
        super().__init__(data, batch_size, patch_size, final_patch_size, label_manager,
                         oversample_foreground_percent=0.0, transforms=transforms)
        # with an ignore label nnU-Net samples annotated voxels; unlabeled cases have none
        self.has_ignore = False

    def generate_train_batch(self) -> dict:
        keys = self.get_indices()
        student_views: List[torch.Tensor] = []
        teacher_views: List[torch.Tensor] = []
        with torch.no_grad(), threadpool_limits(limits=1, user_api=None):
            for key in keys:
                data, nonzero_mask, _, _ = self._data.load_case(key)
                bbox_lbs, bbox_ubs = self.get_bbox(data.shape[1:], force_fg=False, class_locations=None)
                bbox = [[lb, ub] for lb, ub in zip(bbox_lbs, bbox_ubs)]
                image = torch.from_numpy(crop_and_pad_nd(data, bbox, 0)).float()
                mask = torch.from_numpy(crop_and_pad_nd(nonzero_mask, bbox, -1, cast_cropped_to=np.int16))
                if self.patch_size_was_2d:
                    image, mask = image[:, 0], mask[:, 0]
                views = self.transforms(image=image, segmentation=mask.to(torch.int16))
                student_views.append(views["image"])
                teacher_views.append(views.get(TEACHER_VIEW_KEY, views["image"]))
        return {"data": torch.stack(student_views), "teacher_data": torch.stack(teacher_views), "keys": keys}
