"""Per-pixel cross-entropy with void ignored, normalised per pixel (mean) or summed as in the paper."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fcnseg.data import IGNORE_INDEX


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    normalization: str = "mean",
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over labelled pixels.

    Args:
        logits: ``(N, K, H, W)`` class scores.
        target: ``(N, H, W)`` int64 classes, void = 255 (ignored).
        normalization: ``"mean"`` divides by the (weighted) number of labelled pixels; ``"sum"`` does not, as the
            authors' Caffe ``SoftmaxWithLoss`` with ``normalize: false``, which is why their learning rates are tiny.
        class_weights: ``(K,)`` weights per class, e.g. median-frequency weights.

    Returns:
        A scalar; 0 (with a gradient) when the batch has no labelled pixel.
    """
    if normalization not in ("mean", "sum"):
        raise ValueError(f"loss normalization must be 'mean' or 'sum', not {normalization!r}")
    total, count = loss_terms(logits, target, class_weights=class_weights)
    return total if normalization == "sum" else total / count.clamp(min=1)


def loss_terms(
    logits: torch.Tensor, target: torch.Tensor, *, class_weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed (weighted) cross-entropy over labelled pixels and their (weighted) number.

    The two parts of :func:`segmentation_loss`, kept apart so that distributed training can normalise by the
    labelled pixels of the whole global batch. Shapes as in :func:`segmentation_loss`; both results are scalars.
    """
    weight = None if class_weights is None else class_weights.to(device=logits.device, dtype=torch.float32)
    total = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum")
    labelled = target != IGNORE_INDEX
    count = labelled.sum() if weight is None else weight[target[labelled]].sum()
    return total, count
