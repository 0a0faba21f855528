"""Segment a georeferenced raster window by window and write a georeferenced Cloud-Optimized GeoTIFF.

The raster is never read whole. Its windows are those of tiled inference on the whole raster
(:func:`~fcnseg.inference.tiling.tile_spans`: the stride-32 grid, margins at interior cuts, tent blending), so the
result equals :meth:`Predictor.predict` of the whole image with the same ``tile_size`` (tested), and windows wholly
nodata are neither read nor inferred. The output is computed in *blocks* of a few windows a side: a block gathers the
blended logits of the windows whose kept parts reach it, ``(K, block_h, block_w)`` float32 (at most
:data:`BLOCK_BYTES`), and writes its class indices (and probabilities) into the output file, so memory is bounded by
the window and the block, whatever the raster's size. Blocks start where a window's kept part starts, so with the
default overlap each window is inferred once. An OpenVINO model runs a graph compiled for the window's shape
(:meth:`~fcnseg.inference.runtimes.RuntimeModel.graphs_per_shape`), blocks of one window shape one after another.

Output: a tiled, DEFLATE-compressed GeoTIFF in COG layout (internal tiles of 512, overviews by nearest neighbour)
with the input's CRS, transform and size; class indices (uint8, or uint16 beyond 254 classes) with the class
colours as colour table and the class names in the metadata (``CLASS_NAMES``, JSON), nodata (255, or 65535) where the
input is nodata. Probabilities: one uint8 band per class, ``round(254 * p)``, the same nodata (scale ``1/254`` in the
file's band scales).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from fcnseg.core.io import atomic_path
from fcnseg.data.normalize import normalize_image
from fcnseg.data.raster import RasterReader, Window, require_rasterio
from fcnseg.inference.engine import class_indices
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.runtimes import RuntimeModel
from fcnseg.inference.tiling import Span, tile_spans

__all__ = ["BLOCK_BYTES", "DEFAULT_RASTER_TILE", "PROB_SCALE", "predict_raster", "raster_tile"]

logger = logging.getLogger(__name__)

DEFAULT_RASTER_TILE = (1024, 1024)
"""Window of a raster when the predictor has no ``tile_size`` (whole images are what rasters must avoid)."""
BLOCK_BYTES = 2**26
"""Largest blended-logit block (64 MiB of float32); a block holds at least one window's kept part."""
PROB_SCALE = 254
"""Probabilities are stored as ``round(PROB_SCALE * p)`` in uint8, 255 being nodata."""
_COG_BLOCK = 512
_GDAL_CACHE = 16 * 2**20  # GDAL's block cache, reading and writing (its default is 5 % of the machine's memory)


def raster_tile(predictor: Predictor, height: int, width: int) -> tuple[int, int]:
    """The window ``(h, w)`` for a ``height x width`` raster: the predictor's tile, its automatic choice, or
    :data:`DEFAULT_RASTER_TILE`, no larger than the raster."""
    tile = predictor.tile_size
    if tile == "auto":
        tile = predictor.tile_size_for(height, width) or (height, width)
    elif tile is None:
        tile = DEFAULT_RASTER_TILE
    return min(tile[0], height), min(tile[1], width)  # type: ignore[index]


def _groups(spans: list[Span], size: int, per_block: int) -> list[tuple[int, int]]:
    """Block bounds along an axis: each block starts where the kept part of every ``per_block``-th window starts."""
    starts = [spans[i].keep_start for i in range(0, len(spans), per_block)]
    return list(zip(starts, [*starts[1:], size], strict=True))


def _total(spans: list[Span], size: int) -> torch.Tensor:
    total = torch.zeros(size)
    for span in spans:
        total[span.start : span.stop] += span.weight()
    return total


class _Blocks:
    """The blocks of a raster and the windows (row span, column span) that reach each one."""

    def __init__(self, height: int, width: int, tile: tuple[int, int], overlap: float, classes: int):
        self.rows, self.cols = tile_spans(height, tile[0], overlap), tile_spans(width, tile[1], overlap)
        side = math.sqrt(BLOCK_BYTES / (4 * classes))
        stride_r = max(1, self.rows[1].start if len(self.rows) > 1 else height)
        stride_c = max(1, self.cols[1].start if len(self.cols) > 1 else width)
        self.row_blocks = _groups(self.rows, height, max(1, int(side // stride_r)))
        self.col_blocks = _groups(self.cols, width, max(1, int(side // stride_c)))
        self.row_total, self.col_total = _total(self.rows, height), _total(self.cols, width)

    def __iter__(self) -> Iterator[tuple[Window, list[tuple[Span, Span]]]]:
        """Blocks in row-major order, those whose windows have the same shapes together, and a block's windows by shape
        (the windows of the last row and column may be up to 31 pixels shorter): a runtime compiled per shape
        changes shape a few times per raster, not twice per row of windows."""
        first: dict[tuple, int] = {}
        return iter(sorted(self._row_major(), key=lambda block: first.setdefault(_shapes(block[1]), len(first))))

    def _row_major(self) -> Iterator[tuple[Window, list[tuple[Span, Span]]]]:
        for y0, y1 in self.row_blocks:
            rows = [r for r in self.rows if r.keep_start < y1 and r.keep_stop > y0]
            for x0, x1 in self.col_blocks:
                cols = [c for c in self.cols if c.keep_start < x1 and c.keep_stop > x0]
                windows = [(r, c) for r in rows for c in cols]
                yield (y0, x0, y1, x1), sorted(windows, key=lambda w: (w[0].stop - w[0].start, w[1].stop - w[1].start))


def _shapes(windows: list[tuple[Span, Span]]) -> tuple[tuple[int, int], ...]:
    return tuple(sorted({(r.stop - r.start, c.stop - c.start) for r, c in windows}))


def _graphs_per_shape(predictor: Predictor) -> contextlib.AbstractContextManager:
    """An OpenVINO model compiled per window shape while the raster is segmented (docs/geo.md, "Memory"): less
    memory and faster than its graph for any shape. Several scales give several shapes per window: left as it is."""
    model = predictor.model
    if isinstance(model, RuntimeModel) and len(predictor.scales) == 1:
        return model.graphs_per_shape()
    return contextlib.nullcontext()


def _window_logits(predictor: Predictor, reader: RasterReader, window: Window) -> torch.Tensor:
    """``(K, h, w)`` float32 logits of one window (the predictor's precision, flip and scales)."""
    values = torch.from_numpy(reader.read(window)).permute(2, 0, 1)[None]  # (1, B, h, w)
    x = normalize_image(values.to(predictor.device), predictor.mean, predictor.std)
    return predictor.infer(x)[0].float().cpu()


def _block_logits(
    predictor: Predictor, reader: RasterReader, block: Window, windows: list[tuple[Span, Span]], blocks: _Blocks
) -> torch.Tensor | None:
    """Blended ``(K, h, w)`` logits of ``block`` from the windows reaching it; ``None`` when all are nodata."""
    y0, x0, y1, x1 = block
    acc: torch.Tensor | None = None
    for row, col in windows:
        window = (row.start, col.start, row.stop, col.stop)
        if reader.has_nodata and not reader.valid(window).any():
            continue  # wholly nodata: never inferred
        logits = _window_logits(predictor, reader, window)  # (K, wh, ww)
        # The part of the window inside the block, in window and in block coordinates.
        ty0, ty1, tx0, tx1 = max(y0, row.start), min(y1, row.stop), max(x0, col.start), min(x1, col.stop)
        weight = (
            row.weight()[ty0 - row.start : ty1 - row.start, None]
            * col.weight()[None, tx0 - col.start : tx1 - col.start]
        )
        if acc is None:
            acc = torch.zeros(logits.shape[0], y1 - y0, x1 - x0)
        part = logits[:, ty0 - row.start : ty1 - row.start, tx0 - col.start : tx1 - col.start]
        acc[:, ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0].addcmul_(part, weight)  # in place: no weighted copy
        del logits, part  # before the next window's inference
    if acc is None:
        return None
    return acc.div_(blocks.row_total[y0:y1, None] * blocks.col_total[None, x0:x1])


def _profile(reader: RasterReader, count: int, dtype: str, nodata: int) -> dict:
    return {
        "driver": "GTiff",
        "height": reader.height,
        "width": reader.width,
        "count": count,
        "dtype": dtype,
        "crs": reader.crs,
        "transform": reader.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": _COG_BLOCK,
        "blockysize": _COG_BLOCK,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }


def predict_raster(
    predictor: Predictor,
    source: str | Path,
    out: str | Path,
    *,
    indexes: Sequence[int] | None = None,
    probs_out: str | Path | None = None,
) -> None:
    """Segment the raster ``source`` window by window and write ``out`` (and ``probs_out``) as COGs.

    Args:
        predictor: the model; its ``tile_size`` is the window (see :func:`raster_tile`), its overlap, precision,
            flip and scales apply (scales and the CRF per window).
        source: a GeoTIFF with a CRS, of the model's band count or with ``indexes`` selecting its bands.
        out: the class-index GeoTIFF to write (atomically).
        indexes: 1-based band indexes in the model's order (``--bands``).
        probs_out: also write the probabilities there (uint8, ``round(254 p)``, one band per class).

    Raises:
        DataError: the raster cannot be read, has no CRS or another band count (one line naming it).
    """
    rasterio = require_rasterio()
    kind = "RGB" if predictor.bands == 3 else f"{predictor.bands}-band"
    names, colors = predictor.classes.names, predictor.classes.colors
    k = len(names)
    dtype, nodata = ("uint8", 255) if k <= 254 else ("uint16", 65535)
    reason = f"its checkpoint was trained on {kind} images"
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(RasterReader(Path(source), predictor.bands, indexes, reason))
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE))
        mask_tmp = stack.enter_context(_scratch(Path(out)))
        probs_tmp = stack.enter_context(_scratch(Path(probs_out))) if probs_out else None
        tile = raster_tile(predictor, reader.height, reader.width)
        blocks = _Blocks(reader.height, reader.width, tile, predictor.overlap, k)
        logger.info("%s: %dx%d pixels, windows of %dx%d", source, reader.height, reader.width, *tile)
        with contextlib.ExitStack() as files:
            mask_ds = files.enter_context(rasterio.open(mask_tmp, "w", **_profile(reader, 1, dtype, nodata)))
            probs_ds = None
            if probs_tmp is not None:
                probs_ds = files.enter_context(rasterio.open(probs_tmp, "w", **_profile(reader, k, "uint8", 255)))
            files.enter_context(_graphs_per_shape(predictor))
            _write_blocks(predictor, reader, blocks, mask_ds, probs_ds, nodata)
        tags = {"CLASS_NAMES": json.dumps(list(names)), "SOURCE": Path(source).name}
        with atomic_path(out) as final:
            _to_cog(rasterio, mask_tmp, final, colors, tags)
        if probs_out and probs_tmp is not None:
            with atomic_path(probs_out) as final:
                _to_cog(rasterio, probs_tmp, final, None, tags, scales=[1 / PROB_SCALE] * k)


@contextlib.contextmanager
def _scratch(beside: Path) -> Iterator[Path]:
    """A temporary ``.tif`` beside ``beside`` (same disk), removed on exit."""
    beside.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{beside.stem}.", suffix=".partial.tif", dir=beside.parent)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _write_blocks(predictor: Predictor, reader: RasterReader, blocks: _Blocks, mask_ds, probs_ds, nodata: int) -> None:
    """Infer every block and write its class indices (and probabilities); nodata where the input is nodata."""
    with torch.inference_mode():
        for block, windows in blocks:
            _write_block(predictor, reader, blocks, block, windows, mask_ds, probs_ds, nodata)


def _write_block(
    predictor: Predictor,
    reader: RasterReader,
    blocks: _Blocks,
    block: Window,
    windows: list[tuple[Span, Span]],
    mask_ds,
    probs_ds,
    nodata: int,
) -> None:
    """Infer one block and write it; its logits and arrays are freed on return, before the next block's."""
    from rasterio.windows import Window as RioWindow

    y0, x0, y1, x1 = block
    where = RioWindow(x0, y0, x1 - x0, y1 - y0)
    valid = reader.valid(block)
    logits = _block_logits(predictor, reader, block, windows, blocks) if bool(valid.any()) else None
    if logits is None:
        mask = np.full((y1 - y0, x1 - x0), nodata, dtype=mask_ds.dtypes[0])
    else:
        mask = class_indices(logits[None])[0].numpy().astype(mask_ds.dtypes[0])
        mask[~valid] = nodata
    mask_ds.write(mask, 1, window=where)
    if probs_ds is not None:
        if logits is None:
            probs = np.full((probs_ds.count, y1 - y0, x1 - x0), 255, dtype=np.uint8)
        else:
            probs = logits.softmax(0).mul_(PROB_SCALE).round_().to(torch.uint8).numpy()
            probs[:, ~valid] = 255
        probs_ds.write(probs, window=where)


def _to_cog(rasterio, src: Path, dst: Path, colors, tags: dict, scales: list[float] | None = None) -> None:
    """Add the colour table, tags (and band scales) to ``src`` and copy it to ``dst`` in COG layout."""
    with rasterio.open(src, "r+") as ds:
        if colors is not None:
            ds.write_colormap(1, {i: (*map(int, c), 255) for i, c in enumerate(colors)})
        ds.update_tags(**tags)
        if scales is not None:
            ds.scales = scales
    from rasterio.shutil import copy as rio_copy

    rio_copy(
        src,
        dst,
        driver="COG",
        compress="DEFLATE",
        blocksize=_COG_BLOCK,
        overview_resampling="nearest",
        BIGTIFF="IF_SAFER",
    )
