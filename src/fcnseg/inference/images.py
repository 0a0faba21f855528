"""Reading any image a user may hand to ``fcnseg predict`` as 8-bit RGB, and writing class-index masks.

Conversion rules of :func:`load_image`, whatever the source (file, PIL image, NumPy array, tensor):

- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), so masks match the image as it is displayed.
- Grayscale and palette images are expanded to RGB.
- Transparency (RGBA, LA, palette with a transparent index) is *composited on black*: ``rgb * alpha``. Fully
  transparent pixels carry undefined colours in many files; black is a neutral, repeatable choice.
- Integer data wider than 8 bits (16-bit PNG/TIFF ``I;16``, ``I``, uint16 arrays) is scaled linearly by
  ``255 / max(actual maximum, 255)``: 12- or 14-bit sensor data fills the 8-bit range instead of looking black
  (as it would divided by 65535), and data already within 0..255 is left unchanged.
- Floating-point data in ``[0, 1]`` is scaled by 255; larger floats follow the integer rule; NaN becomes 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fcnseg.core.io import atomic_path
from fcnseg.inference.visualize import Colors, palette

__all__ = ["ImageReadError", "load_image", "save_mask_png", "to_uint8"]

_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and says why."""


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale image data of any numeric dtype to uint8 following the module's rules (alpha excluded)."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    data = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    peak = float(data.max()) if data.size else 0.0
    if np.issubdtype(values.dtype, np.floating) and peak <= 1.0:
        data = data * 255.0
    else:
        data = data * (255.0 / max(peak, 255.0))
    return np.rint(data).clip(0, 255).astype(np.uint8)


def _alpha_to_unit(alpha: np.ndarray) -> np.ndarray:
    if np.issubdtype(alpha.dtype, np.integer):
        return alpha.astype(np.float32) / np.iinfo(alpha.dtype).max
    return np.nan_to_num(alpha.astype(np.float32)).clip(0, 1)


def _from_array(array: np.ndarray) -> Image.Image:
    """``(H, W)``, ``(H, W, 1|3|4)`` numeric array -> RGB image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return Image.fromarray(to_uint8(array), mode="L").convert("RGB")
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    rgb = to_uint8(array[..., :3])
    if array.shape[2] == 4:  # composite on black
        rgb = np.rint(rgb * _alpha_to_unit(array[..., 3])[..., None]).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")


def _from_tensor(tensor: torch.Tensor) -> Image.Image:
    """``(H, W)`` or ``(C, H, W)`` tensor (C in 1, 3, 4; floats in [0, 1]) -> RGB image."""
    array = tensor.detach().cpu()
    if array.dtype in (torch.bfloat16, torch.float16):
        array = array.float()
    array = array.numpy()
    if array.ndim == 3:
        array = np.moveaxis(array, 0, -1)
    return _from_array(array)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB, following the module's rules. EXIF orientation is applied first."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_MODES:
        return _from_array(np.asarray(image))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return _from_array(np.asarray(image.convert("RGBA")))
    return image.convert("RGB")


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
        return _to_rgb(source)
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, torch.Tensor):
        return _from_tensor(source)
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"cannot read an image from a {type(source).__name__}; pass a path, PIL image, array or tensor")
    path = Path(source)
    try:
        with Image.open(path) as image:
            image.load()
            return _to_rgb(image)
    except FileNotFoundError:
        raise ImageReadError(f"cannot read image '{path}': no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"cannot read image '{path}': it is a directory") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"cannot read image '{path}': not an image format Pillow recognises") from None
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt data, unsupported mode
        raise ImageReadError(f"cannot read image '{path}': {err}") from err


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
