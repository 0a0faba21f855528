"""Georeferenced rasters (GeoTIFF, Cloud-Optimized GeoTIFF) read window by window with rasterio.

A raster is never read whole: :class:`RasterReader` reads the windows that inference or a training sample needs,
with the band selection and order of GDAL (1-based indexes, ``--bands 4 3 2 8``), and converts their values by the
decoder's rules for the model's band count (:mod:`fcnseg.data.decode`), so that a window of a GeoTIFF is the same
pixels as the same part of the file decoded whole. The one rule that needs the whole raster (an RGB model on data
wider than 8 bits is scaled by the image's maximum) takes one extra pass over the raster's blocks.

Nodata: a pixel is nodata where every selected band is nodata, GDAL's dataset mask (the band's nodata value, NaN,
an internal mask band or an alpha band; :meth:`RasterReader.valid`).

rasterio ships GDAL in its wheels and is the optional extra ``geo``; a raster given without it installed is one
line naming the extra (:func:`require_rasterio`). Files are taken as rasters when their TIFF header holds GeoTIFF
tags (:func:`is_georeferenced`), which needs tifffile only, so that plain TIFF photos keep the decoder's path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fcnseg.data.decode import band_mismatch, band_values
from fcnseg.data.errors import DataError
from fcnseg.data.tiff import is_tiff

__all__ = ["GEO_EXTRA", "RasterReader", "Window", "is_georeferenced", "require_rasterio"]

GEO_EXTRA = "pip install 'fcnseg[geo]'"
# GeoTIFF tags: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
_GEO_TAGS = (33550, 33922, 34264, 34735)

Window = tuple[int, int, int, int]
"""``(top, left, bottom, right)`` pixel bounds of a raster window, bottom and right exclusive."""


def require_rasterio(what: str = "reading georeferenced rasters") -> ModuleType:
    """The ``rasterio`` module, or a :class:`DataError` in one line naming the extra that installs it."""
    try:
        import rasterio
    except ImportError:
        raise DataError(f"{what} needs rasterio, which is not installed: {GEO_EXTRA}") from None
    return rasterio


def is_georeferenced(path: Path) -> bool:
    """Whether ``path`` is a TIFF whose first image carries GeoTIFF tags (a CRS or a pixel-to-map transform)."""
    path = Path(path)
    if not is_tiff(path) or not path.is_file():
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            return any(code in tags for code in _GEO_TAGS)
    except Exception:  # not a TIFF after all, or damaged: the decoder's path reports it
        return False


def _reason(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


@dataclasses.dataclass(frozen=True)
class _Scale:
    """How stored values become the model's: the decoder's rules (``peak`` only for RGB models on wide data)."""

    rgb: bool
    peak: float | None = None

    def apply(self, values: np.ndarray) -> np.ndarray:
        if not self.rgb or values.dtype == np.uint8:
            return band_values(values)
        data = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
        peak = self.peak or 0.0
        data *= 255.0 if np.issubdtype(values.dtype, np.floating) and peak <= 1.0 else 255.0 / max(peak, 255.0)
        return np.rint(data).clip(0, 255).astype(np.uint8)


class RasterReader:
    """An open raster, read window by window for a model of ``bands`` bands.

    Args:
        path: a GeoTIFF (any file GDAL opens; it must have a CRS).
        bands: the model's band count ``B``.
        indexes: the raster's bands to use, 1-based as in GDAL, in the model's order (``B`` of them); by default
            all bands, which must then be ``B``.
        reason: where ``B`` comes from, for the band-count error.

    Raises:
        DataError: rasterio is missing, the file cannot be opened, has no CRS, or has another band count (one line
            naming the file).
    """

    def __init__(self, path: Path, bands: int, indexes: Sequence[int] | None = None, reason: str | None = None):
        rasterio = require_rasterio()
        self.path = Path(path)
        try:
            self._ds = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as err:
            raise DataError(f"{self.path}: cannot open raster ({_reason(err)})") from err
        try:
            self._check(bands, indexes, reason)
        except DataError:
            self._ds.close()
            raise
        self.height, self.width = self._ds.height, self._ds.width
        self.crs, self.transform = self._ds.crs, self._ds.transform
        flags = [self._ds.mask_flag_enums[i - 1] for i in self.indexes]
        self.has_nodata = not all(f == [rasterio.enums.MaskFlags.all_valid] for f in flags)
        rgb_wide = bands == 3 and np.dtype(self._ds.dtypes[self.indexes[0] - 1]) != np.uint8
        self._scale = _Scale(rgb=bands == 3, peak=self._peak() if rgb_wide else None)

    def _check(self, bands: int, indexes: Sequence[int] | None, reason: str | None) -> None:
        count = self._ds.count
        if self._ds.crs is None:
            raise DataError(
                f"{self.path}: the raster has no coordinate reference system; assign one "
                "(e.g. `gdal_edit.py -a_srs EPSG:32633 FILE`) or convert it to a plain image"
            )
        if indexes is None:
            if count != bands:
                raise DataError(band_mismatch(self.path, count, bands, reason) + "; choose them with --bands")
            indexes = range(1, count + 1)
        indexes = [int(i) for i in indexes]
        if len(indexes) != bands:
            raise DataError(f"{self.path}: --bands selects {len(indexes)} band(s), but the model takes {bands}")
        if not all(1 <= i <= count for i in indexes):
            raise DataError(f"{self.path}: --bands {' '.join(map(str, indexes))} out of range: the raster has {count}")
        if len({self._ds.dtypes[i - 1] for i in indexes}) != 1:
            raise DataError(f"{self.path}: the selected bands have different data types; select bands of one type")
        self.indexes = indexes

    @property
    def profile(self) -> dict[str, Any]:
        """The rasterio profile of the file (driver, size, CRS, transform, ...)."""
        return dict(self._ds.profile)

    def _window(self, window: Window) -> Any:
        from rasterio.windows import Window as RioWindow

        top, left, bottom, right = window
        return RioWindow(left, top, right - left, bottom - top)

    def _read(self, method: str, window: Window) -> np.ndarray:
        rasterio = require_rasterio()
        try:
            with warnings.catch_warnings():  # an alpha band shadowed by the nodata value: GDAL's mask, as documented
                warnings.simplefilter("ignore", rasterio.errors.NodataShadowWarning)
                return getattr(self._ds, method)(self.indexes, window=self._window(window))
        except rasterio.errors.RasterioError as err:
            raise DataError(f"{self.path}: cannot read raster window {window} ({_reason(err)})") from err

    def valid(self, window: Window) -> np.ndarray:
        """``(h, w)`` bool: pixels of ``window`` that hold data (not nodata in every selected band)."""
        top, left, bottom, right = window
        if not self.has_nodata:
            return np.ones((bottom - top, right - left), dtype=bool)
        return self._read("read_masks", window).any(axis=0)

    def read_stored(self, window: Window) -> np.ndarray:
        """``(B, h, w)`` values of ``window`` as stored (e.g. the class indices of a mask raster)."""
        return self._read("read", window)

    def read(self, window: Window) -> np.ndarray:
        """``(h, w, B)`` values of ``window`` by the decoder's rules (uint8, or float32 in the ``[0, 1]`` scale)."""
        return self._scale.apply(np.moveaxis(self._read("read", window), 0, -1))

    def _peak(self) -> float:
        """The largest stored value of the selected bands, over the raster's blocks (one pass, one block at a time)."""
        peak = 0.0
        for _, block in self._ds.block_windows(self.indexes[0]):
            window = (block.row_off, block.col_off, block.row_off + block.height, block.col_off + block.width)
            values = self._read("read", window)
            values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            valid = self.valid(window)
            if valid.any():
                peak = max(peak, float(values[:, valid].max()))
        return peak

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ds.close()

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
