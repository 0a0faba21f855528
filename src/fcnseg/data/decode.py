"""Reading images and label maps from disk, with errors that name the file.

One decoder serves training, evaluation and prediction (:func:`read_bands`, :func:`open_rgb`, :func:`to_rgb`), so
that the same file becomes the same pixels everywhere. Its rules, whatever the source (file, PIL image, NumPy array):

- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``; the Orientation tag of TIFFs read by ``tifffile``
  alike): images are read as they are displayed, which is how annotation tools show them.
- Transparency (RGBA, LA, palette with a transparent index, 8-bit TIFFs whose extra sample is marked alpha) is
  *composited on black*: ``value * alpha``. Fully transparent pixels carry undefined colours in many files; black is
  a neutral, repeatable choice.

**Bands.** A file has 1 band (grey: ``L``, ``I;16``, ``I``, ``F``, 1-bit, grey + alpha), 3 (colour: RGB, RGBA,
palette, CMYK, YCbCr) or, for TIFFs, as many as its samples per pixel or stacked pages (:func:`image_bands`, from the
header). A model takes ``B`` bands (the dataset's ``bands``, the checkpoint's ``len(mean)``), and a file is read for
it as follows (:func:`read_bands`):

- ``B == 3`` (RGB models, the rule of every earlier version): grey and palette images are expanded to RGB, alpha is
  composited, and the values become 8-bit: integer data wider than 8 bits (16-bit PNG/TIFF ``I;16``, ``I``, uint16
  arrays and TIFFs) is scaled linearly by ``255 / max(actual maximum, 255)``, so that 12- or 14-bit sensor data fills
  the 8-bit range instead of looking black and data already within 0..255 is left unchanged; floating-point data in
  ``[0, 1]`` is scaled by 255, larger floats follow the integer rule, NaN becomes 0. A grayscale photo given to an RGB
  model therefore works as before, as its grey replica. A file of any other band count is an error.
- ``B == 1``: the file must be grey, or RGB whose three channels are equal everywhere (a grey image saved as RGB);
  an RGB file whose channels differ is an error.
- ``B == 2`` or ``B >= 4``: the file must have exactly ``B`` bands (multi-band TIFFs; an 8-bit 4-sample TIFF whose
  fourth sample is marked alpha is read as 4 bands here, and as RGB + alpha for ``B == 3``).
- A file of another band count raises :class:`DataError` in one line naming the file, its bands and the model's.

**Values for B != 3** keep a scale that is the same for every image, so that per-band statistics hold across images
(:func:`band_values`): 8-bit data stays uint8 (``value / 255`` in ``[0, 1]`` after ``ToDtype``); 16-bit data becomes
float32 ``value / 65535`` (not the image's maximum: 12-bit data in a 16-bit container stays in ``[0, 0.0625]``, and
the per-band mean and std computed from the training images normalise it); other unsigned integers are divided by
their type's maximum; signed integers and floats are kept as stored (float32, NaN -> 0).

Label maps are read as stored (:func:`read_label_png`), never rotated or rescaled.

PIL decodes images and label maps (it is as fast as ``torchvision.io``, whose decoders are deprecated since
torchvision 0.29, and it keeps the indices of palette PNGs such as VOC's); ``tifffile`` reads the TIFFs that Pillow
cannot represent (:mod:`fcnseg.data.tiff`); ``scipy.io.loadmat`` reads SBD's ``.mat`` files. Decoded arrays become
tensors without a further copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fcnseg.data.errors import DataError
from fcnseg.data.tiff import TiffInfo, is_tiff, read_tiff, tiff_info

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File endings (lower case) taken as images: by the folder dataset and by ``fcnseg predict`` in a folder."""
# What PIL raises for a file it cannot decode: truncated or corrupt data (OSError, SyntaxError, ValueError), not an
# image at all (UnidentifiedImageError), or a header claiming more pixels than PIL allows (DecompressionBombError).
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)
# Label-map modes and how they are read: colour modes as RGB, the others as stored values.
_COLOR_MODES = ("RGB", "RGBA", "RGBX")
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_VALUE_MODES = ("P", "PA", "L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "I;16N")
# Image modes of one band (grey); every other mode is read as three (colour).
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def is_junk(path: Path) -> bool:
    """Files beside the data that are never images or masks: hidden files, macOS ``._name`` resource files and
    ``__MACOSX`` folders, Windows ``Thumbs.db`` and ``desktop.ini``."""
    return path.name.startswith(".") or path.name.lower() in ("thumbs.db", "desktop.ini", "__macosx")


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
    with _image_errors(path), Image.open(path) as img:
        img.load()
        return to_rgb(img)


def read_image(path: Path, bands: int = 3, reason: str | None = None) -> torch.Tensor:
    """Decode an image file for a dataset: :func:`read_bands` as a tensor.

    Returns:
        ``(bands, H, W)`` tensor, uint8 (RGB, and 8-bit data) or float32 (see the module's rules), a channels-last
        view: no copy after decoding.

    Raises:
        DataError: the file is missing or cannot be decoded, or has another band count than ``bands``.
    """
    array = read_bands(path, bands, reason)
    if not array.flags.writeable:  # a view of the decoder's read-only buffer: tensors must own writable memory
        array = array.copy()
    return torch.from_numpy(array).permute(2, 0, 1)


def image_bands(path: Path) -> int:
    """The band count of an image file, from its header (the module's rule; alpha is not a band).

    Raises:
        DataError: the file is missing or is not an image.
    """
    path = Path(path)
    info = _tiff_header(path)
    if info is not None:
        return info.bands
    with _image_errors(path), Image.open(path) as img:
        return 1 if img.mode in _GREY_MODES else 3


def read_bands(path: Path, bands: int = 3, reason: str | None = None) -> np.ndarray:
    """Decode an image file for a model of ``bands`` bands, following the module's rules.

    Args:
        path: the image file.
        bands: the model's band count ``B``.
        reason: where ``B`` comes from, added to the band-count error (e.g. "its checkpoint was trained on
            4-band images").

    Returns:
        ``(H, W, B)`` array, upright: uint8 for ``B == 3`` and 8-bit data, else float32 (:func:`band_values`).

    Raises:
        DataError: the file is missing or cannot be decoded, or has another band count than ``B``.
    """
    path = Path(path)
    info = _tiff_header(path)
    if info is not None and (not info.pillow or (info.alpha and bands == info.samples)):
        array = read_tiff(path)
        if bands == 3 and array.shape[-1] in (1, 3):
            return np.array(rgb_from_array(array))
        return _fit_bands(array, bands, path, reason)
    if bands == 3:
        return np.array(open_rgb(path))
    with _image_errors(path), Image.open(path) as img:
        img.load()
        array = pil_bands(img)
    return _fit_bands(array, bands, path, reason)


def _tiff_header(path: Path) -> TiffInfo | None:
    """The header of a TIFF file; ``None`` for other files (and for a file named .tif that is no TIFF).

    Raises:
        DataError: a TIFF whose header cannot be read or whose layout is not an image (the message says why).
    """
    if not is_tiff(path) or not path.is_file():
        return None
    with open(path, "rb") as file:
        if file.read(2) not in (b"II", b"MM"):  # TIFF's byte-order mark
            return None
    return tiff_info(path)


def pil_bands(image: Image.Image) -> np.ndarray:
    """A PIL image as its stored values ``(H, W, C)``, upright: one band for grey modes, else RGB (alpha composited)."""
    if image.mode not in _GREY_MODES:
        return np.array(to_rgb(image))
    source_format = image.format
    image = ImageOps.exif_transpose(image)
    if image.mode in ("LA", "La"):
        la = np.asarray(image.convert("LA"))
        return np.rint(la[..., :1] * _alpha_to_unit(la[..., 1])[..., None]).astype(np.uint8)
    array = np.asarray(image)
    if image.mode == "I" and source_format == "PNG":  # a 16-bit PNG, as older Pillows open them
        array = array.clip(0, 65535).astype(np.uint16)
    return array[..., None]


def band_values(array: np.ndarray) -> np.ndarray:
    """Stored values ``(H, W, C)`` -> the fixed scale of the module's rules: uint8 kept, else float32."""
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array, dtype=np.uint8) * np.uint8(255)
    if np.issubdtype(array.dtype, np.unsignedinteger):
        return np.ascontiguousarray(array, dtype=np.float32) / np.float32(np.iinfo(array.dtype).max)
    values = np.ascontiguousarray(array, dtype=np.float32)
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0, copy=values is array)


def bands_from_array(array: np.ndarray, bands: int, name: str = "image", reason: str | None = None) -> np.ndarray:
    """An array ``(H, W)`` or ``(H, W, C)`` of stored values -> ``(H, W, B)`` by the rules for ``B != 3``.

    Raises:
        DataError: the array has another band count than ``bands``.
    """
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise DataError(f"{name}: an image array must be (H, W) or (H, W, bands), got shape {array.shape}")
    return _fit_bands(array, bands, name, reason)


def band_mismatch(name: object, found: int, bands: int, reason: str | None = None, detail: str = "") -> str:
    """The one line for a file of ``found`` bands given to a model of ``bands``."""
    what = f"{found} band{'' if found == 1 else 's'}{detail}"
    return f"{name}: {what}, but the model takes {bands}" + (f" ({reason})" if reason else "")


def _fit_bands(array: np.ndarray, bands: int, name: object, reason: str | None) -> np.ndarray:
    found = array.shape[-1]
    if found == bands:
        return band_values(array)
    if bands == 1 and found == 3:
        if (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all():
            return band_values(array[..., :1])
        raise DataError(band_mismatch(name, 3, 1, reason, " (RGB whose channels differ, so not grey)"))
    raise DataError(band_mismatch(name, found, bands, reason))


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
            if getattr(img, "n_frames", 1) > 1 and _second_frame_size(img) == img.size:  # not an overview
                raise DataError(f"{path}: holds {img.n_frames} images (pages or frames), a stack of masks; save one "
                                "mask per file, named after its image")  # fmt: skip
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


def _second_frame_size(img: Image.Image) -> tuple[int, int]:
    """The size of the second frame (page) of a multi-frame image; the image is left at its first frame."""
    img.seek(1)
    size = img.size
    img.seek(0)
    return size


@contextlib.contextmanager
def _image_errors(path: Path) -> Iterator[None]:
    """Turn what opening and decoding ``path`` raises into one :class:`DataError` line naming the file."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{path}: cannot read image (no such file)") from None
    except IsADirectoryError:
        raise DataError(f"{path}: cannot read image (it is a directory)") from None
    except _DECODE_ERRORS as err:
        raise DataError(f"{path}: cannot read image ({_reason(err)})") from err


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
