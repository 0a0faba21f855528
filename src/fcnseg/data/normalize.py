"""The input normalisation of the pretrained backbones, in plain torch (prediction needs no torchvision)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""RGB mean of ImageNet images in [0, 1], used by torchvision's pretrained backbones."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""RGB standard deviation of ImageNet images in [0, 1]."""


def normalize_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images ``(..., 3, H, W)`` -> normalised float32, with the arithmetic of ``eval_transforms``.

    The kernels of torchvision's v2 ``ToDtype(scale=True)`` then ``Normalize`` (multiply by 1/255, subtract the
    mean, divide by the std), bit for bit, so that a file predicted by :class:`~fcnseg.inference.predictor.Predictor`
    is the input its evaluation scored. The float copy keeps the memory layout of ``images`` (a channels-last view
    stays channels-last) and is normalised in place.
    """
    x = images.to(torch.float32).mul_(1.0 / 255)
    shape = (-1, 1, 1)
    x.sub_(torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(shape))
    return x.div_(torch.as_tensor(std, dtype=torch.float32, device=x.device).view(shape))
