"""The inference engine: whole-image, tiled (sliding window), multi-scale and flip inference.

One function, :func:`segment_logits`, is shared by ``fcnseg eval``, ``fcnseg predict`` and
:class:`~fcnseg.inference.predictor.Predictor`. An FCN (Long, Shelhamer and Darrell, 2015) is fully
convolutional, so it takes an image of any size whole; tiling is only needed when the whole image does not
fit in memory. Test-time augmentation (scales, flip) averages logits, not probabilities.

Tiling: windows of ``tile_size`` step by ``tile * (1 - overlap)`` and the last window of each row/column is
flush with the image border, so every pixel is covered and no padding is needed. Overlapping window logits
are blended with a separable *tent* (triangular) weight, ``w(i) = min(i + 1/2, n - i - 1/2)``, which is
largest at the window centre, where the network sees the most context, and small but positive at the window
border, so that pixels covered by a single window (image borders) are still normalised correctly. The
blend accumulates into one ``(N, K, H, W)`` float32 sum and one ``(H, W)`` weight sum, never a per-window
full-image buffer.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.inference.memory import MemoryModel, estimate_memory

__all__ = [
    "PRECISIONS",
    "autocast_dtype",
    "choose_tile_size",
    "segment_logits",
    "tile_starts",
    "tile_weight",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# FCN backbones downsample by 32 (five stride-2 stages); tiles that are multiples of 32 avoid uneven crops.
_TILE_MULTIPLE = 32
_MIN_TILE = 64


def _cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 matrix maths natively (AMX or AVX512-BF16)."""
    caps = getattr(torch.cpu, "get_capabilities", None)
    if callable(caps):
        found = caps()
        return bool(found.get("amx_bf16") or found.get("avx512_bf16"))
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
        return "amx_bf16" in flags or "avx512_bf16" in flags
    return False


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means plain float32.

    ``"auto"`` picks bf16 on a CPU with AMX or AVX512-BF16 and on a CUDA device that supports bf16, else fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision != "auto":
        return _DTYPES[precision]
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Window start offsets along one axis: stride ``tile * (1 - overlap)``, the last window flush with the end.

    A stride of 32 or more is rounded down to a multiple of 32, so that interior windows sample the image on
    the same stride-32 grid as whole-image inference (an FCN's output depends on that phase).

    >>> tile_starts(10, 4, 0.5)
    [0, 2, 4, 6]
    >>> tile_starts(200, 96, 1 / 3)
    [0, 64, 104]
    """
    if tile >= size:
        return [0]
    stride = max(1, int(tile * (1.0 - overlap)))
    if stride >= _TILE_MULTIPLE:  # keep interior windows on the backbone's stride-32 grid (same sampling phase)
        stride = stride // _TILE_MULTIPLE * _TILE_MULTIPLE
    n = math.ceil((size - tile) / stride) + 1
    return sorted({min(i * stride, size - tile) for i in range(n)})


def tile_weight(height: int, width: int, *, device: torch.device | str = "cpu") -> Tensor:
    """Separable tent blending weight ``(height, width)``, 1 at the centre, ``1/n`` at the border."""

    def ramp(n: int) -> Tensor:
        i = torch.arange(n, device=device, dtype=torch.float32)
        return torch.minimum(i + 0.5, n - i - 0.5) / (n / 2)

    return ramp(height)[:, None] * ramp(width)[None, :]


def _forward(model: nn.Module, x: Tensor, amp: torch.dtype | None) -> Tensor:
    with _autocast(x.device, amp):
        out = model(x)  # (N, K, h, w)
    if out.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"model returned logits of size {tuple(out.shape[-2:])} for an input of {tuple(x.shape[-2:])}")
    return out.float()


def _segment_tiled(
    model: nn.Module, x: Tensor, tile: tuple[int, int], overlap: float, amp: torch.dtype | None
) -> Tensor:
    """Sliding-window logits ``(N, 3, H, W) -> (N, K, H, W)`` blended with :func:`tile_weight`."""
    n, _, h, w = x.shape
    th, tw = min(tile[0], h), min(tile[1], w)  # an image smaller than the tile is processed whole on that axis
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return _forward(model, x, amp)
    weight = tile_weight(th, tw, device=x.device)  # (th, tw)
    logit_sum: Tensor | None = None
    weight_sum = torch.zeros(h, w, device=x.device)
    for y in ys:
        for x0 in xs:
            window = _forward(model, x[:, :, y : y + th, x0 : x0 + tw], amp)  # (N, K, th, tw)
            if logit_sum is None:
                logit_sum = torch.zeros(n, window.shape[1], h, w, device=x.device)
            logit_sum[:, :, y : y + th, x0 : x0 + tw].add_(window * weight)
            weight_sum[y : y + th, x0 : x0 + tw].add_(weight)
    assert logit_sum is not None
    return logit_sum.div_(weight_sum)


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
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` (autocast) or ``"auto"`` (see :func:`autocast_dtype`).

    Returns:
        Logits averaged over windows, scales and flips, float32, same device as ``images``.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {scales}")
    if tile_size is not None and min(tile_size) < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    amp = autocast_dtype(precision, images.device)
    h, w = images.shape[-2:]
    total: Tensor | None = None
    with torch.inference_mode():
        for scale in scales:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = images if size == (h, w) else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            for flipped in (False, True) if flip else (False,):
                xi = x.flip(-1) if flipped else x
                if tile_size is None:
                    logits = _forward(model, xi, amp)
                else:
                    logits = _segment_tiled(model, xi, tile_size, overlap, amp)
                if flipped:
                    logits = logits.flip(-1)
                if size != (h, w):
                    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
                total = logits.clone() if total is None else total.add_(logits)
        assert total is not None
        return total.div_(len(scales) * (2 if flip else 1))


def choose_tile_size(
    model_or_bytes_per_pixel: nn.Module | MemoryModel | float,
    image_hw: tuple[int, int],
    memory_budget_bytes: float,
    *,
    batch_size: int = 1,
) -> tuple[int, int] | None:
    """Decide from a memory budget whether to tile, and pick the largest window that fits.

    The peak activation memory of one forward pass is modelled as ``c * (h + p) * (w + p)`` bytes per image
    (``p`` accounts for padding such as FCN's pad-100), measured on the model by
    :func:`~fcnseg.inference.memory.estimate_memory`, or given as a plain bytes-per-pixel figure (``p = 0``).

    Args:
        model_or_bytes_per_pixel: a model to probe (on its device, fp32: conservative for bf16/fp16), a
            :class:`MemoryModel`, or peak bytes per input pixel.
        image_hw: ``(H, W)`` of the network input.
        memory_budget_bytes: memory allowed for one forward pass of ``batch_size`` images.
        batch_size: images inferred together.

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
    # Largest area that fits, as square as the image allows: (th + p) * (tw + p) <= budget / c.
    side = int(math.sqrt(budget / mem.bytes_per_pixel) - mem.pad)
    th = min(h, side)
    tw = min(w, int(budget / mem.bytes_per_pixel / (th + mem.pad) - mem.pad)) if th > 0 else 0

    def snap(t: int, limit: int) -> int:  # the whole axis, or a multiple of 32 no smaller than the floor
        return limit if t >= limit else min(limit, max(_MIN_TILE, t // _TILE_MULTIPLE * _TILE_MULTIPLE))

    tile = (snap(th, h), snap(tw, w))
    if mem.peak_bytes(*tile) > budget:
        logger.warning(
            "memory budget of %.0f MiB is too small even for %dx%d tiles (about %.0f MiB); using them anyway",
            memory_budget_bytes / 2**20,
            *tile,
            mem.peak_bytes(*tile) * batch_size / 2**20,
        )
    logger.debug("image %dx%d does not fit in %.0f MiB: tiling with %s", h, w, memory_budget_bytes / 2**20, tile)
    return tile
