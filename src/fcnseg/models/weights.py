"""Backbone weights: a torchvision weights enum or name (downloaded as torchvision does) or a local state dict.

Weights are loaded into the torchvision classifier before it is cut into a backbone, so files in torchvision's
key layout load as they are; VGG and AlexNet fc6/fc7 are then transplanted by reshaping (``linear_to_conv``). For
images of another band count than RGB, the first convolution is then adapted from its RGB weights
(:func:`adapt_input_conv`, the rule of timm's function of that name).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import WeightsEnum, get_model_weights

from fcnseg.core.safe_load import load_tensors

log = logging.getLogger(__name__)

_MAX_LISTED = 12


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def resolve_weights(arch: str, weights: WeightsEnum | str | Path) -> WeightsEnum | Path:
    """A weights enum for ``arch`` (an enum, ``"DEFAULT"``, ``"IMAGENET1K_V1"``, ``"VGG16_Weights.X"``) or a path."""
    if isinstance(weights, WeightsEnum):
        return weights
    text = str(weights)
    path = Path(text).expanduser()
    if path.exists() or path.suffix in (".pth", ".pt", ".bin", ".ckpt") or "/" in text:
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file '{path}' does not exist")
        return path
    enum = get_model_weights(arch)
    member = text.split(".")[-1]
    if member == "DEFAULT":
        return enum.DEFAULT
    if member not in enum.__members__:
        raise ValueError(
            f"unknown backbone weights {text!r} for {arch}: use a file path or one of {['DEFAULT', *enum.__members__]}"
        )
    return enum[member]


def read_state_dict(source: WeightsEnum | Path) -> dict[str, torch.Tensor]:
    """The state dict behind ``source``: downloaded (and cached) by torchvision, or read from a local file."""
    if isinstance(source, WeightsEnum):
        log.info("loading %s (downloads on first use)", source)
        return source.get_state_dict(progress=True, check_hash=True)
    state = load_tensors(source, what="backbone weights")
    for key in ("state_dict", "model"):  # common wrappers around a state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"backbone weights '{source}' do not hold a state dict of tensors")
    return state


def load_classifier_weights(
    classifier: nn.Module, state: dict[str, torch.Tensor], *, final_layer: str, source: str
) -> None:
    """Load ``state`` into a torchvision classifier, all or nothing.

    Keys of ``final_layer`` (the 1000-way layer, unused by an FCN) may be absent; any other missing, unexpected or
    mis-shaped key is an error that lists them, and nothing is loaded.
    """
    expected = classifier.state_dict()
    optional = {k for k in expected if k.startswith(final_layer + ".")}
    missing = sorted(k for k in expected if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = sorted(
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    )
    problems = [
        f"{label}: {_listing(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", mismatched))
        if keys
    ]
    if problems:
        raise ValueError(
            f"backbone weights '{source}' do not fit {type(classifier).__name__}: "
            + "; ".join(problems)
            + ". Pass a torchvision-format state dict for this architecture."
        )
    classifier.load_state_dict({k: v for k, v in state.items() if k not in optional}, strict=False)


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB first-convolution weights ``(O, 3, kh, kw)`` -> ``(O, in_channels, kh, kw)``, as timm's ``adapt_input_conv``.

    One band: the sum over RGB, so that a grey image gives the activations of its RGB replica (with a normalisation
    equal over RGB). Other counts: the RGB weights repeated cyclically over the bands (R, G, B, R, ...) and scaled by
    ``3 / in_channels``, so that an image whose bands average to the RGB image's keeps the activations' scale.
    """
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected RGB convolution weights (O, 3, kh, kw), got {tuple(weight.shape)}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    if in_channels == 3:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // 3)  # ceil
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (3 / in_channels)


def adapt_first_conv(classifier: nn.Module, in_channels: int) -> nn.Conv2d:
    """Give the first convolution of ``classifier`` (the one that reads the image) ``in_channels`` inputs, in place.

    Its weights are adapted by :func:`adapt_input_conv`; the bias and every other layer are unchanged.

    Returns:
        That convolution.
    """
    conv = next((m for m in classifier.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None or conv.in_channels != 3 or conv.groups != 1:
        raise ValueError(f"{type(classifier).__name__} has no RGB first convolution to adapt to {in_channels} bands")
    if in_channels != 3:
        with torch.no_grad():
            conv.weight = nn.Parameter(adapt_input_conv(conv.weight.detach(), in_channels).contiguous())
        conv.in_channels = in_channels
    return conv
