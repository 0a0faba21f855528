"""Checkpoints that describe themselves: model, classes, colours, normalisation, config and metrics.

A checkpoint is a ``torch.save``d dict (see docs/DESIGN.md); it is written atomically, so an interrupted run never
leaves a truncated file, and it is enough on its own to rebuild the model for inference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcnseg.models import FCN, create_model
from fcnseg.utils.io import atomic_path
from fcnseg.utils.safe_load import load_tensors

FORMAT = "fcnseg-checkpoint"
VERSION = 1
_REQUIRED = ("model", "state_dict", "classes", "normalization")


def make_checkpoint(
    model: FCN,
    *,
    classes: dict[str, list],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a checkpoint dict for ``model`` (built by ``create_model``, which records its name and options)."""
    if not model.config:
        raise ValueError("the model has no config; build it with fcnseg.create_model so that it can be rebuilt")
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "model": dict(model.config),
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
            loaded (:class:`~fcnseg.utils.safe_load.UntrustedFileError`).
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


def model_from_checkpoint(ckpt: dict[str, Any]) -> FCN:
    """Rebuild the checkpoint's model with its weights, in eval mode."""
    spec = ckpt["model"]
    model = create_model(spec["name"], num_classes=spec["num_classes"], **spec.get("options", {}))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def load_init_weights(model: nn.Module, ckpt: dict[str, Any]) -> list[str]:
    """Initialise ``model`` from a coarser stage's checkpoint (FCN-32s -> 16s -> 8s training).

    Every tensor of the checkpoint must fit the model, except the final upsampling (its factor changes from stage to
    stage; the finer model keeps its own bilinear one). The model's tensors that the checkpoint lacks may only be the
    new skip layers of the finer head. Returns the names of the tensors left at their initial values.
    """
    own = model.state_dict()
    state = {
        k: v
        for k, v in ckpt["state_dict"].items()
        if not (k.startswith("head.upscore.") and k in own and own[k].shape != v.shape)
    }
    unexpected = [k for k in state if k not in own or own[k].shape != state[k].shape]
    new = [k for k in own if k not in state]  # includes head.upscore when its factor changed
    not_skip = [k for k in new if not k.startswith(("head.skips.", "head.upscore."))]
    if unexpected or not_skip:
        raise ValueError(
            f"checkpoint of {ckpt['model']['name']} cannot initialise this model: "
            f"not in the model or of another shape: {unexpected[:8]}; missing outside the new skips: {not_skip[:8]}"
        )
    model.load_state_dict(state, strict=False)
    return new
