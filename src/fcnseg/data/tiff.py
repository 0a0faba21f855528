"""TIFF headers and multi-band TIFFs, read with ``tifffile``.

Pillow reads the TIFFs of photographs (grey, RGB, RGBA, 8 or 16 bits) but not multi-band rasters: it takes a
4-band 16-bit RGB + NIR tile for 8-bit RGBA and drops bands of others without a word. ``tifffile`` (Christoph
Gohlke's reader, maintained since 2008, used by scikit-image, napari and many microscopy and remote-sensing tools;
pure Python and NumPy) reads any band count, sample type and planar layout. Both layouts come back as
``(H, W, C)``: "contig" files (``(H, W, C)`` pixels, series axes ``YXS``), "separate" planar files and page stacks
(``(C, H, W)``, axes ``SYX``, ``QYX``, ``CYX``, ``IYX``).

The decoder (:mod:`fcnseg.data.decode`) still reads with Pillow what Pillow reads correctly (:attr:`TiffInfo.
pillow`), so that those files decode as they always did, including compressions that ``tifffile`` needs the
optional ``imagecodecs`` package for (LZW, JPEG); the others are read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fcnseg.data.errors import DataError

_ALPHA = (1, 2)  # TIFF ExtraSamples: associated and unassociated alpha (0 is "unspecified", a band like the others)
MAX_SWAPPED_BANDS = 16
"""A stack of more pages than this, each at most this wide, is an (H, W, B) array written page by page."""
_BAND_AXES = "SCQI"  # tifffile's axis letters for samples, channels, unknown stacks, image sequences


@dataclass(frozen=True)
class TiffInfo:
    """What the header of a TIFF says.

    Attributes:
        bands: image bands: the samples per pixel (or stacked pages), less an alpha sample of 8-bit grey or RGB.
        samples: bands plus the alpha sample, if any.
        dtype: the sample type.
        alpha: an 8-bit grey + alpha or RGB + alpha image (the alpha is transparency, as in a PNG).
        pillow: Pillow reads it correctly: one page of 1 sample (8/16-bit, 1-bit, float) or of 8-bit grey/RGB with or
            without alpha.
    """

    bands: int
    samples: int
    dtype: np.dtype
    alpha: bool
    pillow: bool


def is_tiff(path: Path) -> bool:
    """Whether ``path`` ends in ``.tif`` or ``.tiff`` (any case)."""
    return Path(path).suffix.lower() in (".tif", ".tiff")


def _bands_of(axes: str, shape: tuple[int, ...], path: Path) -> int:
    extra = [(a, n) for a, n in zip(axes, shape, strict=True) if a not in "YX" and n > 1]
    if not extra:
        return 1
    if len(extra) > 1 or extra[0][0] not in _BAND_AXES:
        raise DataError(
            f"{path}: cannot tell the bands of a TIFF of shape {shape} (axes {axes}); save one image per file, "
            "(H, W, bands) or (bands, H, W)"
        )
    return extra[0][1]


def tiff_info(path: Path) -> TiffInfo:
    """Read the header of a TIFF (first image series).

    Raises:
        DataError: the file is missing, not a TIFF, or holds more than one image per page stack (a time series,
            a volume).
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series, page = tif.series[0], tif.pages[0]
            axes, shape, dtype = series.axes, tuple(series.shape), np.dtype(series.dtype)
            photometric, extrasamples = int(page.photometric), tuple(int(e) for e in page.extrasamples)
    except FileNotFoundError:
        raise DataError(f"{path}: cannot read image (no such file)") from None
    except Exception as err:  # a parser of arbitrary bytes: damaged files raise struct.error, TypeError, ...
        raise DataError(f"{path}: cannot read TIFF ({_reason(err)})") from err
    samples = _bands_of(axes, shape, path)
    stacked = any(a in "QCI" and n > 1 for a, n in zip(axes, shape, strict=True))
    if stacked and axes.endswith("YX") and shape[-1] <= MAX_SWAPPED_BANDS < samples:
        raise DataError(
            f"{path}: {samples} pages of {shape[-1]}x{shape[-2]} (WxH) pixels: likely an image of {shape[-1]} bands "
            f"stored as (H, W, B) pages; write it with tifffile.imwrite(path, array, photometric='minisblack', "
            f"planarconfig='contig'), or as a (B, H, W) array"
        )
    alpha = (
        dtype == np.uint8
        and not stacked
        and samples in (2, 4)
        and photometric in (1, 2)  # MINISBLACK, RGB
        and bool(extrasamples)
        and extrasamples[-1] in _ALPHA
    )
    bands = samples - 1 if alpha else samples
    if photometric == 3 or (photometric == 5 and samples == 4 and dtype == np.uint8):
        bands = 3  # a palette or an 8-bit CMYK image: colour, which Pillow converts to RGB
    single = samples == 1 and dtype in (np.uint8, np.uint16, np.bool_, np.float32)
    pillow = not stacked and (single or (dtype == np.uint8 and bands in (1, 3)))
    return TiffInfo(bands, samples, dtype, alpha, pillow)


def _reason(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return text or type(err).__name__


# TIFF Orientation (tag 274, as EXIF's) -> how to turn the stored (H, W, C) array upright, as Pillow's
# ImageOps.exif_transpose does (2: FLIP_LEFT_RIGHT, 3: ROTATE_180, 4: FLIP_TOP_BOTTOM, 5: TRANSPOSE,
# 6: ROTATE_270, 7: TRANSVERSE, 8: ROTATE_90; Pillow's rotations are counter-clockwise).
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def read_tiff(path: Path) -> np.ndarray:
    """The first image of a TIFF as ``(H, W, C)``, samples as stored, turned upright by its Orientation tag.

    Raises:
        DataError: the file cannot be read, or needs a codec that is not installed (the message says which).
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series, page = tif.series[0], tif.pages[0]
            array = series.asarray()
            axes = series.axes
            orientation = page.tags.get(274)
            orientation = int(orientation.value) if orientation is not None else 1
    except FileNotFoundError:
        raise DataError(f"{path}: cannot read image (no such file)") from None
    except Exception as err:  # as in tiff_info
        reason = _reason(err)
        hint = "; install it with `pip install imagecodecs`" if "imagecodecs" in reason else ""
        raise DataError(f"{path}: cannot read TIFF ({reason}{hint})") from err
    if len(axes) != array.ndim:  # a damaged file whose data do not have the shape its header describes
        raise DataError(f"{path}: cannot read TIFF (data of shape {array.shape} for axes {axes})")
    _bands_of(axes, array.shape, path)  # one image only
    keep = [i for i, (a, n) in enumerate(zip(axes, array.shape, strict=True)) if a in "YX" or n > 1]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if array.ndim == 2:
        array = array[..., None]
    elif axes.index("Y") > 0:  # (C, H, W): separate planes or a page stack
        array = np.moveaxis(array, 0, -1)
    array = _UPRIGHT.get(orientation, lambda a: a)(array)
    return np.ascontiguousarray(array)
