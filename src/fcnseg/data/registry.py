"""``build_dataset(name, root, split)``: one entry point for every supported layout."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fcnseg.core.suggest import did_you_mean
from fcnseg.data.dataset import SegmentationDataset, Transforms
from fcnseg.data.errors import DataError
from fcnseg.data.folder import folder_dataset, folder_splits
from fcnseg.data.scenes import (
    ADE20K_SPLITS,
    CAMVID_SPLITS,
    CITYSCAPES_SPLITS,
    ade20k_dataset,
    camvid_dataset,
    cityscapes_dataset,
)
from fcnseg.data.voc import SBD_SPLITS, VOC_SPLITS, sbd_dataset, voc_dataset

DATASETS: dict[str, Callable[..., SegmentationDataset]] = {
    "voc": voc_dataset,
    "sbd": sbd_dataset,
    "camvid": camvid_dataset,
    "cityscapes": cityscapes_dataset,
    "ade20k": ade20k_dataset,
    "folder": folder_dataset,
}
"""Dataset name -> builder ``(root, split, transforms, **kwargs) -> SegmentationDataset``."""

_DEFAULT_SPLITS = {
    "voc": ("train", "val"),
    "sbd": ("train", "val"),
    "camvid": ("train", "val", "test"),
    "cityscapes": ("train", "val"),
    "ade20k": ("train", "val"),
}


def dataset_splits(name: str, root: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Valid split names of dataset ``name`` (for ``folder``, they depend on the list files under ``root``)."""
    _check_name(name)
    fixed = {
        "voc": VOC_SPLITS,
        "sbd": SBD_SPLITS,
        "camvid": CAMVID_SPLITS,
        "cityscapes": CITYSCAPES_SPLITS,
        "ade20k": tuple(ADE20K_SPLITS),
    }
    if name == "folder":
        return folder_splits(root) if root is not None and Path(root).is_dir() else ("all",)
    return fixed[name]


def default_splits(name: str, root: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The splits ``check_dataset`` scans when none are given: the labelled splits of the benchmark."""
    _check_name(name)
    return _DEFAULT_SPLITS.get(name) or dataset_splits(name, root)


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; valid names: {', '.join(DATASETS)}")


def build_dataset(
    name: str, root: str | os.PathLike, split: str, transforms: Transforms | None = None, **kwargs: Any
) -> SegmentationDataset:
    """Build dataset ``name`` from the files under ``root``.

    Args:
        name: one of ``voc``, ``sbd``, ``camvid``, ``cityscapes``, ``ade20k``, ``folder``.
        root: the dataset folder (see each builder for the layout it expects).
        split: a split of that dataset (an unknown split raises an error listing the valid ones).
        transforms: paired ``(image, mask)`` transform, e.g. :func:`fcnseg.data.train_transforms`.
        **kwargs: builder options, e.g. ``cache=True``; ``sbd_root``/``split_file`` (voc), ``voc_root`` (sbd),
            ``classes``, ``num_classes``, ``image_dir``, ``mask_dir``, ``mask_format``, ``void_index`` (folder).
            ``bands``: the image band count (folder: ``None`` for the data's own; the other layouts hold RGB images
            and take only ``None`` or 3).

    Returns:
        Items ``(image, mask)``: ``Image`` ``(B, H, W)`` (uint8 RGB for ``B = 3``) and ``Mask`` int64 ``(H, W)``
        before transforms.

    Raises:
        DataError: unknown name or split, missing root, list or files, or an unexpected option.
    """
    _check_name(name)
    if name != "folder" and kwargs.get("bands") in (None, 3):
        kwargs.pop("bands", None)  # RGB images: the layouts' only kind
    elif name != "folder":
        raise DataError(f"dataset {name!r} holds RGB images; bands={kwargs['bands']} applies to folder datasets only")
    try:
        return DATASETS[name](root, split, transforms, **kwargs)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise DataError(f"dataset {name!r} does not take that option: {err}") from err
        raise
