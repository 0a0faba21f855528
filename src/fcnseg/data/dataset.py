"""The one dataset class: a list of (image, mask) files, a label decoder, optional cache and transforms.

Every supported layout (VOC, SBD, CamVid, Cityscapes, ADE20K, folder) is a function that lists the files and
picks a :class:`LabelDecoder`; they all return this class, so there is one place where items are read, checked
and cached.
"""

from __future__ import annotations

import logging
import os
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


class LabelDecoder:
    """Turns a stored label map into class indices ``0..K-1`` with void = 255, and rejects unknown values.

    Stored values are mapped through a 256-entry look-up table (``lut[v]`` is the class of value ``v``, 255 for
    void, -1 for "not a valid label"); colour-coded masks (RGB, and palette masks when ``colors`` is given: their
    palette order need not be the class order) are decoded through a :class:`~fcnseg.data.colors.ColorTable`.

    Args:
        num_classes: ``K``; used for the identity table.
        lut: ``(256,)`` or longer int table from stored value to class; ``None`` for the identity on ``0..K-1``
            plus 255 as void.
        colors: for colour-coded masks, a :class:`ColorTable` of the class and void colours.
        index_ok: with ``colors``, still accept one-channel (grayscale) masks as class indices.
        read: function that reads the stored label map of a path (default: palette masks as indices, or as their
            RGB colours when ``colors`` is given).
    """

    def __init__(
        self,
        num_classes: int,
        lut: np.ndarray | None = None,
        colors: ColorTable | None = None,
        index_ok: bool = False,
        read: Callable[[Path], np.ndarray] | None = None,
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

    def __call__(self, path: Path) -> np.ndarray:
        """Read and decode ``path``: ``(H, W)`` uint8 array of class indices and 255 for void.

        Raises:
            DataError: unreadable file, or a stored value / colour that is neither a class nor void.
        """
        raw = self.read(path)
        if raw.ndim == 3:
            if self.colors is None:
                raise DataError(f"{path}: colour-coded (RGB) mask but no class colours were given; pass a class file")
            return self.colors(raw, path)
        if raw.ndim != 2:
            raise DataError(f"{path}: label map has shape {raw.shape}, expected (H, W) or (H, W, 3)")
        if self.colors is not None and not self.index_ok:
            raise DataError(
                f"{path}: expected an RGB colour-coded mask (the class file gives colours), got one channel"
            )
        if raw.dtype == np.bool_:  # 1-bit PNGs
            raw = raw.astype(np.uint8)
        if raw.dtype.kind not in "ui":
            raise DataError(f"{path}: label values are {raw.dtype}, expected integers (class indices)")
        if raw.dtype == np.uint8:
            labels = self.lut[raw]
        else:  # 16/32-bit values: those outside the table are invalid too, and named with the others
            raw = raw.astype(np.int64)
            inside = (raw >= 0) & (raw < len(self.lut))
            labels = np.where(inside, self.lut[np.where(inside, raw, 0)], -1)
        if (labels < 0).any():
            bad = np.unique(raw[labels < 0])[:10]
            raise DataError(
                f"{path}: label values {bad.tolist()} are neither a class (0..{self.num_classes - 1}) nor void; "
                "check the dataset name, --num-classes or --void-index"
            )
        return labels.astype(np.uint8)


class SegmentationDataset(Dataset):
    """Pairs of image and label files returning ``(image, mask)``.

    Items are ``(tv_tensors.Image uint8 (3, H, W) RGB, tv_tensors.Mask int64 (H, W))`` with classes ``0..K-1``
    and void = 255, passed through ``transforms`` when given.

    Args:
        files: ``(image_path, mask_path)`` pairs.
        classes: names and colours of the ``K`` classes.
        decode_mask: reads a mask file into a ``(H, W)`` uint8 array of classes and 255.
        transforms: paired transform called as ``transforms(image, mask)``.
        cache: keep every decoded uint8 sample in memory, so each file is decoded once per process (with a
            ``DataLoader``, once per worker: use ``persistent_workers=True``). Off by default: a pair takes 4 bytes
            per pixel (uint8 RGB and mask); the process's RSS grew by 777 kB per 360x480 CamVid pair (271 MB for
            its 367 training pairs); a 1024x2048 Cityscapes pair is 8.4 MB, 25 GB for 2975 pairs per worker.
        verify: check at construction that every listed file exists.

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
    ) -> None:
        self.files = [(Path(i), Path(m)) for i, m in files]
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

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode item ``index`` without transforms (from the cache when enabled).

        Returns:
            uint8 image ``(3, H, W)`` and uint8 mask ``(H, W)`` (classes and 255).

        Raises:
            DataError: unreadable file, image and mask of different sizes, or an invalid label value.
        """
        if index in self._cache:
            return self._cache[index]
        image_path, mask_path = self.files[index]
        image = read_image(image_path)
        mask = torch.from_numpy(np.ascontiguousarray(self.decode_mask(mask_path)))
        if tuple(image.shape[-2:]) != tuple(mask.shape):
            turned = tuple(image.shape[-2:]) == tuple(mask.shape[::-1])
            raise DataError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {image_path} is "
                f"{image.shape[2]}x{image.shape[1]}; image and mask must have the same size"
                + (
                    " (images are read upright, as their EXIF orientation says; masks as stored: save the mask "
                    "in the orientation the image is displayed in)"
                    if turned
                    else ""
                )
            )
        if self.cache:
            self._cache[index] = (image, mask)
        return image, mask

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
