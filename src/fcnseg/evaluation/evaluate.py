"""The evaluation loop: run a model over a split, accumulate one confusion matrix, report the paper's metrics.

Evaluation scores what prediction produces: every batch goes through a
:class:`~fcnseg.inference.predictor.Predictor`'s :meth:`~fcnseg.inference.predictor.Predictor.infer`, the path of
``fcnseg predict`` (the model prepared for its device and precision, whole-image or sliding-window, multi-scale and
flip), and images are decoded by the one decoder that prediction uses. ``fcnseg eval`` on a split therefore gives
the metrics of ``fcnseg predict``'s masks of the same images (``tests/test_eval_is_predict.py``).
Under ``torchrun`` each process evaluates its own contiguous part of the split and the confusion matrices are
summed, so every process gets the metrics of the whole split, equal to a one-process evaluation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from fcnseg.core.device import autocast_dtype
from fcnseg.core.distributed import World, all_reduce_sum, shard
from fcnseg.core.io import write_text
from fcnseg.core.progress import make_bar
from fcnseg.data.classes import IGNORE_INDEX, as_class_info
from fcnseg.evaluation.metrics import ConfusionMatrix, coverage_note, metrics_from_matrix
from fcnseg.evaluation.plots import plot_confusion, plot_samples
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.visualize import display_rgb

__all__ = ["EvalResult", "Sample", "class_names_colors", "evaluate", "format_table", "write_report"]

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    """One evaluated image kept for the report: ``image`` ``(H, W, 3)`` uint8, ``gt`` and ``pred`` ``(H, W)`` int64."""

    image: np.ndarray
    gt: np.ndarray
    pred: np.ndarray


@dataclass
class EvalResult:
    """What :func:`evaluate` returns.

    Attributes:
        metrics: :meth:`ConfusionMatrix.compute` output: the four metrics, ``per_class`` and ``confusion``.
        matrix: ``(K, K)`` int64 confusion matrix, rows = ground truth, columns = prediction.
        samples: the first ``num_samples`` images with their ground truth and prediction.
        num_images: images evaluated.
        seconds: wall time of the loop.
        settings: the inference settings (mode, tile size, overlap, scales, flip, precision).
    """

    metrics: dict[str, Any]
    matrix: Tensor
    samples: list[Sample] = field(default_factory=list)
    num_images: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)


def class_names_colors(classes: Any) -> tuple[list[str], np.ndarray]:
    """Names and ``(K, 3)`` uint8 colours of a class table.

    Args:
        classes: any form :func:`fcnseg.data.as_class_info` accepts: a ``ClassInfo``, a checkpoint's
            ``{"names": [...], "colors": [...]}`` dict, or a plain sequence of names (VOC palette colours).
    """
    info = as_class_info(classes)
    return list(info.names), np.asarray(info.colors, dtype=np.uint8).reshape(-1, 3)


def _to_uint8_image(image: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """Undo the eval normalisation for display: ``(B, H, W)`` float -> ``(H, W, 3)`` uint8.

    With ``mean``/``std`` on the 0..1 scale (torchvision convention) or 0..255 (Caffe convention, any value > 1);
    without them the image is min-max stretched. Images of other band counts than RGB show their first three bands
    (or the grey band), scaled by :func:`~fcnseg.inference.visualize.display_rgb`.
    """
    x = image.detach().float().cpu()
    if mean is not None and std is not None:
        m, s = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
        x = x * s + m
        x = x if max(mean) > 1.0 else x * 255.0
    else:
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo).clamp_min(1e-12) * 255.0
    if x.shape[0] != 3:
        return display_rgb(x.permute(1, 2, 0).numpy())
    return x.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _collate(batch: list[tuple[Tensor, Tensor]]) -> tuple[list[Tensor], list[Tensor]]:
    """Keep images as lists: a split may mix sizes (VOC); equal sizes are stacked later."""
    images = [torch.as_tensor(img).as_subclass(Tensor) for img, _ in batch]
    masks = [torch.as_tensor(mask).as_subclass(Tensor) for _, mask in batch]
    return images, masks


def _groups(images: list[Tensor], masks: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Stack a batch when all images share a size, else yield one image at a time: ``(N, 3, H, W), (N, H, W)``."""
    masks = [m.squeeze(0) if m.dim() == 3 and m.shape[0] == 1 else m for m in masks]  # (1, H, W) -> (H, W)
    if all(img.shape == images[0].shape for img in images):
        return [(torch.stack(images), torch.stack(masks))]
    return [(img[None], mask[None]) for img, mask in zip(images, masks, strict=True)]


def _running_miou(cm: ConfusionMatrix) -> float:
    """Mean IoU so far, cheap enough for the progress bar (same definition as :func:`metrics_from_matrix`)."""
    hist = cm.matrix.double()
    diag = hist.diag()
    union = hist.sum(0) + hist.sum(1) - diag
    return float((diag[union > 0] / union[union > 0]).mean()) if bool((union > 0).any()) else float("nan")


def inference_settings(predictor: Predictor) -> dict[str, Any]:
    """How ``predictor`` runs (tiling, scales, flip, precision, CRF), as the plain values an evaluation records."""
    amp = autocast_dtype(predictor.precision, predictor.device)
    tile = predictor.tile_size
    return {
        "mode": "slide" if tile else "whole",
        "tile_size": list(tile) if isinstance(tile, tuple) else tile,
        "overlap": predictor.overlap if tile else None,
        "scales": [float(s) for s in predictor.scales],
        "flip": predictor.flip,
        "precision": predictor.precision,
        "autocast": None if amp is None else str(amp).removeprefix("torch."),
        "crf": None if predictor.crf is None else dict(vars(predictor.crf)),  # docs/crf.md
    }


def evaluate(
    predictor: Predictor,
    dataset: Dataset,
    *,
    classes: Any = None,
    batch_size: int = 1,
    progress: bool = True,
    num_samples: int = 0,
    num_workers: int = 0,
    ignore_index: int = IGNORE_INDEX,
    world: World | None = None,
) -> EvalResult:
    """Score ``predictor`` on every item of ``dataset``: the paper's metrics over the whole split.

    The predictor's device and inference settings (precision, tiling, scales, flip, backend) are the ones used,
    the path ``fcnseg predict`` takes (build it with :class:`Predictor` or :meth:`Predictor.from_checkpoint`).

    Args:
        predictor: the model and how it runs.
        dataset: items ``(image (C, H, W) float normalised as the predictor's mean/std say, mask (H, W) int64)``,
            void = ``ignore_index``.
        classes: the ``K`` classes naming ``per_class`` (see :func:`class_names_colors`; default: the predictor's).
        batch_size: images per forward pass (images of different sizes in a batch are run one by one).
        progress: show a progress bar.
        num_samples: how many (image, gt, pred) triples to keep for the report, from the start of the split.
        num_workers: DataLoader worker processes.
        ignore_index: void label of the masks.
        world: with several processes (``torchrun``), each evaluates its part of ``dataset`` and all get the metrics
            of the whole split; samples come from rank 0's part, the start of the split.

    Returns:
        An :class:`EvalResult`.

    Raises:
        ValueError: logits whose class count differs from ``classes``, or a split without any labelled pixel.
    """
    names, _ = class_names_colors(predictor.classes if classes is None else classes)
    device = predictor.device
    world = world or World()
    loader = DataLoader(
        shard(dataset, world),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),  # leaves the global RNG (a training run's dropout stream) alone
    )
    cm = ConfusionMatrix(len(names), ignore_index=ignore_index)
    start = time.perf_counter()
    result = EvalResult({}, cm.matrix, settings=inference_settings(predictor))
    normalization = (predictor.mean, predictor.std)
    _accumulate(predictor.infer, loader, device, cm, result, num_samples, normalization, progress and world.is_main)
    matrix = cm.matrix
    if world.enabled:  # every process ends with the counts of the whole split
        counts = all_reduce_sum(torch.cat([matrix.view(-1), torch.tensor([result.num_images])]), world)
        matrix, result.num_images = counts[:-1].view_as(matrix), int(counts[-1])
    result.seconds = time.perf_counter() - start
    result.matrix = matrix
    result.metrics = metrics_from_matrix(matrix, names)
    logger.info(
        "%d images in %.1f s: mean IoU %.2f%%, pixel acc %.2f%%",
        result.num_images,
        result.seconds,
        100 * result.metrics["mean_iou"],
        100 * result.metrics["pixel_acc"],
    )
    return result


@contextlib.contextmanager
def model_state_kept(model: nn.Module) -> Iterator[nn.Module]:
    """Give ``model`` back its training flag and, if it had it, the default memory format on leaving.

    A :class:`Predictor` puts its model in eval mode and, on CPU, its weights in channels_last; a model evaluated
    during training goes back to training as it was.
    """
    was_training = model.training
    contiguous = all(p.is_contiguous() for p in model.parameters() if p.dim() == 4)
    try:
        yield model
    finally:
        model.train(was_training)
        if contiguous:
            model.to(memory_format=torch.contiguous_format)


def _accumulate(
    infer: Callable[[Tensor], Tensor],
    loader: DataLoader,
    device: torch.device,
    cm: ConfusionMatrix,
    result: EvalResult,
    num_samples: int,
    normalization: tuple[Sequence[float] | None, Sequence[float] | None],
    progress: bool,
) -> None:
    """The loop of :func:`evaluate`: infer each batch, count it in ``cm``, keep samples and the image count."""
    bar = make_bar(len(loader.dataset), desc="eval", unit="img", enabled=progress)
    with bar:
        for images, masks in loader:
            for x, y in _groups(images, masks):
                y = y.to(device, non_blocking=True)  # (N, H, W)
                logits = infer(x)  # (N, 3, H, W) -> (N, K, H, W), moved to the predictor's device by it
                if logits.shape[1] != cm.num_classes:
                    raise ValueError(f"model predicts {logits.shape[1]} classes but the dataset has {cm.num_classes}")
                pred = logits.argmax(1)  # (N, H, W)
                cm.update(pred, y)
                for i in range(min(x.shape[0], num_samples - len(result.samples))):
                    image = _to_uint8_image(x[i], *normalization)
                    result.samples.append(Sample(image, y[i].cpu().long().numpy(), pred[i].cpu().numpy()))
                result.num_images += x.shape[0]
                if progress:  # before the update, so that the line written at the end shows the final figure
                    bar.set_postfix(mIoU=f"{100 * _running_miou(cm):.1f}")
                bar.update(x.shape[0])


def format_table(metrics: dict[str, Any]) -> str:
    """A terminal table: per-class IoU and accuracy, then the four metrics, as percentages (``-`` if undefined)."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    per_class = metrics.get("per_class", [])
    width = max([len("frequency weighted IoU"), *(len(c["name"]) for c in per_class)])
    lines = [f"{'class':<{width}}  {'IoU %':>7}  {'acc %':>7}", "-" * (width + 18)]
    lines += [f"{c['name']:<{width}}  {pct(c['iou']):>7}  {pct(c['acc']):>7}" for c in per_class]
    lines.append("-" * (width + 18))
    for key, label in (
        ("pixel_acc", "pixel accuracy"),
        ("mean_acc", "mean accuracy"),
        ("mean_iou", "mean IoU"),
        ("fw_iou", "frequency weighted IoU"),
    ):
        note = coverage_note(metrics) if key == "mean_iou" else ""
        lines.append(f"{label:<{width}}  {pct(metrics.get(key)):>7}{note}")
    return "\n".join(lines)


def _dumps_report(report: dict[str, Any]) -> str:
    """Indented JSON with one line per confusion-matrix row (a 150-class matrix stays 150 lines)."""
    confusion = report.pop("confusion", None)
    text = json.dumps(report, indent=2, allow_nan=False)
    if confusion is not None:
        rows = ",\n    ".join(json.dumps(row) for row in confusion)
        text = f'{text[:-2]},\n  "confusion": [\n    {rows}\n  ]\n}}'
    return text + "\n"


def write_report(
    result: EvalResult,
    classes: Any = None,
    out_dir: str | os.PathLike | None = None,
    *,
    json_path: str | os.PathLike | None = None,
    confusion_path: str | os.PathLike | None = None,
    samples_path: str | os.PathLike | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the metrics JSON, the confusion-matrix PNG and the samples grid PNG, each atomically.

    Files go to ``out_dir`` as ``metrics.json``, ``confusion.png`` and ``samples.png``; an explicit path overrides
    its default, and without ``out_dir`` only the explicitly named files are written. The samples grid is skipped
    when the result holds no sample.

    Args:
        result: from :func:`evaluate`.
        classes: class table for names and colours (see :func:`class_names_colors`); default: the names in
            ``result.metrics`` with the VOC palette.
        out_dir: report folder.
        json_path: where to write the JSON (the metrics, ``num_images``, ``seconds``, ``settings`` and ``extra``).
        confusion_path: where to draw the row-normalised confusion matrix.
        samples_path: where to draw the image | ground truth | prediction grid.
        extra: more JSON fields, e.g. the checkpoint and split.

    Returns:
        ``{"json" | "confusion" | "samples": path}`` of the files written.
    """
    if classes is None:
        classes = [c["name"] for c in result.metrics["per_class"]]
    names, colors = class_names_colors(classes)
    out = Path(out_dir) if out_dir is not None else None
    paths = {
        "json": json_path or (out / "metrics.json" if out else None),
        "confusion": confusion_path or (out / "confusion.png" if out else None),
        "samples": samples_path or (out / "samples.png" if out and result.samples else None),
    }
    written: dict[str, Path] = {}
    if paths["json"] is not None:
        report = {
            **result.metrics,
            "num_images": result.num_images,
            "seconds": round(result.seconds, 3),
            "settings": result.settings,
            **(extra or {}),
        }
        write_text(paths["json"], _dumps_report(report))
        written["json"] = Path(paths["json"])
    if paths["confusion"] is not None:
        written["confusion"] = plot_confusion(result.matrix, names, paths["confusion"], normalize="true")
    if paths["samples"] is not None:
        if not result.samples:
            raise ValueError("no samples to draw: evaluate with num_samples > 0")
        s = result.samples
        written["samples"] = plot_samples(
            [x.image for x in s], [x.gt for x in s], [x.pred for x in s], colors, paths["samples"], names=names
        )
    for kind, path in written.items():
        logger.info("wrote %s %s", kind, path)
    return written
