"""Coordinate maps: where a feature-map cell sits in input pixels, and the crops that follow.

FCN aligns score maps of different strides by cropping (the authors' ``crop`` in ``surgery.py`` /
``coord_map.py`` of Caffe). Every layer maps an output coordinate ``y`` to the input coordinate of the centre of
its receptive field, ``x = scale * y + offset``. For a convolution or pooling with kernel k, stride s, padding p
and dilation d, ``scale = s`` and ``offset = d * (k - 1) / 2 - p``; a transposed convolution inverts that map.
Composing the maps of a path gives a feature's map to the input; two maps of equal scale differ by a
constant, which is the crop offset. This module derives the crops instead of hard-coding 19, 5, 27, 9 or 31.
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

    def upsampled(self, factor: int) -> CoordMap:
        """The map after a transposed convolution with kernel ``2 * factor``, stride ``factor``, no padding."""
        return self.then(CoordMap(1 / factor, -(2 * factor - 1) / 2 / factor))


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


def crop_offset(source: CoordMap, target: CoordMap) -> int:
    """Offset at which ``source`` must be cropped to align with ``target`` (equal scales required).

    Negative when ``target`` is the larger map. Offsets that are not whole (feature grids whose cells are not
    centred as the bilinear kernel assumes, as in ResNet) are rounded half up: at most half a cell of error.
    """
    if not math.isclose(source.scale, target.scale):
        raise ValueError(f"cannot align maps of scales {source.scale} and {target.scale}")
    return math.floor((target.offset - source.offset) / source.scale + 0.5)
