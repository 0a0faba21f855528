"""Models from checkpoints: the whole model for inference, or a finer FCN initialised from a coarser stage."""

from __future__ import annotations

from typing import Any

from torch import nn

from .fcn import FCN
from .registry import create_model

__all__ = ["load_init_weights", "model_from_checkpoint"]


def model_from_checkpoint(ckpt: dict[str, Any]) -> FCN:
    """Rebuild the model of a checkpoint read by :func:`fcnseg.core.checkpoint.load_checkpoint`, in eval mode."""
    spec = ckpt["model"]
    model = create_model(spec["name"], num_classes=spec["num_classes"], **spec.get("options", {}))
    state, own = ckpt["state_dict"], model.state_dict()
    stale = [k for k in own if k.endswith("upscore.weight") and k in state and state[k].shape != own[k].shape]
    if stale:
        raise ValueError(
            f"this {spec['name']} checkpoint has upsampling kernels of {state[stale[0]].shape[-1]} pixels where the "
            f"model now has {own[stale[0]].shape[-1]}: it was written before fcnseg centred every skip path on its "
            "pixel (the old head was up to 12.5 px off on this backbone); retrain it with this version"
        )
    model.load_state_dict(state)
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
