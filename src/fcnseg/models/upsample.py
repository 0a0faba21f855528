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


def per_channel_upsampler(layer: nn.ConvTranspose2d) -> nn.ConvTranspose2d | None:
    """The ``groups=C`` equivalent of a fixed upsampler whose weight is diagonal, or ``None`` for any other layer.

    A fixed bilinear upsampler (:func:`bilinear_upsampler` without ``learnable``) holds a full ``(C, C, k, k)``
    weight whose off-diagonal is zero, so a transposed convolution over it does ``C`` times the needed work. The
    per-channel layer computes the same output exactly (each output sums one non-zero term per tap either way); at
    a 500x500 input, FCN-8s's stride-8 upsampler of 21 classes is 441M multiply-adds full, 21M per channel. Learnable
    upsamplers (``weight.requires_grad``) are left alone: they may be trained on after being converted.
    """
    if type(layer) is not nn.ConvTranspose2d or layer.weight.requires_grad or layer.bias is not None:
        return None
    channels = layer.in_channels
    if layer.groups != 1 or layer.out_channels != channels or layer.padding_mode != "zeros":
        return None
    index = torch.arange(channels)
    off_diagonal = layer.weight.detach().clone()
    diagonal = off_diagonal[index, index].clone()  # (C, k, k)
    off_diagonal[index, index] = 0
    if off_diagonal.count_nonzero():
        return None
    grouped = nn.ConvTranspose2d(
        channels,
        channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        output_padding=layer.output_padding,
        dilation=layer.dilation,
        groups=channels,
        bias=False,
        device=diagonal.device,
        dtype=diagonal.dtype,
    )
    grouped.weight = nn.Parameter(diagonal.unsqueeze(1), requires_grad=False)
    return grouped
