"""Agreement of fcnseg's prediction paths with fp32 eager on real images, through a trained checkpoint.

Random weights say little about how often reduced precision flips a decision; a trained model on its own test
images does. Each image is segmented by the checkpoint's model in fp32 eager (NCHW, ``no_grad``) and by each
prediction path as :class:`~fcnseg.inference.Predictor` runs it: ``fast`` (PyTorch, ``backend="torch"``),
``default`` (``backend="auto"``, what ``fcnseg predict`` uses; left out when that is ``fast``) and, when given,
``int8`` (a model written by ``fcnseg quantize``). The argmax maps are compared pixel by pixel.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from benchlib.measure import agreement
from benchlib.networks import inference_path
from fcnseg.core.checkpoint import load_checkpoint
from fcnseg.data import build_dataset, eval_transforms
from fcnseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from fcnseg.inference.predictor import Predictor
from fcnseg.models import model_from_checkpoint

__all__ = ["checkpoint_agreement"]

logger = logging.getLogger(__name__)


def _predictors(
    checkpoint: str | os.PathLike, precision: str, device: torch.device | str, int8: str | os.PathLike | None
) -> dict[str, Predictor]:
    """The prediction paths to compare, by name (whole images: tiling is tested to agree elsewhere)."""
    found = {"fast": Predictor.from_checkpoint(checkpoint, device, backend="torch", precision=precision)}
    default = Predictor.from_checkpoint(checkpoint, device, backend="auto", precision=precision)
    if default.backend != "torch":
        found["default"] = default
    if int8 is not None:
        found["int8"] = Predictor.from_checkpoint(int8, device)
    return found


def _segment(
    image: Tensor, eager: Callable[[Tensor], Tensor], predictors: dict[str, Predictor], mean: Tensor, std: Tensor
) -> dict[str, tuple[Tensor, float]]:
    """Logits ``(1, K, H, W)`` of one ``(3, H, W)`` image in ``[0, 1]`` and the seconds they took, by path."""
    rgb = [Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy())]
    runs: dict[str, Callable[[], Tensor]] = {"eager": lambda: eager((image.unsqueeze(0) - mean) / std)}
    runs |= {name: (lambda p=p: p.logits(rgb)) for name, p in predictors.items()}
    outputs = {}
    for name, run in runs.items():
        start = time.perf_counter()
        with torch.inference_mode():
            logits = run()
        outputs[name] = (logits, time.perf_counter() - start)
    return outputs


def checkpoint_agreement(
    checkpoint: str | os.PathLike,
    data_root: str | os.PathLike,
    *,
    dataset: str = "camvid",
    split: str = "test",
    limit: int | None = None,
    precision: str = "auto",
    device: torch.device | str = "cpu",
    int8: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compare each prediction path with fp32 eager on the first ``limit`` images of a dataset split.

    Returns:
        ``images``, ``pixels``, ``eager_s_per_image`` and ``paths``: for each path its ``path``, ``backend``,
        ``computes_in``, ``argmax_agreement`` (over all labelled and unlabelled pixels), ``min_image_agreement``,
        ``max_logit_diff`` and ``s_per_image`` (mean; the first image, which warms the paths up, is not timed when
        there are others).
    """
    ckpt = load_checkpoint(checkpoint)
    norm = ckpt.get("normalization") or {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    data = build_dataset(dataset, data_root, split, eval_transforms((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))  # [0, 1]
    count = len(data) if limit is None else min(limit, len(data))
    if count == 0:
        raise ValueError(f"{dataset} split {split!r} under '{data_root}' holds no images")
    mean, std = (torch.tensor(norm[k], dtype=torch.float32).view(1, 3, 1, 1) for k in ("mean", "std"))
    eager, _ = inference_path("eager", model_from_checkpoint(ckpt), device=device)
    predictors = _predictors(checkpoint, precision, device, int8)
    stats = {name: {"same": 0.0, "worst": 1.0, "diff": 0.0, "s": 0.0} for name in ("eager", *predictors)}
    pixels = 0
    for i in tqdm(range(count), desc="agreement", unit="img", disable=not progress, dynamic_ncols=True):
        image = torch.as_tensor(data[i][0]).as_subclass(torch.Tensor)  # (3, H, W) in [0, 1]
        timed = i > 0 or count == 1  # image 0 warms the paths up
        outputs = _segment(image, eager, predictors, mean, std)
        for name, (_, seconds) in outputs.items():
            stats[name]["s"] += seconds if timed else 0.0
        pixels += image.shape[-2] * image.shape[-1]
        for name in predictors:
            fraction, diff = agreement(outputs[name][0], outputs["eager"][0])
            s = stats[name]
            s["same"] += fraction * image.shape[-2] * image.shape[-1]
            s["worst"], s["diff"] = min(s["worst"], fraction), max(s["diff"], diff)
    n_timed = max(count - 1, 1)
    paths = [
        {
            "path": name,
            "backend": p.backend,
            "computes_in": p.computes_in,
            "argmax_agreement": stats[name]["same"] / pixels,
            "min_image_agreement": stats[name]["worst"],
            "max_logit_diff": stats[name]["diff"],
            "s_per_image": stats[name]["s"] / n_timed,
        }
        for name, p in predictors.items()
    ]
    for p in paths:
        logger.info("%s vs fp32 on %d %s images: %.4f%% agree", p["path"], count, split, 100 * p["argmax_agreement"])
    return {
        "checkpoint": str(checkpoint),
        "model": ckpt["model"]["name"],
        "dataset": dataset,
        "split": split,
        "precision": precision,
        "images": count,
        "pixels": pixels,
        "eager_s_per_image": stats["eager"]["s"] / n_timed,
        "paths": paths,
    }
