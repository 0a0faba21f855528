"""``create_model`` and ``list_models``: FCN-32s/16s/8s heads on every supported backbone, and FCN-4s.

FCN-4s is the paper's skip recipe taken one step further: the stride-4 feature is scored and fused as pool3 is in
FCN-8s, for the thin structures (poles, fences) that a stride-8 score map blurs (Long et al., Sec. 6 discussion).
``fcn_resnet50`` and ``fcn_resnet101`` are torchvision's FCN (another head, see :mod:`.torchvision_fcn`).
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
from .torchvision_fcn import TORCHVISION_FCNS, torchvision_fcn
from .weights import adapt_first_conv, load_classifier_weights, read_state_dict, resolve_weights

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
    names += list(TORCHVISION_FCNS)  # torchvision's own FCN head, for its published weights (torchvision_fcn.py)
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def stage_strides(spec: BackboneSpec, finest: int) -> tuple[int, ...]:
    """The backbone stages a head fusing down to ``finest`` is built on: stride 4 only when it is fused."""
    return tuple(s for s in spec.strides if s >= min(finest, 8))


def create_model(
    name: str,
    *,
    num_classes: int,
    backbone_weights: WeightsEnum | str | Path | None = None,
    in_channels: int = 3,
    **options: Any,
) -> FCN:
    """Build an FCN by name.

    Args:
        name: ``{fcn32s,fcn16s,fcn8s,fcn4s}_{backbone}`` or torchvision's ``fcn_resnet{50,101}``, see ``list_models()``.
        num_classes: number of classes K (without void).
        backbone_weights: ImageNet weights for the backbone: a torchvision weights enum or its name (``"DEFAULT"``,
            ``"IMAGENET1K_V1"``), downloaded as torchvision does, or the path of a local torchvision-format state dict.
        in_channels: image bands ``B``; for ``B != 3`` the first convolution is adapted from its RGB weights (after
            ``backbone_weights`` are loaded, or from its random ones) by :func:`.weights.adapt_input_conv`.
        **options: ``layout`` ("default" or "caffe", VGG only), ``learnable_upsampling`` (bool), ``at_once`` (bool).

    Returns:
        An ``FCN`` mapping ``(N, B, H, W) -> (N, num_classes, H, W)``, in training mode.
    """
    if name in TORCHVISION_FCNS:
        return torchvision_fcn(
            name, num_classes=num_classes, backbone_weights=backbone_weights, in_channels=in_channels, **options
        )
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
    adapt_first_conv(classifier, in_channels)
    backbone = spec.build(classifier, stage_strides(spec, HEADS[head_name]), **options)
    head = FCNHead(backbone.feature_info, num_classes, finest_stride=HEADS[head_name], **head_options)
    model = FCN(backbone, head)
    bands = {"in_channels": in_channels} if in_channels != 3 else {}  # RGB checkpoints keep their options
    model.config = {"name": name, "num_classes": num_classes, "options": options | head_options | bands}
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """All parameters, trainable or fixed (the reference counts its fixed upsampling weights too)."""
    return sum(p.numel() for p in model.parameters())
