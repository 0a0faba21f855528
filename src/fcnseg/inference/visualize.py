"""Showing a segmentation: colour masks, overlays on the image, and a legend of class colours.

Class ``k`` is drawn in ``colors[k]``; void (255) and any index outside ``0..K-1`` (negative ones included) are
black in a colour mask and left untinted in an overlay. This is the one ``colorize`` of the package; the evaluation
plots use it too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from fcnseg.data.classes import IGNORE_INDEX

__all__ = ["Colors", "colorize", "display_rgb", "legend_image", "overlay", "palette"]

Colors = Sequence[Sequence[int]]
"""RGB triples, one per class."""


def palette(colors: Colors) -> np.ndarray:
    """``(256, 3)`` uint8 lookup table: entry ``k`` is ``colors[k]``, all others (void included) black."""
    if len(colors) > IGNORE_INDEX:
        raise ValueError(f"at most {IGNORE_INDEX} class colours fit a palette, got {len(colors)}")
    table = np.zeros((256, 3), dtype=np.uint8)
    if len(colors):
        table[: len(colors)] = np.asarray(colors, dtype=np.int64).reshape(-1, 3).clip(0, 255)
    return table


def _mask_indices(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {array.shape}")
    return array.astype(np.int64)


def _class_colors(indices: np.ndarray, colors: Colors) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W)`` indices -> ``(H, W, 3)`` uint8 colours and the ``(H, W)`` mask of indices that are classes."""
    valid = (indices >= 0) & (indices < len(colors))  # void, negative and out-of-range indices are not
    return palette(colors)[np.where(valid, indices, IGNORE_INDEX)], valid  # palette entry IGNORE_INDEX is black


def colorize(mask: np.ndarray | torch.Tensor, colors: Colors) -> np.ndarray:
    """Class-index mask ``(H, W)`` -> colour image ``(H, W, 3)`` uint8; indices outside ``0..K-1`` are black."""
    return _class_colors(_mask_indices(mask), colors)[0]


def display_rgb(image: np.ndarray) -> np.ndarray:
    """An image of any band count ``(H, W, B)`` -> ``(H, W, 3)`` uint8 to look at.

    The first three bands as RGB (the grey band repeated for ``B < 3``); uint8 data as it is, other data scaled by
    ``255 / max`` of the bands shown (16-bit or float data in ``[0, 1]`` scale, 12-bit sensor data included).
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    shown = array[..., :3] if array.shape[-1] >= 3 else np.repeat(array[..., :1], 3, axis=-1)
    if shown.dtype == np.uint8:
        return np.ascontiguousarray(shown)
    values = np.nan_to_num(shown.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    peak = float(values.max()) if values.size else 0.0
    return np.rint(values * (255.0 / peak if peak > 0 else 0.0)).clip(0, 255).astype(np.uint8)


def overlay(
    image: Image.Image | np.ndarray, mask: np.ndarray | torch.Tensor, colors: Colors, alpha: float = 0.5
) -> Image.Image:
    """Blend class colours over an RGB image: ``(1 - alpha) * image + alpha * colour``; void stays untinted.

    Args:
        image: RGB image of the mask's size (PIL, or ``(H, W, 3)`` uint8), or an ``(H, W, B)`` array of another
            band count, drawn by :func:`display_rgb`.
        mask: class indices ``(H, W)``.
        colors: RGB triple per class.
        alpha: opacity of the colours, in ``[0, 1]``.
    """
    if isinstance(image, Image.Image):
        base = image.convert("RGB")
    else:
        array = np.asarray(image)
        rgb = array if array.ndim == 3 and array.shape[-1] == 3 and array.dtype == np.uint8 else display_rgb(array)
        base = Image.fromarray(rgb)
    indices = _mask_indices(mask)
    if (base.height, base.width) != indices.shape:
        raise ValueError(f"image is {base.width}x{base.height} but the mask is {indices.shape[1]}x{indices.shape[0]}")
    painted, tinted = _class_colors(indices, colors)
    # In uint8 through Pillow: a 12-megapixel overlay needs tens of MB, not the half GB of float32 arrays.
    blend = Image.blend(base, Image.fromarray(painted), alpha)
    return Image.composite(blend, base, Image.fromarray(tinted.astype(np.uint8) * 255))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable built-in font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def legend_image(names: Sequence[str], colors: Colors, *, swatch: int = 20, font_size: int = 14) -> Image.Image:
    """A white image listing one colour swatch and class name per row."""
    if len(names) != len(colors):
        raise ValueError(f"legend has {len(names)} names but {len(colors)} colours")
    font = _font(font_size)
    pad = swatch // 2
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max((int(measure.textlength(name, font=font)) for name in names), default=0)
    row = swatch + pad // 2
    size = (pad * 3 + swatch + text_width, pad * 2 + row * len(names))
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for i, (name, color) in enumerate(zip(names, colors, strict=True)):
        top = pad + i * row
        draw.rectangle(
            [pad, top, pad + swatch - 1, top + swatch - 1], fill=tuple(int(c) for c in color), outline="gray"
        )
        if isinstance(font, ImageFont.FreeTypeFont):
            draw.text((2 * pad + swatch, top + swatch // 2), name, fill="black", font=font, anchor="lm")
        else:  # bitmap fallback font: no anchors
            draw.text((2 * pad + swatch, top + swatch // 4), name, fill="black", font=font)
    return image
