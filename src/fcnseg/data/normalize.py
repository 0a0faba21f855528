"""The input normalisation of the models, in plain torch (prediction needs no torchvision).

ImageNet's mean and std for RGB images (the pretrained backbones'); per-band ones for other band counts
(:mod:`fcnseg.data.bands`). Decoded images are uint8 (``value / 255`` is their ``[0, 1]`` scale) or float32 already
in that scale (:mod:`fcnseg.data.decode`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""RGB mean of ImageNet images in [0, 1], used by torchvision's pretrained backbones."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""RGB standard deviation of ImageNet images in [0, 1]."""


def normalize_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images ``(..., B, H, W)`` -> normalised float32, with the arithmetic of ``eval_transforms``.

    The kernels of torchvision's v2 ``ToDtype(scale=True)`` then ``Normalize`` (multiply by 1/255, subtract the
    mean, divide by the std), bit for bit, so that a file predicted by :class:`~fcnseg.inference.predictor.Predictor`
    is the input its evaluation scored. The float copy keeps the memory layout of ``images`` (a channels-last view
    stays channels-last) and is normalised in place.
    """
    x = images.to(torch.float32).mul_(1.0 / 255)
    shape = (-1, 1, 1)
    x.sub_(torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(shape))
    return x.div_(torch.as_tensor(std, dtype=torch.float32, device=x.device).view(shape))


def normalize_image(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Decoded images ``(..., B, H, W)``, uint8 or float in ``[0, 1]`` scale -> normalised float32.

    uint8 images take :func:`normalize_uint8` (bit for bit the arithmetic of ``eval_transforms``); float images are
    copied to float32 and normalised in place as v2's ``Normalize`` does (subtract the mean, divide by the std), the
    copy keeping the memory layout of ``images``.
    """
    if images.dtype == torch.uint8:
        return normalize_uint8(images, mean, std)
    x = images.to(torch.float32, copy=True)
    shape = (-1, 1, 1)
    x.sub_(torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(shape))
    return x.div_(torch.as_tensor(std, dtype=torch.float32, device=x.device).view(shape))
