"""A short, seeded CamVid training run must clearly beat a trivial predictor, so a change that breaks learning fails.

The run is conftest's ``camvid_run``: FCN-8s on the ImageNet-pretrained SqueezeNet 1.1 of ../shared, 60 steps of 4
crops of 192x192 (about a minute on 2 CPU cores), evaluated on the whole CamVid validation split.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CAMVID

from fcnseg.core.checkpoint import load_checkpoint
from fcnseg.data import build_dataset
from fcnseg.evaluation import ConfusionMatrix


def _trivial_miou() -> float:
    """Mean IoU of predicting the training split's most frequent class everywhere on the validation split."""
    counts = torch.zeros(11, dtype=torch.int64)
    for i in range(0, 367, 5):  # a systematic sample of the training masks is plenty to find the majority class
        _, mask = build_dataset("camvid", CAMVID, "train").load(i)
        counts += torch.bincount(mask[mask != 255].flatten().long(), minlength=11)[:11]
    majority = int(counts.argmax())
    cm = ConfusionMatrix(11)
    val = build_dataset("camvid", CAMVID, "val")
    for i in range(len(val)):
        _, mask = val.load(i)
        cm.update(torch.full_like(mask, majority, dtype=torch.int64), mask.long())
    return cm.compute()["mean_iou"]


@pytest.mark.data
@pytest.mark.slow
def test_short_camvid_training_beats_a_trivial_predictor(camvid_run: tuple[Path, dict]) -> None:
    out, summary = camvid_run
    trained = summary["final"]["mean_iou"]
    trivial = _trivial_miou()
    assert trivial < 0.1  # predicting one class everywhere scores one IoU out of eleven at best
    assert trained > max(3 * trivial, 0.2), f"val mIoU {trained:.3f} vs trivial {trivial:.3f}"
    assert load_checkpoint(out / "best.pt")["metrics"]["mean_iou"] == pytest.approx(trained)
