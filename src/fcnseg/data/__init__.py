"""Datasets, class tables, paired transforms and data checks for semantic segmentation.

Every dataset returns ``(image, mask)``: ``tv_tensors.Image`` uint8 ``(3, H, W)`` RGB and ``tv_tensors.Mask``
int64 ``(H, W)`` with classes ``0..K-1`` and void = :data:`IGNORE_INDEX` (255), then applies its transforms.
"""

from fcnseg.data.checks import (
    ClassCounts,
    DataReport,
    Problem,
    SplitReport,
    check_dataset,
    median_frequency_weights,
)
from fcnseg.data.classes import (
    ADE20K_CLASSES,
    CAMVID_CLASSES,
    CITYSCAPES_CLASSES,
    IGNORE_INDEX,
    VOC_CLASSES,
    ClassInfo,
    as_class_info,
    bitget_colormap,
    load_class_file,
)
from fcnseg.data.dataset import LabelDecoder, SegmentationDataset
from fcnseg.data.errors import DataError
from fcnseg.data.folder import folder_dataset
from fcnseg.data.registry import DATASETS, build_dataset, dataset_splits, default_splits
from fcnseg.data.scenes import ade20k_dataset, camvid_dataset, cityscapes_dataset
from fcnseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomScale,
    eval_transforms,
    pad_collate,
    train_transforms,
)
from fcnseg.data.voc import sbd_dataset, seg11valid_ids, voc_dataset

__all__ = [
    "ADE20K_CLASSES",
    "CAMVID_CLASSES",
    "CITYSCAPES_CLASSES",
    "DATASETS",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VOC_CLASSES",
    "ClassCounts",
    "ClassInfo",
    "DataError",
    "DataReport",
    "LabelDecoder",
    "Problem",
    "RandomScale",
    "SegmentationDataset",
    "SplitReport",
    "ade20k_dataset",
    "as_class_info",
    "bitget_colormap",
    "build_dataset",
    "camvid_dataset",
    "check_dataset",
    "cityscapes_dataset",
    "dataset_splits",
    "default_splits",
    "eval_transforms",
    "folder_dataset",
    "load_class_file",
    "median_frequency_weights",
    "pad_collate",
    "sbd_dataset",
    "seg11valid_ids",
    "train_transforms",
    "voc_dataset",
]
