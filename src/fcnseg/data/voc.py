"""PASCAL VOC 2012 segmentation and the Semantic Boundaries Dataset (SBD), including the FCN paper's splits.

Layouts (as the archives unpack):

- VOC: ``VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png, ImageSets/Segmentation/{split}.txt}``;
  label PNGs are palette images whose indices are the classes, 255 marks the void border.
- SBD (Hariharan et al. 2011): ``benchmark_RELEASE/dataset/{img/*.jpg, cls/*.mat, train.txt, val.txt}``;
  ``cls/X.mat`` holds ``GTcls.Segmentation``, an ``(H, W)`` class-index array.

Splits derived from both, as used by FCN (Long et al. 2015, section 4.2 and the authors' ``voc-fcn*`` code):

- ``aug``: SBD train + SBD val + VOC train, minus VOC val (the usual "VOC aug" training set, 10582 images with
  VOC2012); masks come from VOC's PNGs where VOC annotates the image, else from SBD.
- ``seg11valid``: VOC2011 segmentation val minus SBD train (736 images), the paper's validation set. It is
  derived from a VOC2011 root's ``val.txt`` and ``sbd_root``, or read from a list file the user gives.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fcnseg.data.classes import VOC_CLASSES
from fcnseg.data.dataset import LabelDecoder, SegmentationDataset, Transforms
from fcnseg.data.decode import read_label_png, read_sbd_mat
from fcnseg.data.errors import DataError, require_dir

logger = logging.getLogger(__name__)

VOC_SPLITS = ("train", "val", "trainval", "seg11valid", "aug")
SBD_SPLITS = ("train", "val", "aug")


def read_id_list(path: Path, what: str) -> list[str]:
    """Read a list of image ids (the first field of each non-blank line; a path's stem is used as the id).

    Raises:
        DataError: the file does not exist or is empty.
    """
    if not path.is_file():
        raise DataError(f"{what}: split file {path} does not exist")
    ids = [Path(line.split()[0]).stem for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{what}: split file {path} lists no images")
    return ids


def _voc_root(root: Path) -> Path:
    """Accept ``VOC2012/`` itself or a folder above it (``VOCdevkit/`` or the folder holding ``VOCdevkit/``)."""
    require_dir(root, "VOC", "VOCdevkit/VOC2012 (with JPEGImages/, SegmentationClass/, ImageSets/)")
    if (root / "JPEGImages").is_dir():
        return root
    for candidate in sorted(root.glob("VOC20*")) + sorted(root.glob("VOCdevkit/VOC20*")):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataError(f"VOC root {root} has no JPEGImages/; pass the VOCdevkit/VOC2012 folder")


def _read_voc_or_sbd(path: Path) -> np.ndarray:
    return read_sbd_mat(path) if path.suffix == ".mat" else read_label_png(path)


def _decoder() -> LabelDecoder:
    return LabelDecoder(VOC_CLASSES.num_classes, read=_read_voc_or_sbd)


def _voc_pair(root: Path, image_id: str) -> tuple[Path, Path]:
    return root / "JPEGImages" / f"{image_id}.jpg", root / "SegmentationClass" / f"{image_id}.png"


def _sbd_pair(root: Path, image_id: str) -> tuple[Path, Path]:
    return root / "img" / f"{image_id}.jpg", root / "cls" / f"{image_id}.mat"


def _voc_split_ids(root: Path, split: str) -> list[str]:
    return read_id_list(root / "ImageSets" / "Segmentation" / f"{split}.txt", f"VOC split {split!r}")


def _aug_files(voc_root: Path, sbd_root: Path) -> list[tuple[Path, Path]]:
    voc_train, voc_val = _voc_split_ids(voc_root, "train"), set(_voc_split_ids(voc_root, "val"))
    sbd_ids = read_id_list(sbd_root / "train.txt", "SBD split 'train'") + read_id_list(
        sbd_root / "val.txt", "SBD split 'val'"
    )
    voc_annotated = set(voc_train) | voc_val
    ids = sorted((set(sbd_ids) | set(voc_train)) - voc_val)
    return [_voc_pair(voc_root, i) if i in voc_annotated else _sbd_pair(sbd_root, i) for i in ids]


def voc_dataset(
    root: str | os.PathLike,
    split: str = "train",
    transforms: Transforms | None = None,
    *,
    sbd_root: str | os.PathLike | None = None,
    split_file: str | os.PathLike | None = None,
    cache: bool = False,
    verify: bool = True,
) -> SegmentationDataset:
    """PASCAL VOC segmentation: 21 classes (background + 20), void border = 255.

    Args:
        root: ``VOCdevkit/VOC2012`` (or ``VOC2011`` for ``seg11valid``), or a folder above it.
        split: ``train``, ``val``, ``trainval`` (from ``ImageSets/Segmentation``), ``seg11valid`` or ``aug``
            (see the module docstring; both need ``sbd_root`` unless ``split_file`` is given).
        transforms: paired transform applied to each item.
        sbd_root: SBD ``benchmark_RELEASE/dataset`` folder, for the derived splits.
        split_file: a list of image ids (one per line) used instead of the split's own list; e.g. the FCN
            authors' ``seg11valid.txt``.
        cache: keep decoded samples in memory.
        verify: check that every listed file exists.

    Raises:
        DataError: unknown split, missing root or split file, or missing files.
    """
    root = _voc_root(Path(root))
    if split not in VOC_SPLITS:
        raise DataError(f"unknown VOC split {split!r}; valid splits: {', '.join(VOC_SPLITS)}")
    if split_file is not None:
        files = [_voc_pair(root, i) for i in read_id_list(Path(split_file), f"VOC split {split!r}")]
    elif split == "aug":
        if sbd_root is None:
            raise DataError("VOC split 'aug' needs the SBD dataset: pass sbd_root (benchmark_RELEASE/dataset)")
        files = _aug_files(root, Path(sbd_root))
    elif split == "seg11valid":
        files = [_voc_pair(root, i) for i in seg11valid_ids(root, sbd_root)]
    else:
        files = [_voc_pair(root, i) for i in _voc_split_ids(root, split)]
    return SegmentationDataset(files, VOC_CLASSES, _decoder(), transforms, cache=cache, verify=verify)


def seg11valid_ids(voc2011_root: Path, sbd_root: str | os.PathLike | None) -> list[str]:
    """The FCN paper's validation ids: VOC2011 segmentation val minus SBD train (736 ids with VOC2011).

    Raises:
        DataError: no ``sbd_root`` was given, or a list is missing.
    """
    if sbd_root is None:
        raise DataError(
            "VOC split 'seg11valid' is VOC2011 segmentation val minus SBD train: pass sbd_root "
            "(benchmark_RELEASE/dataset) with a VOC2011 root, or give the list itself with split_file "
            "(e.g. seg11valid.txt from the FCN authors' repository)"
        )
    if "2011" not in voc2011_root.name:
        logger.warning("seg11valid is defined on VOC2011's val list; %s does not look like VOC2011", voc2011_root)
    sbd_train = set(read_id_list(Path(sbd_root) / "train.txt", "SBD split 'train'"))
    return [i for i in _voc_split_ids(voc2011_root, "val") if i not in sbd_train]


def sbd_dataset(
    root: str | os.PathLike,
    split: str = "train",
    transforms: Transforms | None = None,
    *,
    voc_root: str | os.PathLike | None = None,
    cache: bool = False,
    verify: bool = True,
) -> SegmentationDataset:
    """Semantic Boundaries Dataset class segmentation (VOC's 21 classes), read from ``cls/*.mat``.

    Args:
        root: the SBD ``benchmark_RELEASE/dataset`` folder (``img/``, ``cls/``, ``train.txt``, ``val.txt``).
        split: ``train``, ``val`` or ``aug`` (SBD train + val + VOC train - VOC val; needs ``voc_root``).
        transforms: paired transform applied to each item.
        voc_root: ``VOCdevkit/VOC2012``, for ``aug``.
        cache: keep decoded samples in memory.
        verify: check that every listed file exists.

    Raises:
        DataError: unknown split, missing root or split file, or missing files.
    """
    root = require_dir(Path(root), "SBD", "benchmark_RELEASE/dataset (with img/, cls/, train.txt, val.txt)")
    if split not in SBD_SPLITS:
        raise DataError(f"unknown SBD split {split!r}; valid splits: {', '.join(SBD_SPLITS)}")
    if split == "aug":
        if voc_root is None:
            raise DataError("SBD split 'aug' also needs VOC 2012: pass voc_root (VOCdevkit/VOC2012)")
        files = _aug_files(_voc_root(Path(voc_root)), root)
    else:
        files = [_sbd_pair(root, i) for i in read_id_list(root / f"{split}.txt", f"SBD split {split!r}")]
    return SegmentationDataset(files, VOC_CLASSES, _decoder(), transforms, cache=cache, verify=verify)
