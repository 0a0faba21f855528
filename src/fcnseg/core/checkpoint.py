"""The checkpoint format: a file that describes itself (model, classes, colours, normalisation, config, metrics).

A checkpoint is a ``torch.save``d dict (see docs/DESIGN.md); it is written atomically, so an interrupted run never
leaves a truncated file, and it is enough on its own to rebuild the model for inference
(:func:`fcnseg.models.model_from_checkpoint`). This module knows the format only, not the models, so that
training writes and inference reads it without either importing the other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcnseg.core.io import atomic_path
from fcnseg.core.safe_load import load_tensors

__all__ = [
    "FORMAT",
    "VERSION",
    "load_checkpoint",
    "make_checkpoint",
    "recorded_config",
    "recorded_scales",
    "save_checkpoint",
]

FORMAT = "fcnseg-checkpoint"
VERSION = 1
_REQUIRED = ("model", "state_dict", "classes", "normalization")


def make_checkpoint(
    model: nn.Module,
    *,
    classes: dict[str, list],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a checkpoint dict for ``model`` (built by ``create_model``, which records its name and options)."""
    spec = getattr(model, "config", None)
    if not spec:
        raise ValueError("the model has no config; build it with fcnseg.create_model so that it can be rebuilt")
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "model": dict(spec),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": {"names": list(classes["names"]), "colors": [list(map(int, c)) for c in classes["colors"]]},
        "normalization": {"mean": list(mean), "std": list(std)},
        "config": config or {},
        "metrics": metrics or {},
    }
    if train_state is not None:
        ckpt["train_state"] = train_state
    return ckpt


def save_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``ckpt`` to ``path`` atomically (a temporary file renamed into place)."""
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint written by ``fcnseg train``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not an fcnseg checkpoint or lacks a required entry, or it would run code when
            loaded (:class:`~fcnseg.core.safe_load.UntrustedFileError`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    ckpt = load_tensors(path, what="checkpoint", map_location=map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"'{path}' is not an fcnseg checkpoint (written by `fcnseg train`)")
    if ckpt.get("version", 0) > VERSION:
        raise ValueError(f"checkpoint '{path}' has format version {ckpt['version']}; upgrade fcnseg to read it")
    missing = [key for key in _REQUIRED if key not in ckpt]
    if missing:
        raise ValueError(f"checkpoint '{path}' lacks {missing}")
    return ckpt


def recorded_config(path: str | os.PathLike) -> dict[str, Any]:
    """The training ``config`` a checkpoint recorded (``{}`` when it has none), e.g. its dataset options."""
    ckpt = load_tensors(Path(path), what="checkpoint", map_location="cpu")
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    return config if isinstance(config, dict) else {}


def recorded_scales(info: dict[str, Any] | None) -> tuple[float, ...]:
    """The input scales a checkpoint's ``inference`` entry or an exported model's metadata records (the scale
    ``fcnseg train`` chose on its validation split, with ``test_scales``), else ``(1.0,)``."""
    return tuple(float(s) for s in (info or {}).get("scales") or (1.0,))
