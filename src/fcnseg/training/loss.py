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
    weight = None if class_weights is None else class_weights.to(device=logits.device, dtype=torch.float32)
    loss = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum")
    if normalization == "sum":
        return loss
    labelled = target != IGNORE_INDEX
    denominator = labelled.sum() if weight is None else weight[target[labelled]].sum()
    return loss / denominator.clamp(min=1)
