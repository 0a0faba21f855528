"""Sliding-window inference: where the windows go, how their logits are blended, and a rolling accumulator.

Placement. Along each axis, windows of ``tile`` pixels step by ``tile * (1 - overlap)`` rounded down to a multiple
of 32, the output stride of FCN backbones, so that every window samples the image on the same stride-32 grid as
whole-image inference (an FCN's prediction depends on that phase). The last window starts on that grid too and
ends at the image border, so it may be up to 31 pixels shorter than ``tile``; no padding is ever added, and every
window edge is either an image border, treated by the network exactly as in whole-image inference, or an
interior cut.

Blending. A window's logits are least reliable near an interior cut, where the network sees zero padding instead
of the image. Each window therefore discards a *margin* of ``MARGIN_FRACTION`` of the overlap on each interior
side (never at an image border) and blends the rest, its *kept* part, with a tent weight (largest at the centre of
the kept part, small but positive at its ends). With the default of one half, neighbours meet in the middle of
their overlap, where both see the most context, and the tent only blends where the last window overlaps its
neighbour by more than that. ``benchmarks/tiled_agreement.py`` measures the share of pixels on which tiled and
whole-image inference agree, for a trained checkpoint on real images. The weight of window ``(r, c)`` is
``w_r(y) * w_c(x)`` and the windows form a grid, so the weight sum is separable too: ``W(y) * W(x)``.

Memory. :func:`iter_bands` processes one row of windows at a time and accumulates into a buffer of one window row,
``(N, K, tile_h, W)`` float32; rows that no later window reaches are normalised and handed out as a band, the
rest is carried to the next row. Whole-image logits take 4 x K x H x W bytes (1 GB for 21 classes at 12
megapixels); a band of 1024 rows of a 4000-pixel-wide image takes 4 x 21 x 1024 x 4000 bytes, 344 MB.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["MARGIN_FRACTION", "Span", "iter_bands", "tile_spans", "tile_starts"]

_ALIGN = 32  # output stride of FCN backbones (five stride-2 stages)
MARGIN_FRACTION = 0.5
"""Share of the overlap between neighbouring windows that each window discards on an interior side, at most 1/2;
the middle ``1 - 2 * MARGIN_FRACTION`` of the overlap is blended."""


@dataclasses.dataclass(frozen=True)
class Span:
    """One window along one axis: pixels ``[start, stop)`` are inferred, ``[keep_start, keep_stop)`` are used."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int

    def weight(self, device: torch.device | str = "cpu") -> Tensor:
        """``(stop - start,)`` float32: a tent over the kept part (``1/n`` at its ends, 1 in the middle), 0 outside."""
        n = self.keep_stop - self.keep_start
        i = torch.arange(n, device=device, dtype=torch.float32)
        weight = torch.zeros(self.stop - self.start, device=device)
        weight[self.keep_start - self.start : self.keep_stop - self.start] = torch.minimum(i + 0.5, n - i - 0.5)
        return weight.div_(n / 2)


def tile_spans(size: int, tile: int, overlap: float) -> list[Span]:
    """The windows along an axis of ``size`` pixels (see the module docstring).

    >>> [(s.start, s.stop) for s in tile_spans(200, 96, 1 / 3)]
    [(0, 96), (64, 160), (128, 200)]
    >>> [(s.keep_start, s.keep_stop) for s in tile_spans(200, 96, 1 / 3)]
    [(0, 80), (80, 144), (144, 200)]
    """
    if tile >= size:
        return [Span(0, size, 0, size)]
    stride = max(1, int(tile * (1.0 - overlap)))
    align = _ALIGN if stride >= _ALIGN else 1  # tiny tiles (tests, toy nets) are not aligned
    stride = stride // align * align
    starts = list(range(0, size - tile, stride))  # windows that end before the image does
    starts.append(math.ceil((size - tile) / align) * align)  # in (starts[-1], starts[-1] + stride]: no gap
    margin = int((tile - stride) * MARGIN_FRACTION)  # kept parts of neighbours still overlap: 2 * margin <= overlap
    spans = []
    for start in starts:
        stop = min(start + tile, size)
        keep_start = start + margin if start > 0 else 0
        keep_stop = stop - margin if stop < size else size
        spans.append(Span(start, stop, keep_start, keep_stop))
    return spans


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Window start offsets along one axis (multiples of 32 for strides of 32 or more).

    >>> tile_starts(10, 4, 0.5)
    [0, 2, 4, 6]
    """
    return [span.start for span in tile_spans(size, tile, overlap)]


def _weight_sum(spans: list[Span], size: int, device: torch.device) -> Tensor:
    total = torch.zeros(size, device=device)
    for span in spans:
        total[span.start : span.stop] += span.weight(device)
    return total


def iter_bands(
    forward: Callable[[Tensor], Tensor], images: Tensor, tile: tuple[int, int], overlap: float
) -> Iterator[tuple[int, Tensor]]:
    """Sliding-window logits, blended, delivered in horizontal bands from top to bottom.

    Args:
        forward: ``(N, 3, h, w) -> (N, K, h, w)`` logits of one window (any ``h, w`` up to ``tile``).
        images: ``(N, 3, H, W)`` network input.
        tile: ``(height, width)`` of the windows.
        overlap: fraction of a window shared with its neighbour, in ``[0, 1)``.

    Yields:
        ``(top, logits)`` with ``logits`` ``(N, K, rows, W)`` float32 for image rows ``top .. top + rows``; the
        bands follow one another and cover the image. A band is a view of a buffer that the next step reuses: use
        or copy it before asking for the next one. Windows run under ``torch.inference_mode``.
    """
    n, _, h, w = images.shape
    device = images.device
    rows = tile_spans(h, min(tile[0], h), overlap)
    cols = tile_spans(w, min(tile[1], w), overlap)
    if len(rows) == 1 and len(cols) == 1:
        with torch.inference_mode():
            logits = forward(images)
        yield 0, logits
        return
    col_weights = [c.weight(device) for c in cols]
    row_total, col_total = _weight_sum(rows, h, device), _weight_sum(cols, w, device)  # separable weight sum
    band: Tensor | None = None  # sums for image rows [row.start, row.start + band rows)
    done = 0  # rows above this one have been handed out
    for i, row in enumerate(rows):
        with torch.inference_mode():
            if band is not None:  # carry the unfinished rows [done, previous stop) to the top of the buffer
                carry = band[:, :, done - rows[i - 1].start : rows[i - 1].stop - rows[i - 1].start].clone()
                band.zero_()
                band[:, :, done - row.start : done - row.start + carry.shape[2]] = carry
                del carry
            row_weight = row.weight(device)[:, None]  # (rows, 1)
            for col, col_weight in zip(cols, col_weights, strict=True):
                logits = forward(images[:, :, row.start : row.stop, col.start : col.stop])  # (N, K, rows, cols)
                if band is None:
                    band = logits.new_zeros(n, logits.shape[1], rows[0].stop - rows[0].start, w)
                band[:, :, : row.stop - row.start, col.start : col.stop] += logits.mul_(row_weight * col_weight)
                del logits
            assert band is not None
            finished = rows[i + 1].keep_start if i + 1 < len(rows) else h  # no later window row reaches above it
            out = band[:, :, done - row.start : finished - row.start]
            out.div_(row_total[done:finished, None] * col_total[None, :])
        yield done, out
        done = finished
