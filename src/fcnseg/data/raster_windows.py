"""Training samples from georeferenced rasters: windows read from disk, never the whole raster.

A pair is an image GeoTIFF and a mask GeoTIFF of class indices (``0..K-1``; 255 and the mask's nodata are void)
on the same grid: the same CRS, transform and size, checked when the dataset is built (one line naming both files).
Windows are read with :class:`~fcnseg.data.raster.RasterReader` (the decoder's value rules and band selection); image
pixels that are nodata become void (255) in the mask, so the loss and the metrics never see them.

- :class:`RasterWindows` (training): each sample is a window of ``size`` pixels at a random place, drawn from the
  pair's share of the total area. Sample ``i`` of epoch ``e`` is the same window in every run (the generator is
  seeded with ``(seed, e, i)``); call :meth:`RasterWindows.set_epoch` for new windows.
- :class:`RasterGrid` (validation): the rasters cut into a fixed grid of windows, each pixel in exactly one of them;
  windows wholly nodata are left out.

:func:`raster_training_windows` and :func:`raster_validation_grid` turn a folder dataset whose images are
georeferenced (:func:`raster_files`) into these, keeping its classes and its reading of mask values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from fcnseg.data.classes import IGNORE_INDEX, ClassInfo
from fcnseg.data.dataset import LabelDecoder, SegmentationDataset
from fcnseg.data.errors import DataError
from fcnseg.data.raster import RasterReader, Window, is_georeferenced, require_rasterio

__all__ = ["RasterGrid", "RasterWindows", "raster_files", "raster_training_windows", "raster_validation_grid"]

VALIDATION_WINDOW = (1024, 1024)
"""Side of a validation window: the window ``fcnseg predict`` reads rasters with by default."""

Pairs = Sequence[tuple[str | Path, str | Path]]


def _grid(path: Path) -> tuple:
    rasterio = require_rasterio()
    try:
        with rasterio.open(path) as ds:
            return ds.crs, ds.transform, (ds.height, ds.width), ds.count
    except rasterio.errors.RasterioIOError as err:
        raise DataError(f"{path}: cannot open raster ({str(err).splitlines()[0]})") from err


def _shown(what: str, value) -> str:
    """A grid property on one line: ``WxH``, the six affine coefficients, or the CRS."""
    if what == "size":
        return f"{value[1]}x{value[0]}"
    if what == "transform":
        return "(" + ", ".join(f"{v:.12g}" for v in tuple(value)[:6]) + ")"
    return str(value)


def check_pair(image: Path, mask: Path) -> tuple[int, int]:
    """The ``(H, W)`` the image and mask rasters share.

    Raises:
        DataError: they differ in CRS, transform or size, or the mask has more than one band (one line, both files).
    """
    (crs, transform, size, _), (mcrs, mtransform, msize, mcount) = _grid(image), _grid(mask)
    for what, a, b in (("CRS", crs, mcrs), ("transform", transform, mtransform), ("size", size, msize)):
        if a != b:
            shown = [_shown(what, v) for v in (a, b)]
            raise DataError(
                f"{image} and {mask} differ in {what} ({shown[0]} vs {shown[1]}); "
                "reproject the mask onto the image's grid (gdalwarp with the image's extent and resolution)"
            )
    if mcount != 1:
        raise DataError(f"{mask}: a mask raster has one band of class indices, this one has {mcount}")
    return size


def raster_files(files: Sequence[tuple[Path, Path]]) -> bool:
    """Whether a dataset's images are georeferenced rasters (all of them) rather than photos (none of them).

    Raises:
        DataError: some are and some are not (one of each named).
    """
    geo = [is_georeferenced(image) for image, _ in files]
    if any(geo) and not all(geo):
        raster, photo = files[geo.index(True)][0], files[geo.index(False)][0]
        raise DataError(
            f"{raster} is a georeferenced raster but {photo} is not; a dataset holds rasters or photos, not both: "
            "keep them in two datasets, or add the missing CRS and transform (gdal_translate -a_srs -a_ullr)"
        )
    return bool(geo) and all(geo)


class _RasterPairs:
    """The image/mask readers of checked pairs, opened in the process that reads, and what a window of them holds."""

    def __init__(self, pairs: Pairs, bands: int, indexes: Sequence[int] | None, decoder: LabelDecoder | None):
        self.pairs = [(Path(i), Path(m)) for i, m in pairs]
        if not self.pairs:
            raise DataError("no raster pairs given")
        self.shapes = [check_pair(i, m) for i, m in self.pairs]
        self.bands, self.indexes, self.decoder = bands, indexes, decoder
        self._readers: dict[int, tuple[RasterReader, RasterReader]] = {}
        self._last_valid: tuple[int, Window, np.ndarray] | None = None

    def open(self, pair: int) -> tuple[RasterReader, RasterReader]:
        if pair not in self._readers:
            image, mask = self.pairs[pair]
            self._readers[pair] = (RasterReader(image, self.bands, self.indexes), RasterReader(mask, 1, [1]))
        return self._readers[pair]

    def read(self, pair: int, window: Window) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ``(B, h, w)`` and mask ``(h, w)`` int64 of ``window`` in ``pair``, nodata void, before transforms."""
        image_reader, mask_reader = self.open(pair)
        image = torch.from_numpy(image_reader.read(window)).permute(2, 0, 1)
        labels = self._classes(mask_reader.read_stored(window)[0], pair, window)  # stored values, not image values
        labels[~mask_reader.valid(window) | ~self.valid(pair, window)] = IGNORE_INDEX
        return image, torch.from_numpy(labels)

    def valid(self, pair: int, window: Window) -> np.ndarray:
        """``(h, w)`` bool: the image's pixels of ``window`` that hold data (not nodata).

        The last window's is kept: statistics ask for it right after :meth:`read`, and GDAL reads the data again to
        compute a nodata mask.
        """
        if self._last_valid is None or self._last_valid[:2] != (pair, window):
            self._last_valid = (pair, window, self.open(pair)[0].valid(window))
        return self._last_valid[2]

    def _classes(self, stored: np.ndarray, pair: int, window: Window) -> np.ndarray:
        """``(h, w)`` int64 classes of stored mask values, by the dataset's reading (the values as they are without)."""
        values = stored.astype(np.int64)
        if self.decoder is None:
            return values
        lut = self.decoder.lut
        inside = (values >= 0) & (values < len(lut))
        labels = np.where(inside, lut[np.where(inside, values, 0)], -1)
        if (labels < 0).any():
            bad = np.unique(values[labels < 0])[:10].tolist()
            raise DataError(f"{self.pairs[pair][1]}: mask values {bad} in window {window} are neither a class nor "
                            f"void, read as {self.decoder.reading}; {self.decoder.hint}")  # fmt: skip
        return labels

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_readers": {}, "_last_valid": None}  # nor open files to DataLoader workers


class RasterWindows(torch.utils.data.Dataset):
    """Random ``size`` windows of image/mask raster pairs, read from disk per sample.

    Args:
        pairs: ``(image, mask)`` GeoTIFF paths on the same grid.
        size: ``(h, w)`` of a window (no larger than the smallest raster).
        samples: windows per epoch; ``None``: as many as cover the rasters' area once, ``ceil(sum(H x W) / (h x w))``.
        bands: the model's band count; ``indexes`` selects the image's bands (1-based, GDAL's order).
        transforms: paired transform applied to ``(image, mask)``, as for the other datasets.
        seed: seed of the window positions.
        classes: the dataset's classes (:attr:`classes`, for the trainer).
        decoder: how stored mask values become classes (its look-up table, e.g. ``--mask-values``); ``None``: the
            stored values are the classes.

    Items are ``(tv_tensors.Image (B, h, w), tv_tensors.Mask (h, w) int64)`` before ``transforms``.
    """

    def __init__(
        self,
        pairs: Pairs,
        size: tuple[int, int],
        samples: int | None = None,
        *,
        bands: int,
        indexes: Sequence[int] | None = None,
        transforms=None,
        seed: int = 0,
        classes: ClassInfo | None = None,
        decoder: LabelDecoder | None = None,
    ) -> None:
        self._source = _RasterPairs(pairs, bands, indexes, decoder)
        self.pairs, self.shapes = self._source.pairs, self._source.shapes
        small = [(p[0], s) for p, s in zip(self.pairs, self.shapes, strict=True) if s[0] < size[0] or s[1] < size[1]]
        if small:
            raise DataError(
                f"{small[0][0]}: {small[0][1][1]}x{small[0][1][0]} is smaller than the {size[1]}x{size[0]} window"
                " (--crop-size H W)"
            )
        areas = np.array([h * w for h, w in self.shapes], dtype=np.float64)
        self._weights = areas / areas.sum()
        self.samples = samples if samples is not None else math.ceil(areas.sum() / (size[0] * size[1]))
        self.size, self.bands, self.indexes = size, bands, indexes
        self.transforms, self.seed, self.epoch, self.classes = transforms, seed, 0, classes

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

    def describe(self, index: int) -> str:
        """``"scene.tif[top:bottom, left:right]"``: where sample ``index`` of this epoch comes from."""
        pair, (top, left, bottom, right) = self.window(index)
        return f"{self.pairs[pair][0].name}[{top}:{bottom}, {left}:{right}]"

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The window's image ``(B, h, w)`` and mask ``(h, w)`` int64, nodata void, before transforms."""
        return self._source.read(*self.window(index))

    def valid(self, index: int) -> np.ndarray:
        """``(h, w)`` bool: the pixels of sample ``index`` whose image holds data (statistics skip the rest)."""
        return self._source.valid(*self.window(index))

    def __getitem__(self, index: int):
        image, mask = self.load(index)
        item = (tv_tensors.Image(image), tv_tensors.Mask(mask))
        return self.transforms(*item) if self.transforms is not None else item


def _cuts(length: int, step: int) -> list[tuple[int, int]]:
    return [(start, min(start + step, length)) for start in range(0, length, step)]


class RasterGrid(torch.utils.data.Dataset):
    """Image/mask raster pairs cut into a fixed grid of windows of at most ``size``; each pixel in exactly one.

    Windows at the right and bottom edges are smaller; windows whose image is wholly nodata are left out (their
    masks are all void). Arguments as for :class:`RasterWindows`; items are the windows in raster, row, column order.
    """

    def __init__(
        self,
        pairs: Pairs,
        size: tuple[int, int] = VALIDATION_WINDOW,
        *,
        bands: int,
        indexes: Sequence[int] | None = None,
        transforms=None,
        classes: ClassInfo | None = None,
        decoder: LabelDecoder | None = None,
    ) -> None:
        self._source = _RasterPairs(pairs, bands, indexes, decoder)
        self.pairs, self.shapes = self._source.pairs, self._source.shapes
        self.transforms, self.classes, self.bands = transforms, classes, bands
        self.windows: list[tuple[int, Window]] = []
        for pair, (height, width) in enumerate(self._source.shapes):
            image = self._source.open(pair)[0]
            for top, bottom in _cuts(height, size[0]):
                for left, right in _cuts(width, size[1]):
                    window = (top, left, bottom, right)
                    if not image.has_nodata or image.valid(window).any():
                        self.windows.append((pair, window))

    def __len__(self) -> int:
        return len(self.windows)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._source.read(*self.windows[index])

    def valid(self, index: int) -> np.ndarray:
        return self._source.valid(*self.windows[index])

    def __getitem__(self, index: int):
        image, mask = self.load(index)
        item = (tv_tensors.Image(image), tv_tensors.Mask(mask))
        return self.transforms(*item) if self.transforms is not None else item


def _decoder(dataset: SegmentationDataset) -> LabelDecoder | None:
    return dataset.decode_mask if isinstance(dataset.decode_mask, LabelDecoder) else None


def raster_training_windows(
    dataset: SegmentationDataset, size: tuple[int, int], *, min_samples: int = 1, seed: int = 0
) -> RasterWindows:
    """Random ``size`` windows of a raster dataset's pairs, as many per epoch as cover its area once.

    Samples per epoch: ``ceil(sum(H x W) / (h x w))``, at least ``min_samples`` (e.g. one global batch), so an epoch
    reads about as many pixels as the rasters hold. The dataset's transforms are not kept: set :attr:`transforms`.
    """
    windows = RasterWindows(dataset.files, size, bands=dataset.bands, seed=seed, classes=dataset.classes,
                            decoder=_decoder(dataset))  # fmt: skip
    windows.samples = max(windows.samples, min_samples)
    return windows


def raster_validation_grid(
    dataset: SegmentationDataset, size: tuple[int, int] = VALIDATION_WINDOW, pairs: Pairs | None = None
) -> RasterGrid:
    """A raster dataset's pairs (or ``pairs`` of it) on a fixed grid of ``size`` windows, with its transforms and
    classes."""
    return RasterGrid(dataset.files if pairs is None else pairs, size, bands=dataset.bands,
                      transforms=dataset.transforms, classes=dataset.classes, decoder=_decoder(dataset))  # fmt: skip
