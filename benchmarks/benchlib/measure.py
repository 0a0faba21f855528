"""Measurements for ``benchmarks/suite.py``: time, FLOPs, the machine's matrix-multiply peak, memory and agreement.

- Time: ``warmup`` untimed calls, then ``reps`` timed calls (``time.perf_counter``, CUDA synchronised); the median
  is the figure, min/max and the interquartile range show the spread.
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one call (convolutions and matrix products; a
  multiply-add counts as two FLOPs).
- Peak: the best of a few ``torch.mm`` products of large square matrices in the given dtype; the same FLOP
  convention, so ``achieved / peak`` is the fraction of what this machine's GEMM reaches.
- Memory: the activation-byte counter of :mod:`fcnseg.inference.memory` (bytes of the tensors that operators
  create, alive at once; parameters that existed before the call are excluded, library workspaces are not seen).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from fcnseg.inference.memory import LiveBytes

__all__ = ["Timing", "agreement", "matmul_peak", "peak_bytes", "run_counted", "time_call"]


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed repetition."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def max(self) -> float:
        return max(self.seconds)

    @property
    def iqr(self) -> tuple[float, float]:
        """First and third quartiles (both equal the value for a single repetition)."""
        if len(self.seconds) < 2:
            return self.seconds[0], self.seconds[0]
        q = statistics.quantiles(self.seconds, n=4, method="inclusive")
        return q[0], q[2]

    def to_dict(self) -> dict[str, Any]:
        q1, q3 = self.iqr
        return {
            "median_s": self.median,
            "min_s": self.min,
            "max_s": self.max,
            "q1_s": q1,
            "q3_s": q3,
            "reps": len(self.seconds),
            "all_s": list(self.seconds),
        }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], *, reps: int, warmup: int = 1, device: torch.device | str = "cpu") -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``reps`` timed ones."""
    if reps < 1 or warmup < 0:
        raise ValueError(f"need reps >= 1 and warmup >= 0, got reps={reps}, warmup={warmup}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return Timing(tuple(seconds))


def run_counted(fn: Callable[[], Any]) -> tuple[Any, int, int]:
    """Call ``fn()`` once while counting FLOPs and live tensor bytes.

    Returns:
        ``(result, flops, peak_bytes)``: what ``fn`` returned, FLOPs of the operators it ran and the peak bytes of
        the tensors they created that were alive at once (the result included).
    """
    counter = FlopCounterMode(display=False)
    live = LiveBytes()
    with counter, live:
        result = fn()
    return result, counter.get_total_flops(), live.peak


def peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes of the tensors that ``fn()`` creates, alive at once (see :func:`run_counted`)."""
    live = LiveBytes()
    with live:
        fn()
    return live.peak


def matmul_peak(dtype: torch.dtype, *, size: int = 4096, runs: int = 3, device: torch.device | str = "cpu") -> float:
    """FLOP/s of the best of ``runs`` products of two ``(size, size)`` matrices of ``dtype`` (after one warm-up)."""
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    timing = time_call(lambda: torch.mm(a, b, out=out), reps=runs, warmup=1, device=device)
    return 2 * size**3 / timing.min


def agreement(logits: Tensor, reference: Tensor) -> tuple[float, float]:
    """How close ``logits`` are to ``reference``, both ``(N, K, H, W)``.

    Returns:
        The fraction of pixels whose argmax class is the same, and the largest absolute logit difference.
    """
    if logits.shape != reference.shape:
        raise ValueError(f"cannot compare logits of shape {tuple(logits.shape)} with {tuple(reference.shape)}")
    logits, reference = logits.float(), reference.float()
    same = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
    return same, (logits - reference).abs().max().item()
