"""Fully Convolutional Networks for Semantic Segmentation (Long, Shelhamer and Darrell, CVPR 2015; PAMI 2017).

``FCN(backbone, head)``: the backbone returns features by stride, the head scores, fuses and upsamples them.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbones import Backbone
from .head import FCNHead


class FCN(nn.Module):
    """A backbone and an FCN head. ``(N, 3, H, W)`` normalised images -> logits ``(N, K, H, W)``."""

    def __init__(self, backbone: Backbone, head: FCNHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config: dict = {}  # name, num_classes and options, set by create_model; saved with checkpoints

    @property
    def num_classes(self) -> int:
        return self.head.score_fr.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(x.shape)}; add a batch dimension")
        features = self.backbone(x)  # finest first: (N, C8, H/8, W/8), (N, C16, H/16, W/16), ...
        return self.head(features[len(features) - self.head.num_used :], x)
