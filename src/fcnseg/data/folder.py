"""A user's own data: ``images/`` and ``masks/`` folders whose files are paired by file stem (or by the image's
stem plus one suffix, ``car_001.jpg`` <-> ``car_001_mask.gif``: :func:`pair_by_suffix`).

How a mask is read (the rule, also in docs/data.md):

- A colour mask (RGB, or palette with a class file) is decoded by the class file's colours.
- A single-channel mask (8/16-bit grey, 1-bit, or palette without a class file) holds
  - the stored value of each class given by ``mask_values`` (``--mask-values 0 255``: value 0 is class 0, value
    255 class 1), when given;
  - else *grey levels*, when a class file is given and every class colour in it is grey (``r = g = b``): the class
    ``cell 255 255 255`` is the value 255 (a grey void colour is void);
  - else *class indices* ``0..K-1``, 255 (and ``void_index``) void.
  A 1-bit mask's white pixels are the value 1 as class indices and 255 otherwise (as image viewers show them).
- ``mask_format="index"`` or ``"rgb"`` forces one reading.

Stored values that are no class nor void are an error naming the values and the flag that maps them, and binary
masks read as indices (values 0 and 255 only, 255 void by convention) are flagged by ``check-data`` and ``train``
(:meth:`~fcnseg.data.dataset.LabelDecoder.silent_void`), so no class is ever voided in silence.
Hidden files (``.DS_Store``, macOS ``._name.png``), ``Thumbs.db`` and ``desktop.ini`` in the folders are ignored.
Splits: ``all`` (every image), ``NAME`` when ``root/NAME.txt`` lists the image stems of that split (a ``.txt``
file of ``name r g b`` lines is a class file, never a split), or the path of such a list file.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fcnseg.data.bands import infer_bands
from fcnseg.data.classes import IGNORE_INDEX, RGB, ClassInfo, bitget_colormap, load_class_file, looks_like_class_file
from fcnseg.data.colors import ColorTable
from fcnseg.data.dataset import LabelDecoder, SegmentationDataset, Transforms
from fcnseg.data.decode import IMAGE_SUFFIXES, is_junk, read_label_png
from fcnseg.data.errors import DataError, require_dir

logger = logging.getLogger(__name__)

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".gif", ".jpg", ".jpeg")


def folder_splits(root: str | os.PathLike) -> tuple[str, ...]:
    """The splits of a folder dataset: ``all`` plus one per ``root/*.txt`` list file (class files excluded)."""
    lists = (p for p in Path(root).glob("*.txt") if not looks_like_class_file(p))
    return ("all", *sorted(p.stem for p in lists))


def read_split_list(path: Path, images: Iterable[str] = ()) -> list[str]:
    """The image stems listed in a split file, one per line (a path or a file name is reduced to its stem).

    ``#`` lines are comments. A line that names no image of ``images`` but whose first word does (``Abyssinian_100
    1 1 1`` in Oxford-IIIT Pet's lists, ``2008_000008 -1`` in VOC's) stands for that image; stems may hold spaces.
    """
    images = set(images)
    stems = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            stem, first = Path(line).stem, Path(line.split()[0]).stem
            stems.append(first if stem not in images and first in images else stem)
    return stems


class NotASplitList(DataError):
    """A ``.txt`` file beside the data names none of its images (a README, notes): it is no split list."""


def _split_stems(root: Path, split: str, images: dict[str, Path], images_path: Path) -> list[str]:
    if split == "all":
        return sorted(images)
    as_path = Path(split)
    list_file = as_path if as_path.suffix == ".txt" and as_path.is_file() else root / f"{split}.txt"
    stems = read_split_list(list_file, images) if list_file.is_file() else []
    named = set(stems) & set(images)
    if not list_file.is_file() or (looks_like_class_file(list_file) and not named):  # "Abyssinian_1 1 1 1" is both
        raise DataError(f"unknown folder split {split!r} ({list_file} is not a split list); valid splits: "
                        f"{', '.join(folder_splits(root))}, or the path of a list file of image stems")  # fmt: skip
    if images and stems and not named:
        raise NotASplitList(
            f"{list_file}: none of its {len(stems)} line(s) names one of the {len(images)} images in {images_path} "
            f"(first line {stems[0]!r}); a split list holds one image file name or stem per line"
        )
    return stems


def _files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes and not is_junk(path):
            if path.stem in files:
                raise DataError(
                    f"{folder}: two files share the stem {path.stem!r}: {files[path.stem].name}, {path.name}"
                )
            files[path.stem] = path
    return files


def pair_by_suffix(images: dict[str, Path], masks: dict[str, Path]) -> tuple[dict[str, Path], dict[str, Path], str]:
    """Images and masks keyed by the image stem, also when mask names add a suffix to it (``car_001.jpg`` <->
    ``car_001_mask.gif``), and when both lie in one folder.

    Masks pair by equal stems when any does (suffix ``""``); else by the suffix, from a separator (``_ - . space``)
    on, that pairs the most of them. Mask files leave the images; masks that pair with no image stay (as orphans).

    Raises:
        DataError: images and masks share a folder and no suffix pairs them.
    """
    same_file = {stem for stem, path in masks.items() if images.get(stem) == path}  # one folder for both
    if (set(images) & set(masks)) - same_file:
        return images, masks, ""
    found: Counter[str] = Counter()
    for stem in masks:
        found.update({stem[i:] for i in range(1, len(stem)) if stem[i] in "_-. " and stem[:i] in images})
    if not found and same_file:
        raise DataError(f"images and masks share a folder ({next(iter(masks.values())).parent}), and no mask name "
                        "extends an image's by a suffix (car_001.jpg, car_001_mask.png): name the mask folder with "
                        "--mask-dir")  # fmt: skip
    if not found:
        return images, masks, ""
    suffix = found.most_common(1)[0][0]
    paired = {stem[: -len(suffix)]: path for stem, path in masks.items() if stem.endswith(suffix)}
    paired = {stem: path for stem, path in paired.items() if stem in images}
    taken = set(paired.values())
    images = {stem: path for stem, path in images.items() if path not in taken}
    unpaired = {stem: path for stem, path in masks.items() if path not in taken and stem not in same_file}
    return images, unpaired | paired, suffix


def folder_classes(
    classes: str | os.PathLike | None, num_classes: int | None, mask_values: list[int] | None = None
) -> tuple[ClassInfo, tuple[RGB, ...]]:
    """Classes of a folder dataset: from a class file, or generic names for ``num_classes`` or ``mask_values``.

    Without a class file, classes of ``mask_values`` are drawn in their own grey level (so that predicted masks look
    like the dataset's), those of ``num_classes`` in the VOC colours.

    Raises:
        DataError: none of them is given, they disagree on the number of classes, or the class file is invalid.
    """
    counts = {"--num-classes": num_classes, "--mask-values": None if mask_values is None else len(mask_values)}
    if classes is not None:
        info, void_colors = load_class_file(classes)
        counts["class file " + str(classes)] = info.num_classes
    given = {k: n for k, n in counts.items() if n is not None}
    if len(set(given.values())) > 1:
        raise DataError(f"the numbers of classes disagree: {', '.join(f'{k} {n}' for k, n in given.items())}")
    if classes is not None:
        return info, void_colors
    if mask_values is not None:
        names = tuple(f"value{v}" for v in mask_values)
        grey = tuple((g, g, g) for g in (min(255, int(v) * 255 // max(255, max(mask_values))) for v in mask_values))
        return ClassInfo(names, grey if len(set(grey)) == len(grey) else bitget_colormap(len(names))), ()
    if num_classes is None:
        raise DataError("the folder dataset needs its classes: --mask-values, --num-classes or a class file")
    return ClassInfo(tuple(f"class{k}" for k in range(num_classes)), bitget_colormap(num_classes)), ()


def stored_values(masks: list[Path], limit: int = 50) -> str:
    """``"the values 0, 255 (single-channel, in 30 of 30 files read)"``: what a sample of masks holds."""
    values: set[int] = set()
    kinds: set[str] = set()
    sample = masks[:: max(1, len(masks) // limit)][:limit]
    for path in sample:
        try:
            raw = read_label_png(path)
        except DataError:
            continue
        kinds.add("colour" if raw.ndim == 3 else "single-channel")
        raw = raw.astype(np.uint8) * 255 if raw.dtype == np.bool_ else raw  # 1-bit white, as a grey level
        if raw.ndim == 2 and len(values) <= 64:
            values.update(np.unique(raw).tolist())
    shown = ", ".join(map(str, sorted(values)[:16])) + (", ..." if len(values) > 16 else "")
    return (
        f"the values {shown} ({'/'.join(sorted(kinds)) or 'unreadable'}, in {len(sample)} of {len(masks)} files read)"
    )


def _within_tolerance(lut: np.ndarray, known: list[int], tolerance: int) -> None:
    """Map each unmapped stored value within ``tolerance`` of a known grey level (a class's or void's) as that level,
    in place; a tolerance under which two known levels could claim one value is refused."""
    levels = sorted(set(known))
    close = [(a, b) for a, b in itertools.pairwise(levels) if b - a <= 2 * tolerance]
    if close:
        raise DataError(f"--color-tolerance {tolerance} is ambiguous: the levels {close[0][0]} and {close[0][1]} "
                        f"are at most twice it apart; use at most {(close[0][1] - close[0][0] - 1) // 2}")  # fmt: skip
    for level in levels:
        near = np.arange(max(0, level - tolerance), min(len(lut), level + tolerance + 1))
        near = near[lut[near] == -1]
        lut[near] = lut[level]


def _single_channel_table(
    info: ClassInfo,
    void_colors: tuple[RGB, ...],
    mask_values: list[int] | None,
    grey: bool,
    void_index: int | None,
    tolerance: int = 0,
) -> tuple[np.ndarray, str, bool, str]:
    """The look-up table of single-channel masks, what the reading is called, whether 255 is declared void, and the
    hint for an unknown value."""
    k = info.num_classes
    if mask_values is not None or grey:
        values = list(mask_values) if mask_values is not None else [c[0] for c in info.colors]
        voids = [c[0] for c in void_colors if c[0] == c[1] == c[2]] + ([void_index] if void_index is not None else [])
        if len(set(values)) != len(values):
            raise DataError(f"--mask-values {values}: a value is given twice")
        if min(values + voids) < 0:
            raise DataError(f"--mask-values {values}: stored values are 0 or more")
        lut = np.full(max(256, *values, *voids) + 1, -1, dtype=np.int64)
        lut[voids] = IGNORE_INDEX
        lut[values] = np.arange(k)
        if tolerance > 0:
            _within_tolerance(lut, values + voids, tolerance)
        jpeg = "; JPEG masks hold levels near them: --color-tolerance N accepts levels within N"
        if mask_values is not None:
            return (
                lut,
                f"--mask-values {' '.join(map(str, values))}",
                bool(voids),
                "list every class's value in --mask-values, or mark void ones with --void-index" + jpeg,
            )
        return (
            lut,
            "grey levels of the class file",
            bool(voids),
            "add the grey levels to the class file (a 'void v v v' line for void)" + jpeg,
        )
    lut = np.full(256, -1, dtype=np.int64)
    lut[:k] = np.arange(k)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    if void_index is not None:
        if not k <= void_index <= IGNORE_INDEX:
            raise DataError(f"void_index {void_index} must lie in {k}..{IGNORE_INDEX} (after the classes)")
        lut[void_index] = IGNORE_INDEX
    declared = any(c == (255, 255, 255) for c in void_colors)
    hint = "if the masks hold grey levels or other values than 0..K-1, map them with --mask-values (e.g. 0 255)"
    return lut, f"class indices 0..{k - 1}", declared, hint


def _classes_or_what_to_say(
    classes: str | os.PathLike | None,
    num_classes: int | None,
    mask_values: list[int] | None,
    masks_path: Path,
    masks: dict[str, Path],
) -> tuple[ClassInfo, tuple[RGB, ...]]:
    """:func:`folder_classes`; when none of the three is given, an error naming the values the masks hold."""
    try:
        return folder_classes(classes, num_classes, mask_values)
    except DataError as err:
        if classes is not None or num_classes is not None or mask_values is not None:
            raise
        raise DataError(
            f"masks in {masks_path} hold {stored_values(list(masks.values()))}; say which classes they are: "
            "--mask-values V0 V1 ... (the stored value of each class, e.g. 0 255), --num-classes N (values 0..N-1 "
            "are the classes) or --classes FILE (names and colours)"
        ) from err


def _mask_decoder(
    info: ClassInfo,
    void_colors: tuple[RGB, ...],
    classes: str | os.PathLike | None,
    mask_values: list[int] | None,
    mask_format: str,
    void_index: int | None,
    unknown_colors: str,
    color_tolerance: int,
) -> LabelDecoder:
    """The decoder of the module's rule: colour masks by the class colours, single-channel ones by a table."""
    if mask_format == "rgb" and classes is None:
        raise DataError("mask_format='rgb' needs a class file giving the colour of each class")
    grey = classes is not None and mask_format == "auto" and all(c[0] == c[1] == c[2] for c in info.colors)
    lut, reading, declared, hint = _single_channel_table(
        info, void_colors, mask_values, grey, void_index, color_tolerance
    )
    try:
        use_colors = mask_format == "rgb" or (mask_format == "auto" and classes is not None)
        table = ColorTable(info.colors, void_colors, unknown_colors, color_tolerance) if use_colors else None
    except ValueError as err:
        raise DataError(f"class file {classes}: {err}") from err
    return LabelDecoder(info.num_classes, lut=lut, colors=table, index_ok=mask_format == "auto", reading=reading,
                        void_declared=declared, hint=f"{hint}; --unknown-colors void makes them void",
                        unknown_void=unknown_colors == "void")  # fmt: skip


def folder_dataset(
    root: str | os.PathLike,
    split: str = "all",
    transforms: Transforms | None = None,
    *,
    classes: str | os.PathLike | None = None,
    num_classes: int | None = None,
    mask_values: list[int] | None = None,
    image_dir: str | os.PathLike = "images",
    mask_dir: str | os.PathLike = "masks",
    mask_format: str = "auto",
    void_index: int | None = None,
    unknown_colors: str = "error",
    color_tolerance: int = 0,
    resize_masks: bool = False,
    bands: int | None = None,
    cache: bool = False,
    verify: bool = True,
) -> SegmentationDataset:
    """Images and masks in two folders (or one), paired by file stem (``images/a.jpg`` <-> ``masks/a.png``) or by
    the image's stem plus a suffix (:func:`pair_by_suffix`).

    Args:
        root: dataset folder.
        split: ``all``, the stem of a list file ``root/{split}.txt`` with one image stem per line, or the path of
            such a list file.
        transforms: paired transform applied to each item.
        classes: class file (``name r g b`` lines, optional ``void r g b`` lines): the class names and colours.
        num_classes: number of classes of index masks when no class file is given.
        mask_values: stored value of each class in single-channel masks (``[0, 255]`` for binary masks).
        image_dir: image folder, relative to ``root`` or absolute.
        mask_dir: mask folder, relative to ``root`` or absolute.
        mask_format: ``auto`` (the module's rule), ``index`` or ``rgb``.
        void_index: a stored value of single-channel masks that means void (besides 255 for index masks).
        unknown_colors: ``error`` or ``void``: what a mask colour that is neither a class nor void becomes.
        color_tolerance: per-channel difference within which a near colour matches a class or void colour.
        resize_masks: resize masks stored at another scale (same aspect ratio) to their images, nearest neighbour.
        bands: image bands every file is read with (:mod:`fcnseg.data.decode`); ``None``: from the headers of all the
            images in the image folder, whatever the split (:func:`fcnseg.data.bands.infer_bands`: all grey -> 1, grey
            and RGB -> 3, all ``B``-band -> ``B``; other mixtures are an error).
        cache: keep decoded samples in memory.
        verify: check that every image has a mask.

    Raises:
        DataError: missing folders or split list, no images, an image without a mask, classes not given or invalid.
    """
    root = Path(root)
    require_dir(root, "folder dataset", f"{image_dir}/ and {mask_dir}/ inside it")
    if mask_format not in ("auto", "index", "rgb"):
        raise DataError(f"unknown mask_format {mask_format!r}; valid: auto, index, rgb")
    images_path, masks_path = root / image_dir, root / mask_dir
    for folder, what, flag in ((images_path, "image", "--image-dir"), (masks_path, "mask", "--mask-dir")):
        if not folder.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir() and not is_junk(p))
            raise DataError(f"folder dataset: {what} folder {folder} does not exist; name yours with {flag} "
                            f"(folders in {root}: {', '.join(found) or 'none'})")  # fmt: skip
    images, masks, suffix = pair_by_suffix(
        _files_by_stem(images_path, IMAGE_SUFFIXES), _files_by_stem(masks_path, MASK_SUFFIXES)
    )
    if suffix:
        logger.info("masks pair with images by the image's stem + %r, e.g. %s", suffix, next(iter(masks.values())).name)
    info, void_colors = _classes_or_what_to_say(classes, num_classes, mask_values, masks_path, masks)
    stems = _split_stems(root, split, images, images_path)
    if not stems:
        raise DataError(f"folder dataset split {split!r}: no images ({', '.join(IMAGE_SUFFIXES)}) in {images_path}")
    orphans = sorted(set(masks) - set(images))
    if images and orphans and len(orphans) == len(masks):
        raise DataError(
            f"no mask in {masks_path} is named after an image in {images_path} (e.g. {masks[orphans[0]].name}, "
            f"{next(iter(images.values())).name}): a mask takes its image's file stem (a.jpg, a.png), or adds a "
            "suffix to it (a_mask.png); rename the masks"
        )
    if orphans:
        logger.warning("%d mask(s) in %s have no image, e.g. %s", len(orphans), masks_path, masks[orphans[0]].name)
    files = [(images.get(s, images_path / f"{s}.jpg"), masks.get(s, masks_path / f"{s}.png")) for s in stems]

    decoder = _mask_decoder(info, void_colors, classes, mask_values, mask_format, void_index, unknown_colors,
                            color_tolerance)  # fmt: skip
    if bands is None:
        bands = infer_bands(list(images.values()))
    elif bands < 1:
        raise DataError(f"bands must be a positive band count (1 grey, 3 RGB, 4 RGB + NIR, ...), got {bands}")
    return SegmentationDataset(
        files, info, decoder, transforms, cache=cache, verify=verify, resize_masks=resize_masks, bands=bands
    )
