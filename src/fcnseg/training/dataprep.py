"""The training and validation splits a run uses: a seeded split of a folder dataset without split lists,
``--skip-bad-samples``, which reads every pair once before training and leaves out those with a problem, and the
random windows that a folder of georeferenced rasters is trained on.

Both write what they decided into the run folder (``splits/train.txt``, ``splits/val.txt``, ``skipped.tsv``), so
that a resumed run, or a person, sees exactly what was used.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from fcnseg.core.io import write_text
from fcnseg.data import DataError, DataReport, SegmentationDataset, build_dataset, dataset_splits
from fcnseg.data.checks import scan_split
from fcnseg.data.raster_windows import RasterWindows, raster_training_windows

from .config import TrainConfig

log = logging.getLogger(__name__)


def resolve_splits(config: TrainConfig, folder: Path) -> tuple[str, str]:
    """The train and validation splits to build: the configured ones, or a seeded split of a folder dataset.

    With ``val_fraction``, the images of the training split (``all`` when the folder has no ``train.txt``) are
    shuffled with the run's seed and cut into ``folder/splits/train.txt`` and ``val.txt`` (kept on resume).

    Raises:
        DataError: a folder dataset without the split lists asked for, and no ``val_fraction``.
    """
    if config.dataset != "folder":
        return config.train_split, config.val_split
    valid = dataset_splits("folder", config.data_root)
    if config.val_fraction is None:
        missing = [s for s in (config.train_split, config.val_split) if s and s not in valid and not Path(s).is_file()]
        if missing:
            raise DataError(
                f"the folder dataset {config.data_root} has no split list {', '.join(f'{s}.txt' for s in missing)} "
                f"(its splits: {', '.join(valid)}); make a seeded split with --val-fraction 0.1, "
                "or train on every image with --train-split all --val-split ''"
            )
        return config.train_split, config.val_split
    train_list, val_list = folder / "splits" / "train.txt", folder / "splits" / "val.txt"
    if config.resume and train_list.is_file() and val_list.is_file():
        return str(train_list), str(val_list)
    source = config.train_split if config.train_split in valid else "all"
    stems = [image.stem for image, _ in build_dataset("folder", config.data_root, source, verify=False,
                                                      **config.builder_options()).files]  # fmt: skip
    val_count = max(1, round(config.val_fraction * len(stems)))
    if val_count >= len(stems):
        raise DataError(f"--val-fraction {config.val_fraction} leaves no training image out of {len(stems)}")
    random.Random(config.seed).shuffle(stems)
    val, train = sorted(stems[:val_count]), sorted(stems[val_count:])
    write_text(train_list, "".join(s + "\n" for s in train))
    write_text(val_list, "".join(s + "\n" for s in val))
    log.info("no split lists: split %d images of %r into %d train / %d val (seed %d), lists in %s",
             len(stems), source, len(train), len(val), config.seed, train_list.parent)  # fmt: skip
    return str(train_list), str(val_list)


def drop_bad_samples(
    dataset: SegmentationDataset, split: str, config: TrainConfig, folder: Path
) -> SegmentationDataset:
    """Read every pair of ``dataset``; return it without the pairs that have a problem, listed in ``skipped.tsv``.

    Raises:
        DataError: no pair of the split is readable.
    """
    report = DataReport(config.dataset, config.data_root, dataset.classes)
    scan_split(dataset, split, report, progress=True)
    bad = {Path(p.file): p.message for p in report.problems if p.kind in ("error", "scale")}
    kept = [pair for pair in dataset.files if not (pair[0] in bad or pair[1] in bad)]
    if report.unknown_pixels:
        total = sum(report.unknown_pixels.values())
        log.warning("%s: %d px of %d unknown colours decoded as void", split, total, len(report.unknown_pixels))
    if bad:
        path = folder / "skipped.tsv"
        old = path.read_text() if path.exists() else "split\tfile\tproblem\n"
        rows = "".join(f"{split}\t{file}\t{message}\n" for file, message in bad.items())
        write_text(path, old + rows if f"\n{split}\t" not in old else old)
        log.warning("%s: skipping %d of %d pairs with problems (listed in %s)",
                    split, len(dataset.files) - len(kept), len(dataset.files), path)  # fmt: skip
    if not kept:
        raise DataError(f"no readable pair in split {split!r}; see {folder / 'skipped.tsv'}")
    return dataset.with_files(kept)


def raster_windows(dataset: SegmentationDataset, config: TrainConfig, processes: int = 1) -> RasterWindows:
    """Random ``--crop-size`` windows of a dataset of rasters, read from disk; an epoch covers their area once, in at
    least one global batch. Windows are read at the rasters' resolution: ``--scale-range`` does not apply.

    Raises:
        DataError: no ``--crop-size``, or a pair off its image's grid or smaller than the crop (one line).
    """
    if not config.crop_size:
        raise DataError(f"the images in {config.data_root} are georeferenced rasters, trained on windows read from "
                        "disk: give the window with --crop-size H W")  # fmt: skip
    if config.scale_range is not None:
        log.info("rasters: windows are read at the rasters' resolution; --scale-range is not applied")
    if config.skip_bad_samples:
        log.warning("rasters: --skip-bad-samples does not apply; a bad pair or mask value stops training")
    batch = config.batch_size * processes
    return raster_training_windows(dataset, config.crop_size, min_samples=batch, seed=config.seed)
