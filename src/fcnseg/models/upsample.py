"""Bilinear upsampling as a transposed convolution, as in the authors' ``surgery.py``."""

from __future__ import annotations

import torch
from torch import nn


def bilinear_kernel(size: int) -> torch.Tensor:
    """The 2-D bilinear interpolation filter of side ``size``: the authors' ``upsample_filt``.

    ``factor = (size + 1) // 2``; the centre is ``factor - 1`` for odd sizes and ``factor - 0.5`` for even ones;
    the filter is ``(1 - |i - centre| / factor) * (1 - |j - centre| / factor)``.

    Returns:
        ``(size, size)`` float32 tensor.
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(ramp, ramp).float()


def bilinear_upsampler(
    channels: int, factor: int, *, kernel: int | None = None, learnable: bool = False
) -> nn.ConvTranspose2d:
    """A transposed convolution that upsamples each channel by ``factor`` with bilinear weights.

    Kernel ``2 * factor`` (the reference nets') or ``2 * factor - 1`` (cells on pixels, see ``geometry``), stride
    ``factor``, no padding and no bias; the weight is a full ``(C, C, k, k)`` tensor whose diagonal holds the
    bilinear filter (``surgery.interp``), so that the layer can learn cross-class mixing when ``learnable`` is set.
    Fixed by default (``lr_mult=0`` in the reference), it stays a parameter without gradient so that parameter
    counts and weight files match the reference. ``(N, C, h, w) -> (N, C, f * (h - 1) + k, f * (w - 1) + k)``.
    """
    size = 2 * factor if kernel is None else kernel
    if size not in (2 * factor, 2 * factor - 1):
        raise ValueError(f"a bilinear {factor}x upsampler has kernel {2 * factor} or {2 * factor - 1}, not {size}")
    layer = nn.ConvTranspose2d(channels, channels, kernel_size=size, stride=factor, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        kernel = bilinear_kernel(size)
        for c in range(channels):
            layer.weight[c, c] = kernel
    layer.weight.requires_grad_(learnable)
    return layer
