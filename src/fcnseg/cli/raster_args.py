"""``fcnseg predict`` on georeferenced rasters: the flags, and the raster inputs' outputs (docs/geo.md).

A GeoTIFF input (a TIFF with GeoTIFF tags) is segmented window by window
(:func:`fcnseg.inference.raster.predict_raster`) into ``<stem>.tif``, a COG of class indices with the input's
georeferencing (``<stem>_probs.tif`` with ``--probs``, polygons with ``--vector``); every other input takes the image
path, unchanged.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fcnseg.cli.main import UserError
from fcnseg.data.errors import DataError
from fcnseg.data.raster import is_georeferenced
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.raster import predict_raster
from fcnseg.inference.vector import write_polygons

logger = logging.getLogger(__name__)

VECTOR_FORMATS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}


def add_raster_arguments(parser: argparse.ArgumentParser) -> None:
    """``--bands``, ``--vector``, ``--min-area``, ``--simplify`` (GeoTIFF inputs)."""
    group = parser.add_argument_group("georeferenced rasters (GeoTIFF inputs; `pip install 'fcnseg[geo]'`)")
    group.add_argument(
        "--bands",
        type=int,
        nargs="+",
        metavar="N",
        help="raster bands to use, 1-based as in GDAL, in the model's order (e.g. --bands 4 3 2 8)",
    )
    group.add_argument(
        "--vector",
        metavar="FILE|FORMAT",
        help="also write the mask as polygons with their class: a .gpkg/.geojson file (one raster input), "
        "or 'gpkg'/'geojson' for <stem>.<format> in --out",
    )
    group.add_argument("--min-area", type=float, default=0.0, help="drop polygons smaller than this (CRS units²)")
    group.add_argument("--simplify", type=float, default=0.0, help="simplification tolerance (CRS units)")


def split_rasters(files: list[tuple[Path, Path]], args: argparse.Namespace) -> tuple[list, list]:
    """``(images, rasters)``: the inputs that take the image path and the georeferenced ones.

    Raises:
        UserError: raster flags without a raster input, ``--min-area``/``--simplify`` without ``--vector``, or
            ``--vector FILE`` for several rasters.
    """
    if (args.min_area or args.simplify) and not args.vector:
        raise UserError("--min-area and --simplify shape the polygons of --vector; add --vector FILE.gpkg")
    rasters = [(f, s) for f, s in files if is_georeferenced(f)]
    images = [(f, s) for f, s in files if not is_georeferenced(f)] if rasters else files
    if not rasters:
        used = [flag for flag, value in (("--bands", args.bands), ("--vector", args.vector)) if value]
        if used:
            raise UserError(f"{', '.join(used)} applies to georeferenced rasters (GeoTIFF), and no input is one")
        return files, []
    if args.vector and _vector_format(args.vector) is None and len(rasters) > 1:
        raise UserError(f"--vector {args.vector} names one file for {len(rasters)} rasters; use --vector gpkg")
    return images, rasters


def _vector_format(value: str) -> str | None:
    """``"gpkg"``/``"geojson"`` (one file per raster in --out), or ``None`` for a file name."""
    return value.lower() if value.lower() in ("gpkg", "geojson") else None


def raster_outputs(out: Path, stem: Path, args: argparse.Namespace) -> dict[str, Path]:
    """The files written for a raster: ``mask``, and ``probs`` and ``vector`` when asked for."""
    outputs = {"mask": out / f"{stem}.tif"}
    if args.probs:
        outputs["probs"] = out / f"{stem}_probs.tif"
    if args.vector:
        fmt = _vector_format(args.vector)
        outputs["vector"] = out / f"{stem}.{fmt}" if fmt else Path(args.vector)
    return outputs


def predict_rasters(
    predictor: Predictor, rasters: list[tuple[Path, Path]], out: Path, args: argparse.Namespace
) -> list:
    """Segment each raster into its outputs; the failures' messages (with ``--keep-going``, else the first raises)."""
    failures = []
    for file, stem in rasters:
        outputs = raster_outputs(out, stem, args)
        try:
            predict_raster(predictor, file, outputs["mask"], indexes=args.bands, probs_out=outputs.get("probs"))
            if "vector" in outputs:
                write_polygons(outputs["mask"], outputs["vector"], min_area=args.min_area, tolerance=args.simplify)
        except DataError as err:
            if not args.keep_going:
                raise UserError(f"{err} (use --keep-going to skip unreadable inputs)") from err
            logger.error("%s", err)
            failures.append(str(err))
    return failures
