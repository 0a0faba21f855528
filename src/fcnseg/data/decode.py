"""Reading images and label maps from disk, with errors that name the file.

One decoder serves training, evaluation and prediction (:func:`open_rgb`, :func:`to_rgb`), so that the same file
becomes the same pixels everywhere. Its rules, whatever the source (file, PIL image, NumPy array):

- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``): images are read as they are displayed, which is
  how annotation tools show them.
- Grayscale and palette images are expanded to RGB.
- Transparency (RGBA, LA, palette with a transparent index) is *composited on black*: ``rgb * alpha``. Fully
  transparent pixels carry undefined colours in many files; black is a neutral, repeatable choice.
- Integer data wider than 8 bits (16-bit PNG/TIFF ``I;16``, ``I``, uint16 arrays) is scaled linearly by
  ``255 / max(actual maximum, 255)``: 12- or 14-bit sensor data fills the 8-bit range instead of looking black
  (as it would divided by 65535), and data already within 0..255 is left unchanged.
- Floating-point data in ``[0, 1]`` is scaled by 255; larger floats follow the integer rule; NaN becomes 0.

Label maps are read as stored (:func:`read_label_png`), never rotated or rescaled.

PIL decodes images and label maps (it is as fast as ``torchvision.io``, whose decoders are deprecated since
torchvision 0.29, and it keeps the indices of palette PNGs such as VOC's); ``scipy.io.loadmat`` reads SBD's
``.mat`` files. Decoded arrays become tensors without a further copy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fcnseg.data.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File endings (lower case) taken as images: by the folder dataset and by ``fcnseg predict`` in a folder."""
# What PIL raises for a file it cannot decode: truncated or corrupt data (OSError, SyntaxError, ValueError), not an
# image at all (UnidentifiedImageError), or a header claiming more pixels than PIL allows (DecompressionBombError).
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)
# Label-map modes and how they are read: colour modes as RGB, the others as stored values.
_COLOR_MODES = ("RGB", "RGBA", "RGBX")
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_VALUE_MODES = ("P", "PA", "L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "I;16N")


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


def rgb_from_array(array: np.ndarray) -> Image.Image:
    """``(H, W)``, ``(H, W, 1|3|4)`` numeric array -> RGB image, following the module's rules."""
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


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image -> upright 8-bit RGB, following the module's rules (EXIF orientation first)."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_MODES:
        return rgb_from_array(np.asarray(image))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return rgb_from_array(np.asarray(image.convert("RGBA")))
    return image.convert("RGB")


def open_rgb(path: Path) -> Image.Image:
    """Decode an image file as upright 8-bit RGB (the module's rules).

    Raises:
        DataError: the file is missing, a folder, or cannot be decoded; the message names it and says why.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise DataError(f"{path}: cannot read image (no such file)") from None
    except IsADirectoryError:
        raise DataError(f"{path}: cannot read image (it is a directory)") from None
    except _DECODE_ERRORS as err:
        raise DataError(f"{path}: cannot read image ({_reason(err)})") from err


def read_image(path: Path) -> torch.Tensor:
    """Decode an image file for a dataset: :func:`open_rgb` as a tensor.

    Returns:
        uint8 tensor ``(3, H, W)`` (a channels-last view: no copy after decoding).

    Raises:
        DataError: the file is missing or cannot be decoded.
    """
    return torch.from_numpy(np.array(open_rgb(path))).permute(2, 0, 1)


def read_label_png(path: Path, *, palette_as_rgb: bool = False) -> np.ndarray:
    """Read a label image as stored: palette indices of a ``P`` PNG, values of an ``L``/``I`` PNG, or RGB.

    Args:
        path: a PNG (or other PIL-readable) label image.
        palette_as_rgb: return a palette (``P``) image as the RGB colours of its palette, for masks decoded
            through class colours (the palette order of such files need not be the class order).

    Returns:
        ``(H, W)`` integer array of stored values, or ``(H, W, 3)`` uint8 for colour-coded RGB(A) masks (the alpha
        channel is dropped).

    Raises:
        DataError: the file is missing or cannot be decoded, or its mode (CMYK, float, ...) is not a label format.
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in _COLOR_MODES or (palette_as_rgb and mode in ("P", "PA")):
                return np.asarray(img.convert("RGB"))
            if mode not in _VALUE_MODES:
                raise DataError(
                    f"{path}: a {mode} image is not a label map; save masks as PNG with class indices "
                    "(8- or 16-bit grayscale, or palette) or class colours (RGB)"
                )
            if mode in ("LA", "PA"):
                img = img.convert(mode[0])
            return np.asarray(img)
    except DataError:
        raise
    except _DECODE_ERRORS as err:
        raise DataError(f"{path}: cannot read label image ({_reason(err)})") from err


def _reason(err: Exception) -> str:
    """One line for a decoding error (PIL's bomb message is long)."""
    if isinstance(err, Image.DecompressionBombError):
        return f"decompression bomb: the header claims more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels"
    if isinstance(err, UnidentifiedImageError):
        return "not an image file, or an empty or unknown format"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def read_sbd_mat(path: Path) -> np.ndarray:
    """Read the class segmentation of an SBD ``cls/*.mat`` file (``GTcls.Segmentation``).

    Returns:
        ``(H, W)`` uint8 array of class indices.

    Raises:
        DataError: the file is missing, unreadable or has no ``GTcls.Segmentation`` field.
    """
    try:
        from scipy.io import loadmat
    except ImportError as err:  # pragma: no cover - scipy is in the "data" extra
        raise DataError("reading SBD .mat files needs scipy: pip install 'fcnseg[data]'") from err
    try:
        mat = loadmat(str(path), squeeze_me=True, struct_as_record=False)
        seg = mat["GTcls"].Segmentation
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
        raise DataError(f"{path}: cannot read SBD annotation GTcls.Segmentation ({err})") from err
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise DataError(f"{path}: GTcls.Segmentation has shape {seg.shape}, expected (H, W)")
    return seg
