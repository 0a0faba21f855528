"""Paired (image, mask) transforms from torchvision ``transforms.v2`` and the batch collate function.

``tv_tensors.Mask`` makes v2 resize masks with NEAREST and leave them out of photometric transforms; the
fill dictionaries pad images with 0 and masks with :data:`~fcnseg.data.classes.IGNORE_INDEX` (void), as in
torchvision's segmentation reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from fcnseg.data.classes import IGNORE_INDEX
from fcnseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD

_FILL = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}


class RandomScale(v2.Transform):
    """Resize image and mask by one random factor drawn uniformly from ``scale_range``.

    v2 has no relative random rescale (``RandomResize`` draws an absolute size, ``ScaleJitter`` a size relative
    to a fixed target); the resize itself is v2's, so masks use NEAREST.
    """

    def __init__(self, scale_range: tuple[float, float]) -> None:
        super().__init__()
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.scale_range = scale_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        scale = torch.empty(()).uniform_(*self.scale_range).item()
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, size=params["size"], antialias=True)


def _to_float(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


def train_transforms(
    crop_size: tuple[int, int],
    *,
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    hflip: bool = True,
    jitter: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Training augmentation: random scale, random crop (padding what is smaller), flip, optional jitter.

    Args:
        crop_size: ``(height, width)`` of the output; images smaller than it are padded (image 0, mask 255).
        scale_range: range of the random scale factor; ``None`` for no scaling.
        hflip: random horizontal flip with probability 0.5.
        jitter: photometric ``ColorJitter`` (brightness, contrast, saturation 0.3, hue 0.05) on the image only;
            RGB images only (``len(mean) == 3``).
        mean: per-band mean of the model's input normalisation (``B`` values, [0, 1] scale).
        std: per-band standard deviation of that normalisation.

    Returns:
        A callable ``(Image (B, H, W) uint8 or float32 in [0, 1], Mask int64 (H, W)) -> (float32 (B, h, w), int64
        (h, w))`` with ``(h, w) = crop_size``.

    Raises:
        ValueError: ``jitter`` for images that are not RGB.
    """
    if jitter and len(mean) != 3:
        raise ValueError(
            f"--jitter (colour jitter: brightness, contrast, saturation, hue) applies to RGB images; these have "
            f"{len(mean)} band(s): train without --jitter"
        )
    steps: list[v2.Transform] = []
    if scale_range is not None:
        steps.append(RandomScale(scale_range))
    steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=_FILL))
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if jitter:
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05))
    return v2.Compose(steps + _to_float(mean, std))


def eval_transforms(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """Evaluation transform: only dtype conversion and normalisation, no change of geometry.

    Returns:
        A callable ``(Image (B, H, W) uint8 or float32 in [0, 1], Mask int64 (H, W)) -> (float32 (B, H, W), int64
        (H, W))``.
    """
    return v2.Compose(_to_float(mean, std))


def pad_collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image, mask)`` pairs of different sizes, padding at the bottom and right.

    Images are padded with 0 (the mean after normalisation) and masks with 255 (void), so padded pixels never
    reach the loss or the metrics.

    Args:
        batch: pairs ``(image (3, H_i, W_i), mask (H_i, W_i))``.

    Returns:
        images ``(N, 3, H_max, W_max)`` and masks ``(N, H_max, W_max)`` int64, as plain tensors.
    """
    if not batch:
        raise ValueError("pad_collate got an empty batch")
    height = max(int(image.shape[-2]) for image, _ in batch)
    width = max(int(image.shape[-1]) for image, _ in batch)
    first = batch[0][0]
    images = torch.zeros((len(batch), first.shape[0], height, width), dtype=first.dtype)
    masks = torch.full((len(batch), height, width), IGNORE_INDEX, dtype=torch.int64)
    for i, (image, mask) in enumerate(batch):
        if tuple(image.shape[-2:]) != tuple(mask.shape[-2:]):
            raise ValueError(f"pad_collate: item {i} has image {tuple(image.shape)} but mask {tuple(mask.shape)}")
        h, w = image.shape[-2:]
        images[i, :, :h, :w] = image.as_subclass(torch.Tensor)
        masks[i, :h, :w] = mask.as_subclass(torch.Tensor)
    return images, masks
