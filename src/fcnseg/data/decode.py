"""Reading images and label maps from disk, with errors that name the file.

PIL decodes images and label maps (it is as fast as ``torchvision.io``, whose decoders are deprecated since
torchvision 0.29, and it keeps the indices of palette PNGs such as VOC's); ``scipy.io.loadmat`` reads SBD's
``.mat`` files. Decoded arrays become tensors without a further copy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fcnseg.data.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File endings (lower case) taken as images: by the folder dataset and by ``fcnseg predict`` in a folder."""
# What PIL raises for a file it cannot decode: truncated or corrupt data (OSError, SyntaxError, ValueError), not an
# image at all (UnidentifiedImageError), or a header claiming more pixels than PIL allows (DecompressionBombError).
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)
# Label-map modes and how they are read: colour modes as RGB, the others as stored values.
_COLOR_MODES = ("RGB", "RGBA", "RGBX")
_VALUE_MODES = ("P", "PA", "L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "I;16N")


def read_image(path: Path) -> torch.Tensor:
    """Decode an RGB image (grayscale, palette and RGBA files are converted).

    Args:
        path: an image file PIL can read (JPEG, PNG, BMP, TIFF, WebP).

    Returns:
        uint8 tensor ``(3, H, W)`` (a channels-last view: no copy after decoding).

    Raises:
        DataError: the file is missing or cannot be decoded.
    """
    try:
        with Image.open(path) as img:
            img.load()
            array = np.array(img if img.mode == "RGB" else img.convert("RGB"))
    except _DECODE_ERRORS as err:
        raise DataError(f"{path}: cannot read image ({_reason(err)})") from err
    return torch.from_numpy(array).permute(2, 0, 1)


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
