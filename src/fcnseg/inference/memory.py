"""Empirical estimate of a model's peak activation memory, used to decide whether and how to tile.

On every device the probe runs the model under a ``TorchDispatchMode`` that counts the bytes of every tensor
an operator creates and subtracts them when the tensor is freed, so it sees the live-activation peak of one
forward pass (parameters excluded) without relying on an allocator. Library workspaces (oneDNN, cuDNN) are
not seen; :data:`SAFETY_FACTOR` covers them.

The peak is modelled as ``c * (h + p) * (w + p)``: activations grow with the padded input area, and ``p``
absorbs the constant margin of networks such as FCN, whose first convolution pads by 100 pixels. Two square
probes of sides ``s1 < s2`` give ``sqrt(peak) = sqrt(c) * (s + p)``, a straight line in ``s``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from fcnseg.inference.inputs import input_bands

__all__ = ["SAFETY_FACTOR", "LiveBytes", "MemoryModel", "estimate_memory", "measure_peak_bytes"]

logger = logging.getLogger(__name__)

SAFETY_FACTOR = 1.25  # margin for backend workspaces and allocator fragmentation the probe cannot see


@dataclasses.dataclass(frozen=True)
class MemoryModel:
    """Peak bytes of one forward pass of one image: ``bytes_per_pixel * (h + pad) * (w + pad)``."""

    bytes_per_pixel: float
    pad: float = 0.0

    def peak_bytes(self, height: int, width: int) -> float:
        return self.bytes_per_pixel * (height + self.pad) * (width + self.pad)


class LiveBytes(TorchDispatchMode):
    """Track the bytes held by tensors created inside the mode, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage data_ptr -> [tensors alive, bytes]

    def _release(self, key: int) -> None:
        entry = self._refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in self._refs:
                self._refs[key][0] += 1  # a view of a tensor already counted
            else:
                self._refs[key] = [1, storage.nbytes()]
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._release, key)
        return out


def measure_peak_bytes(model: nn.Module, height: int, width: int, *, batch_size: int = 1) -> int:
    """Peak bytes of activations alive at once while ``model`` runs on a zero ``(N, B, height, width)`` input."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros(batch_size, input_bands(model), height, width, device=device)
    probe = LiveBytes()
    with torch.inference_mode(), probe:
        out = model(x)
    del out
    return probe.peak


def estimate_memory(model: nn.Module, *, probe_sizes: tuple[int, int] = (64, 128)) -> MemoryModel:
    """Fit :class:`MemoryModel` to two measured square probes, times :data:`SAFETY_FACTOR`."""
    s1, s2 = probe_sizes
    r1, r2 = (math.sqrt(measure_peak_bytes(model, s, s)) for s in probe_sizes)
    slope = (r2 - r1) / (s2 - s1)  # sqrt(c)
    if slope <= 0:  # pathological (constant memory): fall back to the larger probe's bytes per pixel
        return MemoryModel(bytes_per_pixel=SAFETY_FACTOR * r2**2 / s2**2)
    pad = max(0.0, r1 / slope - s1)
    mem = MemoryModel(bytes_per_pixel=SAFETY_FACTOR * slope**2, pad=pad)
    logger.debug("memory model: %.0f bytes per pixel, pad %.1f", mem.bytes_per_pixel, mem.pad)
    return mem
