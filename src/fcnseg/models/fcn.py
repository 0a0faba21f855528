"""Fully Convolutional Networks for Semantic Segmentation (Long, Shelhamer and Darrell, CVPR 2015; PAMI 2017).

``FCN(backbone, head)``: the backbone returns features by stride, the head scores, fuses and upsamples them.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbones import Backbone
from .head import FCNHead


class FCN(nn.Module):
    """A backbone and an FCN head. ``(N, B, H, W)`` normalised images of ``B`` bands -> logits ``(N, K, H, W)``."""

    def __init__(self, backbone: Backbone, head: FCNHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config: dict = {}  # name, num_classes and options, set by create_model; saved with checkpoints

    @property
    def num_classes(self) -> int:
        return self.head.score_fr.out_channels

    @property
    def in_channels(self) -> int:
        """Image bands ``B`` the model takes (3 for RGB)."""
        return self.backbone.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            b = self.in_channels
            hint = "add a batch dimension" if x.dim() == 3 else f"the model takes {b}-band images"
            raise ValueError(f"expected images of shape (N, {b}, H, W), got {tuple(x.shape)}; {hint}")
        features = self.backbone(x)  # finest first: (N, C8, H/8, W/8), (N, C16, H/16, W/16), ...
        return self.head(features[len(features) - self.head.num_used :], x)
