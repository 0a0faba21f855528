"""What a model takes as input: the band count of its images.

A model reads ``B``-band images (3 for RGB): an :class:`~fcnseg.models.FCN` says so (``in_channels``), an exported
model's metadata holds its per-band normalisation, and for any other module the first convolution tells.
"""

from __future__ import annotations

from torch import nn

__all__ = ["input_bands"]


def input_bands(model: nn.Module, default: int = 3) -> int:
    """The image bands ``model`` takes: its ``in_channels``, its exported normalisation, or its first convolution's."""
    bands = getattr(model, "in_channels", None)
    if isinstance(bands, int):
        return bands
    metadata = getattr(model, "metadata", None)
    mean = (metadata.get("normalization") or {}).get("mean") if isinstance(metadata, dict) else None
    if mean:
        return len(mean)
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else default
