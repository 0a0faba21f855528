"""Models from checkpoints: the whole model for inference, or a new model initialised from another's checkpoint.

:func:`load_init_weights` serves both kinds of transfer: a finer FCN from a coarser stage of the same run (FCN-32s
-> 16s -> 8s), and a model for other classes from one trained on something else (CamVid -> your two classes, the
authors' VOC net -> your dataset). The backbone must be the checkpoint's; the head keeps what fits and means the
same, and re-creates the rest as a new model has it (score layers zero, upsampling bilinear).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .fcn import FCN
from .head import FCNHead
from .registry import create_model

__all__ = ["load_init_weights", "model_from_checkpoint"]

log = logging.getLogger(__name__)

_LISTED = 4  # tensor names quoted in an error before "... (N more)"


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


def load_init_weights(
    model: nn.Module,
    ckpt: dict[str, Any],
    *,
    classes: Sequence[str] | None = None,
    normalization: Mapping[str, Sequence[float]] | None = None,
    source: str = "checkpoint",
) -> list[str]:
    """Initialise ``model`` from a checkpoint of the same backbone, for the same classes or for others.

    Every backbone tensor is loaded, and all must fit (same backbone, layout and bands). A head tensor is loaded when
    its name and shape fit, except that the class-dependent layers (those that output the K class maps: score layers
    and upsamplings) are re-created when ``classes`` differ from the checkpoint's; re-created and new layers keep the
    values of a new model (score layers zero, upsampling bilinear). So a coarser stage starts a finer one (whose new
    skips and final upsampling stay new), and a model trained on other classes starts one for yours. Logs one line
    naming what was kept and what was re-created.

    Weights expect the inputs they were trained on. When the new run normalises images otherwise than the checkpoint
    did (ImageNet's mean and std where the authors' Caffe nets took BGR 0..255 minus a mean), the first convolution is
    re-expressed so that it computes on the new inputs what it computed on the old: ``W' = W s'/s`` and
    ``b' = b + sum W (m' - m)/s`` per input band (without a bias, the batch norm after the convolution takes the
    shift into its running mean); exact wherever the kernel does not reach the zero padding (which now stands for
    the new mean pixel instead of the old).

    Args:
        model: built by :func:`~fcnseg.models.create_model` for the new classes.
        ckpt: a checkpoint dict (:func:`fcnseg.core.checkpoint.load_checkpoint`).
        classes: the new model's class names. When given and different from the checkpoint's (names or order), the
            class-dependent layers are re-created even where their shapes fit.
        normalization: ``{"mean", "std"}`` of the new run's inputs (per band); ``None`` keeps the first
            convolution as it is.
        source: the checkpoint's name in the log line and in errors (its path).

    Returns:
        The names of the model's tensors left at their initial values.

    Raises:
        ValueError: the checkpoint is of another backbone, layout or band count (one line that says which).
    """
    own, state = model.state_dict(), ckpt["state_dict"]
    _check_backbone(model, ckpt, own, source)
    old_names = list(ckpt.get("classes", {}).get("names", []))
    other_classes = classes is not None and list(classes) != old_names
    class_layers = _class_layers(model) if other_classes else set()
    at_once = (
        ckpt.get("model", {}).get("options", {}).get("at_once", False),
        (getattr(model, "config", None) or {}).get("options", {}).get("at_once", False),
    )
    if not other_classes and at_once[0] != at_once[1]:  # the kept skip scores were trained on scaled skips, or not
        flag = "pass --at-once" if at_once[0] else "drop --at-once"
        raise ValueError(f"{source} is {'' if at_once[0] else 'not '}the at-once FCN-8s and keeps its classes: {flag}")
    kept = {
        k: v
        for k, v in state.items()
        if k in own and own[k].shape == v.shape and k.rpartition(".")[0] not in class_layers
    }
    model.load_state_dict(kept, strict=False)
    fresh = [k for k in own if k not in kept]
    line = _summary(model, ckpt, source, kept, fresh, [k for k in state if k not in own], other_classes)
    if normalization is not None and "normalization" in ckpt:
        line += _renormalize_first_conv(model, ckpt["normalization"], normalization)
    log.info("%s", line)
    return fresh


def _renormalize_first_conv(
    model: nn.Module, old: Mapping[str, Sequence[float]], new: Mapping[str, Sequence[float]]
) -> str:
    """Re-express the convolution that reads the image for inputs normalised by ``new`` instead of ``old``.

    ``x_old = (p - m) / s = x_new * s' / s + (m' - m) / s`` per band, so ``W x_old + b = (W s'/s) x_new + b + W (m' -
    m)/s``. Returns what the log line says of it ("" when nothing changed).
    """
    m, s = (torch.tensor(old[k], dtype=torch.float64) for k in ("mean", "std"))
    m2, s2 = (torch.tensor(new[k], dtype=torch.float64) for k in ("mean", "std"))
    if m.shape == m2.shape and torch.allclose(m, m2, rtol=1e-6, atol=0) and torch.allclose(s, s2, rtol=1e-6, atol=0):
        return ""
    root = getattr(model, "backbone", model)
    conv = next(c for c in root.modules() if isinstance(c, nn.Conv2d))  # the one that reads the image
    if not m.numel() == m2.numel() == conv.in_channels:
        raise ValueError(f"normalisations of {m.numel()} and {m2.numel()} bands for a {conv.in_channels}-band model")
    with torch.no_grad():
        weight = conv.weight.double()
        shift = (weight * ((m2 - m) / s).view(1, -1, 1, 1)).sum((1, 2, 3))  # (out,)
        conv.weight.copy_(weight * (s2 / s).view(1, -1, 1, 1))
        norm = _batch_norm_after(root, conv)
        if conv.bias is not None:
            conv.bias.add_(shift.to(conv.bias.dtype))
        elif norm is not None and norm.running_mean is not None:  # y' = y - shift; BN with mean - shift is BN(y)
            norm.running_mean.sub_(shift.to(norm.running_mean.dtype))
    folded = conv.bias is not None or (norm is not None and norm.running_mean is not None)
    kept = "" if folded else " (no bias or batch norm takes the mean shift: fine-tuning absorbs it)"
    return (
        f"; first convolution re-expressed for mean {_fmt(new['mean'])}, std {_fmt(new['std'])} instead of the "
        f"checkpoint's mean {_fmt(old['mean'])}, std {_fmt(old['std'])}{kept}"
    )


def _batch_norm_after(root: nn.Module, conv: nn.Conv2d) -> nn.BatchNorm2d | None:
    """The batch norm that directly follows ``conv`` in its ``Sequential`` (ResNet's bn1 after conv1), if any."""
    for parent in root.modules():
        children = list(parent.children()) if isinstance(parent, nn.Sequential) else []
        for layer, following in itertools.pairwise(children):
            if layer is conv:
                return following if isinstance(following, nn.BatchNorm2d) else None
    return None


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _check_backbone(model: nn.Module, ckpt: dict[str, Any], own: dict[str, Any], source: str) -> None:
    """Raise one line when ``ckpt`` was trained on another backbone, layout or band count than ``model``."""
    spec, config = ckpt.get("model", {}), getattr(model, "config", None) or {}
    theirs, mine = spec.get("name", "?"), config.get("name", type(model).__name__)
    their_options, my_options = spec.get("options", {}), config.get("options", {})
    prefix = f"{source} ({theirs}) cannot initialise this {mine}"
    arch = theirs.partition("_")[2], mine.partition("_")[2]
    if config and arch[0] != arch[1]:
        raise ValueError(f"{prefix}: it was trained on backbone {arch[0]}, not {arch[1]}; use a *_{arch[0]} model")
    layout = their_options.get("layout", "default"), my_options.get("layout", "default")
    if config and layout[0] != layout[1]:
        raise ValueError(f"{prefix}: its VGG layout is {layout[0]}, this model's {layout[1]}; use --layout {layout[0]}")
    bands = their_options.get("in_channels", 3), getattr(model, "in_channels", 3)
    if bands[0] != bands[1]:
        raise ValueError(f"{prefix}: it reads {bands[0]}-band images, this model {bands[1]}-band ones")
    state = ckpt["state_dict"]
    wrong = [k for k in own if k.startswith("backbone.") and (k not in state or state[k].shape != own[k].shape)]
    if wrong:
        shown = ", ".join(
            f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" if k in state else f"{k} absent"
            for k in wrong[:_LISTED]
        )
        more = f" ... ({len(wrong) - _LISTED} more)" if len(wrong) > _LISTED else ""
        raise ValueError(f"{prefix}: its backbone differs: {shown}{more}")


def _class_layers(model: nn.Module) -> set[str]:
    """Paths of the head's layers that output the K class maps (score layers and upsamplings)."""
    head = getattr(model, "head", None)
    k = getattr(model, "num_classes", None)
    if head is None or k is None:
        return set()
    return {
        f"head.{path}"
        for path, m in head.named_modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.out_channels == k
    }


def _modules(keys: list[str]) -> list[str]:
    """Module paths of tensor names, in order, without repeats (``head.score_fr.weight`` -> ``head.score_fr``)."""
    return list(dict.fromkeys(k.rpartition(".")[0] for k in keys))


def _summary(
    model: nn.Module,
    ckpt: dict[str, Any],
    source: str,
    kept: dict,
    fresh: list[str],
    unused: list[str],
    other_classes: bool,
) -> str:
    """The one log line: what was kept, what was re-created (and why), what of the checkpoint went unused."""
    old_k, new_k = ckpt.get("model", {}).get("num_classes", "?"), getattr(model, "num_classes", "?")
    backbone = [k for k in kept if k.startswith("backbone.")]
    parts = [f"backbone ({len(backbone)} tensors)", *_modules([k for k in kept if not k.startswith("backbone.")])]
    line = f"initialised from {source} ({ckpt.get('model', {}).get('name', '?')}, {old_k} classes): kept "
    line += ", ".join(parts)
    if fresh:
        how = " (score layers zero, upsampling bilinear)" if isinstance(getattr(model, "head", None), FCNHead) else ""
        what = f"re-created for {new_k} classes as in a new model" if other_classes or old_k != new_k else "new"
        line += f"; {what}{how}: " + ", ".join(_modules(fresh))
    if unused:
        line += "; unused: " + ", ".join(_modules(unused))
    return line
