"""``create_model`` and ``list_models``: FCN-32s/16s/8s heads on every supported backbone, and FCN-4s.

FCN-4s is the paper's skip recipe taken one step further: the stride-4 feature is scored and fused as pool3 is in
FCN-8s, for the thin structures (poles, fences) that a stride-8 score map blurs (Long et al., Sec. 6 discussion).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import torch
import torchvision
from torchvision.models import WeightsEnum

from fcnseg.core.suggest import did_you_mean

from .backbones import BACKBONES, BackboneSpec
from .fcn import FCN
from .head import FCNHead
from .weights import load_classifier_weights, read_state_dict, resolve_weights

HEADS = {"fcn32s": 32, "fcn16s": 16, "fcn8s": 8, "fcn4s": 4}  # name -> finest stride fused
HEAD_OPTIONS = ("at_once", "learnable_upsampling")  # options of FCNHead, accepted by every model


def list_models(pattern: str = "*") -> list[str]:
    """Names accepted by ``create_model``, such as ``fcn8s_vgg16``, filtered by a shell-style pattern."""
    names = [
        f"{head}_{arch}"
        for arch, spec in BACKBONES.items()
        for head, stride in HEADS.items()
        if min(spec.strides) <= stride <= max(spec.strides)
    ]
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def stage_strides(spec: BackboneSpec, finest: int) -> tuple[int, ...]:
    """The backbone stages a head fusing down to ``finest`` is built on: stride 4 only when it is fused."""
    return tuple(s for s in spec.strides if s >= min(finest, 8))


def create_model(
    name: str,
    *,
    num_classes: int,
    backbone_weights: WeightsEnum | str | Path | None = None,
    **options: Any,
) -> FCN:
    """Build an FCN by name.

    Args:
        name: ``{fcn32s,fcn16s,fcn8s,fcn4s}_{backbone}``, see ``list_models()``.
        num_classes: number of classes K (without void).
        backbone_weights: ImageNet weights for the backbone: a torchvision weights enum or its name (``"DEFAULT"``,
            ``"IMAGENET1K_V1"``), downloaded as torchvision does, or the path of a local torchvision-format state dict.
        **options: ``layout`` ("default" or "caffe", VGG only), ``learnable_upsampling`` (bool), ``at_once`` (bool).

    Returns:
        An ``FCN`` mapping ``(N, 3, H, W) -> (N, num_classes, H, W)``, in training mode.
    """
    head_name, _, arch = name.partition("_")
    if head_name not in HEADS or arch not in BACKBONES or name not in list_models():
        raise ValueError(f"unknown model {name!r}{did_you_mean(name, list_models())} (`fcnseg models` lists them all)")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    spec = BACKBONES[arch]
    head_options = {k: options.pop(k) for k in HEAD_OPTIONS if k in options}
    unknown = set(options) - set(spec.options)
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for {name}; it accepts {sorted(spec.options) + list(HEAD_OPTIONS)}"
        )

    classifier = torchvision.models.get_model(arch, weights=None)
    if backbone_weights is not None:
        source = resolve_weights(arch, backbone_weights)
        load_classifier_weights(classifier, read_state_dict(source), final_layer=spec.final_layer, source=str(source))
    backbone = spec.build(classifier, stage_strides(spec, HEADS[head_name]), **options)
    head = FCNHead(backbone.feature_info, num_classes, finest_stride=HEADS[head_name], **head_options)
    model = FCN(backbone, head)
    model.config = {"name": name, "num_classes": num_classes, "options": options | head_options}
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """All parameters, trainable or fixed (the reference counts its fixed upsampling weights too)."""
    return sum(p.numel() for p in model.parameters())
