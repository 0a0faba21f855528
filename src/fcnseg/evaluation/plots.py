"""Figures for evaluation and training: the confusion matrix, a grid of samples and training curves.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly (no ``pyplot``, so no global
figure state and no display needed) and written atomically with :func:`fcnseg.core.io.atomic_path`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fcnseg.core.io import atomic_path
from fcnseg.data.classes import IGNORE_INDEX
from fcnseg.inference.visualize import colorize

__all__ = ["plot_confusion", "plot_curves", "plot_samples"]

# Ground-truth void is drawn in VOC's void colour, apart from the black that many datasets give a class.
VOID_COLOR = (224, 224, 192)

ArrayLike = np.ndarray | torch.Tensor


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _palette(colors: Any) -> np.ndarray:
    """Any ``(K, 3)`` colour table -> ``(K, 3)`` uint8 array."""
    return _numpy(colors).astype(np.uint8).reshape(-1, 3)


def _save(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    return path


def _normalized(matrix: np.ndarray, normalize: str | None) -> np.ndarray:
    m = matrix.astype(np.float64)
    if normalize is None:
        return m
    axis = {"true": 1, "pred": 0, "all": None}.get(normalize, "bad")
    if axis == "bad":
        raise ValueError(f"normalize must be 'true', 'pred', 'all' or None, got {normalize!r}")
    total = m.sum(axis=axis, keepdims=axis is not None)
    return np.divide(m, total, out=np.zeros_like(m), where=total > 0)


def plot_confusion(
    matrix: ArrayLike,
    names: Sequence[str],
    path: str | os.PathLike,
    normalize: str | None = "true",
    title: str | None = None,
) -> Path:
    """Draw a confusion matrix as a heat map with labelled axes and a colour bar.

    Args:
        matrix: ``(K, K)`` counts, rows = ground truth, columns = prediction.
        names: ``K`` class names.
        path: output image (``.png``).
        normalize: ``"true"`` divides each row by its sum (recall per class, the default), ``"pred"`` each column,
            ``"all"`` the whole matrix, ``None`` keeps counts (on a log colour scale). Empty rows stay zero.
        title: figure title; a default says how it was normalised.

    Returns:
        ``path``. Cell values are annotated (as percentages when normalised) for ``K <= 25``.
    """
    counts = _numpy(matrix)
    k = counts.shape[0]
    if counts.shape != (k, k) or len(names) != k:
        raise ValueError(f"need a (K, K) matrix and K names, got shape {counts.shape} and {len(names)} names")
    values = _normalized(counts, normalize)
    side = min(max(5.0, 0.5 * k + 2.5), 40.0)  # about 0.5 inch per cell: 11-21 classes stay legible
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    if normalize is None:
        image = ax.imshow(np.maximum(values, 1), cmap="Blues", norm=LogNorm(vmin=1, vmax=max(values.max(), 2)))
    else:
        image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize != "all" else max(values.max(), 1e-9))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(k)
    ax.set_xticks(ticks, labels=list(names), rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, labels=list(names))
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    default_title = {"true": "row-normalised (%)", "pred": "column-normalised (%)", "all": "share of pixels (%)"}
    ax.set_title(title or f"Confusion matrix, {default_title.get(normalize, 'pixel counts')}")
    if k <= 25:
        fontsize = 9 if k <= 12 else 7 if k <= 21 else 6
        for i in range(k):
            for j in range(k):
                if counts[i, j] == 0:
                    continue
                text = f"{values[i, j]:.0f}" if normalize is None else f"{100 * values[i, j]:.0f}"
                color = "white" if image.norm(values[i, j]) > 0.5 else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=color)
    return _save(fig, path)


def _hwc_uint8(image: ArrayLike) -> np.ndarray:
    """``(3, H, W)`` or ``(H, W, 3)`` uint8 -> ``(H, W, 3)`` uint8."""
    image = _numpy(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
    if image.dtype != np.uint8:
        raise ValueError(f"sample images must be uint8 (denormalise them first), got {image.dtype}")
    return image


def plot_samples(
    images_uint8: Sequence[ArrayLike],
    gts: Sequence[ArrayLike],
    preds: Sequence[ArrayLike],
    colors: ArrayLike | Sequence[Sequence[int]],
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
) -> Path:
    """Draw a grid with one row per sample: image | ground truth | prediction.

    Args:
        images_uint8: ``S`` images, ``(H, W, 3)`` or ``(3, H, W)`` uint8.
        gts: ``S`` ground-truth masks ``(H, W)``; void (255) is drawn in :data:`VOID_COLOR`.
        preds: ``S`` predicted masks ``(H, W)``.
        colors: ``(K, 3)`` uint8 palette.
        path: output image (``.png``).
        names: ``K`` class names for a legend of the classes that appear; no legend when ``None``.

    Returns:
        ``path``.
    """
    if not (len(images_uint8) == len(gts) == len(preds)) or not images_uint8:
        raise ValueError(
            f"need as many images, ground truths and predictions (>= 1), got "
            f"{len(images_uint8)}, {len(gts)}, {len(preds)}"
        )
    palette = _palette(colors)
    rows = len(images_uint8)
    first = _hwc_uint8(images_uint8[0])
    aspect = first.shape[1] / max(first.shape[0], 1)
    cell = 3.0
    fig = Figure(figsize=(3 * cell * aspect, rows * cell + (0.8 if names is not None else 0.2)), layout="constrained")
    axes = fig.subplots(rows, 3, squeeze=False)
    present: set[int] = set()
    for r, (image, gt, pred) in enumerate(zip(images_uint8, gts, preds, strict=True)):
        gt, pred = _numpy(gt), _numpy(pred)
        present.update(int(c) for c in np.unique(np.concatenate([gt.ravel(), pred.ravel()])) if 0 <= c < len(palette))
        truth = colorize(gt, palette)
        truth[gt == IGNORE_INDEX] = VOID_COLOR
        panels = (_hwc_uint8(image), truth, colorize(pred, palette))
        for c, (panel, label) in enumerate(zip(panels, ("image", "ground truth", "prediction"), strict=True)):
            ax = axes[r, c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label)
    if names is not None:
        handles = [Patch(facecolor=palette[i] / 255.0, edgecolor="gray", label=str(names[i])) for i in sorted(present)]
        handles.append(Patch(facecolor=np.divide(VOID_COLOR, 255.0), edgecolor="gray", label="void"))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    return _save(fig, path)


def _series(rows: Sequence[Mapping[str, Any]], x_key: str, y_key: str) -> tuple[list[float], list[float]]:
    """The (x, y) points of the rows that hold a finite number under both keys (row index when x is missing)."""
    xs, ys = [], []
    for i, row in enumerate(rows):
        x = row.get(x_key, i) if x_key else i
        y = row.get(y_key)
        if isinstance(y, bool) or not isinstance(y, int | float) or not isinstance(x, int | float):
            continue
        if math.isfinite(y) and math.isfinite(x):
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def plot_curves(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Plot training curves from JSON-lines log rows.

    Panels: training loss vs step, learning rate vs step, and every ``val_*`` metric vs step, each only when the
    log holds that key. The x axis is ``step`` when rows have it, else ``epoch``, else the row number. Missing keys,
    ``None`` and NaN values are skipped, so a partial or empty log still gives a figure.

    Args:
        rows: one dict per log line, e.g. ``{"step": 100, "epoch": 1, "loss": 0.9, "lr": 1e-4}``.
        path: output image (``.png``).

    Returns:
        ``path``.
    """
    x_key = next((k for k in ("step", "epoch") if any(k in row for row in rows)), "")
    x_label = x_key or "log row"
    val_keys = sorted({k for row in rows for k in row if k.startswith("val_")})
    panels = [
        (title, [(key, *_series(rows, x_key, key)) for key in keys])
        for title, keys in (("training loss", ["loss"]), ("learning rate", ["lr"]), ("validation", val_keys))
    ]
    panels = [(title, [s for s in series if s[1]]) for title, series in panels]
    panels = [(title, series) for title, series in panels if series]
    fig = Figure(figsize=(5.0 * max(len(panels), 1), 3.8), layout="constrained")
    if not panels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no loss, lr or val_* values in the log", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    for i, (title, series) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key, xs, ys in series:
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key.removeprefix("val_"))
        ax.set_title(title)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if title == "validation":
            ax.legend(fontsize=8)
    return _save(fig, path)
