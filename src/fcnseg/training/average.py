"""``WeightAverage``: an exponential moving average of the weights, validated and kept as ``best.pt``.

SGD's last weights wander with each batch; their running average is a better model at no cost in steps (Polyak
averaging; timm's ``ModelEmaV2``, TensorFlow's ``ExponentialMovingAverage``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """A copy of ``model`` whose floating-point parameters and buffers follow ``avg = d * avg + (1 - d) * weights``
    after each update, with ``d = min(decay, (1 + n) / (10 + n))`` at update ``n`` (TensorFlow's ``num_updates``
    rule), so that the first averages forget the untrained layers quickly. Integer buffers (batch norm's counters)
    are copied. ``model`` is the average, always in eval mode.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the weight average's decay must lie strictly between 0 and 1, got {decay}")
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights (the same architecture) into the average."""
        self.updates += 1
        keep = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, weights in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if average.is_floating_point():
                average.lerp_(weights, 1 - keep)
            else:
                average.copy_(weights)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = state["updates"]
        self.model.load_state_dict(state["weights"])
