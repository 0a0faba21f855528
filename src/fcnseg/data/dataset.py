"""The one dataset class: a list of (image, mask) files, a label decoder, optional cache and transforms.

Every supported layout (VOC, SBD, CamVid, Cityscapes, ADE20K, folder) is a function that lists the files and
picks a :class:`LabelDecoder`; they all return this class, so there is one place where items are read, checked
and cached.
"""

from __future__ import annotations

import copy
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from fcnseg.data.classes import IGNORE_INDEX, ClassInfo
from fcnseg.data.colors import ColorTable
from fcnseg.data.decode import read_image, read_label_png
from fcnseg.data.errors import DataError

logger = logging.getLogger(__name__)

Transforms = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[torch.Tensor, torch.Tensor]]


class MaskScaleError(DataError):
    """A mask stored at another scale than its image, with the same aspect ratio (``--resize-masks`` fixes it)."""


def same_aspect(mask_hw: tuple[int, int], image_hw: tuple[int, int]) -> bool:
    """True when a mask of ``mask_hw`` is the image ``image_hw`` scaled, within a pixel of rounding on either side."""
    (mh, mw), (h, w) = mask_hw, image_hw
    return abs(mh * w - h * mw) < max(w, h)


def resize_nearest(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(h, w)`` labels -> ``size``, each output pixel taking the label under its centre (never interpolated)."""
    out = torch.nn.functional.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")
    return out[0, 0].to(mask.dtype)


class LabelDecoder:
    """Turns a stored label map into class indices ``0..K-1`` with void = 255, and rejects unknown values.

    Single-channel masks are mapped through a look-up table (``lut[v]`` is the class of stored value ``v``, 255 for
    void, -1 for "not a valid label"): class indices, grey levels of a class file, or ``--mask-values``. Colour-coded
    masks (RGB, and palette masks when ``colors`` is given: their palette order need not be the class order) are
    decoded through a :class:`~fcnseg.data.colors.ColorTable`. The decoder counts the single-channel masks that
    hold only a class value and 255 (:attr:`binary`), so that a scan can tell binary 0/255 masks read as indices.

    Args:
        num_classes: ``K``; used for the identity table.
        lut: int table from stored value to class; ``None`` for the identity on ``0..K-1`` plus 255 as void.
        colors: for colour-coded masks, a :class:`ColorTable` of the class and void colours.
        index_ok: with ``colors``, still accept one-channel (grayscale) masks through ``lut``.
        read: function that reads the stored label map of a path (default: palette masks as indices, or as their
            RGB colours when ``colors`` is given).
        reading: how single-channel values are read, for messages (``"class indices"``, ``"grey levels of ..."``).
        void_declared: 255 means void because the format or the user says so (VOC, a class file's void line,
            ``--void-index``), not only by fcnseg's convention for index masks.
        hint: the flags that map values, named in the error for an unknown stored value.
        unknown_void: single-channel values that are neither a class nor void become void (``--unknown-colors
            void``), each warned of once per process with its first file, instead of an error.
    """

    def __init__(
        self,
        num_classes: int,
        lut: np.ndarray | None = None,
        colors: ColorTable | None = None,
        index_ok: bool = False,
        read: Callable[[Path], np.ndarray] | None = None,
        reading: str = "class indices",
        void_declared: bool = True,
        hint: str = "check the dataset name, --num-classes or --void-index",
        unknown_void: bool = False,
    ) -> None:
        if lut is None:
            lut = np.full(256, -1, dtype=np.int64)
            lut[:num_classes] = np.arange(num_classes)
            lut[IGNORE_INDEX] = IGNORE_INDEX
        self.lut = np.asarray(lut, dtype=np.int64)
        self.num_classes = num_classes
        self.read = read or partial(read_label_png, palette_as_rgb=colors is not None)
        self.index_ok = index_ok
        self.colors = colors
        self.reading, self.void_declared, self.hint = reading, void_declared, hint
        self.unknown_void = unknown_void
        self._voided: set[int] = set()  # unknown values already warned of (decoded as void)
        self.files: Counter[str] = Counter()
        """``"single-channel"`` / ``"colour"`` -> masks decoded each way (per process)."""
        self.binary: Counter[int] = Counter()
        """``v`` -> single-channel masks holding only ``v`` and 255, where 255 is void by convention only."""

    def __call__(self, path: Path) -> np.ndarray:
        """Read and decode ``path``: ``(H, W)`` uint8 array of class indices and 255 for void.

        Raises:
            DataError: unreadable file, or a stored value / colour that is neither a class nor void.
        """
        raw = self.read(path)
        if raw.ndim == 3:
            if self.colors is None:
                raise DataError(
                    f"{path}: colour-coded (RGB) mask but no class colours were given; pass a class file (--classes)"
                )
            self.files["colour"] += 1
            return self.colors(raw, path)
        if raw.ndim != 2:
            raise DataError(f"{path}: label map has shape {raw.shape}, expected (H, W) or (H, W, 3)")
        if self.colors is not None and not self.index_ok:
            raise DataError(
                f"{path}: expected an RGB colour-coded mask (the class file gives colours), got one channel"
            )
        if raw.dtype == np.bool_:  # 1-bit PNGs: white is 1 as a class index, 255 as a grey level (as viewers show it)
            raw = raw.astype(np.uint8) * (1 if self.reading.startswith("class indices") else 255)
        if raw.dtype.kind not in "ui":
            raise DataError(f"{path}: label values are {raw.dtype}, expected integers (class indices)")
        self.files["single-channel"] += 1
        if raw.dtype == np.uint8:
            values = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
            labels = self.lut[raw] if len(self.lut) >= 256 else self._wide(raw)
        else:  # 16/32-bit values: those outside the table are invalid too, and named with the others
            raw = raw.astype(np.int64)
            values = np.unique(raw)
            labels = self._wide(raw)
        if len(values) == 2 and values[1] == IGNORE_INDEX and not self.void_declared and self._void_by_convention():
            self.binary[int(values[0])] += 1
        if (labels < 0).any():
            bad = np.unique(raw[labels < 0])
            if not self.unknown_void:
                raise DataError(f"{path}: label values {bad[:10].tolist()} are neither a class "
                                f"({self._class_values()}) nor void, read as {self.reading}; {self.hint}")  # fmt: skip
            new = sorted(set(bad.tolist()) - self._voided)
            if new:
                self._voided.update(new)
                logger.warning("%s: label values %s, neither a class nor void, decoded as void (--unknown-colors "
                               "void)", path, new[:10])  # fmt: skip
            labels = np.where(labels < 0, IGNORE_INDEX, labels)
        return labels.astype(np.uint8)

    def _void_by_convention(self) -> bool:
        return len(self.lut) > IGNORE_INDEX and self.lut[IGNORE_INDEX] == IGNORE_INDEX

    def _class_values(self) -> str:
        """The stored values of the classes: ``"0..10"``, or ``"0, 255"``."""
        values = np.flatnonzero((self.lut >= 0) & (self.lut < IGNORE_INDEX))
        if np.array_equal(values, np.arange(len(values))) and len(values) > 1:
            return f"0..{len(values) - 1}"
        return ", ".join(map(str, values[:12].tolist())) + (", ..." if len(values) > 12 else "")

    def _wide(self, raw: np.ndarray) -> np.ndarray:
        raw = raw.astype(np.int64)
        inside = (raw >= 0) & (raw < len(self.lut))
        return np.where(inside, self.lut[np.where(inside, raw, 0)], -1)

    def silent_void(self) -> str | None:
        """One line when most single-channel masks seen hold just one class value and 255, read as void by
        convention only: binary 0/255 masks (the commonest custom format) whose foreground would silently become
        void; else ``None``."""
        files = self.files["single-channel"]
        if not self.binary or 2 * sum(self.binary.values()) < files:
            return None
        low = self.binary.most_common(1)[0][0]
        return (
            f"{sum(self.binary.values())} of the {files} masks hold only the values {low} and 255, read as "
            f"{self.reading}: 255 would be void and every labelled pixel class {self.lut[low]}. Map the values to "
            f"classes with --mask-values {low} 255 (or a class file with grey colours, e.g. 'background {low} {low} "
            f"{low}' and 'foreground 255 255 255')"
        )

    def reset_counts(self) -> None:
        """Forget the values and files counted so far."""
        self.files.clear()
        self.binary.clear()


class SegmentationDataset(Dataset):
    """Pairs of image and label files returning ``(image, mask)``.

    Items are ``(tv_tensors.Image (B, H, W), tv_tensors.Mask int64 (H, W))`` with classes ``0..K-1`` and void = 255,
    passed through ``transforms`` when given; the image is uint8 RGB for ``bands == 3``, else uint8 (8-bit data) or
    float32 in ``[0, 1]`` scale (:mod:`fcnseg.data.decode` gives the rules).

    Args:
        files: ``(image_path, mask_path)`` pairs.
        classes: names and colours of the ``K`` classes.
        decode_mask: reads a mask file into a ``(H, W)`` uint8 array of classes and 255.
        transforms: paired transform called as ``transforms(image, mask)``.
        cache: keep every decoded uint8 sample in memory, so each file is decoded once per process (with a
            ``DataLoader``, once per worker: use ``persistent_workers=True``). Off by default: a pair takes 4 bytes
            per pixel (uint8 RGB and mask), so 4 x H x W x pairs per process: 0.25 GB for CamVid's 367 training
            pairs of 360x480, 25 GB for Cityscapes' 2975 of 1024x2048.
        verify: check at construction that every listed file exists.
        resize_masks: a mask stored at another scale than its image, with the same aspect ratio, is resized to the
            image (nearest neighbour); without it, such a mask raises :class:`MaskScaleError`.
        bands: image bands ``B`` every file is read with (3: RGB); a file of another band count raises
            :class:`DataError` when it is loaded. :attr:`bands_reason` (settable) says where ``B`` comes from in that
            error.

    Raises:
        DataError: with ``verify``, files are missing (all of them are named, up to a limit).
    """

    def __init__(
        self,
        files: Sequence[tuple[Path, Path]],
        classes: ClassInfo,
        decode_mask: LabelDecoder,
        transforms: Transforms | None = None,
        cache: bool = False,
        verify: bool = True,
        resize_masks: bool = False,
        bands: int = 3,
    ) -> None:
        self.files = [(Path(i), Path(m)) for i, m in files]
        self.resize_masks = resize_masks
        self.bands = bands
        self.bands_reason: str | None = None
        self.classes = classes
        self.decode_mask = decode_mask
        self.transforms = transforms
        self.cache = cache
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        if verify:
            missing = self.missing_files()
            if missing:
                shown = "\n  ".join(f"{path}: {what}" for path, what in missing[:20])
                more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
                raise DataError(f"{len(missing)} listed file(s) do not exist:\n  {shown}{more}")

    def missing_files(self) -> list[tuple[Path, str]]:
        """``(path, "missing image" | "missing mask")`` for every listed file that does not exist."""
        missing = []
        for image_path, mask_path in self.files:
            if not image_path.is_file():
                missing.append((image_path, "missing image"))
            if not mask_path.is_file():
                missing.append((mask_path, f"missing mask (for image {image_path.name})"))
        return missing

    def __len__(self) -> int:
        return len(self.files)

    def with_files(self, files: Sequence[tuple[Path, Path]]) -> SegmentationDataset:
        """The same dataset (decoder, transforms, options) over other ``(image, mask)`` pairs, e.g. a subset."""
        subset = copy.copy(self)
        subset.files = [(Path(i), Path(m)) for i, m in files]
        subset._cache = {}
        return subset

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode item ``index`` without transforms (from the cache when enabled).

        Returns:
            image ``(B, H, W)`` (uint8, or float32 for data wider than 8 bits when ``B != 3``) and uint8 mask
            ``(H, W)`` (classes and 255).

        Raises:
            DataError: unreadable file, image and mask of different sizes, or an invalid label value.
        """
        if index in self._cache:
            return self._cache[index]
        image_path, mask_path = self.files[index]
        image = read_image(image_path, self.bands, self.bands_reason)
        mask = torch.from_numpy(np.ascontiguousarray(self.decode_mask(mask_path)))
        if tuple(image.shape[-2:]) != tuple(mask.shape):
            mask = self._fit_mask(mask, tuple(image.shape[-2:]), image_path, mask_path)
        if self.cache:
            self._cache[index] = (image, mask)
        return image, mask

    def _fit_mask(self, mask: torch.Tensor, size: tuple[int, int], image_path: Path, mask_path: Path) -> torch.Tensor:
        """``mask`` resized to ``size`` (nearest) when allowed and of the same aspect ratio; else a clear error."""
        (h, w), (mh, mw) = size, tuple(mask.shape)
        what = f"{mask_path}: mask is {mw}x{mh} (WxH) but its image {image_path} is {w}x{h}"
        if same_aspect((mh, mw), (h, w)):
            if not self.resize_masks:
                raise MaskScaleError(f"{what}, the same aspect ratio: pass --resize-masks to resize such masks to "
                                     "their images (nearest neighbour)")  # fmt: skip
            return resize_nearest(mask, (h, w))
        turned = (h, w) == (mw, mh)
        raise DataError(
            f"{what}; image and mask must have the same size"
            + (
                " (images are read upright, as their EXIF orientation says; masks as stored: save the mask "
                "in the orientation the image is displayed in)"
                if turned
                else ""
            )
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.load(index)
        out_image = tv_tensors.Image(image)
        out_mask = tv_tensors.Mask(mask.to(torch.int64))
        if self.transforms is not None:
            return self.transforms(out_image, out_mask)
        return out_image, out_mask

    def __repr__(self) -> str:
        root = os.path.commonpath([str(p) for pair in self.files for p in pair]) if self.files else "-"
        return f"{type(self).__name__}({len(self)} items, {self.classes.num_classes} classes, root={root})"
