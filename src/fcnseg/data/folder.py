"""A user's own data: ``images/`` and ``masks/`` folders whose files are paired by file stem.

Masks are either class-index images (pixel value = class, 255 = void, optionally another void index) or RGB
colour-coded images decoded through a class file (see :func:`fcnseg.data.classes.load_class_file`).
Splits: ``all`` (every image), ``NAME`` when ``root/NAME.txt`` lists the image stems of that split (a ``.txt``
file of ``name r g b`` lines is a class file, never a split), or the path of such a list file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fcnseg.data.classes import IGNORE_INDEX, RGB, ClassInfo, bitget_colormap, load_class_file, looks_like_class_file
from fcnseg.data.colors import ColorTable
from fcnseg.data.dataset import LabelDecoder, SegmentationDataset, Transforms
from fcnseg.data.decode import IMAGE_SUFFIXES
from fcnseg.data.errors import DataError, require_dir

logger = logging.getLogger(__name__)

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


def folder_splits(root: str | os.PathLike) -> tuple[str, ...]:
    """The splits of a folder dataset: ``all`` plus one per ``root/*.txt`` list file (class files excluded)."""
    lists = (p for p in Path(root).glob("*.txt") if not looks_like_class_file(p))
    return ("all", *sorted(p.stem for p in lists))


def read_split_list(path: Path) -> list[str]:
    """The image stems listed in a split file, one per line (a path or a file name is reduced to its stem)."""
    return [Path(line.strip()).stem for line in path.read_text().splitlines() if line.strip()]


def _split_stems(root: Path, split: str, images: dict[str, Path]) -> list[str]:
    if split == "all":
        return sorted(images)
    as_path = Path(split)
    list_file = as_path if as_path.suffix == ".txt" and as_path.is_file() else root / f"{split}.txt"
    if not list_file.is_file() or looks_like_class_file(list_file):
        raise DataError(f"unknown folder split {split!r} ({list_file} is not a split list); valid splits: "
                        f"{', '.join(folder_splits(root))}, or the path of a list file of image stems")  # fmt: skip
    return read_split_list(list_file)


def _files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in files:
                raise DataError(
                    f"{folder}: two files share the stem {path.stem!r}: {files[path.stem].name}, {path.name}"
                )
            files[path.stem] = path
    return files


def folder_classes(classes: str | os.PathLike | None, num_classes: int | None) -> tuple[ClassInfo, tuple[RGB, ...]]:
    """Classes of a folder dataset: from a class file, or ``num_classes`` generic names and VOC colours.

    Raises:
        DataError: neither is given, or the class file is invalid.
    """
    if classes is not None:
        info, void_colors = load_class_file(classes)
        if num_classes is not None and num_classes != info.num_classes:
            raise DataError(f"class file {classes} lists {info.num_classes} classes but num_classes={num_classes}")
        return info, void_colors
    if num_classes is None:
        raise DataError("the folder dataset needs its classes: give a class file (lines 'name r g b') or num_classes")
    names = tuple(f"class{k}" for k in range(num_classes))
    return ClassInfo(names, bitget_colormap(num_classes)), ()


def folder_dataset(
    root: str | os.PathLike,
    split: str = "all",
    transforms: Transforms | None = None,
    *,
    classes: str | os.PathLike | None = None,
    num_classes: int | None = None,
    image_dir: str | os.PathLike = "images",
    mask_dir: str | os.PathLike = "masks",
    mask_format: str = "auto",
    void_index: int | None = None,
    unknown_colors: str = "error",
    color_tolerance: int = 0,
    cache: bool = False,
    verify: bool = True,
) -> SegmentationDataset:
    """Images and masks in two folders, paired by file stem (``images/a.jpg`` <-> ``masks/a.png``).

    Args:
        root: dataset folder.
        split: ``all``, the stem of a list file ``root/{split}.txt`` with one image stem per line, or the path of
            such a list file.
        transforms: paired transform applied to each item.
        classes: class file (``name r g b`` lines, optional ``void r g b`` lines); needed for RGB masks and gives
            the class names and display colours.
        num_classes: number of classes of index masks when no class file is given.
        image_dir: image folder, relative to ``root`` or absolute.
        mask_dir: mask folder, relative to ``root`` or absolute.
        mask_format: ``index`` (pixel value = class), ``rgb`` (colours of the class file) or ``auto`` (with a
            class file: RGB(A) and palette files by their colours, grayscale files as indices).
        void_index: a stored value of index masks that means void (besides 255), e.g. 0 or 11.
        unknown_colors: ``error`` or ``void``: what a mask colour that is neither a class nor void becomes.
        color_tolerance: per-channel difference within which a near colour matches a class or void colour.
        cache: keep decoded samples in memory.
        verify: check that every image has a mask.

    Raises:
        DataError: missing folders or split list, no images, an image without a mask, or invalid classes.
    """
    root = Path(root)
    require_dir(root, "folder dataset", f"{image_dir}/ and {mask_dir}/ inside it")
    if mask_format not in ("auto", "index", "rgb"):
        raise DataError(f"unknown mask_format {mask_format!r}; valid: auto, index, rgb")
    images_path, masks_path = root / image_dir, root / mask_dir
    for folder, what in ((images_path, "image"), (masks_path, "mask")):
        if not folder.is_dir():
            raise DataError(f"folder dataset: {what} folder {folder} does not exist")
    info, void_colors = folder_classes(classes, num_classes)

    images = _files_by_stem(images_path, IMAGE_SUFFIXES)
    masks = _files_by_stem(masks_path, MASK_SUFFIXES)
    stems = _split_stems(root, split, images)
    if not stems:
        raise DataError(f"folder dataset split {split!r}: no images ({', '.join(IMAGE_SUFFIXES)}) in {images_path}")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        logger.warning("%d mask(s) in %s have no image, e.g. %s", len(orphans), masks_path, masks[orphans[0]].name)
    files = [(images.get(s, images_path / f"{s}.jpg"), masks.get(s, masks_path / f"{s}.png")) for s in stems]

    use_colors = mask_format == "rgb" or (mask_format == "auto" and classes is not None)
    if mask_format == "rgb" and classes is None:
        raise DataError("mask_format='rgb' needs a class file giving the colour of each class")
    lut = np.full(256, -1, dtype=np.int64)
    lut[: info.num_classes] = np.arange(info.num_classes)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    if void_index is not None:
        if not info.num_classes <= void_index <= IGNORE_INDEX:
            raise DataError(
                f"void_index {void_index} must lie in {info.num_classes}..{IGNORE_INDEX} (after the classes)"
            )
        lut[void_index] = IGNORE_INDEX
    try:
        table = ColorTable(info.colors, void_colors, unknown_colors, color_tolerance) if use_colors else None
    except ValueError as err:
        raise DataError(f"class file {classes}: {err}") from err
    decoder = LabelDecoder(info.num_classes, lut=lut, colors=table, index_ok=mask_format == "auto")
    return SegmentationDataset(files, info, decoder, transforms, cache=cache, verify=verify)
