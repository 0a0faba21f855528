"""Per-pixel cross-entropy with void ignored, normalised per pixel (mean) or summed as in the paper.

Optionally only the hardest share of the labelled pixels counts (bootstrapped cross-entropy, the top-k form of
online hard example mining): the pixels a thin structure covers are few, and most of the easy road and sky pixels
then stop diluting their gradient. An added Lovasz-softmax term (Berman et al., CVPR 2018) optimises the mean
IoU itself, each present class weighing the same however few pixels it covers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fcnseg.data import IGNORE_INDEX


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    normalization: str = "mean",
    class_weights: torch.Tensor | None = None,
    hard_fraction: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy over labelled pixels (or the hardest ``hard_fraction`` of them, see :func:`loss_terms`).

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
    total, count = loss_terms(logits, target, class_weights=class_weights, hard_fraction=hard_fraction)
    return total if normalization == "sum" else total / count.clamp(min=1)


def loss_terms(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    class_weights: torch.Tensor | None = None,
    hard_fraction: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed (weighted) cross-entropy over labelled pixels and their (weighted) number.

    The two parts of :func:`segmentation_loss`, kept apart so that distributed training can normalise by the
    labelled pixels of the whole global batch. Shapes as in :func:`segmentation_loss`; both results are scalars.

    Args:
        hard_fraction: in (0, 1]: only the ``ceil(hard_fraction * n)`` labelled pixels of the batch with the highest
            (weighted) loss count, in the sum and in the number.
    """
    if not 0 < hard_fraction <= 1:
        raise ValueError(f"hard_fraction must lie in (0, 1], got {hard_fraction}")
    weight = None if class_weights is None else class_weights.to(device=logits.device, dtype=torch.float32)
    labelled = target != IGNORE_INDEX
    if hard_fraction == 1:
        total = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum")
        count = labelled.sum() if weight is None else weight[target[labelled]].sum()
        return total, count
    per_pixel = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=IGNORE_INDEX, reduction="none")
    losses, classes = per_pixel[labelled], target[labelled]
    hardest = losses.topk(math.ceil(hard_fraction * losses.numel())).indices
    count = torch.tensor(hardest.numel(), device=logits.device) if weight is None else weight[classes[hardest]].sum()
    return losses[hardest].sum(), count


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Lovasz-softmax loss: the mean over the classes present in ``target`` of the Lovasz extension of 1 - IoU.

    Computed over the whole batch (one IoU per class, as the evaluation does), from the softmax probabilities;
    at one-hot probabilities it equals ``mean_c (1 - IoU_c)`` exactly. Shapes as in :func:`segmentation_loss`.

    Returns:
        A scalar; 0 (with a gradient) when the batch has no labelled pixel.
    """
    probs = logits.float().softmax(1).movedim(1, -1).reshape(-1, logits.shape[1])
    target = target.reshape(-1)
    labelled = target != IGNORE_INDEX
    probs, target = probs[labelled], target[labelled]
    present = target.unique()
    if present.numel() == 0:
        return logits.sum() * 0.0
    truth = (present[:, None] == target[None, :]).float()  # (C, P): one row per present class
    errors, order = (truth - probs[:, present].t()).abs().sort(dim=1, descending=True)
    truth = truth.gather(1, order)
    # Gradient of the Lovasz extension: the change of the Jaccard loss as the sorted pixels join one by one.
    positives = truth.sum(1, keepdim=True)
    jaccard = 1 - (positives - truth.cumsum(1)) / (positives + (1 - truth).cumsum(1))
    jaccard = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    return (errors * jaccard).sum(1).mean()


LOVASZ_STRIDE = 4
"""The Lovasz term sees every ``LOVASZ_STRIDE``-th pixel each way: one of ``LOVASZ_STRIDE**2`` phases per step."""


def phased_lovasz(logits: torch.Tensor, target: torch.Tensor, step: int) -> torch.Tensor:
    """:func:`lovasz_softmax` on one pixel phase of the batch, another phase each step.

    On every 4th pixel each way, phase ``step mod 16``: 1/16 of the sorting the term would cost on all pixels, every
    pixel visited once in 16 steps. Shapes as in :func:`segmentation_loss`.
    """
    row, col = divmod(step % LOVASZ_STRIDE**2, LOVASZ_STRIDE)
    return lovasz_softmax(
        logits[..., row::LOVASZ_STRIDE, col::LOVASZ_STRIDE], target[:, row::LOVASZ_STRIDE, col::LOVASZ_STRIDE]
    )
