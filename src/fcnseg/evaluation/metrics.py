"""The confusion matrix and the four metrics of Long, Shelhamer and Darrell, "Fully Convolutional Networks for
Semantic Segmentation" (CVPR 2015, Section 5): pixel accuracy, mean accuracy, mean IoU and frequency weighted IoU.

The definitions follow the authors' ``score.py`` (fcn.berkeleyvision.org) exactly. With ``n_ij`` the number of
pixels of ground-truth class ``i`` predicted as class ``j`` (the matrix below: rows = ground truth, columns =
prediction), ``t_i = sum_j n_ij`` and ``p_j = sum_i n_ij``:

- pixel accuracy ``sum_i n_ii / sum_i t_i``;
- mean accuracy ``mean_i n_ii / t_i`` over the classes present in the ground truth (``t_i > 0``);
- mean IoU ``mean_i n_ii / (t_i + p_i - n_ii)`` over the classes present in the ground truth or the prediction;
- frequency weighted IoU ``sum_i (t_i / sum_k t_k) * IoU_i`` over the classes with ``t_i > 0``.

``score.py`` gets the "present" rules from ``np.nanmean`` skipping the 0/0 ratios; here a 0/0 ratio is reported
as ``None`` so that the result serialises to valid JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fcnseg.data.classes import IGNORE_INDEX

__all__ = ["ConfusionMatrix", "metrics_from_matrix"]


class ConfusionMatrix:
    """Accumulates a ``(K, K)`` confusion matrix (rows = ground truth, columns = prediction) with ``torch.bincount``.

    Pixels whose target is ``ignore_index`` or outside ``[0, K)`` are skipped, as in the authors' ``fast_hist``.
    Counting happens on the device of the inputs; :attr:`matrix` is always a CPU tensor.

    Args:
        num_classes: number of classes ``K``.
        ignore_index: target value of void pixels.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._counts = torch.zeros(self.num_classes * self.num_classes, dtype=torch.int64)

    @property
    def matrix(self) -> torch.Tensor:
        """The ``(K, K)`` int64 matrix on the CPU: ``matrix[i, j]`` pixels of class ``i`` predicted as ``j``."""
        return self._counts.cpu().view(self.num_classes, self.num_classes).clone()

    def reset(self) -> None:
        """Set every count back to zero."""
        self._counts = torch.zeros_like(self._counts)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Count one batch.

        Args:
            pred: predicted class indices, ``(N, H, W)`` or ``(H, W)``, integer (``logits.argmax(1)``).
            target: ground-truth class indices of the same shape; ``ignore_index`` marks void pixels.

        Raises:
            ValueError: if the shapes differ, ``pred`` is not integer, or a counted pixel has a prediction outside
                ``[0, K)``.
        """
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target, device=pred.device)
        if pred.shape != target.shape:
            hint = " (pass logits.argmax(1), not the logits)" if pred.dim() == target.dim() + 1 else ""
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}{hint}")
        if pred.is_floating_point() or pred.is_complex():
            raise ValueError(f"prediction must hold class indices (an integer tensor), got {pred.dtype}")
        k = self.num_classes
        target = target.reshape(-1).long()
        pred = pred.reshape(-1).long()
        keep = (target >= 0) & (target < k) & (target != self.ignore_index)
        target, pred = target[keep], pred[keep]
        if pred.numel() and (pred.min() < 0 or pred.max() >= k):
            raise ValueError(
                f"prediction holds class {int(pred.min())}..{int(pred.max())} outside [0, {k}); "
                "does the model's number of classes match the dataset's?"
            )
        if self._counts.device != pred.device:
            self._counts = self._counts.to(pred.device)
        self._counts += torch.bincount(target * k + pred, minlength=k * k)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the counts of ``other`` (e.g. from another process or split) to this matrix; returns ``self``."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one")
        self._counts += other._counts.to(self._counts.device)
        return self

    def compute(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """The four metrics of the paper and per-class IoU/accuracy; see :func:`metrics_from_matrix`."""
        return metrics_from_matrix(self.matrix, class_names)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise ``num / den`` with NaN where ``den == 0`` (the 0/0 cases ``score.py`` leaves to ``nanmean``)."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def metrics_from_matrix(matrix: torch.Tensor | np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Compute the paper's metrics from a confusion matrix.

    Args:
        matrix: ``(K, K)`` counts, rows = ground truth, columns = prediction.
        class_names: ``K`` names for ``per_class``; defaults to ``"0"``, ``"1"``, ...

    Returns:
        ``{"pixel_acc", "mean_acc", "mean_iou", "fw_iou"}`` as floats in ``[0, 1]``, ``"per_class"``: a list of
        ``{"name", "iou", "acc"}`` (``None`` where the value is 0/0), ``"confusion"``: the matrix as nested lists,
        ``"iou_classes"``: the number of classes the mean IoU was taken over (those in the ground truth or the
        prediction), ``"num_classes"``: ``K``, and ``"absent_classes"``: the names of the classes with no
        ground-truth pixel (a mean IoU over fewer classes than the dataset has says less than it seems).

    Raises:
        ValueError: if the matrix is not square, the names do not match it, or it counts no pixel at all.
    """
    hist = torch.as_tensor(matrix).cpu().numpy().astype(np.int64)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"confusion matrix must be (K, K), got shape {hist.shape}")
    k = hist.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise ValueError(f"got {len(names)} class names for a {k}-class confusion matrix")
    total = int(hist.sum())
    if total == 0:
        raise ValueError("the confusion matrix is empty: no labelled (non-void) pixel was evaluated")

    diag = np.diag(hist).astype(np.float64)
    gt_count = hist.sum(axis=1).astype(np.float64)  # t_i
    pred_count = hist.sum(axis=0).astype(np.float64)  # p_j
    acc = _ratio(diag, gt_count)
    iou = _ratio(diag, gt_count + pred_count - diag)
    freq = gt_count / total
    present = freq > 0  # score.py: fwavacc = (freq[freq > 0] * iu[freq > 0]).sum()

    def _opt(x: float) -> float | None:
        return None if np.isnan(x) else float(x)

    return {
        "pixel_acc": float(diag.sum() / total),
        "mean_acc": float(np.nanmean(acc)),  # at least one class has t_i > 0 because total > 0
        "mean_iou": float(np.nanmean(iou)),
        "fw_iou": float((freq[present] * iou[present]).sum()),
        "per_class": [{"name": name, "iou": _opt(iou[i]), "acc": _opt(acc[i])} for i, name in enumerate(names)],
        "confusion": hist.tolist(),
        "iou_classes": int((~np.isnan(iou)).sum()),
        "num_classes": k,
        "absent_classes": [names[i] for i in np.flatnonzero(gt_count == 0)],
    }


def coverage_note(metrics: dict[str, Any]) -> str:
    """``""``, or ``" (over 1 of 2 classes; not in the ground truth: cell)"`` when classes miss from the truth."""
    absent = metrics.get("absent_classes") or []
    if not absent:
        return ""
    shown = ", ".join(absent[:8]) + (f" and {len(absent) - 8} more" if len(absent) > 8 else "")
    return f" (over {metrics['iou_classes']} of {metrics['num_classes']} classes; not in the ground truth: {shown})"
