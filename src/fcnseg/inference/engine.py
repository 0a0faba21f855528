"""The inference engine: whole-image, tiled (sliding window), multi-scale and flip inference.

One engine serves ``fcnseg eval``, ``fcnseg predict`` and :class:`~fcnseg.inference.predictor.Predictor`:
:func:`segment_logits` returns the logits, :func:`segment_bands` the same logits as horizontal bands. An FCN
(Long, Shelhamer and Darrell, 2015) is fully convolutional, so it takes an image of any size whole; tiling is only
needed when the whole image does not fit in memory. Test-time augmentation (scales, flip) averages logits, not
probabilities.

Tiling (:mod:`fcnseg.inference.tiling`): windows on the stride-32 grid, each discarding a margin at interior
cuts, blended with tent weights; single-scale inference accumulates one row of windows at a time and hands out
finished horizontal bands (:func:`segment_bands`), so the full ``(N, K, H, W)`` logits are only built when asked
for (:func:`segment_logits`).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.core.device import autocast, autocast_dtype
from fcnseg.inference.memory import MemoryModel, estimate_memory
from fcnseg.inference.tiling import iter_bands, tile_starts

__all__ = [
    "choose_tile_size",
    "class_indices",
    "rescale",
    "scaled_size",
    "segment_bands",
    "segment_logits",
    "tile_starts",
]

logger = logging.getLogger(__name__)

# FCN backbones downsample by 32 (five stride-2 stages); tiles that are multiples of 32 avoid uneven crops.
_TILE_MULTIPLE = 32
_MIN_TILE = 64
_ARGMAX_CHUNK = 2**22  # logits (16 MiB of float32) copied channels-last at a time for the argmax


def _forward(model: nn.Module, x: Tensor, amp: torch.dtype | None) -> Tensor:
    with autocast(x.device, amp):
        out = model(x)  # (N, K, h, w)
    if out.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"model returned logits of size {tuple(out.shape[-2:])} for an input of {tuple(x.shape[-2:])}")
    return out.float()


def _check(images: Tensor, tile_size: tuple[int, int] | None, overlap: float) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (N, B, H, W) (B = 3 for RGB), got shape {tuple(images.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if tile_size is not None and min(tile_size) < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size}")


def _bands(
    model: nn.Module, x: Tensor, tile_size: tuple[int, int] | None, overlap: float, amp: torch.dtype | None
) -> Iterator[tuple[int, Tensor]]:
    forward = functools.partial(_forward, model, amp=amp)
    if tile_size is None:
        with torch.inference_mode():
            logits = forward(x)
        yield 0, logits
    else:
        yield from iter_bands(forward, x, tile_size, overlap)


def _flip_averaged(
    model: nn.Module, x: Tensor, tile_size: tuple[int, int] | None, overlap: float, amp: torch.dtype | None
) -> Iterator[tuple[int, Tensor]]:
    plain, mirrored = _bands(model, x, tile_size, overlap, amp), _bands(model, x.flip(-1), tile_size, overlap, amp)
    for (top, a), (_, b) in zip(plain, mirrored, strict=True):  # same rows: the bands depend on H only
        with torch.inference_mode():
            band = a.add(b.flip(-1)).div_(2)
        yield top, band


def segment_bands(
    model: nn.Module,
    images: Tensor,
    *,
    tile_size: tuple[int, int] | None = None,
    overlap: float = 1 / 3,
    flip: bool = False,
    precision: str = "fp32",
) -> Iterator[tuple[int, Tensor]]:
    """Single-scale :func:`segment_logits`, delivered as horizontal bands from top to bottom.

    Tiled inference then holds one row of windows' logits, ``(N, K, tile_h, W)``, instead of ``(N, K, H, W)``:
    reduce each band (argmax, softmax) as it comes. Arguments are those of :func:`segment_logits`.

    Returns:
        An iterator of ``(top, logits)``, ``logits`` ``(N, K, rows, W)`` float32 for image rows ``top .. top + rows``;
        the bands follow one another and cover the image. A band may be a view of a buffer that the next step
        reuses: use or copy it before asking for the next one.
    """
    _check(images, tile_size, overlap)
    amp = autocast_dtype(precision, images.device)
    if flip:
        return _flip_averaged(model, images, tile_size, overlap, amp)
    return _bands(model, images, tile_size, overlap, amp)


def _gather(bands: Iterator[tuple[int, Tensor]], height: int) -> Tensor:
    """Bands ``(N, K, rows, W)`` -> ``(N, K, H, W)``."""
    out: Tensor | None = None
    for top, band in bands:
        if top == 0 and band.shape[2] == height:
            return band
        if out is None:
            out = band.new_empty(*band.shape[:2], height, band.shape[3])
        out[:, :, top : top + band.shape[2]] = band
    assert out is not None
    return out


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The size an image of ``height x width`` is inferred at for a test-time ``scale``."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def rescale(images: Tensor, scale: float) -> Tensor:
    """``(N, C, H, W)`` resized (bilinear) to :func:`scaled_size`, as test-time scales resize them."""
    h, w = images.shape[-2:]
    size = scaled_size(h, w, scale)
    return images if size == (h, w) else F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def segment_logits(
    model: nn.Module,
    images: Tensor,
    *,
    tile_size: tuple[int, int] | None = None,
    overlap: float = 1 / 3,
    scales: tuple[float, ...] = (1.0,),
    flip: bool = False,
    precision: str = "fp32",
) -> Tensor:
    """Segment normalised images: ``(N, 3, H, W) float -> (N, K, H, W) float32`` logits.

    Args:
        model: maps ``(N, 3, h, w)`` to ``(N, K, h, w)``; used as given (put it in eval mode first).
        images: normalised float images on the model's device.
        tile_size: ``(height, width)`` of the sliding window, or ``None`` to infer the whole image at once.
            Tiles apply to the image as resized for each scale.
        overlap: fraction of a window shared with its neighbour, in ``[0, 1)``.
        scales: resize factors; the logits of every scale are resized back to ``(H, W)`` and averaged.
        flip: also infer the horizontally flipped image and average its (unflipped) logits.
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` (autocast) or ``"auto"`` (see
            :func:`fcnseg.core.device.autocast_dtype`).

    Returns:
        Logits averaged over windows, scales and flips, float32, same device as ``images``.
    """
    _check(images, tile_size, overlap)
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {scales}")
    h, w = images.shape[-2:]
    total: Tensor | None = None
    with torch.inference_mode():
        for scale in scales:
            x = rescale(images, scale)
            bands = segment_bands(model, x, tile_size=tile_size, overlap=overlap, flip=flip, precision=precision)
            logits = _gather(bands, x.shape[-2])
            if x.shape[-2:] != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            if len(scales) == 1:
                return logits  # no copy: 1 GB for 21 classes at 12 megapixels
            total = logits.clone() if total is None else total.add_(logits)
        assert total is not None
        return total.div_(len(scales))


def class_indices(logits: Tensor) -> Tensor:
    """``(N, K, H, W)`` logits -> ``(N, H, W)`` class indices: ``logits.argmax(1)``, the lowest index on ties.

    uint8 when ``K <= 255``, else int64. On the CPU the argmax reads each pixel's ``K`` logits from contiguous
    memory: logits that are not channels-last already (OpenVINO's and the fast path's are) are copied to that layout
    a band of rows at a time (16 MiB), several times faster than reducing NCHW's strided class axis.
    """
    n, k, h, w = logits.shape
    dtype = torch.uint8 if k <= 255 else torch.int64
    if logits.device.type != "cpu" or logits.stride(1) == 1 or k == 1:
        return logits.argmax(1).to(dtype)
    out = torch.empty(n, h, w, dtype=dtype)
    rows = max(1, _ARGMAX_CHUNK // (n * k * w or 1))
    for top in range(0, h, rows):
        band = logits[:, :, top : top + rows].contiguous(memory_format=torch.channels_last)
        out[:, top : top + rows] = band.argmax(1)
    return out


def choose_tile_size(
    model_or_bytes_per_pixel: nn.Module | MemoryModel | float,
    image_hw: tuple[int, int],
    memory_budget_bytes: float,
    *,
    batch_size: int = 1,
    bytes_per_row: float = 0.0,
) -> tuple[int, int] | None:
    """Decide from a memory budget whether to tile, and pick the largest window that fits.

    The peak activation memory of one forward pass is modelled as ``c * (h + p) * (w + p)`` bytes per image
    (``p`` accounts for padding such as FCN's pad-100), measured on the model by
    :func:`~fcnseg.inference.memory.estimate_memory`, or given as a plain bytes-per-pixel figure (``p = 0``).

    Args:
        model_or_bytes_per_pixel: a model to probe (on its device, fp32: conservative for bf16/fp16), a
            :class:`MemoryModel`, or peak bytes per input pixel.
        image_hw: ``(H, W)`` of the network input.
        memory_budget_bytes: memory allowed for one forward pass of ``batch_size`` images (plus, when tiling,
            ``bytes_per_row`` per window row).
        batch_size: images inferred together.
        bytes_per_row: memory per image that tiling adds per row of window height, whatever the window width:
            the band of blended logits of :func:`segment_bands`, ``4 * K * W`` bytes per row.

    Returns:
        ``None`` when the whole image fits, else ``(tile_h, tile_w)``, multiples of 32 where the image allows,
        at least 64 (with a warning when even that exceeds the budget).
    """
    if isinstance(model_or_bytes_per_pixel, MemoryModel):
        mem = model_or_bytes_per_pixel
    elif isinstance(model_or_bytes_per_pixel, nn.Module):
        mem = estimate_memory(model_or_bytes_per_pixel)
    else:
        mem = MemoryModel(bytes_per_pixel=float(model_or_bytes_per_pixel), pad=0.0)
    h, w = image_hw
    budget = memory_budget_bytes / batch_size
    if mem.peak_bytes(h, w) <= budget:
        return None
    # Largest area that fits, as square as the image allows: c * (th + p) * (tw + p) + r * th <= budget, solved
    # for th = tw (a quadratic; with r = 0, th = sqrt(budget / c) - p), then for tw given th.
    c, p, r = mem.bytes_per_pixel, mem.pad, bytes_per_row

    def cost(th: int, tw: int) -> float:
        return mem.peak_bytes(th, tw) + r * th

    side = int((math.sqrt(r * r + 4 * c * (p * r + budget)) - 2 * c * p - r) / (2 * c))
    th = min(h, side)
    tw = min(w, int((budget - r * th) / c / (th + p) - p)) if th > 0 else 0

    def snap(t: int, limit: int) -> int:  # the whole axis, or a multiple of 32 no smaller than the floor
        return limit if t >= limit else min(limit, max(_MIN_TILE, t // _TILE_MULTIPLE * _TILE_MULTIPLE))

    tile = (snap(th, h), snap(tw, w))
    if cost(*tile) > budget:
        logger.warning(
            "memory budget of %.0f MiB is too small even for %dx%d tiles (about %.0f MiB); using them anyway",
            memory_budget_bytes / 2**20,
            *tile,
            cost(*tile) * batch_size / 2**20,
        )
    logger.debug("image %dx%d does not fit in %.0f MiB: tiling with %s", h, w, memory_budget_bytes / 2**20, tile)
    return tile
