"""``train(config)``: the training loop, with validation, checkpoints, logs, plots and exact resume."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fcnseg.core.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from fcnseg.core.device import resolve_device
from fcnseg.core.io import write_text
from fcnseg.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_dataset,
    check_dataset,
    eval_transforms,
    median_frequency_weights,
    train_transforms,
)
from fcnseg.evaluation import evaluate
from fcnseg.evaluation.plots import plot_curves
from fcnseg.models import HEADS, create_model, load_init_weights

from .config import TrainConfig
from .data import EpochBatches, SeededAugmentation, training_loader
from .step import SGDStep

log = logging.getLogger(__name__)


def _dataset_options(config: TrainConfig) -> dict[str, Any]:
    return {"classes": config.classes} if config.dataset == "folder" and config.classes else {}


def _class_weights(config: TrainConfig) -> torch.Tensor | None:
    if config.class_weights == "none":
        return None
    report = check_dataset(
        config.dataset, config.data_root, [config.train_split], progress=False, **_dataset_options(config)
    )
    weights = median_frequency_weights(report.class_counts(config.train_split))
    log.info("median-frequency class weights: %s", " ".join(f"{w:.3f}" for w in weights))
    return torch.as_tensor(weights, dtype=torch.float32)


class RunLog:
    """``metrics.jsonl`` (one JSON object per row) and ``curves.png`` in the run folder."""

    def __init__(self, folder: Path, resume_step: int | None) -> None:
        self.path = folder / "metrics.jsonl"
        self.curves = folder / "curves.png"
        self.rows: list[dict] = []
        if resume_step is not None and self.path.exists():  # drop rows written after the checkpoint
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            self.rows = [r for r in rows if r["step"] <= resume_step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def add(self, row: dict) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def plot(self) -> None:
        plot_curves(self.rows, self.curves)


class Trainer:
    """State of one run: model, optimiser, data stream and counters. ``run()`` trains to the end."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = c = config
        self.folder = Path(c.out)
        self.device = resolve_device(c.device)
        torch.manual_seed(c.seed)
        options = _dataset_options(c)
        base = build_dataset(c.dataset, c.data_root, c.train_split, cache=c.cache, **options)
        self.classes = base.classes
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        augment = (
            train_transforms(
                c.crop_size, scale_range=c.scale_range, hflip=c.hflip, jitter=c.jitter, mean=self.mean, std=self.std
            )
            if c.crop_size
            else _whole_image_transforms(c, self.mean, self.std)
        )
        self.train_set = SeededAugmentation(base, augment, c.seed)
        self.val_set = (
            build_dataset(c.dataset, c.data_root, c.val_split, eval_transforms(self.mean, self.std), **options)
            if c.val_split
            else None
        )
        self.batches = EpochBatches(len(base), c.batch_size, c.seed)
        self.total = c.iters or c.epochs * self.batches.batches_per_epoch()

        model_options = {k: getattr(c, k) for k in ("at_once", "learnable_upsampling") if getattr(c, k)}
        if c.layout:
            model_options["layout"] = c.layout
        model = create_model(
            c.model, num_classes=self.classes.num_classes, backbone_weights=c.backbone_weights, **model_options
        )
        if c.init_from:
            fresh = load_init_weights(model, load_checkpoint(c.init_from))
            log.info("initialised from %s; new layers: %s", c.init_from, fresh)
        self.sgd = SGDStep(model, c, self.device, _class_weights(c))
        self.model, self.optimizer, self.scaler = self.sgd.model, self.sgd.optimizer, self.sgd.scaler
        self.step, self.best_miou, self.elapsed = 0, -1.0, 0.0
        if c.resume:
            self._resume()
        self.log = RunLog(self.folder, self.step if c.resume else None)

    # --- checkpoints -------------------------------------------------------------------------------------------

    def _checkpoint(self, metrics: dict) -> dict:
        train_state = {
            "step": self.step,
            "epoch": self.batches.start_epoch,
            "position": self.batches.start_position,
            "best_miou": self.best_miou,
            "elapsed": self.elapsed,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
        }
        return make_checkpoint(
            self.model,
            classes={"names": list(self.classes.names), "colors": [list(c) for c in self.classes.colors]},
            mean=self.mean,
            std=self.std,
            config=self.config.to_dict(),
            metrics=metrics,
            train_state=train_state,
        )

    def _resume(self) -> None:
        path = self.folder / "last.pt"
        ckpt = load_checkpoint(path)
        state = ckpt.get("train_state")
        if state is None:
            raise ValueError(f"'{path}' holds no training state to resume from")
        saved = {k: v for k, v in ckpt["config"].items() if k not in ("resume", "iters", "epochs")}
        now = {k: v for k, v in self.config.to_dict().items() if k in saved}
        changed = {k: (saved[k], now[k]) for k in saved if _plain(saved[k]) != _plain(now[k])}
        if changed:
            log.warning("resuming with settings that differ from the interrupted run: %s", changed)
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        self.step, self.best_miou, self.elapsed = state["step"], state["best_miou"], state["elapsed"]
        self.batches.start_epoch, self.batches.start_position = state["epoch"], state["position"]
        log.info("resumed %s at step %d of %d", path, self.step, self.total)

    # --- the loop ----------------------------------------------------------------------------------------------

    def validate(self) -> dict:
        if self.val_set is None:
            return {}
        result = evaluate(
            self.model,
            self.val_set,
            classes=self.classes,
            device=self.device,
            precision=self.config.precision,
            progress=False,
        )
        return result.metrics

    def _save(self, metrics: dict) -> None:
        miou = metrics.get("mean_iou", -1.0)
        improved = miou > self.best_miou or self.val_set is None
        self.best_miou = max(self.best_miou, miou)
        ckpt = self._checkpoint(metrics)
        save_checkpoint(ckpt, self.folder / "last.pt")
        if improved:
            ckpt.pop("train_state")
            save_checkpoint(ckpt, self.folder / "best.pt")

    def _evaluate_and_save(self) -> dict:
        self.model.eval()
        metrics = self.validate()
        self.model.train()
        row = {"step": self.step, "epoch": self.batches.start_epoch}
        row |= {f"val_{k}": v for k, v in metrics.items() if k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")}
        self.log.add(row)
        self._save(metrics)
        self.log.plot()
        if metrics:
            log.info("step %d: val mIoU %.4f, pixel acc %.4f", self.step, metrics["mean_iou"], metrics["pixel_acc"])
        return metrics

    def train_step(self, images: torch.Tensor, masks: torch.Tensor) -> float:
        """One SGD step on a batch; returns the loss."""
        return self.sgd(images, masks, self.step, self.total)

    def _loop(self, loader, bar: tqdm) -> dict:
        """Steps until the end; logs every ``log_every`` steps and validates every ``val_every``."""
        c, metrics = self.config, {}
        window = {"loss": 0.0, "steps": 0, "images": 0, "start": time.perf_counter()}
        while self.step < self.total:
            images, masks, keys = next(loader)
            loss = self.train_step(images, masks)
            self.step += 1
            self.batches.advance(keys)
            window["loss"] += loss
            window["steps"] += 1
            window["images"] += len(keys)
            bar.update(1)
            if self.step % c.log_every == 0 or self.step == self.total:
                seconds = time.perf_counter() - window["start"]
                self.elapsed += seconds
                row = {
                    "step": self.step,
                    "epoch": self.batches.start_epoch,
                    "loss": window["loss"] / window["steps"],
                    "lr": self.sgd.lr,
                    "images_per_s": window["images"] / max(seconds, 1e-9),
                    "elapsed_s": round(self.elapsed, 2),
                }
                self.log.add(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{self.sgd.lr:.2e}", img_s=f"{row['images_per_s']:.1f}")
                window = {"loss": 0.0, "steps": 0, "images": 0, "start": time.perf_counter()}
            if self.step % c.val_every == 0 or self.step == self.total:
                metrics = self._evaluate_and_save()
                window["start"] = time.perf_counter()  # validation time is not training time
        return metrics

    def run(self) -> dict:
        """Train to ``total`` steps; Ctrl-C or SIGTERM saves ``last.pt`` first. Returns a summary."""
        c = self.config
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text(self.folder / "config.json", json.dumps(c.to_dict(), indent=2) + "\n")
        log.info("training %s on %s/%s for %d steps -> %s", c.model, c.dataset, c.train_split, self.total, self.folder)
        self.model.train()
        loader = iter(training_loader(self.train_set, self.batches, workers=c.workers, pin=self.device.type == "cuda"))
        bar = tqdm(total=self.total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        try:
            with _sigterm_as_interrupt():
                metrics = self._loop(loader, bar)
        except KeyboardInterrupt:
            log.warning("interrupted at step %d: saving last.pt so that --resume can continue", self.step)
            save_checkpoint(self._checkpoint({}), self.folder / "last.pt")
            raise
        finally:
            bar.close()
        summary = {
            "model": c.model,
            "steps": self.step,
            "train_seconds": round(self.elapsed, 1),
            "final": _brief(metrics),
            "best_val_mean_iou": self.best_miou,
        }
        write_text(self.folder / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Treat SIGTERM (a scheduler or ``kill``) like Ctrl-C, so that the run saves ``last.pt`` before it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _whole_image_transforms(config: TrainConfig, mean, std):
    """Batches of whole images (the paper's recipe): optional flip, then normalisation."""
    from torchvision.transforms import v2

    steps = [v2.RandomHorizontalFlip()] if config.hflip else []
    return v2.Compose([*steps, *eval_transforms(mean, std).transforms])


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _brief(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou") if k in metrics}


def train(config: TrainConfig) -> dict:
    """Train as ``config`` says; with ``staged``, FCN-32s, then 16s, then 8s, each initialised from the last.

    Returns:
        A summary: steps, training seconds, final and best validation metrics (per stage when staged).
    """
    if not config.staged:
        return Trainer(config).run()
    head, _, arch = config.model.partition("_")
    stages = [h for h, s in sorted(HEADS.items(), key=lambda kv: -kv[1]) if s >= HEADS[head]]
    summaries, previous = {}, config.init_from
    for stage in stages:
        name = f"{stage}_{arch}"
        folder = Path(config.out) / stage
        stage_config = replace(config, model=name, out=str(folder), staged=False, init_from=previous)
        if previous is not None:
            stage_config.backbone_weights = None  # the backbone comes from the previous stage
        summaries[stage] = Trainer(stage_config).run()
        previous = str(folder / "best.pt")
    return {"stages": summaries, "train_seconds": round(sum(s["train_seconds"] for s in summaries.values()), 1)}
