"""How fast fcnseg's paths run next to a plain fp32 eager FCN-8s and other runtimes, in one report.

Run as ``.venv/bin/python benchmarks/suite.py [--quick] [--models ...] [--json FILE]`` (``--help`` lists the options).

Measures, in one process: batch-1 latency and larger-batch throughput of each model, layout, size and precision
through the fast path (what ``Predictor`` does), the OpenVINO and int8 paths and the peers (ONNX Runtime and
OpenVINO as their documentation runs a model), next to the baseline (FCN-8s VGG16 in the authors' layout, fp32 eager,
as common PyTorch reimplementations write it, with the same weights); FLOPs, achieved FLOP/s and its fraction of
this machine's measured matrix-multiply peak; peak activation memory; argmax agreement with the fp32 reference;
and training throughput of a full SGD step. ``--checkpoint`` with ``--data-root`` adds the agreement of the fast
path with fp32 on real test images. benchmarks/README.md says what each column means. A user's own model on their
own machine is ``fcnseg bench``'s job.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchlib.networks import PATHS
from benchlib.peers import PEERS
from benchlib.realdata import checkpoint_agreement
from benchlib.rows import BenchSettings, inference_rows, machine_info, training_rows
from fcnseg.core.io import write_text
from fcnseg.data import DATASETS
from fcnseg.models import list_models

logger = logging.getLogger(__name__)

# --quick: a smoke run on small inputs (options given explicitly still win).
QUICK = {
    "sizes": [(224, 224)],
    "batches": [1],
    "reps": 2,
    "warmup": 1,
    "train_size": (96, 128),
    "train_batch": 2,
    "train_reps": 1,
    "matmul_size": 1024,
    "limit": 5,
    "calib_images": 2,
}


def _size(text: str) -> tuple[int, int]:
    """``500x500`` or ``500`` -> ``(500, 500)``."""
    parts = text.lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 500x500 (height x width), got {text!r}") from None
    if len(parts) > 2 or h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"size must be HxW with both sides at least 32, got {text!r}")
    return h, w


class UsageError(Exception):
    """A bad combination of options; printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 224x224, batch 1, 2 reps, small training")
    p.add_argument("--models", nargs="+", default=["fcn8s_vgg16"], help="model names (default fcn8s_vgg16)")
    p.add_argument("--layouts", nargs="+", choices=("caffe", "default"), default=["caffe", "default"])
    p.add_argument("--sizes", nargs="+", type=_size, metavar="HxW", help="input sizes (default 500x500)")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16", "fp16", "auto"), default=["fp32", "bf16"])
    p.add_argument("--batches", nargs="+", type=int, metavar="N", help="batch sizes (default 1 2)")
    p.add_argument(
        "--paths",
        nargs="+",
        choices=PATHS,
        default=["baseline", "fast", "ov", "int8"],
        help="(default baseline fast ov int8; ov and int8 need openvino, int8 also nncf)",
    )
    p.add_argument(
        "--peers",
        nargs="*",
        choices=PEERS,
        default=list(PEERS),
        help="other runtimes timed on the same network, interleaved (default all; none with a bare --peers)",
    )
    p.add_argument("--calib-images", type=int, metavar="N", help="calibration images of the int8 rows (default 8)")
    p.add_argument("--reps", type=int, help="timed repetitions per row (default 3)")
    p.add_argument("--warmup", type=int, help="untimed calls before timing, at least 1 (default 1)")
    p.add_argument("--train-size", type=_size, metavar="HxW", help="training crop (default 360x480)")
    p.add_argument("--train-batch", type=int, metavar="N", help="training batch (default 8)")
    p.add_argument("--train-reps", type=int, metavar="N", help="timed steps after a warm-up step (default 1)")
    p.add_argument("--no-train", action="store_true", help="skip the training throughput rows")
    p.add_argument("--matmul-size", type=int, metavar="N", help="side of the matrices of the peak test (default 4096)")
    p.add_argument("--threads", type=int, help="torch threads (default: PyTorch's choice)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    p.add_argument("--checkpoint", type=Path, metavar="CKPT", help="trained checkpoint for real-image agreement")
    p.add_argument("--data-root", type=Path, metavar="DIR", help="dataset folder for --checkpoint")
    p.add_argument("--dataset", choices=list(DATASETS), default="camvid", help="dataset of --data-root (camvid)")
    p.add_argument("--split", default="test", help="split for --checkpoint (default test)")
    p.add_argument(
        "--int8", type=Path, metavar="MODEL", help="int8 model of --checkpoint (`fcnseg quantize`) to compare"
    )
    p.add_argument("--limit", type=int, metavar="N", help="images for --checkpoint (default all; 5 with --quick)")
    return p


def _pick(args: argparse.Namespace, key: str, default: Any) -> Any:
    value = getattr(args, key)
    if value is not None:
        return value
    return QUICK.get(key, default) if args.quick else default


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """:class:`BenchSettings` from the command line; ``--quick`` fills what was not given."""
    unknown = [m for m in args.models if m not in list_models()]
    if unknown:
        raise UsageError(f"unknown model(s) {unknown}; see `fcnseg models`")
    defaults = BenchSettings()
    settings = BenchSettings(
        models=tuple(args.models),
        layouts=tuple(args.layouts),
        sizes=tuple(_pick(args, "sizes", defaults.sizes)),
        precisions=tuple(args.precisions),
        batches=tuple(_pick(args, "batches", defaults.batches)),
        paths=tuple(dict.fromkeys(args.paths)),
        peers=tuple(dict.fromkeys(args.peers)),
        calibration_images=_pick(args, "calib_images", defaults.calibration_images),
        warmup=_pick(args, "warmup", defaults.warmup),
        reps=_pick(args, "reps", defaults.reps),
        train_size=None if args.no_train else _pick(args, "train_size", defaults.train_size),
        train_batch=_pick(args, "train_batch", defaults.train_batch),
        train_reps=_pick(args, "train_reps", defaults.train_reps),
        matmul_size=_pick(args, "matmul_size", defaults.matmul_size),
        device=args.device,
    )
    if settings.reps < 1 or settings.warmup < 1 or settings.train_reps < 1 or settings.train_batch < 1:
        raise UsageError("--reps, --warmup, --train-reps and --train-batch must be at least 1")
    if min(settings.batches) < 1:
        raise UsageError(f"--batches must be positive, got {list(settings.batches)}")
    return settings


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f}" if seconds >= 0.1 else f"{1000 * seconds:.1f}"


def _mib(count: int | None) -> float | None:
    return None if count is None else count / 2**20


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_inference(rows: list[dict[str, Any]]) -> str:
    """The inference table: one line per network, path, precision and batch."""
    head = (
        f"{'network':<20} {'path':<13} {'prec':<4} {'batch':>5} {'HxW':>9} {'latency ms (min-max)':>21} "
        f"{'1st ms':>7} {'ms/img':>7} {'x base':>6} {'GFLOP/img':>9} {'GFLOP/s':>7} {'%peak':>5} "
        f"{'act MiB':>7} {'pack MiB':>8} {'agree %':>8} {'max dlogit':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        t = r["latency"]
        spread = f"{_ms(t['median_s'])} ({_ms(t['min_s'])}-{_ms(t['max_s'])})"
        peak = None if r["peak_fraction"] is None else 100 * r["peak_fraction"]
        lines.append(
            f"{r['network']:<20} {r['path']:<13} {r['computes_in']:<4} {r['batch']:>5} "
            f"{r['height']:>4}x{r['width']:<4} {spread:>21} {_ms(t['first_s']):>7} {r['ms_per_image']:>7.0f} "
            f"{_opt(r['ratio_vs_baseline'], '.2f'):>6} {r['gflops_per_image']:>9.1f} "
            f"{r['achieved_gflops_per_s']:>7.1f} {_opt(peak, '.0f'):>5} {_opt(_mib(r['peak_bytes']), '.0f'):>7} "
            f"{r['prepared_bytes'] / 2**20:>8.0f} {100 * r['argmax_agreement']:>8.3f} {r['max_logit_diff']:>10.2e}"
        )
    return "\n".join(lines)


def format_training(rows: list[dict[str, Any]]) -> str:
    """The training table: images per second of a full SGD step."""
    head = (
        f"{'network':<22} {'path':<8} {'prec':<4} {'batch':>5} {'HxW':>9} {'step s (min-max)':>20} "
        f"{'img/s':>7} {'x base':>7} {'peak MiB':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        t = r["step"]
        spread = f"{t['median_s']:.2f} ({t['min_s']:.2f}-{t['max_s']:.2f})"
        lines.append(
            f"{r['network']:<22} {r['path']:<8} {r['precision']:<4} {r['batch']:>5} {r['height']:>4}x{r['width']:<4} "
            f"{spread:>20} {r['images_per_s']:>7.2f} {_opt(r['ratio_vs_baseline'], '.2f'):>7} "
            f"{r['peak_bytes'] / 2**20:>9.0f}"
        )
    return "\n".join(lines)


def _machine_line(m: dict[str, Any]) -> str:
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in m["matmul_gflops"].items())
    return f"processor: {m['processor']}\n{m['threads']} threads, torch {m['torch']}; matmul peak GFLOP/s: {peaks}"


def _checkpoint_lines(c: dict[str, Any]) -> str:
    eager_ms = 1000 * c["eager_s_per_image"]
    lines = [
        f"{c['model']} on {c['images']} {c['dataset']} {c['split']} images vs fp32 eager ({eager_ms:.0f} ms/image):"
    ]
    for p in c["paths"]:
        lines.append(
            f"  {p['path']:<8} {p['backend']} {p['computes_in']}: {100 * p['argmax_agreement']:.3f}% (worst image "
            f"{100 * p['min_image_agreement']:.3f}%), max |logit difference| {p['max_logit_diff']:.3g}, "
            f"{1000 * p['s_per_image']:.0f} ms per image"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Measure, print the tables and (with ``--json``) write every figure after each stage."""
    if (args.checkpoint is None) != (args.data_root is None):
        raise UsageError("--checkpoint and --data-root go together (real-image agreement needs both)")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise UsageError(f"checkpoint '{args.checkpoint}' does not exist")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_from_args(args)
    load = os.getloadavg()[0]
    if load > 0.5:
        logger.warning("the machine is busy (load average %.1f): the figures will be slower than it can do", load)

    result: dict[str, Any] = {"settings": asdict(settings), "machine": machine_info(settings)}

    def save() -> None:  # after every stage, so that an interrupted run keeps what it measured
        result["machine"]["load_average_end"] = os.getloadavg()[0]
        if args.json is not None:
            write_text(args.json, json.dumps(result, indent=2) + "\n")

    print(_machine_line(result["machine"]), flush=True)
    result["inference"] = inference_rows(settings, result["machine"]["matmul_gflops"])
    save()
    print(format_inference(result["inference"]), flush=True)
    result["training"] = training_rows(settings)
    save()
    if result["training"]:
        print("\n" + format_training(result["training"]), flush=True)
    if args.checkpoint is not None:
        limit = _pick(args, "limit", None)
        result["checkpoint"] = checkpoint_agreement(
            args.checkpoint,
            args.data_root,
            dataset=args.dataset,
            split=args.split,
            limit=limit,
            device=settings.device,
            int8=args.int8,
        )
        save()
        print("\n" + _checkpoint_lines(result["checkpoint"]))
    m = result["machine"]  # other work on the machine slows every figure down
    print(f"\nload average {m['load_average_start']:.1f} at the start, {m['load_average_end']:.1f} at the end")
    if args.json is not None:
        logger.info("wrote %s", args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except UsageError as err:
        print(f"suite.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
