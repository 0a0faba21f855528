"""SGD with the paper's parameter groups, and the learning-rate schedules."""

from __future__ import annotations

import torch
from torch import nn


def _image_convolutions(model: nn.Module) -> set[int]:
    """Ids of the weights of the convolutions that read the image (VGG's conv1_1, ResNet's conv1)."""
    root = getattr(model, "backbone", model)
    bands = getattr(root, "in_channels", 3)  # 3 for RGB
    return {id(m.weight) for m in root.modules() if type(m) is nn.Conv2d and m.in_channels == bands}


def parameter_groups(model: nn.Module, lr: float, weight_decay: float, input_scale: float = 1.0) -> list[dict]:
    """The authors' groups: biases at twice the learning rate and without weight decay.

    Other one-dimensional parameters (batch-norm scales) keep the base rate without decay. Parameters that do not
    require gradients (the fixed bilinear upsampling) are left out. With ``input_scale`` ``s`` != 1, the weights of
    the convolutions that read the image get ``lr * s**2`` and ``weight_decay / s**2``: the steps that a reference
    fed ``s`` times larger images takes (see :data:`fcnseg.training.config.CAFFE_INPUT_SCALE`).
    """
    image_convs = _image_convolutions(model) if input_scale != 1.0 else set()
    weights, biases, norms, first = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in image_convs:
            first.append(p)
        elif name.endswith(".bias"):
            biases.append(p)
        elif p.ndim <= 1:
            norms.append(p)
        else:
            weights.append(p)
    square = input_scale**2
    groups = [
        {"params": weights, "lr": lr, "weight_decay": weight_decay, "lr_mult": 1.0},
        {"params": biases, "lr": 2 * lr, "weight_decay": 0.0, "lr_mult": 2.0},
        {"params": norms, "lr": lr, "weight_decay": 0.0, "lr_mult": 1.0},
        {"params": first, "lr": lr * square, "weight_decay": weight_decay / square, "lr_mult": square},
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(
    model: nn.Module, *, lr: float, momentum: float, weight_decay: float, input_scale: float = 1.0
) -> torch.optim.SGD:
    """SGD with momentum over ``parameter_groups``."""
    return torch.optim.SGD(parameter_groups(model, lr, weight_decay, input_scale), lr=lr, momentum=momentum)


def lr_factor(step: int, *, total: int, schedule: str, power: float = 0.9, warmup: int = 0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based).

    ``"fixed"``: 1 (the paper). ``"poly"``: ``(1 - step / total) ** power`` (DeepLab's schedule, the modern default).
    A linear warm-up over the first ``warmup`` steps multiplies either.
    """
    if schedule == "fixed":
        factor = 1.0
    elif schedule == "poly":
        factor = max(0.0, 1 - step / max(total, 1)) ** power
    else:
        raise ValueError(f"schedule must be 'fixed' or 'poly', not {schedule!r}")
    if warmup and step < warmup:
        factor *= (step + 1) / warmup
    return factor


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    """Apply ``base_lr * factor`` (times each group's multiplier); returns the base group's rate."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor * group.get("lr_mult", 1.0)
    return base_lr * factor
