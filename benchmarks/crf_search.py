"""A small, bounded search of the dense CRF's parameters on a validation split (the defaults of CRFParams).

Run as ``.venv/bin/python benchmarks/crf_search.py --checkpoint runs/camvid/best.pt [--images 20] [--budget-s 240]``.
The model's logits of every ``--every``-th validation image (up to ``--images``) are computed once; the search then
starts from DeepLab-LargeFOV's published values (w1 4, theta_alpha 121, theta_beta 5, w2 3, theta_gamma 3, 10
iterations; Chen et al. 2015) and changes one parameter at a time over a few values (coordinate descent, one pass,
DeepLab's own order: w1, theta_alpha, theta_beta; then the smoothness kernel's w2 and theta_gamma, which DeepLab
left at 3 and 3; then iterations), keeping a change only when the mean IoU over those images rises (fewer iterations:
unless it falls by more than 0.1 point). The logits are at the scale the checkpoint records unless ``--scales`` says
otherwise. It stops when ``--budget-s`` seconds are spent. Every trial is printed, kept or not, with the mean IoU
without the CRF.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import torch

from fcnseg.core.machine import processor_line
from fcnseg.data import build_dataset
from fcnseg.evaluation.metrics import ConfusionMatrix, metrics_from_matrix
from fcnseg.inference.crf import CRFParams, dense_crf
from fcnseg.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"

GRID = {  # values tried per parameter, around DeepLab's (DeepLab v1 searched w1 3..5, theta_alpha 50..121, beta 3..5)
    "w1": (3.0, 5.0),
    "theta_alpha": (30.0, 50.0, 80.0),
    "theta_beta": (2.0, 3.0, 8.0),
    "w2": (1.0, 5.0),
    "theta_gamma": (1.0, 5.0),
    "iterations": (5, 3, 2),
}
CHEAPER_WITHIN = 0.001
"""Fewer iterations are kept unless they lose more than this much mean IoU (0.1 point): they cost less."""


def _miou(items: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], params: CRFParams | None, k: int) -> float:
    """Mean IoU over ``(logits (1, K, H, W), image (1, 3, H, W) uint8, mask (H, W))`` items, with or without CRF."""
    cm = ConfusionMatrix(k)
    for logits, image, mask in items:
        scores = logits if params is None else dense_crf(logits, image, params)
        cm.update(scores.argmax(1)[0], mask)
    return float(metrics_from_matrix(cm.matrix)["mean_iou"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a CamVid checkpoint of `fcnseg train`")
    parser.add_argument("--data-root", type=Path, default=CAMVID)
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=20, help="validation images used (default 20)")
    parser.add_argument("--every", type=int, default=5, help="use every N-th image of the split (default 5)")
    parser.add_argument("--budget-s", type=float, default=240.0, help="stop trying after this many seconds")
    parser.add_argument("--scales", type=float, nargs="+", help="test-time scales (default: the checkpoint's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.info("processor: %s", processor_line())
    predictor = Predictor.from_checkpoint(args.checkpoint, **({"scales": args.scales} if args.scales else {}))
    logging.info("logits at scales %s", list(predictor.scales))
    k = len(predictor.classes.names)
    dataset = build_dataset("camvid", args.data_root, args.split)
    items = []
    for index in range(0, len(dataset), args.every)[: args.images]:
        image, mask = dataset[index]  # (3, H, W) uint8, (H, W) int64
        logits = predictor.logits([image.permute(1, 2, 0).numpy()])
        items.append((logits, image[None].as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)))
    start = time.perf_counter()
    logging.info("%d %s images; no CRF: mean IoU %.2f%%", len(items), args.split, 100 * _miou(items, None, k))
    best = CRFParams(w1=4.0, theta_alpha=121.0, theta_beta=5.0, w2=3.0, theta_gamma=3.0, iterations=10)
    best_miou = chosen_miou = _miou(items, best, k)
    logging.info("DeepLab's values %s: mean IoU %.2f%%", best, 100 * best_miou)
    trials = [(name, value) for name, values in GRID.items() for value in values]
    for name, value in trials:
        if time.perf_counter() - start > args.budget_s:
            logging.info("budget of %.0f s spent: stopping before %s = %s", args.budget_s, name, value)
            break
        trial = dataclasses.replace(best, **{name: value})
        miou = _miou(items, trial, k)
        kept = miou > best_miou or (name == "iterations" and miou >= best_miou - CHEAPER_WITHIN)
        logging.info("%s = %s: mean IoU %.2f%% (%s)", name, value, 100 * miou, "kept" if kept else "not kept")
        if kept:  # the mark to beat never falls, so cheaper steps cannot lose 0.1 point each
            best, best_miou, chosen_miou = trial, max(best_miou, miou), miou
    logging.info("chosen: %s, mean IoU %.2f%% (%.0f s)", best, 100 * chosen_miou, time.perf_counter() - start)
    logging.info("per-image mean IoUs are noisy on %d images: treat gains under 0.5 points as ties", len(items))


if __name__ == "__main__":
    main()
