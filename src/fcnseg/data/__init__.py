"""Datasets, class tables, paired transforms and data checks for semantic segmentation.

Every dataset returns ``(image, mask)``: ``tv_tensors.Image`` ``(B, H, W)`` (uint8 RGB for ``B = 3``; see
:mod:`fcnseg.data.decode` for other band counts) and ``tv_tensors.Mask`` int64 ``(H, W)`` with classes ``0..K-1`` and
void = :data:`IGNORE_INDEX` (255), then applies its transforms.

The names below load on first use (:mod:`fcnseg.core.lazy`): datasets and transforms import torchvision, which
prediction does not need.
"""

from fcnseg.core.lazy import lazy_attributes

_EXPORTS = {
    "BandMoments": "fcnseg.data.bands",
    "band_normalization": "fcnseg.data.bands",
    "band_statistics": "fcnseg.data.bands",
    "infer_bands": "fcnseg.data.bands",
    "ClassCounts": "fcnseg.data.checks",
    "DataReport": "fcnseg.data.checks",
    "Problem": "fcnseg.data.checks",
    "SplitReport": "fcnseg.data.checks",
    "check_dataset": "fcnseg.data.checks",
    "median_frequency_weights": "fcnseg.data.checks",
    "ADE20K_CLASSES": "fcnseg.data.classes",
    "CAMVID_CLASSES": "fcnseg.data.classes",
    "CITYSCAPES_CLASSES": "fcnseg.data.classes",
    "IGNORE_INDEX": "fcnseg.data.classes",
    "VOC_CLASSES": "fcnseg.data.classes",
    "ClassInfo": "fcnseg.data.classes",
    "as_class_info": "fcnseg.data.classes",
    "bitget_colormap": "fcnseg.data.classes",
    "load_class_file": "fcnseg.data.classes",
    "LabelDecoder": "fcnseg.data.dataset",
    "SegmentationDataset": "fcnseg.data.dataset",
    "DataError": "fcnseg.data.errors",
    "folder_dataset": "fcnseg.data.folder",
    "DataOptions": "fcnseg.data.options",
    "DATASETS": "fcnseg.data.registry",
    "build_dataset": "fcnseg.data.registry",
    "dataset_splits": "fcnseg.data.registry",
    "default_splits": "fcnseg.data.registry",
    "ade20k_dataset": "fcnseg.data.scenes",
    "camvid_dataset": "fcnseg.data.scenes",
    "cityscapes_dataset": "fcnseg.data.scenes",
    "IMAGENET_MEAN": "fcnseg.data.normalize",
    "IMAGENET_STD": "fcnseg.data.normalize",
    "RandomScale": "fcnseg.data.transforms",
    "eval_transforms": "fcnseg.data.transforms",
    "pad_collate": "fcnseg.data.transforms",
    "train_transforms": "fcnseg.data.transforms",
    "sbd_dataset": "fcnseg.data.voc",
    "seg11valid_ids": "fcnseg.data.voc",
    "voc_dataset": "fcnseg.data.voc",
    "normalize_uint8": "fcnseg.data.normalize",
    "normalize_image": "fcnseg.data.normalize",
}
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
