"""Backbone weights: a torchvision weights enum or name (downloaded as torchvision does) or a local state dict.

Weights are loaded into the torchvision classifier before it is cut into a backbone, so files in torchvision's
key layout load as they are; VGG and AlexNet fc6/fc7 are then transplanted by reshaping (``linear_to_conv``).
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
