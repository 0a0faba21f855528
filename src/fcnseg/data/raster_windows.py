"""Training samples from georeferenced rasters: random windows read from disk, never the whole raster.

A pair is an image GeoTIFF and a mask GeoTIFF of class indices (``0..K-1``; 255 and the mask's nodata are void)
on the same grid: the same CRS, transform and size, checked when the dataset is built (one line naming both files).
Each sample is a window of ``size`` pixels at a random place, drawn from the pair's share of the total area, read with
:class:`~fcnseg.data.raster.RasterReader` (the decoder's value rules and band selection); image pixels that are
nodata become void (255) in the mask, so the loss never sees them. Sample ``i`` of epoch ``e`` is the same window in
every run (the generator is seeded with ``(seed, e, i)``); call :meth:`RasterWindows.set_epoch` for new windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from fcnseg.data.classes import IGNORE_INDEX
from fcnseg.data.errors import DataError
from fcnseg.data.raster import RasterReader, Window, require_rasterio

__all__ = ["RasterWindows"]


def _grid(path: Path) -> tuple:
    rasterio = require_rasterio()
    try:
        with rasterio.open(path) as ds:
            return ds.crs, ds.transform, (ds.height, ds.width), ds.count
    except rasterio.errors.RasterioIOError as err:
        raise DataError(f"{path}: cannot open raster ({str(err).splitlines()[0]})") from err


def check_pair(image: Path, mask: Path) -> tuple[int, int]:
    """The ``(H, W)`` the image and mask rasters share.

    Raises:
        DataError: they differ in CRS, transform or size, or the mask has more than one band (one line, both files).
    """
    (crs, transform, size, _), (mcrs, mtransform, msize, mcount) = _grid(image), _grid(mask)
    for what, a, b in (("CRS", crs, mcrs), ("transform", transform, mtransform), ("size", size, msize)):
        if a != b:
            shown = (f"{a[1]}x{a[0]}", f"{b[1]}x{b[0]}") if what == "size" else (a, b)
            raise DataError(
                f"{image} and {mask} differ in {what} ({shown[0]} vs {shown[1]}); "
                "reproject the mask onto the image's grid (gdalwarp with the image's extent and resolution)"
            )
    if mcount != 1:
        raise DataError(f"{mask}: a mask raster has one band of class indices, this one has {mcount}")
    return size


class RasterWindows(torch.utils.data.Dataset):
    """Random ``size`` windows of image/mask raster pairs, read from disk per sample.

    Args:
        pairs: ``(image, mask)`` GeoTIFF paths on the same grid.
        size: ``(h, w)`` of a window (no larger than the smallest raster).
        samples: windows per epoch.
        bands: the model's band count; ``indexes`` selects the image's bands (1-based, GDAL's order).
        transforms: paired transform applied to ``(image, mask)``, as for the other datasets.
        seed: seed of the window positions.

    Items are ``(tv_tensors.Image (B, h, w), tv_tensors.Mask (h, w) int64)`` before ``transforms``.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str | Path, str | Path]],
        size: tuple[int, int],
        samples: int,
        *,
        bands: int,
        indexes: Sequence[int] | None = None,
        transforms=None,
        seed: int = 0,
    ) -> None:
        self.pairs = [(Path(i), Path(m)) for i, m in pairs]
        if not self.pairs:
            raise DataError("no raster pairs given")
        self.shapes = [check_pair(i, m) for i, m in self.pairs]
        small = [(p[0], s) for p, s in zip(self.pairs, self.shapes, strict=True) if s[0] < size[0] or s[1] < size[1]]
        if small:
            raise DataError(
                f"{small[0][0]}: {small[0][1][1]}x{small[0][1][0]} is smaller than the {size[1]}x{size[0]} window"
            )
        self.size, self.samples, self.bands, self.indexes = size, samples, bands, indexes
        self.transforms, self.seed, self.epoch = transforms, seed, 0
        areas = np.array([h * w for h, w in self.shapes], dtype=np.float64)
        self._weights = areas / areas.sum()
        self._readers: dict[int, tuple[RasterReader, RasterReader]] = {}  # opened in the process that reads

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples

    def window(self, index: int) -> tuple[int, Window]:
        """``(pair, (top, left, bottom, right))`` of sample ``index`` this epoch."""
        rng = np.random.default_rng((self.seed, self.epoch, index))
        pair = int(rng.choice(len(self.pairs), p=self._weights))
        (height, width), (h, w) = self.shapes[pair], self.size
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        return pair, (top, left, top + h, left + w)

    def _open(self, pair: int) -> tuple[RasterReader, RasterReader]:
        if pair not in self._readers:
            image, mask = self.pairs[pair]
            self._readers[pair] = (RasterReader(image, self.bands, self.indexes), RasterReader(mask, 1, [1]))
        return self._readers[pair]

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The window's image ``(B, h, w)`` and mask ``(h, w)`` int64, nodata void, before transforms."""
        pair, window = self.window(index)
        image_reader, mask_reader = self._open(pair)
        image = torch.from_numpy(image_reader.read(window)).permute(2, 0, 1)
        labels = mask_reader.read_stored(window)[0].astype(np.int64)  # stored class indices, not image values
        labels[~mask_reader.valid(window) | ~image_reader.valid(window)] = IGNORE_INDEX
        return image, torch.from_numpy(labels)

    def __getitem__(self, index: int):
        image, mask = self.load(index)
        item = (tv_tensors.Image(image), tv_tensors.Mask(mask))
        return self.transforms(*item) if self.transforms is not None else item

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_readers": {}}  # open files do not travel to DataLoader workers
