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
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: cannot read image ({err})") from err
    return torch.from_numpy(array).permute(2, 0, 1)


def read_label_png(path: Path) -> np.ndarray:
    """Read a label image as stored: palette indices of a ``P`` PNG, values of an ``L``/``I`` PNG, or RGB.

    Args:
        path: a PNG (or other PIL-readable) label image.

    Returns:
        ``(H, W)`` integer array of stored values, or ``(H, W, 3)`` uint8 for colour-coded RGB(A) masks.

    Raises:
        DataError: the file is missing or cannot be decoded.
    """
    try:
        with Image.open(path) as img:
            if img.mode in ("RGB", "RGBA"):
                return np.asarray(img.convert("RGB"))
            if img.mode == "LA":
                img = img.convert("L")
            return np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: cannot read label image ({err})") from err


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
