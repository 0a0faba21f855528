"""Agreement of the fast path with fp32 eager on real images, through a trained checkpoint.

Random weights say little about how often reduced precision flips a decision; a trained model on its own test
images does. Each image is segmented by the checkpoint's model in fp32 eager (NCHW, ``no_grad``) and by the fast
path (:func:`fcnseg.bench.networks.inference_path`, as the Predictor runs it), and the argmax maps are compared.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch
from tqdm import tqdm

from fcnseg.bench.measure import agreement
from fcnseg.bench.networks import inference_path
from fcnseg.core.checkpoint import load_checkpoint
from fcnseg.data import build_dataset, eval_transforms
from fcnseg.models import model_from_checkpoint

__all__ = ["checkpoint_agreement"]

logger = logging.getLogger(__name__)


def checkpoint_agreement(
    checkpoint: str | os.PathLike,
    data_root: str | os.PathLike,
    *,
    dataset: str = "camvid",
    split: str = "test",
    limit: int | None = None,
    precision: str = "auto",
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Compare the fast path with fp32 eager on the first ``limit`` images of a dataset split.

    Returns:
        ``images``, ``pixels``, ``argmax_agreement`` (over all labelled and unlabelled pixels),
        ``min_image_agreement``, ``max_logit_diff`` and the mean seconds per image of both paths (the first image,
        which warms them up, is not timed when there are others).
    """
    ckpt = load_checkpoint(checkpoint)
    norm = ckpt.get("normalization") or {}
    transforms = eval_transforms(*(norm[k] for k in ("mean", "std"))) if norm else eval_transforms()
    data = build_dataset(dataset, data_root, split, transforms)
    count = len(data) if limit is None else min(limit, len(data))
    if count == 0:
        raise ValueError(f"{dataset} split {split!r} under '{data_root}' holds no images")
    eager, _ = inference_path("eager", model_from_checkpoint(ckpt), device=device)
    fast, _ = inference_path("fast", model_from_checkpoint(ckpt), precision=precision, device=device)
    same = pixels = 0
    worst, max_diff, seconds = 1.0, 0.0, {"eager": 0.0, "fast": 0.0}
    for i in tqdm(range(count), desc="agreement", unit="img", disable=not progress, dynamic_ncols=True):
        image, _ = data[i]
        x = image.unsqueeze(0)  # (1, 3, H, W)
        outputs = {}
        for name, run in (("eager", eager), ("fast", fast)):
            start = time.perf_counter()
            outputs[name] = run(x)
            seconds[name] += (time.perf_counter() - start) if i > 0 or count == 1 else 0.0  # image 0 warms up
        fraction, diff = agreement(outputs["fast"], outputs["eager"])
        n = x.shape[-2] * x.shape[-1]
        same, pixels = same + fraction * n, pixels + n
        worst, max_diff = min(worst, fraction), max(max_diff, diff)
    result = {
        "checkpoint": str(checkpoint),
        "model": ckpt["model"]["name"],
        "dataset": dataset,
        "split": split,
        "precision": precision,
        "images": count,
        "pixels": pixels,
        "argmax_agreement": same / pixels,
        "min_image_agreement": worst,
        "max_logit_diff": max_diff,
        "eager_s_per_image": seconds["eager"] / max(count - 1, 1),
        "fast_s_per_image": seconds["fast"] / max(count - 1, 1),
    }
    logger.info("fast path vs fp32 on %d %s images: %.4f%% argmax agreement", count, split, 100 * same / pixels)
    return result
