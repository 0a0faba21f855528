"""``fcnseg demo --out DIR``: the whole pipeline on built-in procedural data, on the CPU, in a few minutes.

Generates a shapes dataset (class by form and context, not colour), trains an FCN-8s on it from scratch, evaluates
it, and writes a checkpoint, training curves, the metrics, a confusion matrix, sample grids and predictions with
overlays into the run folder.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from fcnseg.core.device import DEFAULT_DEVICE, DEVICE_HELP, resolve_device
from fcnseg.data import build_dataset, eval_transforms
from fcnseg.data.synthetic import write_shapes_dataset

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(name, help="train and evaluate an FCN-8s on built-in procedural data (CPU, minutes)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default: runs/demo)")
    p.add_argument("--model", default="fcn8s_resnet18", help="model to train (default: fcn8s_resnet18)")
    p.add_argument("--iters", type=int, default=1500, help="training steps (default: 1500)")
    p.add_argument("--lr", type=float, default=0.05, help="base learning rate (default: 0.05)")
    p.add_argument("--num-train", type=int, default=400, help="generated training scenes (default: 400)")
    p.add_argument("--num-val", type=int, default=100, help="generated validation scenes (default: 100)")
    p.add_argument("--device", default=DEFAULT_DEVICE, help=f"{DEVICE_HELP} (default: {DEFAULT_DEVICE})")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fcnseg.evaluation import evaluate, write_report
    from fcnseg.inference import Predictor
    from fcnseg.inference.images import load_image, save_mask_png
    from fcnseg.inference.visualize import legend_image, overlay
    from fcnseg.training.config import TrainConfig
    from fcnseg.training.loop import train

    out: Path = args.out
    data = out / "data"
    config = TrainConfig(
        model=args.model,
        dataset="folder",
        data_root=str(data),
        classes=str(data / "classes.txt"),
        out=str(out),
        iters=args.iters,
        batch_size=8,
        crop_size=(128, 160),
        scale_range=(0.75, 1.25),
        lr=args.lr,
        warmup=100,
        val_every=max(args.iters // 4, 1),
        log_every=10,
        device=args.device,
        seed=args.seed,
        workers=0,
    ).resolved()  # checks the settings before anything is generated
    write_shapes_dataset(data, num_train=args.num_train, num_val=args.num_val, seed=args.seed)
    log.info("dataset: %s", data)
    summary = train(config)

    best = out / "best.pt"
    device = resolve_device(args.device)
    predictor = Predictor.from_checkpoint(best, device=device, backend="torch")
    val = build_dataset(
        "folder", data, "val", eval_transforms(predictor.mean, predictor.std), classes=data / "classes.txt"
    )
    result = evaluate(predictor, val, classes=val.classes, num_samples=6, progress=False)
    write_report(result, val.classes, out / "eval")
    predictions = out / "predictions"
    classes = predictor.classes
    for image_path, _ in val.files[:12]:
        mask = predictor.predict(image_path)
        save_mask_png(mask, classes.colors, predictions / f"{image_path.stem}.png")
        overlay(load_image(image_path), mask, classes.colors).save(predictions / f"{image_path.stem}_overlay.png")
    legend_image(classes.names, classes.colors).save(predictions / "legend.png")

    metrics = {k: round(result.metrics[k], 4) for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")}
    report = {"train_seconds": summary["train_seconds"], "val": metrics, "checkpoint": str(best), "run": str(out)}
    print(json.dumps(report, indent=2))
    print(f"validation mean IoU {metrics['mean_iou']:.3f}; see {out}/curves.png, {out}/eval/, {predictions}/")
    return 0
