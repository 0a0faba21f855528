"""torchvision's FCN (``fcn_resnet50``, ``fcn_resnet101``) as fcnseg models, so that its published weights
(COCO with VOC labels) load, evaluate, predict, export and fine-tune like any fcnseg checkpoint.

torchvision's ``FCN`` is named after the paper but is a later design (DeepLab's dilated backbone with a small head):

- **Backbone.** A ResNet whose layer3 and layer4 are dilated (2 and 4) instead of strided, so that its last feature
  map has stride 8 (the paper: VGG16 to pool5 and fc7, stride 32).
- **Head.** ``FCNHead``: a 3x3 convolution to a quarter of the channels (no bias), batch norm, ReLU, dropout 0.1 and
  a 1x1 convolution to the K classes, on the stride-8 feature only (the paper: fc6/fc7 convolutionalized from the
  classifier, a zero-initialised 1x1 score layer, and skips from pool4 and pool3 for FCN-16s/8s).
- **Upsampling.** ``F.interpolate(..., mode="bilinear", align_corners=False)`` of the stride-8 scores to the input
  size (the paper: a transposed convolution initialised to bilinear, with crops derived from the net's geometry).
  Interpolation reads output pixel ``x`` at feature coordinate ``(x + 0.5) / 8 - 0.5``, i.e. it places feature cell
  ``c`` at pixel ``8 c + 3.5``, while the dilated ResNet's cell ``c`` is centred on pixel ``8 c``: the scores sit
  3.5 px down and right of the pixels they describe. fcnseg keeps this so that the model computes what
  torchvision's does on its weights (fcnseg's own heads are centred, see :mod:`.geometry`).
- **Auxiliary head.** An ``FCNHead`` on layer3 adds an auxiliary loss in torchvision's training; its output is not
  the model's, so fcnseg leaves it out, and fine-tuning in fcnseg trains without it.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models import WeightsEnum
from torchvision.models.segmentation.fcn import FCNHead as TorchvisionFCNHead

from .backbones import Backbone
from .fcn import FCN
from .weights import adapt_first_conv, load_classifier_weights, read_state_dict, resolve_weights

TORCHVISION_FCNS = {"fcn_resnet50": "resnet50", "fcn_resnet101": "resnet101"}  # model name -> ResNet
DILATED_STRIDE = 8  # replace_stride_with_dilation=[False, True, True]: layer3 and layer4 stay at layer2's stride
# torchvision's FCN_ResNet*_Weights transforms (SemanticSegmentation): ImageNet mean and std on RGB in [0, 1].
IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


class InterpolatingHead(nn.Module):
    """torchvision's ``FCNHead`` on the last feature, bilinearly interpolated to the input size.

    ``features`` (the last is ``(N, C, H/8, W/8)``), ``image (N, B, H, W)`` -> logits ``(N, K, H, W)``.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = TorchvisionFCNHead(in_channels, num_classes)  # conv3x3, BN, ReLU, dropout, conv1x1
        self.num_used = 1

    @property
    def score_fr(self) -> nn.Conv2d:
        """The layer that outputs the class scores (named as the paper's heads name theirs)."""
        return self.classifier[-1]

    def forward(self, features: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        score = self.classifier(features[-1])  # (N, K, ~H/8, ~W/8)
        return F.interpolate(score, size=image.shape[-2:], mode="bilinear", align_corners=False)


def dilated_resnet_backbone(classifier: nn.Module) -> Backbone:
    """Stages of a dilated torchvision ResNet, all at stride 8: stem to layer2, layer3, layer4.

    The stages and their names are those of :func:`.backbones.resnet_backbone`, so the tensors of a ``*_resnet50``
    FCN and of ``fcn_resnet50`` share their names (and initialise each other with ``--init-from``).
    """
    c = classifier
    stem = [("conv1", c.conv1), ("bn1", c.bn1), ("relu", c.relu), ("maxpool", c.maxpool), ("layer1", c.layer1)]
    stages = [[*stem, ("layer2", c.layer2)], [("layer3", c.layer3)], [("layer4", c.layer4)]]
    return Backbone([(DILATED_STRIDE, nn.Sequential(OrderedDict(stage))) for stage in stages])


def torchvision_fcn(
    name: str,
    *,
    num_classes: int,
    backbone_weights: WeightsEnum | str | Path | None = None,
    in_channels: int = 3,
    **options: Any,
) -> FCN:
    """Build ``fcn_resnet50`` or ``fcn_resnet101`` as torchvision does (without the auxiliary head).

    Args:
        name: a key of :data:`TORCHVISION_FCNS`.
        num_classes: K.
        backbone_weights: ImageNet weights of the ResNet, as for :func:`~fcnseg.models.create_model`.
        in_channels: image bands; the first convolution is adapted for other counts than 3.
        **options: none are accepted (the paper's head options do not apply).

    Returns:
        An ``FCN`` mapping ``(N, B, H, W) -> (N, num_classes, H, W)``, in training mode.
    """
    if options:
        raise ValueError(f"{name} (torchvision's FCN head) takes no options, got {sorted(options)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    arch = TORCHVISION_FCNS[name]
    classifier = torchvision.models.get_model(arch, weights=None, replace_stride_with_dilation=[False, True, True])
    if backbone_weights is not None:
        source = resolve_weights(arch, backbone_weights)
        load_classifier_weights(classifier, read_state_dict(source), final_layer="fc", source=str(source))
    adapt_first_conv(classifier, in_channels)
    backbone = dilated_resnet_backbone(classifier)
    model = FCN(backbone, InterpolatingHead(backbone.feature_info[-1].channels, num_classes))  # type: ignore[arg-type]
    bands = {"in_channels": in_channels} if in_channels != 3 else {}
    model.config = {"name": name, "num_classes": num_classes, "options": bands}
    return model
