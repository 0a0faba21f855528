"""Reading any image a user may hand to ``fcnseg predict`` as a model's input, and writing class-index masks.

Files, PIL images and arrays go through the data layer's decoder (:mod:`fcnseg.data.decode`, whose docstring
gives the conversion rules: EXIF orientation, transparency on black, 16-bit and float scaling, band counts), the one
that training and evaluation read images with, so a file is the same pixels in ``fcnseg train``, ``eval`` and
``predict``. RGB models read 8-bit RGB (:func:`load_image`); models of other band counts read ``(H, W, B)`` arrays
(:func:`load_bands`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fcnseg.core.io import atomic_path
from fcnseg.data.decode import bands_from_array, open_rgb, pil_bands, read_bands, rgb_from_array, to_rgb, to_uint8
from fcnseg.data.errors import DataError
from fcnseg.inference.visualize import Colors, palette

__all__ = ["ImageReadError", "load_bands", "load_image", "save_mask_png", "to_uint8"]

ImageReadError = DataError
"""What :func:`load_image` raises for a file it cannot read (the data layer's error: the message names the file)."""


def _from_tensor(tensor: torch.Tensor) -> Image.Image:
    """``(H, W)`` or ``(C, H, W)`` tensor (C in 1, 3, 4; floats in [0, 1]) -> RGB image."""
    array = tensor.detach().cpu()
    if array.dtype in (torch.bfloat16, torch.float16):
        array = array.float()
    array = array.numpy()
    if array.ndim == 3:
        array = np.moveaxis(array, 0, -1)
    return rgb_from_array(array)


def load_image(source: str | os.PathLike | Image.Image | np.ndarray | torch.Tensor) -> Image.Image:
    """Load an image as 8-bit RGB; see the module docstring for how each kind of data is converted.

    Args:
        source: a file path (JPEG, PNG, BMP, TIFF, WebP, anything Pillow reads), a PIL image, a NumPy array
            ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``, or a tensor ``(H, W)`` or ``(3, H, W)``.

    Returns:
        An RGB PIL image, upright.

    Raises:
        ImageReadError: the file is missing or cannot be decoded (the message names it).
        TypeError: ``source`` is none of the above.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        return rgb_from_array(source)
    if isinstance(source, torch.Tensor):
        return _from_tensor(source)
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"cannot read an image from a {type(source).__name__}; pass a path, PIL image, array or tensor")
    return open_rgb(Path(source))


def load_bands(
    source: str | os.PathLike | Image.Image | np.ndarray | torch.Tensor, bands: int, reason: str | None = None
) -> Image.Image | np.ndarray:
    """Load an image for a model of ``bands`` bands (the decoder's rules for that count).

    Args:
        source: as :func:`load_image`; arrays ``(H, W)`` or ``(H, W, B)`` and tensors ``(H, W)`` or ``(B, H, W)``
            hold stored values (uint8, uint16, float, ...).
        bands: the model's band count ``B``.
        reason: where ``B`` comes from, for the band-count error.

    Returns:
        For ``B == 3`` the RGB PIL image of :func:`load_image`; else an ``(H, W, B)`` array, uint8 for 8-bit data and
        float32 in the decoder's ``[0, 1]`` scale otherwise.

    Raises:
        ImageReadError: the file cannot be read, or the image has another band count than ``B`` (one line naming
            it, its bands and the model's).
    """
    if bands == 3:
        return load_image(source)
    if isinstance(source, Image.Image):
        return bands_from_array(pil_bands(source), bands, "image", reason)
    if isinstance(source, torch.Tensor):
        array = source.detach().cpu()
        array = (array.float() if array.dtype in (torch.bfloat16, torch.float16) else array).numpy()
        return bands_from_array(np.moveaxis(array, 0, -1) if array.ndim == 3 else array, bands, "tensor", reason)
    if isinstance(source, np.ndarray):
        return bands_from_array(source, bands, "array", reason)
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"cannot read an image from a {type(source).__name__}; pass a path, PIL image, array or tensor")
    return read_bands(Path(source), bands, reason)


def save_mask_png(mask: np.ndarray | torch.Tensor, colors: Colors, path: str | os.PathLike) -> None:
    """Write a class-index mask ``(H, W)`` as a palette PNG, atomically.

    Pixel value = class index (void 255), the palette holds the class colours, unused entries and void are
    black; any image viewer shows the colours and any reader gets the indices back with ``np.asarray``.
    """
    array = _mask_array(mask)
    image = Image.fromarray(array, mode="P")
    image.putpalette(palette(colors).reshape(-1).tolist())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=False)


def _mask_array(mask: Any) -> np.ndarray:
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"mask values must be class indices 0..254 or void 255, got {array.min()}..{array.max()}")
    return np.ascontiguousarray(array.astype(np.uint8))
