"""Request bodies to model inputs: the image of an upload or of a tensor, within the server's limits.

An upload is decoded exactly as ``fcnseg predict`` decodes a file, because it is one: its bytes are written to a
temporary file that :meth:`Predictor.load` reads (the decoder of :mod:`fcnseg.data.decode`: EXIF orientation,
16-bit scaling, transparency, multi-band TIFFs). Before that, the header alone is read, so that an image beyond
``max_pixels`` (a decompression bomb: a small file claiming a huge image) is refused without being decoded. Every
refusal is a :class:`BadInput` with an HTTP status and one line for the caller:

- 400: an empty body, a truncated or corrupt image, a tensor that does not match its shape or type;
- 413: an image of more than ``max_pixels`` pixels (the body limit is the app's);
- 415: a content type that is not an image, or a body that is no image format the decoder reads;
- 422: an image of a band count the model cannot take.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from fcnseg.data.decode import band_mismatch, image_bands
from fcnseg.data.errors import DataError
from fcnseg.inference.predictor import Predictor

__all__ = ["V2_DATATYPES", "BadInput", "check_media_type", "decode_tensor", "decode_upload", "image_size"]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tif"}
V2_DATATYPES = {"UINT8": np.uint8, "UINT16": np.uint16, "FP32": np.float32}
"""Open Inference Protocol tensor types accepted as images, and their NumPy types."""


class BadInput(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line ``message`` for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_media_type(content_type: str | None) -> str:
    """The media type of a body meant to be an image: ``multipart/form-data``, ``image/*`` or raw bytes.

    A missing type is taken as raw bytes (the decoder recognises the format). Raises :class:`BadInput` (415) for any
    other type, e.g. ``application/x-www-form-urlencoded``, which ``curl --data-binary`` sends unless told.
    """
    media = (content_type or "").split(";")[0].strip().lower()
    if media in ("", "application/octet-stream", "multipart/form-data") or media.startswith("image/"):
        return media
    raise BadInput(
        415,
        f"content type {media!r} is not an image: send the file as multipart/form-data (field 'file') or as the raw "
        "body with Content-Type image/png, image/jpeg, image/tiff, ... or application/octet-stream",
    )


def image_size(data: bytes) -> tuple[str, int, int]:
    """``(format, width, height)`` from an image's header, without decoding its pixels.

    Raises:
        BadInput: the bytes are no image (415), or the header claims more pixels than Pillow allows (413).
    """
    if data[:4] in _TIFF_MAGIC:
        return ("TIFF", *_tiff_size(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller applies its own limit
            with Image.open(io.BytesIO(data)) as image:
                return image.format or "", image.width, image.height
    except Image.DecompressionBombError as err:
        raise BadInput(413, f"the image is a decompression bomb ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise BadInput(415, "the body is not an image (JPEG, PNG, TIFF, BMP, WebP, GIF ...)") from None


def _tiff_size(data: bytes) -> tuple[int, int]:
    import tifffile  # a dependency of the package; imported where TIFFs are read, as the decoder does

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            series = tif.series[0]
            axes, shape = series.axes, series.shape
            return int(shape[axes.index("X")]), int(shape[axes.index("Y")])
    except Exception:  # a parser of arbitrary bytes: damaged files raise struct.error, IndexError, ...
        raise BadInput(400, "the TIFF is damaged: its header cannot be read") from None


def decode_upload(data: bytes, predictor: Predictor, max_pixels: int, folder: Path) -> Any:
    """The image in ``data`` as :meth:`Predictor.load` returns it for a file (RGB PIL image or ``(H, W, B)`` array).

    Args:
        data: the uploaded file.
        predictor: the model's predictor (its band count and decoder).
        max_pixels: the largest image accepted (width x height).
        folder: where the temporary file is written (and removed).

    Raises:
        BadInput: see the module docstring.
    """
    if not data:
        raise BadInput(400, "empty body: send an image file")
    kind, width, height = image_size(data)
    _check_pixels(width, height, max_pixels)
    fd, name = tempfile.mkstemp(suffix=_SUFFIXES.get(kind, ".img"), prefix="upload-", dir=folder)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        _check_bands(path, predictor.bands)
        return predictor.load(path)
    except DataError as err:
        raise BadInput(400, str(err).replace(str(path), "upload")) from None
    finally:
        path.unlink(missing_ok=True)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise BadInput(
            413,
            f"the image is {width}x{height} = {width * height} pixels, more than this server's limit of {max_pixels} "
            "(--max-pixels); send a smaller image",
        )
    if width < 1 or height < 1:
        raise BadInput(400, f"the image is {width}x{height}: it has no pixels")


def _check_bands(path: Path, bands: int) -> None:
    """Refuse (422) a file whose band count no decoder rule turns into ``bands`` (grey <-> RGB are allowed)."""
    try:
        found = image_bands(path)
    except DataError:
        return  # unreadable: the decoder says why
    if found != bands and {found, bands} != {1, 3}:
        raise BadInput(422, band_mismatch("upload", found, bands, _model_bands(bands)))


def _model_bands(bands: int) -> str:
    return f"its checkpoint was trained on {'RGB' if bands == 3 else f'{bands}-band'} images"


def decode_tensor(tensor: dict[str, Any], predictor: Predictor, max_pixels: int) -> list[Any]:
    """The images of an Open Inference Protocol input tensor, each as :meth:`Predictor.load` returns it.

    Args:
        tensor: ``{"name", "shape", "datatype", "data"}``: ``shape`` ``[N, H, W, B]`` or ``[H, W, B]`` (``[H, W]``
            for one band), ``datatype`` one of :data:`V2_DATATYPES`, ``data`` the values, flat or nested, row-major;
            values follow the decoder's rules (uint8 as they are, 16-bit and float data scaled).

    Raises:
        BadInput: a type, shape or value that does not fit (400), too many pixels (413), the wrong bands (422).
    """
    datatype, shape = tensor.get("datatype"), list(tensor.get("shape") or [])
    if datatype not in V2_DATATYPES:
        raise BadInput(400, f"input datatype {datatype!r} is not an image type; use one of {', '.join(V2_DATATYPES)}")
    bands = predictor.bands
    if len(shape) == 2 and bands == 1:
        shape = [*shape, 1]
    if len(shape) == 3:
        shape = [1, *shape]
    if len(shape) != 4 or min(shape) < 1:
        raise BadInput(400, f"input shape {tensor.get('shape')} is not [N, H, W, B] or [H, W, B] with sizes >= 1")
    if shape[3] != bands and {shape[3], bands} != {1, 3}:
        raise BadInput(422, band_mismatch("input tensor", shape[3], bands, _model_bands(bands)))
    _check_pixels(shape[2], shape[1], max_pixels)
    try:
        array = np.asarray(tensor.get("data"), dtype=V2_DATATYPES[datatype])
    except (ValueError, TypeError, OverflowError) as err:
        raise BadInput(400, f"input data do not fit {datatype}: {str(err).splitlines()[0]}") from None
    if array.size != int(np.prod(shape)):
        raise BadInput(
            400, f"input data hold {array.size} values but shape {tensor.get('shape')} needs {np.prod(shape)}"
        )
    try:
        return [predictor.load(image) for image in array.reshape(shape)]
    except (DataError, ValueError) as err:
        raise BadInput(422, str(err)) from None
