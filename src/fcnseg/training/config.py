"""Training configuration: one dataclass whose fields are the command-line flags and the config-file keys.

Precedence: field defaults < ``--preset`` < ``--config FILE`` (YAML or TOML) < flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fcnseg.core.device import DEFAULT_DEVICE, DEVICE_HELP, PRECISION_HELP, PRECISIONS, resolve_device
from fcnseg.core.flags import add_dataclass_flags, given_flags
from fcnseg.core.suggest import did_you_mean
from fcnseg.data.options import DATA_FIELDS, DataOptions
from fcnseg.models import list_models

# How much larger the reference's input is than ours. The authors' Caffe nets read x_c = 255 * rgb - mean (BGR,
# 0..255 scale); fcnseg reads x = (rgb - mu) / sigma with torchvision's ImageNet mu, sigma. As 255 * mu matches the
# Caffe mean to 1.2 grey levels, x_c = s * x with s = 255 * sigma: 58.4, 57.1, 57.4 per channel, 57.6 on average.
CAFFE_INPUT_SCALE = 255 * (0.229 + 0.224 + 0.225) / 3

# The paper's recipe (Long et al., Sec. 4.3; voc-fcn*s/solver.prototxt): fixed learning rate, momentum 0.99, summed
# loss, batches of one whole image, and a rate divided by 100 from stage to stage (1e-10 for FCN-32s, 1e-12 for
# FCN-16s, 1e-14 for FCN-8s).
#
# Why the same 1e-10 holds here, except on the first convolution (``input_scale``): a net with weights W_c on x_c
# computes the same function on x = x_c / s when its image convolution holds W = s * W_c; every later activation
# and gradient is then the reference's, so those layers take the reference's steps at its rate. The image
# convolution's gradient is dL/dW = sum(delta * x) = g_c / s, so SGD at rate lr with decay wd moves W by
# -lr * (g_c / s + wd * s * W_c), which is W_c moving by -lr * (g_c / s**2 + wd * W_c): s**2 = 3300 times slower
# than in the reference. Rate lr * s**2 and decay wd / s**2 give -lr * (g_c + wd * W_c), the reference's step
# exactly (momentum is linear, so it carries over); parameter_groups does this for input_scale = s. One factor
# serves the three channels, whose s**2 differ by up to 3%.
# The loss is summed over pixels (Caffe's SoftmaxWithLoss, normalize: false), so the step is per pixel and grows
# with the image: 1e-10 was set for VOC images of about 500 x 375 pixels. With the per-pixel mean loss the same
# step is lr times the labelled pixels per batch (about 2e-5 for one VOC image).
PRESETS: dict[str, dict[str, Any]] = {
    "modern": {},
    # Chosen on CamVid's validation split (docs/results.md): the loss over the hardest quarter of the pixels and an
    # added Lovasz-softmax term help a long fine-tuning run on thin classes; the hard-pixel loss slows short runs and
    # runs from scratch, so neither is the modern default. Random scales 0.75-2.25 (not 0.5-2) teach CamVid's small
    # objects at a finer effective stride; the input scale predict runs at is chosen on val at the end of the run.
    # Scales 1-2.5 with a weight average (ema 0.999) tied on val, so the simpler recipe stayed.
    "camvid": {
        "hard_fraction": 0.25,
        "lovasz": 1.0,
        "iters": 8000,
        "scale_range": (0.75, 2.25),
        "test_scales": (1.0, 1.25, 1.5, 1.75, 2.0),
    },
    "paper": {
        "schedule": "fixed",
        "momentum": 0.99,
        "loss_norm": "sum",
        "batch_size": 1,
        "crop_size": None,
        "scale_range": None,
        "lr": 1e-10,
        "weight_decay": 5e-4,
        "input_scale": CAFFE_INPUT_SCALE,
        "stage_lr_factor": 0.01,
        "warmup": 0,
    },
}


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig(DataOptions):
    """Everything that defines a training run; saved as ``config.json`` in the run folder and in checkpoints.

    The dataset options are :class:`~fcnseg.data.options.DataOptions`' fields, shared with ``check-data`` and ``eval``.
    """

    dataset: str = _f("camvid", DataOptions.__dataclass_fields__["dataset"].metadata["help"])
    model: str = _f("fcn4s_squeezenet1_1", "model name (see `fcnseg models`)")
    out: str = _f("runs/train", "run folder: checkpoints, logs, plots")
    train_split: str = _f("train", "split to train on")
    val_split: str = _f("val", "split to validate on ('' for none)")
    val_fraction: float | None = _f(None, "folder dataset without split lists: validate on this seeded share")
    skip_bad_samples: bool = _f(False, "read every pair first; train on the readable ones, list the rest")
    backbone_weights: str | None = _f(None, "ImageNet weights: a local state dict or a torchvision name (DEFAULT)")
    weights_sha256: str | None = _f(None, "SHA-256 the --backbone-weights file must have, checked before reading it")
    init_from: str | None = _f(
        None, "initialise from this checkpoint: a coarser stage, or a model of this backbone trained on other classes"
    )
    staged: bool = _f(False, "train FCN-32s, then 16s, then 8s, each from the previous one (iters per stage)")
    layout: str | None = _f(None, "VGG layout: default or caffe")
    at_once: bool = _f(False, "at-once FCN-8s: scale pool4/pool3 by 0.01/0.0001")
    learnable_upsampling: bool = _f(False, "let the transposed convolutions learn")
    preset: str = _f(
        "modern",
        "modern (poly schedule, momentum 0.9, crops), camvid (modern, 8000 steps, the hardest quarter of the pixels, "
        "Lovasz 1) or paper (fixed lr, 0.99, sum, batch 1)",
    )
    iters: int | None = _f(None, "number of optimiser steps (default: 2000 unless --epochs)")
    epochs: int | None = _f(None, "number of passes over the training split")
    batch_size: int = _f(8, "images per step (per process under torchrun: the global batch is this x world size)")
    crop_size: tuple[int, int] | None = _f(
        (320, 320), "training crop H W, or one size for a square (none: whole images)", nargs=2
    )
    scale_range: tuple[float, float] | None = _f((0.5, 2.0), "random scale range LOW HIGH (none: no scaling)", nargs=2)
    hflip: bool = _f(True, "random horizontal flips")
    jitter: bool = _f(False, "photometric jitter")
    lr: float = _f(1e-3, "base learning rate (biases get twice this)")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(5e-4, "weight decay (not on biases)")
    input_scale: float = _f(
        1.0,
        "image convolution: lr x S^2, decay / S^2, the steps of a reference fed S times "
        "larger images (paper preset: 57.6, Caffe's 0-255 input)",
    )
    stage_lr_factor: float = _f(1.0, "with --staged, each stage's lr is the previous one's times this (paper: 0.01)")
    schedule: str = _f("poly", "poly or fixed")
    poly_power: float = _f(0.9, "exponent of the poly schedule")
    warmup: int = _f(100, "linear warm-up steps (paper preset: 0)")
    loss_norm: str = _f("mean", "mean (per labelled pixel) or sum (the paper)")
    class_weights: str = _f("none", "none or median-frequency (computed from the training split)")
    hard_fraction: float = _f(
        1.0,
        "loss over the hardest share of each batch's labelled pixels only (1: all; camvid preset: 0.25); under "
        "torchrun, of each process's part of the batch",
    )
    lovasz: float = _f(
        0.0, "weight of an added Lovasz-softmax term, the mean IoU's own surrogate (0: none; camvid preset: 1)"
    )
    precision: str = _f("auto", f"{PRECISION_HELP}; fp16 on CUDA only")
    device: str = _f(DEFAULT_DEVICE, DEVICE_HELP)
    workers: int = _f(1, "data-loading worker processes")
    cache: bool = _f(
        False,
        "keep every decoded training pair in memory, in each worker: 3 B/pixel of image + 1 B/pixel of mask "
        "(4 x H x W x the training pairs, per worker)",
    )
    seed: int = _f(0, "random seed (weights of new layers, data order, augmentation)")
    val_every: int = _f(500, "validate (and save last.pt/best.pt) every N steps, and at the end")
    log_every: int = _f(20, "log a metrics row every N steps")
    resume: bool = _f(False, "continue the run in --out from its last.pt")
    tensorboard: bool = _f(False, "also write metrics to OUT/tensorboard (needs the tensorboard package)")
    sync_bn: bool = _f(True, "under torchrun on GPUs, batch norm over the global batch (SyncBatchNorm)")
    dist_timeout: float = _f(600.0, "under torchrun, seconds a process waits for the others before it fails")
    ema: float = _f(
        0.0,
        "decay of an exponential moving average of the weights; the average is what is validated and saved as "
        "best.pt, the last weights stay in last.pt (0: none)",
    )
    skip_nonfinite: bool = _f(False, "skip (and count) batches whose loss is not finite instead of stopping")
    test_scales: tuple[float, ...] = _f(
        (),
        "input scales tried on the validation split at the end of the run, one at a time; the best is recorded in "
        "best.pt, and predict, eval and serve run at it unless --scales says otherwise (empty: scale 1)",
    )

    def resolved(self) -> TrainConfig:
        """Check values and fill derived defaults."""
        choices = {
            "preset": PRESETS,
            "schedule": ("poly", "fixed"),
            "loss_norm": ("mean", "sum"),
            "class_weights": ("none", "median-frequency"),
            "precision": PRECISIONS,
            "unknown_colors": ("error", "void"),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be one of {list(allowed)}, not {value!r}"
                    + did_you_mean(value, allowed)
                )
        resolve_device(self.device)  # a name that is not a device, or a GPU that is not there, fails here

        if self.model not in list_models():
            raise ValueError(f"unknown model {self.model!r}{did_you_mean(self.model, list_models())}")
        if self.crop_size is not None:
            size = [self.crop_size] if isinstance(self.crop_size, (int, float)) else list(self.crop_size)
            self.crop_size = (int(size[0]), int(size[-1]))  # one size: a square
        if self.scale_range is not None:
            self.scale_range = (float(self.scale_range[0]), float(self.scale_range[1]))
        if self.iters is None and self.epochs is None:
            self.iters = 2000
        if self.iters is not None and self.epochs is not None:
            raise ValueError(f"give --iters or --epochs, not both (got {self.iters} and {self.epochs})")
        for name in ("iters", "epochs", "batch_size", "val_every", "log_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.dist_timeout <= 0:
            raise ValueError(f"--dist-timeout must be positive, got {self.dist_timeout}")
        for name in ("lr", "input_scale", "stage_lr_factor"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0 < self.hard_fraction <= 1:
            raise ValueError(f"--hard-fraction must lie in (0, 1], got {self.hard_fraction}")
        if not 0 <= self.lovasz < float("inf"):
            raise ValueError(f"--lovasz must be a finite weight of 0 or more, got {self.lovasz}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must lie in [0, 1) (0: no weight average), got {self.ema}")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise ValueError(f"--val-fraction must lie strictly between 0 and 1, got {self.val_fraction}")
        if self.color_tolerance < 0:
            raise ValueError(f"--color-tolerance must be 0 or more, got {self.color_tolerance}")
        if self.mask_values is not None:
            self.mask_values = [int(v) for v in self.mask_values]
        self.test_scales = tuple(float(s) for s in self.test_scales)
        if any(s <= 0 for s in self.test_scales):
            raise ValueError(f"test_scales must be positive, got {list(self.test_scales)}")
        self.builder_options()  # an option of another dataset layout fails here
        if not self.data_root:
            raise ValueError("--data-root is required: the folder of the dataset to train on")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Keys of a YAML or TOML file (the flag names, with ``-`` or ``_``); unknown keys are an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file '{path}' does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        data = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise ValueError(f"reading '{path}' needs PyYAML: pip install 'fcnseg[data]' or use TOML") from err
        data = yaml.safe_load(text) or {}
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"config file '{path}' must end in .yaml, .yml, .toml or .json")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        hint = did_you_mean(unknown[0], known)
        raise ValueError(f"config file '{path}' has unknown keys {unknown}; keys are the flags of `fcnseg train`{hint}")
    return data


FLAG_GROUPS = {
    "dataset (the same flags in check-data, train and eval)": DATA_FIELDS,
    "training data": ("train_split", "val_split", "val_fraction", "skip_bad_samples", "cache", "workers"),
    "model": ("model", "backbone_weights", "weights_sha256", "init_from", "staged", "layout", "learnable_upsampling"),
    "optimisation": (
        "preset",
        "iters",
        "epochs",
        "batch_size",
        "crop_size",
        "scale_range",
        "jitter",
        "lr",
        "momentum",
        "weight_decay",
        "warmup",
    ),
    "loss": ("hard_fraction", "lovasz"),
    "run": (
        "out",
        "precision",
        "device",
        "seed",
        "val_every",
        "log_every",
        "resume",
        "tensorboard",
        "skip_nonfinite",
        "dist_timeout",
    ),
}
"""``fcnseg train --help``'s groups of flags, by concern."""
CONFIG_ONLY = (
    "input_scale",
    "stage_lr_factor",
    "loss_norm",
    "schedule",
    "poly_power",
    "hflip",
    "at_once",
    "class_weights",
    "sync_bn",
    "ema",
    "test_scales",
)
"""Keys of the config file (and of ``config.json``) without a flag: the paper preset's knobs and rarely changed ones.
Every field of :class:`TrainConfig` is in :data:`FLAG_GROUPS` or here."""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field, in groups; every default is left unset so that precedence can be resolved."""
    for title, names in FLAG_GROUPS.items():
        add_dataclass_flags(parser.add_argument_group(title), TrainConfig, names)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML or TOML file whose keys are these flags (underscores or dashes), and also "
        + ", ".join(CONFIG_ONLY)
        + " (see docs/training.md)",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults, preset, config file and command-line flags, in that order."""
    flags = given_flags(args, TrainConfig)
    for n, counts in (("crop_size", (1, 2)), ("scale_range", (2,))):
        if n in flags and (None in flags[n]):
            flags[n] = None
        elif n in flags and len(flags[n]) not in counts:
            raise ValueError(f"--{n.replace('_', '-')} takes {' or '.join(map(str, counts))} values or 'none'")
    from_file = read_config_file(args.config) if getattr(args, "config", None) else {}
    preset = flags.get("preset", from_file.get("preset", "modern"))
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {list(PRESETS)}, not {preset!r}" + did_you_mean(preset, PRESETS))
    chosen = from_file | flags
    base = {k: v for k, v in PRESETS[preset].items() if not (k == "iters" and "epochs" in chosen)}
    return TrainConfig(**(base | chosen)).resolved()
