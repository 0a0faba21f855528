"""Training throughput: images per second of a full SGD step (forward, loss, backward, update) on random crops.

- ``baseline``: :class:`~benchlib.baseline.BaselineFCN8s`, fp32, NCHW, ``torch.optim.SGD`` over the
  parameters that learn, :func:`fcnseg.training.loss.segmentation_loss`.
- ``fast``: :class:`fcnseg.training.step.SGDStep`, the step ``fcnseg train`` runs (autocast at the trainer's
  precision, channels_last on CPU, the paper's SGD parameter groups).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from fcnseg.training.config import TrainConfig
from fcnseg.training.loss import segmentation_loss
from fcnseg.training.step import SGDStep

__all__ = ["baseline_step", "fast_step", "random_batch"]

# A small rate keeps random networks finite over a few steps; the step's cost does not depend on it.
_LR = 1e-8


def random_batch(batch: int, height: int, width: int, num_classes: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Images ``(batch, 3, H, W)`` float32 and masks ``(batch, H, W)`` int64 with ~5% void (255) pixels."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, height, width, generator=gen)
    masks = torch.randint(0, num_classes, (batch, height, width), generator=gen)
    masks[torch.rand(batch, height, width, generator=gen) < 0.05] = 255
    return images, masks


def baseline_step(model: nn.Module, images: Tensor, masks: Tensor) -> Callable[[], float]:
    """One plain fp32 eager SGD step of ``model`` on the batch per call; returns the loss."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=_LR, momentum=0.9, weight_decay=5e-4)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = segmentation_loss(model(images), masks)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def fast_step(
    model: nn.Module, images: Tensor, masks: Tensor, *, precision: str = "auto", device: torch.device | str = "cpu"
) -> Callable[[], float]:
    """One :class:`SGDStep` of ``model`` on the batch per call, exactly as ``fcnseg train`` runs it."""
    device = torch.device(device)
    sgd = SGDStep(model.train(), TrainConfig(precision=precision, device=device.type, lr=_LR, iters=10**6), device)
    total = sgd.config.iters

    def step() -> float:
        return sgd(images, masks, 0, total).item()

    return step
