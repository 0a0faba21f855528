"""``fcnseg predict CHECKPOINT INPUTS... --out DIR``: segment image files and write masks and overlays.

CHECKPOINT is a checkpoint written by ``fcnseg train`` or a model written by ``fcnseg export`` (``.onnx``,
OpenVINO ``.xml``) or ``fcnseg quantize`` (int8 ``.xml``). ``--backend auto`` (the default) runs on the CPU through
OpenVINO when it is installed (a checkpoint is converted once, in seconds, and cached), else through fcnseg's
PyTorch fast path; the backend used is printed.

INPUTS are image files, folders (searched recursively for .jpg/.jpeg/.png/.bmp/.tif/.tiff/.webp, in sorted
order) and glob patterns (``'photos/*.jpg'``, ``'data/**/*.png'``). For each image ``<stem>`` it writes
``<stem>.png`` (palette PNG: pixel value = class index, palette = the checkpoint's colours),
``<stem>_overlay.jpg`` (colours blended over the image: for images of other band counts than RGB, over the first
three bands or the grey band, scaled for display) and, with ``--probs``, ``<stem>_probs.npy``
(``(K, H, W)`` float32 softmax); once, ``legend.png``. Images found in sub-folders keep their relative path
under DIR, so equal stems in different folders do not overwrite each other.

GeoTIFFs (TIFFs with GeoTIFF tags; needs ``pip install 'fcnseg[geo]'``) are read window by window and give
``<stem>.tif``, a georeferenced COG of class indices (``<stem>_probs.tif`` with ``--probs``; polygons with
``--vector``), see docs/geo.md. Under ``torchrun`` each process takes a disjoint share of the inputs;
``--skip-existing`` resumes an interrupted run.
"""

from __future__ import annotations

import argparse
import glob
import logging
from pathlib import Path

import numpy as np

from fcnseg.cli.bulk import image_outputs, my_share, process_device, process_share
from fcnseg.cli.inference_args import (
    add_inference_arguments,
    add_model_argument,
    checked_model_file,
    predictor_options,
)
from fcnseg.cli.main import UserError
from fcnseg.cli.raster_args import add_raster_arguments, predict_rasters, raster_outputs, split_rasters
from fcnseg.core.io import atomic_path
from fcnseg.core.progress import progress_bar
from fcnseg.data.decode import IMAGE_SUFFIXES, is_junk
from fcnseg.inference.images import ImageReadError, save_mask_png
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.visualize import legend_image, overlay

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="segment images with a trained checkpoint", description=__doc__)
    add_model_argument(p)
    p.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--probs", action="store_true", help="also write <stem>_probs.npy (K, H, W) float32")
    add_inference_arguments(p)
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    p.add_argument("--keep-going", action="store_true", help="on an unreadable input, report it and continue")
    p.add_argument(
        "--skip-existing", action="store_true", help="skip inputs whose outputs all exist (resume a bulk run)"
    )
    add_raster_arguments(p)
    p.set_defaults(run=run)
    return p


def expand_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """``(file, output stem relative to --out)`` for every input file, folder and glob, in a stable order.

    A name that matches nothing is kept as given, so that it is reported as missing where it is processed.
    """
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(
                f
                for f in path.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_SUFFIXES
                and not any(is_junk(Path(part)) for part in f.relative_to(path).parts)
            )
            if not files:
                logger.warning("folder %s holds no images (%s)", path, ", ".join(IMAGE_SUFFIXES))
            found += [(f, f.relative_to(path).with_suffix("")) for f in files]
        elif not path.exists() and glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                logger.warning("pattern %r matches no files", item)
            found += [(m, Path(m.stem)) for m in matches]
        else:
            found.append((path, Path(path.stem)))
    seen: set[Path] = set()
    unique = []
    for file, stem in found:
        if file.resolve() not in seen:
            seen.add(file.resolve())
            unique.append((file, stem))
    return unique


def _flush(predictor: Predictor, pending: list, out: Path, args: argparse.Namespace) -> None:
    """Segment ``[(image, stem), ...]`` (same-size images together) and write their outputs."""
    results = predictor.predict_batch([im for im, _ in pending], return_probs=args.probs, batch_size=args.batch_size)
    colors = predictor.classes.colors
    for (image, stem), result in zip(pending, results, strict=True):
        mask, probs = result if args.probs else (result, None)
        save_mask_png(mask, colors, out / f"{stem}.png")
        with atomic_path(out / f"{stem}_overlay.jpg") as tmp:
            overlay(image, mask, colors, alpha=args.alpha).save(tmp, format="JPEG", quality=90)
        if probs is not None:
            with atomic_path(out / f"{stem}_probs.npy") as tmp:
                np.save(tmp, probs)
    pending.clear()


def run(args: argparse.Namespace) -> int:
    args.device = process_device(args.device)  # under torchrun with GPUs: this process's own
    predictor = Predictor.from_checkpoint(checked_model_file(args), **predictor_options(args))
    print(f"backend: {predictor.backend} ({predictor.computes_in}) on {predictor.device}", flush=True)
    files = expand_inputs(args.inputs)
    if not files:
        raise UserError("no input images found; pass files, folders or glob patterns")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if process_share()[0] == 0:
        with atomic_path(out / "legend.png") as tmp:
            legend_image(predictor.classes.names, predictor.classes.colors).save(tmp)
    files, rasters = split_rasters(files, args)
    # Under torchrun each process takes a disjoint share of the inputs (docs/geo.md); --skip-existing resumes.
    files = my_share(files, lambda _, stem: image_outputs(out, stem, args), args)
    rasters = my_share(rasters, lambda _, stem: list(raster_outputs(out, stem, args).values()), args)
    failures: list[str] = predict_rasters(predictor, rasters, out, args)  # GeoTIFFs: window by window (docs/geo.md)
    pending: list = []
    done = 0
    for file, stem in progress_bar(files, desc="predict", unit="img"):
        try:
            pending.append((predictor.load(file), stem))  # RGB, or the model's band count (multi-band TIFFs)
        except ImageReadError as err:
            if not args.keep_going:
                raise UserError(f"{err} (use --keep-going to skip unreadable inputs)") from err
            logger.error("%s", err)
            failures.append(str(err))
            continue
        if len(pending) >= args.batch_size:
            done += len(pending)
            _flush(predictor, pending, out, args)
    done += len(pending)
    if pending:
        _flush(predictor, pending, out, args)
    logger.info("wrote masks and overlays of %d image(s) to %s", done, out)
    if failures:
        logger.error("%d input(s) failed:\n  %s", len(failures), "\n  ".join(failures))
        return 1
    return 0
