"""The FCN head: score layers at the chosen strides, fused coarse to fine, upsampled to the input.

FCN-32s scores the stride-32 feature and upsamples by 32; FCN-16s adds a 1x1 score of the stride-16 feature to the
2x-upsampled coarse score; FCN-8s adds stride 8 the same way (Long et al., Sec. 4.2), and FCN-4s stride 4. One module
covers them all: the finest stride to fuse is a parameter. Crops, and the upsampling kernels (2f, or 2f - 1 on grids
whose cells sit on a pixel), are derived from the backbone's coordinate maps so that every path is centred on the
pixel it scores.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbones import FeatureInfo
from .geometry import CoordMap, upsampling
from .upsample import bilinear_upsampler

# "At-once" FCN-8s (the authors' voc-fcn8s-atonce) scales pool4 by 0.01 and pool3 by 0.0001 before scoring, so that
# the skips start small next to the coarse scores of Caffe-scale VGG features.
AT_ONCE_SKIP_SCALES = {16: 0.01, 8: 0.0001}


def score_layer(in_channels: int, num_classes: int) -> nn.Conv2d:
    """A 1x1 convolution to class scores, zero-initialised as in the reference (``score_fr``, ``score_pool*``)."""
    layer = nn.Conv2d(in_channels, num_classes, kernel_size=1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def crop(x: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    """``x[..., offset : offset + h, offset : offset + w]`` where ``(h, w)`` is the size of ``like``."""
    h, w = like.shape[-2:]
    return x[:, :, offset : offset + h, offset : offset + w]


class SkipFusion(nn.Module):
    """Upsample the coarse score 2x and add the score of a finer feature, cropped into alignment.

    ``score (N, K, h, w)``, ``feature (N, C, ~2h, ~2w)`` -> ``(N, K, ~2h, ~2w)``.
    """

    def __init__(
        self, feature: FeatureInfo, factor: int, num_classes: int, coarse: CoordMap, *, scale: float, learnable: bool
    ) -> None:
        super().__init__()
        kernel, offset = upsampling(coarse, factor, feature.coords)
        self.upscore = bilinear_upsampler(num_classes, factor, kernel=kernel, learnable=learnable)
        self.score = score_layer(feature.channels, num_classes)
        self.scale = scale
        up = coarse.upsampled(factor, kernel)
        # Crop whichever map is larger: the skip (Caffe layout, padded by 100) or the upsampled score.
        self.crop_up, self.crop_skip = max(offset, 0), max(-offset, 0)
        self.coords = feature.coords if offset >= 0 else up

    def forward(self, score: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        skip = self.score(feature * self.scale if self.scale != 1.0 else feature)[
            :, :, self.crop_skip :, self.crop_skip :
        ]
        if self.crop_skip:  # the Caffe layout: as the reference, crop the skip (padded by 100) to the upsampled score
            up = self.upscore(score)
            return up + crop(skip, 0, up)
        # One zero cell after the last row and column of the coarse score: its upsampling then covers the whole skip
        # map (otherwise one cell short on some sizes), and the values it had are unchanged (a zero input adds
        # nothing). The new border ramps towards zero, as the transposed convolution's first rows always did. The
        # fused map is the skip map, whose size torch.export can follow without a guard on which map is longer.
        up = self.upscore(nn.functional.pad(score, (0, 1, 0, 1)))[:, :, self.crop_up :, self.crop_up :]
        return crop(up, 0, skip) + skip


class FCNHead(nn.Module):
    """Scores backbone features at strides from the coarsest down to ``finest_stride`` and upsamples to the input.

    Args:
        features: the backbone's ``feature_info``, finest first.
        num_classes: K.
        finest_stride: 32 for FCN-32s, 16 for FCN-16s, 8 for FCN-8s, 4 for FCN-4s.
        learnable_upsampling: let the transposed convolutions learn (fixed bilinear by default, as the reference).
        at_once: scale the skip inputs as the authors' at-once FCN-8s did.
    """

    def __init__(
        self,
        features: list[FeatureInfo],
        num_classes: int,
        *,
        finest_stride: int = 8,
        learnable_upsampling: bool = False,
        at_once: bool = False,
    ) -> None:
        super().__init__()
        used = [f for f in features if f.stride >= finest_stride]
        if not used or used[0].stride != finest_stride:
            strides = [f.stride for f in features]
            raise ValueError(f"the backbone has features at strides {strides}; cannot fuse down to {finest_stride}")
        coarsest = used[-1]
        self.num_used = len(used)
        self.score_fr = score_layer(coarsest.channels, num_classes)
        coords, fusions = coarsest.coords, []
        for coarse, fine in zip(used[:0:-1], used[-2::-1], strict=True):
            scale = AT_ONCE_SKIP_SCALES.get(fine.stride, 1.0) if at_once else 1.0
            fusion = SkipFusion(
                fine, coarse.stride // fine.stride, num_classes, coords, scale=scale, learnable=learnable_upsampling
            )
            fusions.append(fusion)
            coords = fusion.coords
        self.skips = nn.ModuleList(fusions)
        kernel, self.crop_final = upsampling(coords, finest_stride, CoordMap())
        self.upscore = bilinear_upsampler(num_classes, finest_stride, kernel=kernel, learnable=learnable_upsampling)
        if self.crop_final < 0:
            raise ValueError("the score map starts inside the image; the backbone's padding cannot be aligned")

    @property
    def crops(self) -> list[int]:
        """Crop offsets from coarse to fine, then the final one (the reference's 5, 9 and 31 for FCN-8s)."""
        return [max(s.crop_up, s.crop_skip) for s in self.skips] + [self.crop_final]

    def forward(self, features: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """``features`` from the backbone (finest first), ``image (N, 3, H, W)`` -> logits ``(N, K, H, W)``."""
        n = len(features)
        score = self.score_fr(features[n - 1])
        for i, fusion in enumerate(self.skips):
            score = fusion(score, features[n - 2 - i])
        return crop(self.upscore(score), self.crop_final, image)
