"""``fcnseg eval CHECKPOINT --dataset NAME --data-root DIR --split SPLIT``: score a checkpoint on a dataset split.

A checkpoint records the dataset options of its run (``config``), so ``fcnseg eval RUN/best.pt --split test`` reads
the data as the run did; flags given here override them. A folder dataset split by ``--val-fraction`` keeps its
lists in the run folder (``RUN/splits/val.txt``), which ``--split val`` finds.

CHECKPOINT may also be a model written by ``fcnseg export`` (``.onnx``, OpenVINO ``.xml``) or ``fcnseg quantize``
(int8 ``.xml``): it is scored through the same runtime and engine as ``fcnseg predict`` runs it. ``--backend`` has
the default of ``fcnseg predict``'s (``auto``: OpenVINO when installed and on CPU), so eval scores predict's masks.

Prints per-class IoU/accuracy and the paper's four metrics (pixel accuracy, mean accuracy, mean IoU, frequency
weighted IoU) and, with ``--out``/``--json``, writes them as JSON with a confusion-matrix and a samples PNG.
Under ``torchrun`` each process evaluates part of the split; rank 0 prints and writes the metrics of the whole split.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from fcnseg.cli.dataset_args import add_dataset_arguments, data_options
from fcnseg.cli.inference_args import (
    add_inference_arguments,
    add_model_argument,
    checked_model_file,
    predictor_options,
)
from fcnseg.cli.main import UserError
from fcnseg.core.checkpoint import recorded_config
from fcnseg.core.device import resolve_device
from fcnseg.core.distributed import World, distributed_session
from fcnseg.data import DataOptions, build_dataset, dataset_splits, eval_transforms
from fcnseg.data.raster_windows import raster_files, raster_validation_grid
from fcnseg.inference.predictor import Predictor

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    """Register the ``eval`` subcommand."""
    p = subparsers.add_parser(
        name,
        help="evaluate a checkpoint on a dataset split (pixel acc, mean acc, mean IoU, fw IoU)",
        description=__doc__,
    )
    add_model_argument(p)
    add_dataset_arguments(p)
    p.add_argument("--split", default="val", help="split to evaluate (default: val)")
    p.add_argument(
        "--json", metavar="FILE", type=Path, help="write the metrics JSON here (default: OUT/metrics.json with --out)"
    )
    p.add_argument("--out", metavar="DIR", type=Path, help="report folder: metrics.json, confusion.png, samples.png")
    add_inference_arguments(p)
    p.add_argument(
        "--num-samples", metavar="N", type=int, default=6, help="images drawn in OUT/samples.png (default: 6)"
    )
    p.add_argument("--workers", metavar="N", type=int, default=2, help="data loading processes (default: 2)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--dist-timeout",
        metavar="S",
        type=float,
        default=600.0,
        help="under torchrun, seconds a process waits for the others before it fails (default: 600)",
    )
    p.set_defaults(run=run)
    return p


def _dataset_num_classes(dataset: object) -> int | None:
    classes = getattr(dataset, "classes", None)
    if classes is None:
        return None
    return len(classes.names) if hasattr(classes, "names") else len(classes)


def _data_options(args: argparse.Namespace, num_classes: int) -> DataOptions:
    """The dataset options: the flags given over those the checkpoint's run recorded."""
    exported = args.checkpoint.suffix.lower() in (".onnx", ".xml")
    recorded = {} if exported else recorded_config(args.checkpoint)
    options = data_options(args, recorded)
    if not options.dataset or not options.data_root:
        raise UserError("give --dataset and --data-root (a checkpoint of `fcnseg train` records them; an exported "
                        "model does not)")  # fmt: skip
    if options.dataset == "folder" and options.classes is None and options.mask_values is None:
        options.num_classes = options.num_classes or num_classes  # index masks of the model's classes
    return options


def _kind(bands: int) -> str:
    return "RGB" if bands == 3 else f"{bands}-band"


def _model_bands(options: DataOptions, bands: int) -> None:
    """Read a folder dataset's images with the model's band count (the other layouts are RGB)."""
    if options.dataset == "folder" and options.bands in (None, bands):
        options.bands = bands
    elif (options.bands or 3) != bands:
        given = f"--bands {options.bands}" if options.bands else f"the {options.dataset} dataset's RGB images"
        raise UserError(
            f"the model takes {_kind(bands)} images, not {given}; evaluate it on data like its training data"
        )


def _split(checkpoint: Path, options: DataOptions, split: str) -> str:
    """``split``, or the list the run wrote for it (``RUN/splits/val.txt``) when the dataset has no such split."""
    if options.dataset != "folder" or split in dataset_splits("folder", options.data_root):
        return split
    run_list = checkpoint.parent / "splits" / f"{split}.txt"
    return str(run_list) if run_list.is_file() else split


def _predictor(args: argparse.Namespace, device: torch.device) -> Predictor:
    """The predictor ``fcnseg predict`` would build with the same flags."""
    try:
        predictor = Predictor.from_checkpoint(args.checkpoint, **(predictor_options(args) | {"device": device}))
    except ValueError as err:
        raise UserError(str(err)) from err
    logger.info("scoring through %s %s", predictor.backend, predictor.computes_in)
    return predictor


def run(args: argparse.Namespace) -> int:
    """Evaluate ``args.checkpoint`` on ``args.dataset``/``args.split``; print the table, write the report."""
    checked_model_file(args)
    if args.num_samples < 0 or args.workers < 0:
        raise UserError("--num-samples and --workers must be 0 or more")
    if args.dist_timeout <= 0:
        raise UserError(f"--dist-timeout must be positive, got {args.dist_timeout}")
    try:  # a clear error for a bad --device before any process group is joined
        resolve_device(args.device or "auto")
    except ValueError as err:
        raise UserError(str(err)) from err
    with distributed_session(args.device or "auto", args.dist_timeout) as world:
        return _evaluate(args, world)


def _evaluate(args: argparse.Namespace, world: World) -> int:
    # Imported here, not at the top: `fcnseg --help` imports every subcommand module and should stay light.
    from fcnseg.evaluation import evaluate, format_table, write_report

    device = world.device
    predictor = _predictor(args, device)
    info = predictor.classes
    classes = {"names": list(info.names), "colors": [list(map(int, c)) for c in info.colors]}
    num_classes = len(classes["names"])

    transforms = eval_transforms(predictor.mean, predictor.std)
    options = _data_options(args, num_classes)
    _model_bands(options, predictor.bands)
    split = _split(args.checkpoint, options, args.split)
    dataset = build_dataset(
        options.dataset, options.data_root, split, transforms=transforms, **options.builder_options()
    )
    dataset.bands_reason = f"{args.checkpoint.name} was trained on {_kind(predictor.bands)} images"
    items = "images"
    if raster_files(dataset.files):  # georeferenced rasters are read by windows, never whole (docs/geo.md)
        dataset, items = raster_validation_grid(dataset), "raster windows"
    found = _dataset_num_classes(dataset)
    if found is not None and found != num_classes:
        raise UserError(
            f"dataset {options.dataset!r} has {found} classes but checkpoint {args.checkpoint} predicts {num_classes}; "
            "evaluate on the dataset the model was trained for"
        )
    names = getattr(getattr(dataset, "classes", None), "names", None)
    if names is not None and list(names) != list(classes["names"]):
        logger.warning("dataset class names %s differ from the checkpoint's %s", list(names), classes["names"])
    if len(dataset) == 0:
        raise UserError(f"split {split!r} of {options.dataset} under {options.data_root} has no images")
    logger.info(
        "evaluating %s on %s/%s: %d %s on %s", args.checkpoint, options.dataset, split, len(dataset), items, device
    )

    result = evaluate(  # the predictor's device and inference settings are used
        predictor,
        dataset,
        classes=classes,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        num_samples=args.num_samples if args.out else 0,
        num_workers=args.workers,
        world=world,
    )
    if not world.is_main:  # every process holds the same metrics; rank 0 reports and writes them
        return 0
    print(format_table(result.metrics))
    rate = result.num_images / max(result.seconds, 1e-9)
    print(f"{result.num_images} images in {result.seconds:.1f} s ({rate:.2f} img/s)")
    backend = f"{predictor.backend} {predictor.computes_in}"
    extra = {"checkpoint": str(args.checkpoint), "dataset": options.dataset, "split": split, "backend": backend}
    written = write_report(result, classes, args.out, json_path=args.json, extra=extra)
    for kind, path in written.items():
        print(f"wrote {kind}: {path}")
    return 0
