"""Scanning a dataset for problems and class statistics, and median-frequency class weights.

``check_dataset`` reads every file of the given splits, records every problem instead of stopping at the first,
and counts what :func:`median_frequency_weights` needs (Eigen and Fergus, ICCV 2015, section 4.2; used by
SegNet): for each class, its pixels and the pixels of the images in which it appears.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnseg.core.progress import progress_bar
from fcnseg.data.bands import BandMoments
from fcnseg.data.classes import IGNORE_INDEX, RGB, ClassInfo
from fcnseg.data.colors import ColorTable
from fcnseg.data.dataset import LabelDecoder, MaskScaleError, SegmentationDataset
from fcnseg.data.errors import DataError
from fcnseg.data.folder import NotASplitList
from fcnseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from fcnseg.data.raster_windows import raster_files, raster_validation_grid
from fcnseg.data.registry import build_dataset, dataset_splits, default_splits

logger = logging.getLogger(__name__)


@dataclass
class ClassCounts:
    """Pixel statistics of ``K`` classes over a set of masks.

    Attributes:
        pixels: ``(K,)`` number of pixels of each class.
        image_pixels: ``(K,)`` total pixels (void included) of the images in which the class appears.
        void_pixels: number of void (255) pixels.
        void_image_pixels: total pixels of the images that contain void.
        total_pixels: all pixels counted.
    """

    pixels: np.ndarray
    image_pixels: np.ndarray
    void_pixels: int = 0
    void_image_pixels: int = 0
    total_pixels: int = 0

    @classmethod
    def zeros(cls, num_classes: int) -> ClassCounts:
        """Empty counts for ``num_classes`` classes."""
        return cls(np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64))

    def add(self, mask: torch.Tensor | np.ndarray) -> None:
        """Count one mask ``(H, W)`` of classes ``0..K-1`` and 255."""
        values = np.asarray(mask).ravel()
        hist = np.bincount(values, minlength=IGNORE_INDEX + 1)
        num_classes = len(self.pixels)
        present = hist[:num_classes] > 0
        self.pixels += hist[:num_classes]
        self.image_pixels[present] += values.size
        self.void_pixels += int(hist[IGNORE_INDEX])
        self.void_image_pixels += values.size if hist[IGNORE_INDEX] else 0
        self.total_pixels += values.size

    def __iadd__(self, other: ClassCounts) -> ClassCounts:
        self.pixels += other.pixels
        self.image_pixels += other.image_pixels
        self.void_pixels += other.void_pixels
        self.void_image_pixels += other.void_image_pixels
        self.total_pixels += other.total_pixels
        return self

    def __add__(self, other: ClassCounts) -> ClassCounts:
        return ClassCounts(
            self.pixels + other.pixels,
            self.image_pixels + other.image_pixels,
            self.void_pixels + other.void_pixels,
            self.void_image_pixels + other.void_image_pixels,
            self.total_pixels + other.total_pixels,
        )

    @property
    def frequencies(self) -> np.ndarray:
        """``(K,)`` share of each class among the labelled (non-void) pixels."""
        labelled = self.pixels.sum()
        return self.pixels / labelled if labelled else np.zeros(len(self.pixels))


def median_frequency_weights(counts: ClassCounts, *, void_in_median: bool = False) -> np.ndarray:
    """Median-frequency balancing weights (Eigen and Fergus 2015; SegNet).

    ``freq(c) = pixels of c / total pixels of the images where c is present`` and
    ``weight(c) = median(freq) / freq(c)``. Classes that never appear get weight 0 and are left out of the median.

    Args:
        counts: class statistics, e.g. ``check_dataset(...).class_counts("train")``.
        void_in_median: also count void as a class when taking the median. SegNet-Tutorial's CamVid weights
            were computed this way (the median over 12 labels, Unlabelled included); on CamVid train this
            reproduces 10 of their 11 weights within 11%, but not SignSymbol (2.7x off under any definition; see
            ``tests/test_data_camvid.py``).

    Returns:
        ``(K,)`` float64 weights.
    """
    pixels = np.asarray(counts.pixels, dtype=np.float64)
    image_pixels = np.asarray(counts.image_pixels, dtype=np.float64)
    present = pixels > 0
    if not present.any():
        raise ValueError("median_frequency_weights: no class has any pixel")
    freq = np.zeros_like(pixels)
    freq[present] = pixels[present] / image_pixels[present]
    pool = list(freq[present])
    if void_in_median and counts.void_pixels:
        pool.append(counts.void_pixels / counts.void_image_pixels)
    weights = np.zeros_like(freq)
    weights[present] = np.median(pool) / freq[present]
    if not present.all():
        logger.warning("classes %s have no pixels; their weight is 0", np.flatnonzero(~present).tolist())
    return weights


@dataclass
class Problem:
    """One problem found by :func:`check_dataset`: the file (or split) and what is wrong.

    ``kind`` is ``"error"`` (a file that cannot be used, or masks whose classes would be voided), ``"labels"``
    (labels that make a mean IoU mislead: a class never seen, a single class), ``"scale"`` (a mask stored at another
    scale than its image, reported as one group) or ``"warning"`` (suspicious, not fatal).
    """

    split: str
    file: str
    message: str
    kind: str = "error"

    def __str__(self) -> str:
        return f"[{self.split}] {self.file}: {self.message}"


@dataclass
class SplitReport:
    """What :func:`check_dataset` found in one split.

    Attributes:
        num_items: pairs listed in the split.
        num_ok: pairs that loaded without a problem.
        counts: class statistics over the pairs that loaded.
        sizes: ``(height, width) -> number of images`` over the pairs that loaded.
    """

    num_items: int
    num_ok: int
    counts: ClassCounts
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)

    def size_stats(self) -> dict[str, Any]:
        """Minimum, maximum and mean image height and width (empty dict when nothing loaded)."""
        if not self.sizes:
            return {}
        hw = np.array([s for s, n in self.sizes.items() for _ in range(n)], dtype=np.float64)
        return {
            "min_hw": tuple(int(v) for v in hw.min(0)),
            "max_hw": tuple(int(v) for v in hw.max(0)),
            "mean_hw": tuple(float(v) for v in hw.mean(0)),
            "distinct_sizes": len(self.sizes),
        }


@dataclass
class DataReport:
    """Result of :func:`check_dataset`.

    Attributes:
        name: dataset name.
        root: dataset root.
        classes: the dataset's classes (``None`` if no split could be built).
        splits: per-split results, for the splits that could be built.
        problems: every problem found, in scan order.
        unknown_pixels: colour-coded masks: ``colour -> pixels`` of colours that are neither a class nor void.
        unknown_files: ``colour -> number of files`` in which each unknown colour occurs.
        near_colors: ``(seen colour, matched colour) -> pixels`` decoded through ``color_tolerance``.
        bands: the image band count the dataset is read with (``None`` if no split could be built).
        band_moments: per-band sums over every image read, for :meth:`normalization` (counted when ``bands != 3``).
    """

    name: str
    root: str
    classes: ClassInfo | None
    splits: dict[str, SplitReport] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    unknown_pixels: Counter[RGB] = field(default_factory=Counter)
    unknown_files: Counter[RGB] = field(default_factory=Counter)
    near_colors: Counter[tuple[RGB, RGB]] = field(default_factory=Counter)
    readings: dict[str, str] = field(default_factory=dict)
    bands: int | None = None
    band_moments: BandMoments = field(default_factory=BandMoments)

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The per-band ``(mean, std)`` a model of these images uses: ImageNet's for RGB (``bands == 3``), else the
        moments of every image read (training computes them over its own split); ``None`` when nothing was read."""
        if self.bands == 3:
            return IMAGENET_MEAN, IMAGENET_STD
        return (self.band_moments.mean, self.band_moments.std) if self.band_moments.pixels else None

    @property
    def ok(self) -> bool:
        """True when no problem was found (warnings aside)."""
        return not any(p.kind != "warning" for p in self.problems)

    def class_counts(self, *splits: str) -> ClassCounts:
        """Class statistics summed over ``splits`` (all scanned splits when none are named)."""
        names = splits or tuple(self.splits)
        if not names or self.classes is None:
            raise ValueError("the report has no scanned split")
        total = ClassCounts.zeros(self.classes.num_classes)
        for name in names:
            total = total + self.splits[name].counts
        return total


def check_dataset(
    name: str,
    root: str | os.PathLike,
    splits: tuple[str, ...] | list[str] | None = None,
    *,
    progress: bool = True,
    **kwargs: Any,
) -> DataReport:
    """Read every file of ``splits`` and report problems and statistics, without stopping at the first problem.

    Args:
        name: dataset name (see :func:`fcnseg.data.build_dataset`).
        root: dataset root.
        splits: splits to scan; default: the dataset's labelled benchmark splits (all splits for ``folder``).
        progress: show a tqdm progress bar per split.
        **kwargs: dataset options (e.g. ``classes=`` for ``folder``).

    Returns:
        The report: per-split item counts, class pixel statistics, image sizes, and every problem.

    Raises:
        DataError: unknown dataset name or split (other problems are recorded in the report).
    """
    given = bool(splits)
    splits = tuple(splits) if splits else default_splits(name, root)
    valid = dataset_splits(name, root)
    unknown = [
        s for s in splits if s not in valid and not (name == "folder" and s.endswith(".txt") and Path(s).is_file())
    ]
    if unknown:
        raise DataError(f"unknown {name} split(s) {', '.join(unknown)}; valid splits: {', '.join(valid)}")
    report = DataReport(name=name, root=str(root), classes=None)
    kwargs.pop("cache", None)
    for split in splits:
        try:
            dataset = build_dataset(name, root, split, verify=False, **kwargs)
        except NotASplitList as err:
            if given:
                report.problems.append(Problem(split, str(root), str(err)))
            else:  # a README or notes beside the data, found while scanning every list file
                logger.info("not a split list, skipped: %s", err)
            continue
        except DataError as err:
            report.problems.append(Problem(split, str(root), str(err)))
            continue
        scan_split(dataset, split, report, progress=progress)
    return report


def scan_split(dataset: SegmentationDataset, split: str, report: DataReport, *, progress: bool = False) -> None:
    """Read every pair of ``dataset``; add its :class:`SplitReport`, its problems and its colour counts to ``report``.

    Each problem names the file it is about (the image or the mask), so that callers can leave that pair out.
    """
    report.classes = dataset.classes
    report.bands = report.bands or dataset.bands
    if isinstance(dataset.decode_mask, LabelDecoder):
        dataset.decode_mask.reset_counts()  # count this split's masks only
    split_report = SplitReport(len(dataset), 0, ClassCounts.zeros(dataset.classes.num_classes))
    missing = {path for path, _ in dataset.missing_files()}
    for path, what in dataset.missing_files():
        report.problems.append(Problem(split, str(path), what))
    rasters = raster_files(dataset.files)
    for index in progress_bar(range(len(dataset)), desc=f"check {report.name}/{split}", unit="img", enabled=progress):
        image_path, mask_path = dataset.files[index]
        if image_path in missing or mask_path in missing:
            continue
        try:
            scan = _scan_raster if rasters else _scan_pair
            size = scan(dataset, index, report, split_report.counts)
        except DataError as err:
            path, sep, message = str(err).partition(": ")
            is_path = sep and Path(path) in (image_path, mask_path)
            kind = "scale" if isinstance(err, MaskScaleError) else "error"
            report.problems.append(
                Problem(split, path if is_path else str(mask_path), message if is_path else str(err), kind)
            )
            continue
        split_report.num_ok += 1
        split_report.sizes[size] += 1
    report.splits[split] = split_report
    report.problems += label_findings(split, split_report.counts, dataset)
    report.readings[split] = mask_reading(dataset.decode_mask)
    table = getattr(dataset.decode_mask, "colors", None)
    if isinstance(table, ColorTable):
        report.unknown_pixels.update(table.unknown_pixels)
        report.unknown_files.update(table.unknown_files)
        report.near_colors.update(table.near)
        table.reset_counts()
    if isinstance(dataset.decode_mask, LabelDecoder):
        dataset.decode_mask.reset_counts()
    logger.info("%s/%s: %d of %d items read without problems", report.name, split, split_report.num_ok, len(dataset))


def _scan_pair(dataset: SegmentationDataset, index: int, report: DataReport, counts: ClassCounts) -> tuple[int, int]:
    """Read pair ``index`` whole; count its classes and bands. Returns its ``(H, W)``."""
    image, mask = dataset.load(index)
    if image.shape[0] == report.bands != 3:  # RGB takes ImageNet's statistics
        report.band_moments.add(image)
    counts.add(mask.numpy())
    return int(image.shape[1]), int(image.shape[2])


def _scan_raster(dataset: SegmentationDataset, index: int, report: DataReport, counts: ClassCounts) -> tuple[int, int]:
    """Read raster pair ``index`` by windows of a grid (never whole); count its classes and its bands' valid pixels.

    Each window counts as an image for :class:`ClassCounts`. Nothing is counted unless every window reads.
    """
    grid = raster_validation_grid(dataset, pairs=[dataset.files[index]])
    pair_counts, moments = ClassCounts.zeros(len(counts.pixels)), BandMoments()
    for window in range(len(grid)):
        image, mask = grid.load(window)
        if image.shape[0] == report.bands != 3:
            moments.add(image, grid.valid(window))
        pair_counts.add(mask.numpy())
    counts += pair_counts
    report.band_moments += moments
    return grid.shapes[0]


VOID_MAJORITY = 0.5
"""Share of a split's pixels above which void is reported: most of the data would teach nothing."""


def label_findings(split: str, counts: ClassCounts, dataset: SegmentationDataset) -> list[Problem]:
    """What the labels of a scanned split say about the options: binary masks whose foreground would be voided
    (an error), classes that never occur and a split of a single class (errors: a mean IoU over them would mislead),
    void over most of the pixels (a warning).

    Args:
        split: the split's name, for the messages.
        counts: the split's class statistics.
        dataset: the scanned dataset (its decoder counted the stored values).
    """
    found = []
    decoder = dataset.decode_mask
    silent = decoder.silent_void() if isinstance(decoder, LabelDecoder) else None
    if silent:
        found.append(Problem(split, _mask_folder(dataset), silent))
    if counts.total_pixels == 0:
        return found
    names = dataset.classes.names
    present = np.flatnonzero(counts.pixels)
    if len(names) > 1 and len(present) == 1:
        message = (
            f"the split holds a single class, {names[present[0]]}: a model that predicts it everywhere scores "
            "100 %; check the mask options (check-data names the reading it applied)"
        )
        found.append(Problem(split, "(labels)", message, "labels"))
    elif len(present) < len(names):
        absent = [names[k] for k in np.flatnonzero(counts.pixels == 0)]
        found.append(Problem(split, "(labels)", f"classes never seen: {', '.join(absent)}", "labels"))
    void_share = counts.void_pixels / counts.total_pixels
    if void_share > VOID_MAJORITY:
        found.append(Problem(split, "(labels)", f"void covers {100 * void_share:.0f} % of the pixels", "warning"))
    return found


def mask_reading(decoder: object) -> str:
    """How the scanned masks were read: ``"42 single-channel masks as class indices 0..10"``, and colour ones."""
    if not isinstance(decoder, LabelDecoder):
        return ""
    parts = []
    if decoder.files["single-channel"]:
        parts.append(f"{decoder.files['single-channel']} single-channel mask(s) as {decoder.reading}")
    if decoder.files["colour"]:
        parts.append(f"{decoder.files['colour']} colour mask(s) by the class colours")
    return ", ".join(parts)


def _mask_folder(dataset: SegmentationDataset) -> str:
    return str(dataset.files[0][1].parent) if dataset.files else "(masks)"


def scan_labels(dataset: SegmentationDataset, split: str, *, limit: int = 2000) -> tuple[ClassCounts, list[Problem]]:
    """Decode the masks (not the images) of ``dataset``, at most ``limit`` of them evenly spread, and return their
    class statistics and :func:`label_findings`: what ``fcnseg train`` checks before its first step.

    Unreadable masks are passed over here; reading the pairs reports them.
    """
    counts = ClassCounts.zeros(dataset.classes.num_classes)
    if isinstance(dataset.decode_mask, LabelDecoder):
        dataset.decode_mask.reset_counts()  # count these masks only
    step = max(1, len(dataset) // limit)
    for _, mask_path in dataset.files[::step][:limit]:
        try:
            counts.add(dataset.decode_mask(mask_path))
        except (DataError, OSError):
            continue
    findings = label_findings(split, counts, dataset)
    if isinstance(dataset.decode_mask, LabelDecoder):
        dataset.decode_mask.reset_counts()
    return counts, findings
