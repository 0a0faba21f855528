"""Coordinate maps: where a feature-map cell sits in input pixels, and the crops that follow.

FCN aligns score maps of different strides by cropping (the authors' ``crop`` in ``surgery.py`` /
``coord_map.py`` of Caffe). Every layer maps an output coordinate ``y`` to the input coordinate of the centre of
its receptive field, ``x = scale * y + offset``. For a convolution or pooling with kernel k, stride s, padding p
and dilation d, ``scale = s`` and ``offset = d * (k - 1) / 2 - p``; a transposed convolution inverts that map.
Composing the maps of a path gives a feature's map to the input; two maps of equal scale differ by a
constant, which is the crop offset. This module derives the crops instead of hard-coding 19, 5, 27, 9 or 31.

The crop is only exact when that constant is a whole number of cells. The reference's transposed convolution
(kernel ``2f``, stride ``f``) puts coarse cell ``i`` at fine position ``f * i + f - 1/2``: a half-pixel shift that
suits grids whose cells are centred between pixels (VGG: pool5 cell ``y`` at ``32 y + 15.5``). On grids whose cells
sit on a pixel (ResNet, MobileNet, AlexNet: ``32 y``), the same kernel leaves half a cell that no crop can remove.
There the kernel ``2f - 1`` (the same bilinear ramp, ``upsample_filt(2f - 1)``, centred on a tap) puts coarse cell
``i`` at ``f * i + f - 1``, a whole pixel. ``upsampling`` picks the one of the two kernels that aligns exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

# Pooling layers whose output size is independent of the input and therefore have no coordinate map.
_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class CoordMap:
    """``input = scale * feature + offset`` along each spatial axis (kernels here are square)."""

    scale: float = 1.0
    offset: float = 0.0

    def then(self, layer: CoordMap) -> CoordMap:
        """The map of ``layer`` applied after this one: its output coordinates to this map's input."""
        return CoordMap(self.scale * layer.scale, self.scale * layer.offset + self.offset)

    def upsampled(self, factor: int, kernel: int) -> CoordMap:
        """The map after a transposed convolution with this kernel, stride ``factor`` and no padding."""
        return self.then(CoordMap(1 / factor, -(kernel - 1) / 2 / factor))


def _square(value: int | tuple[int, ...], what: str, module: nn.Module) -> int:
    values = (value,) if isinstance(value, int) else tuple(value)
    if len(set(values)) != 1:
        raise ValueError(f"{type(module).__name__} has a non-square {what} {values}; FCN geometry needs square ones")
    return values[0]


def layer_map(module: nn.Module) -> CoordMap:
    """Coordinate map of one convolution or pooling layer; identity for anything else."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k = _square(module.kernel_size, "kernel", module)
        s = _square(module.stride, "stride", module)
        p = _square(module.padding, "padding", module)
        d = _square(getattr(module, "dilation", 1), "dilation", module)
        return CoordMap(s, d * (k - 1) / 2 - p)
    return CoordMap()


def path_map(modules: Iterable[tuple[str, nn.Module]], start: CoordMap = CoordMap()) -> CoordMap:
    """Compose the maps of the main path through ``named_modules()``-style pairs.

    Parallel shortcut branches (ResNet's ``downsample``) compute the same geometry as the main path and are
    skipped, as are global pools (squeeze-and-excitation), which do not move coordinates.
    """
    result = start
    for name, module in modules:
        if "downsample" in name.split(".") or isinstance(module, _GLOBAL_POOLS):
            continue
        result = result.then(layer_map(module))
    return result


def crop_offset(source: CoordMap, target: CoordMap) -> float:
    """Offset, in cells, at which ``source`` must be cropped to align with ``target`` (equal scales required).

    Negative when ``target`` is the larger map.
    """
    if not math.isclose(source.scale, target.scale):
        raise ValueError(f"cannot align maps of scales {source.scale} and {target.scale}")
    return (target.offset - source.offset) / source.scale


def upsampling(coarse: CoordMap, factor: int, target: CoordMap) -> tuple[int, int]:
    """Kernel and crop of the transposed convolution (stride ``factor``) that puts ``coarse`` exactly on ``target``.

    Tries the reference's kernel ``2 * factor`` first, so that the authors' nets keep their layers, then
    ``2 * factor - 1``; exactly one of them leaves a whole-cell crop when the two grids differ by a multiple of half
    a fine cell, as they do for every backbone built from pixel-centred windows.

    Returns:
        ``(kernel, crop)``: crop the upsampled map at ``crop`` (or ``target`` at ``-crop`` when negative).
    """
    for kernel in (2 * factor, 2 * factor - 1):
        offset = crop_offset(coarse.upsampled(factor, kernel), target)
        if math.isclose(offset, round(offset), abs_tol=1e-9):
            return kernel, round(offset)
    raise ValueError(
        f"cannot align a stride-{coarse.scale:g} map (offset {coarse.offset:g} px) with a stride-{target.scale:g} map "
        f"(offset {target.offset:g} px) by upsampling {factor}x: the grids differ by a fraction of a cell that "
        "neither a 2f nor a 2f-1 kernel removes; check the backbone's paddings"
    )
