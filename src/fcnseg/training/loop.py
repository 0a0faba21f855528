"""``train(config)``: the training loop, with validation, checkpoints, logs, plots and exact resume.

Under ``torchrun`` every process runs the same loop on its part of each global batch (see
:mod:`fcnseg.core.distributed`); validation is sharded across the processes, and rank 0 alone writes the run folder.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from fcnseg.core.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from fcnseg.core.device import cudnn_benchmark, resolve_device
from fcnseg.core.distributed import World, distributed_session
from fcnseg.core.io import write_text
from fcnseg.core.progress import make_bar
from fcnseg.core.safe_load import verify_sha256
from fcnseg.data import (
    DataError,
    SegmentationDataset,
    band_normalization,
    build_dataset,
    check_dataset,
    eval_transforms,
    median_frequency_weights,
    train_transforms,
)
from fcnseg.data.checks import scan_labels
from fcnseg.data.raster_windows import RasterWindows, raster_files, raster_validation_grid
from fcnseg.evaluation import evaluate, model_state_kept
from fcnseg.evaluation.metrics import coverage_note
from fcnseg.inference.predictor import Predictor
from fcnseg.models import create_model, load_init_weights

from .average import WeightAverage
from .config import TrainConfig
from .data import BadBatch, EpochBatches, SeededAugmentation, training_loader
from .dataprep import drop_bad_samples, raster_windows, resolve_splits
from .guards import (
    ForcedStop,
    StopSignals,
    TrainingError,
    check_free_space,
    check_writable,
    finite_weights,
    write_failed,
)
from .runlog import LossWindow, RunLog
from .staged import finished_summary, stage_configs
from .step import SGDStep

__all__ = ["Trainer", "train"]

log = logging.getLogger(__name__)


def _class_weights(config: TrainConfig, split: str) -> torch.Tensor | None:
    if config.class_weights == "none":
        return None
    report = check_dataset(config.dataset, config.data_root, [split], progress=False, **config.builder_options())
    weights = median_frequency_weights(report.class_counts(split))
    log.info("median-frequency class weights: %s", " ".join(f"{w:.3f}" for w in weights))
    return torch.as_tensor(weights, dtype=torch.float32)


class Trainer:
    """State of one run: model, optimiser, data stream and counters. ``run()`` trains to the end.

    ``world`` is this process's place in a ``torchrun`` launch (default: a single process on ``config.device``).
    """

    def __init__(self, config: TrainConfig, world: World | None = None) -> None:
        self.config = c = config
        self.folder = Path(c.out)
        self.world = world or World(device=resolve_device(c.device))
        self.device = self.world.device
        if self.world.is_main:
            check_writable(self.folder)
        torch.manual_seed(c.seed)
        base = self._datasets()
        self.train_set = SeededAugmentation(base, self._augmentation(), c.seed)
        self.global_batch = c.batch_size * self.world.size
        self.batches = EpochBatches(len(base), self.global_batch, c.seed, world=self.world)
        self.total = c.iters or c.epochs * self.batches.batches_per_epoch()
        self.sgd = SGDStep(self._model(base.bands), c, self.device, _class_weights(c, self.train_split), self.world)
        self.model, self.optimizer, self.scaler = self.sgd.model, self.sgd.optimizer, self.sgd.scaler
        self.average = WeightAverage(self.model, c.ema) if c.ema else None
        self.step, self.best_miou, self.elapsed, self.nonfinite = 0, -1.0, 0.0, 0
        self.saved_step: int | None = None
        resuming = self._resume_if_asked()
        self.log = RunLog(
            self.folder, self.step if resuming else None, write=self.world.is_main, tensorboard=c.tensorboard
        )
        self.stop = StopSignals()

    def _datasets(self) -> SegmentationDataset | RasterWindows:
        """The training split (returned, untransformed) and ``self.val_set``, both checked; sets the classes, the
        splits and the input normalisation (ImageNet's for RGB, else the training images' per band).

        A folder of georeferenced rasters becomes random windows read from disk (:func:`.dataprep.raster_windows`),
        its validation split a fixed grid of windows (docs/geo.md, "Training on rasters")."""
        c = self.config
        options = c.builder_options() | {"verify": False}  # missing files are reported below, or skipped
        self.train_split, self.val_split = resolve_splits(c, self.folder)
        listed = build_dataset(c.dataset, c.data_root, self.train_split, cache=c.cache, **options)
        self.rasters = raster_files(listed.files)
        if self.rasters:
            base: SegmentationDataset | RasterWindows = raster_windows(listed, c, self.world.size)
        else:
            base = drop_bad_samples(listed, "train", c, self.folder) if c.skip_bad_samples else listed
            if c.cache:
                _log_cache_size(base, c.workers)
        self.classes = base.classes
        self.mean, self.std = band_normalization(base)
        options["bands"] = base.bands  # validation images are read with the training images' band count
        self.val_set = self._val_dataset(options)
        if not self.rasters:  # raster pairs are checked when opened, their mask values in every window read
            self._check_files(base, self.val_set)
            self._check_labels(base, self.val_set)  # every process, so that all stop together
        if len(base) < self.world.size:
            raise ValueError(f"the training split has {len(base)} images, fewer than the {self.world.size} processes")
        return base

    def _val_dataset(self, options: dict[str, Any]) -> Dataset | None:
        """The validation split with the evaluation transforms: images, or rasters on a grid of windows."""
        c = self.config
        if not self.val_split:
            return None
        transforms = eval_transforms(self.mean, self.std)
        val = build_dataset(c.dataset, c.data_root, self.val_split, transforms, **options)
        if self.rasters:
            return raster_validation_grid(val)
        return drop_bad_samples(val, "val", c, self.folder) if c.skip_bad_samples else val

    def _check_files(self, *datasets: SegmentationDataset | None) -> None:
        """Stop on listed files that do not exist (unless ``--skip-bad-samples`` left them out)."""
        for dataset in datasets if not self.config.skip_bad_samples else ():
            missing = dataset.missing_files() if dataset is not None else []
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise TrainingError(f"{missing[0][0]}: {missing[0][1]}{more}. {self._data_hint()}")

    def _augmentation(self) -> Any:
        """Random crops, scales and flips (or whole images, the paper's recipe), then the normalisation."""
        c = self.config
        if not c.crop_size:
            return _whole_image_transforms(c, self.mean, self.std)
        scale_range = None if self.rasters else c.scale_range  # raster windows are read at the crop size
        return train_transforms(
            c.crop_size, scale_range=scale_range, hflip=c.hflip, jitter=c.jitter, mean=self.mean, std=self.std
        )

    def _model(self, bands: int) -> torch.nn.Module:
        """The model to train: new, with the backbone's ImageNet weights (adapted to ``bands``) or ``--init-from``."""
        c = self.config
        options = {k: getattr(c, k) for k in ("at_once", "learnable_upsampling") if getattr(c, k)}
        if c.layout:
            options["layout"] = c.layout
        if c.weights_sha256:
            if not (c.backbone_weights and Path(c.backbone_weights).is_file()):
                raise ValueError("--weights-sha256 checks a --backbone-weights file; give the file's path")
            verify_sha256(c.backbone_weights, c.weights_sha256)
        classes = self.classes.num_classes
        model = create_model(c.model, num_classes=classes, backbone_weights=c.backbone_weights, in_channels=bands,
                             **options)  # fmt: skip
        if c.init_from:
            # logs one line: what was kept, what was re-created for this dataset's classes, and whether the first
            # convolution was re-expressed for this run's normalisation (e.g. from a converted Caffe net's)
            normalization = {"mean": self.mean, "std": self.std}
            ckpt = load_checkpoint(c.init_from)
            load_init_weights(model, ckpt, classes=self.classes.names, normalization=normalization, source=c.init_from)
        if self.world.is_main:
            check_free_space(self.folder, model)
        return model

    def _resume_if_asked(self) -> bool:
        """With ``--resume`` and a ``last.pt`` in the run folder, continue from it; True when it did."""
        resuming = self.config.resume and (self.folder / "last.pt").is_file()
        if self.config.resume and not resuming:
            log.warning("--resume: %s has no last.pt yet; starting from step 0", self.folder)
        if resuming:
            self._resume()
        return resuming

    def _check_labels(self, *datasets: Any) -> None:
        """Before the first step: stop on masks whose classes would be voided in silence, warn of splits whose
        labels look wrong (a class never seen, a single class, mostly void), as ``fcnseg check-data`` reports them."""
        for split, dataset in zip(("train", "val"), datasets, strict=False):
            if dataset is None:
                continue
            _, findings = scan_labels(dataset, split)
            for finding in findings:
                if finding.kind == "error":
                    raise TrainingError(f"{finding.file}: {finding.message}")
                if self.world.is_main:
                    log.warning("%s: %s (check every split: %s)", split, finding.message, self.config.command())

    @property
    def resume_command(self) -> str:
        """The command that continues this run."""
        return f"fcnseg train --config {self.folder / 'config.json'} --resume"

    # --- checkpoints -------------------------------------------------------------------------------------------

    def _checkpoint(self, metrics: dict, model: torch.nn.Module | None = None) -> dict:
        """``model``'s checkpoint (default: the trained weights) with the state that resumes the run."""
        train_state = {
            "step": self.step,
            "epoch": self.batches.start_epoch,
            "position": self.batches.start_position,
            "best_miou": self.best_miou,
            "elapsed": self.elapsed,
            "global_batch": self.global_batch,
            "world_size": self.world.size,
            "nonfinite_skipped": self.nonfinite,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":  # dropout on the GPU draws from the device's generator
            train_state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.average is not None:
            train_state["average"] = self.average.state_dict()
        return make_checkpoint(
            model if model is not None else self.model,
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
        own = ("resume", "iters", "epochs", "batch_size", "tensorboard", "dist_timeout")
        saved = {k: v for k, v in ckpt["config"].items() if k not in own}
        now = {k: v for k, v in self.config.to_dict().items() if k in saved}
        changed = {k: (saved[k], now[k]) for k in saved if _plain(saved[k]) != _plain(now[k])}
        saved_batch = state.get("global_batch", ckpt["config"].get("batch_size"))
        if saved_batch != self.global_batch:  # per-process batch x world size may change, their product should not
            changed["global batch (batch size x processes)"] = (saved_batch, self.global_batch)
        if changed:
            log.warning("resuming with settings that differ from the interrupted run: %s", changed)
        self.model.load_state_dict(ckpt["state_dict"])
        if self.average is not None and "average" in state:
            self.average.load_state_dict(state["average"])
        elif self.average is not None:
            log.warning("%s holds no weight average; the average starts from its weights", path)
            self.average = WeightAverage(self.model, self.config.ema)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.step, self.best_miou, self.elapsed = state["step"], state["best_miou"], state["elapsed"]
        self.nonfinite, self.saved_step = state.get("nonfinite_skipped", 0), self.step
        self.batches.start_epoch, self.batches.start_position = state["epoch"], state["position"]
        log.info(
            "resumed %s at step %d of %d (written by %d processes, continued by %d)",
            path,
            self.step,
            self.total,
            state.get("world_size", 1),
            self.world.size,
        )

    # --- the loop ----------------------------------------------------------------------------------------------

    @property
    def kept_model(self) -> torch.nn.Module:
        """The weights that are validated and saved as ``best.pt``: the weight average, if the run keeps one."""
        return self.average.model if self.average is not None else self.model

    def validate(self, model: torch.nn.Module | None = None) -> dict:
        """Metrics of ``model`` (default: the kept one) on the validation split; empty without one."""
        if self.val_set is None:
            return {}
        try:
            result = self._evaluate(model if model is not None else self.kept_model)
        except DataError as err:
            raise TrainingError(f"{err}. {self._data_hint()}") from err
        return result.metrics

    def _evaluate(self, model: torch.nn.Module, scales: tuple[float, ...] = (1.0,)):
        with model_state_kept(model):  # the predictor puts it in eval mode (and channels_last on the CPU)
            predictor = Predictor(model, classes=self.classes, device=self.device, scales=scales,
                                  precision=self.config.precision, mean=self.mean, std=self.std)  # fmt: skip
            return evaluate(predictor, self.val_set, progress=False, world=self.world)

    def _choose_test_scale(self) -> dict[float, float]:
        """Score ``best.pt`` on the validation split at each of ``test_scales``; record the best scale in it.

        Returns the validation mean IoU at each scale (a tie goes to the scale listed first).
        """
        self.world.barrier()  # the main process wrote best.pt
        best = load_checkpoint(self.folder / "best.pt")
        self.model.load_state_dict(best["state_dict"])  # the run is over; its last weights are in last.pt
        scores = {s: self._evaluate(self.model, scales=(s,)).metrics["mean_iou"] for s in self.config.test_scales}
        chosen = max(scores, key=scores.__getitem__)
        shown = ", ".join(f"{s:g}: {100 * v:.2f}%" for s, v in scores.items())
        log.info("test scale %g chosen on %s (mean IoU at each scale: %s); recorded in best.pt", chosen,
                 self.val_split, shown)  # fmt: skip
        if self.world.is_main:
            by_scale = {f"{s:g}": v for s, v in scores.items()}
            best["inference"] = {"scales": [chosen], "chosen_on": self.val_split, "val_mean_iou": by_scale}
            save_checkpoint(best, self.folder / "best.pt")
        return scores

    def _record_test_scale(self) -> None:
        """Without a validation split, record a single ``test_scales`` entry in ``best.pt`` as given (a scale chosen
        on validation by an earlier run); several cannot be chosen among, so none is recorded."""
        scales = self.config.test_scales
        if len(scales) > 1:
            log.warning("no validation split to choose among test_scales %s: predict runs at scale 1; give one "
                        "scale (chosen on validation by an earlier run) to record it", list(scales))  # fmt: skip
            return
        self.world.barrier()  # the main process wrote best.pt
        if self.world.is_main:
            best = load_checkpoint(self.folder / "best.pt")
            best["inference"] = {"scales": list(scales), "chosen_on": None}
            save_checkpoint(best, self.folder / "best.pt")
        log.info("test scale %g recorded in best.pt as given (no validation split)", scales[0])

    def _data_hint(self) -> str:
        if self.rasters:  # --skip-bad-samples leaves out files, not windows
            return f"List every problem with: {self.config.command()}"
        return f"List every problem with: {self.config.command()}; or train on the rest with --skip-bad-samples"

    def _save(self, metrics: dict) -> None:
        """Write ``last.pt`` (and ``best.pt`` when validation improved); never over a good file with bad weights."""
        if not finite_weights(self.model):
            kept = f"last.pt from step {self.saved_step} is kept" if self.saved_step is not None else "nothing saved"
            raise TrainingError(f"the weights became non-finite by step {self.step}; {kept}. Lower --lr")
        miou = metrics.get("mean_iou", -1.0)
        improved = miou > self.best_miou or self.val_set is None
        self.best_miou = max(self.best_miou, miou)
        self.saved_step = self.step
        if not self.world.is_main:
            return
        ckpt = self._checkpoint(metrics)
        for name in ("last.pt", "best.pt") if improved else ("last.pt",):
            if name == "best.pt":
                ckpt = self._checkpoint(metrics, self.average.model) if self.average is not None else ckpt
                ckpt.pop("train_state")
            try:
                save_checkpoint(ckpt, self.folder / name)
            except OSError as err:
                raise write_failed(self.folder / name, err, self.resume_command) from err

    def _evaluate_and_save(self) -> dict:
        self.model.eval()
        with cudnn_benchmark(False):  # validation images may each have their own size
            metrics = self.validate()
            last = self.validate(self.model) if self.average is not None else {}
        self.model.train()
        row = {"step": self.step, "epoch": self.batches.start_epoch}
        row |= {f"val_{k}": v for k, v in metrics.items() if k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")}
        if "mean_iou" in last:  # the last weights, beside their average
            row["val_last_mean_iou"] = last["mean_iou"]
        if metrics.get("absent_classes"):  # the mean IoU is over fewer classes than the dataset has: say so
            row |= {"val_iou_classes": metrics["iou_classes"], "val_absent_classes": metrics["absent_classes"]}
        self.log.add(row)
        self._save(metrics)
        self.log.plot()
        if metrics:
            log.info("step %d: val mIoU %.4f%s, pixel acc %.4f",
                     self.step, metrics["mean_iou"], coverage_note(metrics), metrics["pixel_acc"])  # fmt: skip
        return metrics

    def train_step(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """One SGD step on a batch; returns the loss, a 0-d tensor on the device."""
        return self.sgd(images, masks, self.step, self.total)

    def _batch_files(self, keys: list) -> str:
        base = self.train_set.base
        files = [base.describe(i) if self.rasters else base.files[i][0].name for _, i in keys]
        return ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")

    def _guarded_step(self, images: torch.Tensor, masks: torch.Tensor, keys: list) -> torch.Tensor | None:
        """``train_step``, or ``None`` for a batch skipped because its loss was not finite (``--skip-nonfinite``)."""
        try:
            return self.train_step(images, masks)
        except FloatingPointError as err:
            where = f"at step {self.step} on the batch {self._batch_files(keys)}"
            if not self.config.skip_nonfinite:
                kept = f"last.pt from step {self.saved_step} is kept" if self.saved_step is not None else "no save yet"
                raise TrainingError(f"non-finite loss {where}; {kept}. Lower --lr, or pass --skip-nonfinite") from err
            self.nonfinite += 1
            log.warning("skipped a non-finite loss %s (%d skipped so far)", where, self.nonfinite)
            return None

    def _loop(self, loader, bar) -> dict:
        """Steps until the end; logs every ``log_every`` steps and validates every ``val_every``."""
        c, metrics = self.config, {}
        window = LossWindow()
        with cudnn_benchmark(self.device.type == "cuda"):  # every training batch has the crop size
            while self.step < self.total and self.stop.requested is None:
                batch = next(loader)
                if isinstance(batch, BadBatch):
                    raise TrainingError(f"{batch.problems[0]}. {self._data_hint()}")
                images, masks, keys = batch
                loss = self._guarded_step(images, masks, keys)
                if loss is not None and self.average is not None:
                    self.average.update(self.model)
                self.step += 1
                self.batches.advance(keys)
                window.add(loss, len(keys) * self.world.size)
                bar.update(1)
                if self.step % c.log_every == 0 or self.step == self.total:
                    self._log_row(window, bar)
                    window = LossWindow()
                if self.step % c.val_every == 0 or self.step == self.total:
                    metrics = self._evaluate_and_save()
                    window.start = time.perf_counter()  # validation time is not training time
        return metrics

    def _log_row(self, window: LossWindow, bar) -> None:
        """The logged row of the steps in ``window`` (the one read back from the device per row)."""
        seconds = time.perf_counter() - window.start
        self.elapsed += seconds
        loss, skipped = window.read()
        if skipped:  # fp16 on a GPU: the grad scaler skipped these updates
            where = (
                f"in {skipped} of the {window.steps} steps up to step {self.step} (fp16: their updates were skipped)"
            )
            if not self.config.skip_nonfinite:
                raise TrainingError(f"non-finite loss {where}. Lower --lr, or pass --skip-nonfinite")
            self.nonfinite += skipped
            log.warning("skipped a non-finite loss %s (%d skipped so far)", where, self.nonfinite)
        row = {
            "step": self.step,
            "epoch": self.batches.start_epoch,
            "loss": loss,
            "lr": self.sgd.lr,
            "images_per_s": window.images / max(seconds, 1e-9),
            "elapsed_s": round(self.elapsed, 2),
        }
        self.log.add(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{self.sgd.lr:.2e}", img_s=f"{row['images_per_s']:.1f}")

    def run(self) -> dict:
        """Train to ``total`` steps; Ctrl-C or SIGTERM saves ``last.pt`` after the current step. Returns a summary.

        Raises:
            KeyboardInterrupt: the run was stopped by a signal (``last.pt`` saved unless it was a second signal).
            TrainingError: bad data, a non-finite loss, or an unwritable run folder (the message says what to do).
        """
        c, main = self.config, self.world.is_main
        if main:
            write_text(self.folder / "config.json", json.dumps(c.to_dict(), indent=2) + "\n")
        log.info(
            "training %s on %s/%s for %d steps of %d images (%d per process) -> %s",
            c.model,
            c.dataset,
            self.train_split,
            self.total,
            self.global_batch,
            c.batch_size,
            self.folder,
        )
        self.model.train()
        loader = iter(training_loader(self.train_set, self.batches, workers=c.workers, pin=self.device.type == "cuda"))
        bar = make_bar(self.total, initial=self.step, desc="train", unit="step", enabled=main)
        try:
            with self.stop.installed():
                metrics = self._loop(loader, bar)
                if self.stop.requested is not None:
                    raise KeyboardInterrupt(f"signal {self.stop.requested}")
        except ForcedStop:
            log.warning("stopped at once; the last saved checkpoint stays. Resume with: %s", self.resume_command)
            raise
        except KeyboardInterrupt:
            if main:
                log.warning("interrupted at step %d: saving last.pt", self.step)
                save_checkpoint(self._checkpoint({}), self.folder / "last.pt")
                log.warning("saved. Resume with: %s", self.resume_command)
            raise
        finally:
            bar.close()
            self.log.close()
        summary = {
            "model": c.model,
            "steps": self.step,
            "train_seconds": round(self.elapsed, 1),
            "final": _brief(metrics),
            "best_val_mean_iou": self.best_miou,
            "nonfinite_skipped": self.nonfinite,
        }
        if c.test_scales and self.val_set is not None:
            summary["val_mean_iou_by_test_scale"] = self._choose_test_scale()
        elif c.test_scales:
            self._record_test_scale()
        if main:
            write_text(self.folder / "summary.json", json.dumps(summary, indent=2) + "\n")
        self.world.barrier()  # the run (and its files) ends for all processes together
        return summary


def _log_cache_size(dataset: Any, workers: int) -> None:
    """Estimate what ``--cache`` will hold from the first pair: every pair, once per worker process."""
    image, mask = dataset.load(0)
    pair = image.numel() * image.element_size() + mask.numel() * mask.element_size()
    total = pair * len(dataset) * max(workers, 1)
    log.info(
        "--cache will hold about %.2f GB (%d pairs like the first, in %d process(es))",
        total / 1e9,
        len(dataset),
        max(workers, 1),
    )


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

    With ``staged`` and ``resume``, finished stages are kept, the interrupted one continues from its ``last.pt`` and
    the ones not yet started start fresh from the previous stage's ``best.pt``.
    Under ``torchrun``, each process trains on its part of every global batch (see :mod:`fcnseg.core.distributed`).

    Returns:
        A summary: steps, training seconds, final and best validation metrics (per stage when staged).
    """
    with distributed_session(config.device, config.dist_timeout) as world:
        return _train(config, world)


def _train(config: TrainConfig, world: World) -> dict:
    if not config.staged:
        return Trainer(config, world).run()
    summaries = {}
    for stage_config in stage_configs(config):
        folder, stage = Path(stage_config.out), stage_config.model.partition("_")[0]
        finished = finished_summary(folder) if config.resume else None
        if finished is not None:
            log.info("stage %s already finished in %s; --resume goes on with the next", stage, folder)
            summaries[stage] = finished
            continue
        stage_config.resume = config.resume and (folder / "last.pt").is_file()
        summaries[stage] = Trainer(stage_config, world).run()
    return {"stages": summaries, "train_seconds": round(sum(s["train_seconds"] for s in summaries.values()), 1)}
