"""The band count of a dataset and its per-band normalisation.

A dataset's images have ``B`` bands (:mod:`fcnseg.data.decode` says how a file is read for ``B``). Unless it is
given, ``B`` comes from the headers of the image files (:func:`infer_bands`). A model's input is normalised per band:
with ImageNet's mean and std when the data are RGB (``B == 3``, read as 8-bit, the statistics the pretrained
backbones were trained with), else with the mean and std of the training images in the ``[0, 1]`` scale of the
decoder (:func:`band_statistics`), which the checkpoint stores and exported models carry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from fcnseg.data.decode import image_bands
from fcnseg.data.errors import DataError
from fcnseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

MAX_STATISTICS_IMAGES = 200
"""Images :func:`band_statistics` reads by default: enough for stable per-band moments, bounded for large sets."""
_MIN_STD = 1e-6  # a band constant over the sample is divided by 1, not by 0


def infer_bands(paths: Sequence[Path]) -> int:
    """The band count of a set of images, from their headers.

    All grey -> 1; grey and RGB mixed, or all RGB -> 3 (grey images are then read as RGB, as always); all ``B``-band
    -> ``B``. Files whose header cannot be read are left out (reading them later names the problem).

    Raises:
        DataError: other mixtures (for example 4- and 13-band images), naming an example file of each count.
    """
    examples: dict[int, Path] = {}
    for path in paths:
        try:
            examples.setdefault(image_bands(path), path)
        except DataError:
            continue
    counts = set(examples)
    if not counts:
        return 3
    if counts <= {1, 3}:
        return max(counts)
    if len(counts) == 1:
        return counts.pop()
    shown = ", ".join(f"{b} band{'' if b == 1 else 's'} (e.g. {examples[b].name})" for b in sorted(examples))
    folder = examples[min(examples)].parent
    raise DataError(
        f"the images in {folder} have different band counts: {shown}; keep one kind per dataset, or choose the "
        "band count with --bands (files with another count are then named as errors)"
    )


class BandMoments:
    """Running per-band sums of values and squares over images, in the ``[0, 1]`` scale (uint8 / 255)."""

    def __init__(self) -> None:
        self.pixels = 0
        self.sum: np.ndarray | None = None
        self.sum_sq: np.ndarray | None = None

    def add(self, image: torch.Tensor, valid: np.ndarray | None = None) -> None:
        """Count one decoded image ``(B, H, W)``, uint8 or float32: all its pixels, or those ``valid`` ``(H, W)``."""
        x = image.detach().to("cpu", torch.float64).flatten(1)  # (B, H * W)
        if valid is not None:
            x = x[:, torch.from_numpy(valid.reshape(-1))]
        if image.dtype == torch.uint8:
            x /= 255.0
        self._accumulate(x.sum(1).numpy(), x.square().sum(1).numpy(), x.shape[1])

    def __iadd__(self, other: BandMoments) -> BandMoments:
        if other.sum is not None and other.sum_sq is not None:
            self._accumulate(other.sum, other.sum_sq, other.pixels)
        return self

    def _accumulate(self, sums: np.ndarray, squares: np.ndarray, pixels: int) -> None:
        if self.sum is None or self.sum_sq is None:
            self.sum, self.sum_sq = sums.copy(), squares.copy()
        elif len(sums) == len(self.sum):
            self.sum, self.sum_sq = self.sum + sums, self.sum_sq + squares
        else:
            raise ValueError(f"an image of {len(sums)} bands among images of {len(self.sum)}")
        self.pixels += pixels

    @property
    def mean(self) -> tuple[float, ...]:
        """``(B,)`` mean of each band."""
        if self.sum is None or not self.pixels:
            raise ValueError("no image was counted")
        return tuple(float(v) for v in self.sum / self.pixels)

    @property
    def std(self) -> tuple[float, ...]:
        """``(B,)`` standard deviation of each band (population; at least 1e-6, else 1 for a constant band)."""
        if self.sum_sq is None or not self.pixels:
            raise ValueError("no image was counted")
        var = np.maximum(self.sum_sq / self.pixels - np.square(np.asarray(self.mean)), 0.0)
        return tuple(float(s) if s >= _MIN_STD else 1.0 for s in np.sqrt(var))


class _Loadable(Protocol):
    bands: int

    def __len__(self) -> int: ...

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...


def band_statistics(
    dataset: _Loadable, max_images: int = MAX_STATISTICS_IMAGES
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and standard deviation of a dataset's images, in the decoder's ``[0, 1]`` scale.

    A bounded sample: at most ``max_images`` images, spread evenly over the dataset (all of them when it is smaller),
    every pixel of each counted (of a raster window, every pixel that is not nodata). Images that cannot be read are
    skipped.

    Returns:
        ``(mean, std)``, each ``(B,)``.

    Raises:
        DataError: no image of the sample could be read.
    """
    n = len(dataset)
    count = min(n, max_images)
    moments = BandMoments()
    for i in range(count):
        try:
            image, _ = dataset.load(i * n // count)
            valid = dataset.valid(i * n // count) if hasattr(dataset, "valid") else None  # rasters: not nodata
        except DataError as err:
            logger.debug("band statistics: skipping an image (%s)", err)
            continue
        moments.add(image, valid)
    if not moments.pixels:
        raise DataError(f"none of the {count} images sampled for the per-band mean and std could be read")
    logger.info(
        "per-band mean %s, std %s over %d of %d training images",
        _fmt(moments.mean),
        _fmt(moments.std),
        count,
        n,
    )
    return moments.mean, moments.std


def band_normalization(
    dataset: _Loadable, max_images: int = MAX_STATISTICS_IMAGES
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation a model of the dataset's band count uses: ImageNet's for RGB, else :func:`band_statistics`."""
    if dataset.bands == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return band_statistics(dataset, max_images)


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"
