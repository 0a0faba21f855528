"""``fcnseg bench [MODEL_FILE]``: how fast a model segments images on this machine, on each installed backend.

MODEL_FILE is a checkpoint written by ``fcnseg train`` or a model written by ``fcnseg export`` (``.onnx``,
``.xml``); without one, ``--model`` builds a network with seeded random weights (speed does not depend on them).
For every installed backend (torch; onnxruntime and openvino when installed) it opens a ``Predictor`` as
``fcnseg predict --backend NAME`` does and times ``predict_batch`` on random uint8 images of ``--size``: the latency
of one image (batch 1) and the throughput of ``--batch`` images inferred together, each the median of ``--reps``
calls after an untimed one. Normalisation, inference and the masks are in every figure; decoding and writing files
are not. ``--int8 MODEL.xml`` (from ``fcnseg quantize``) adds that int8 model. The processor line names the
matrix units (AMX, AVX512-BF16, VNNI) on which bf16 and int8 speed depend.

Comparisons with other runtimes and with a plain FCN-8s reimplementation are scripts in the source tree's
``benchmarks/`` folder, not part of this command.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import fcnseg.models as models
from fcnseg.cli.main import UserError
from fcnseg.core.device import DEFAULT_DEVICE, DEVICE_HELP, PRECISION_HELP, PRECISIONS
from fcnseg.core.io import write_text
from fcnseg.core.machine import processor_info, processor_line
from fcnseg.core.progress import make_bar
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.runtimes import BACKENDS, available_backends, require
from fcnseg.training.config import TrainConfig

logger = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    """``500x500`` or ``500`` -> ``(500, 500)``."""
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"size must look like 500x500 (height x width), got {text!r}")
    return int(parts[0]), int(parts[-1])


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="latency and throughput of a model on each installed backend")
    p.description = __doc__
    p.add_argument("model_file", type=Path, nargs="?", metavar="MODEL_FILE", help="checkpoint, .onnx or .xml")
    p.add_argument(
        "--model",
        help=f"without MODEL_FILE: this network with random weights (default {TrainConfig.model}, "
        "what `fcnseg train` trains; see `fcnseg models`)",
    )
    p.add_argument("--num-classes", type=int, default=21, metavar="K", help="classes of --model (default 21)")
    p.add_argument("--int8", type=Path, metavar="MODEL.xml", help="also time this int8 model (`fcnseg quantize`)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, help="backends to time (default: all installed)")
    p.add_argument("--size", type=_size, default=(500, 500), metavar="HxW", help="image size (default 500x500)")
    p.add_argument("--batch", type=int, default=8, metavar="N", help="images per call for throughput (default 8)")
    p.add_argument("--reps", type=int, default=5, metavar="N", help="timed calls per figure (default 5)")
    p.add_argument("--device", default=DEFAULT_DEVICE, help=f"torch backend: {DEVICE_HELP} (default: auto)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=f"{PRECISION_HELP} (default: auto)")
    p.add_argument("--threads", type=int, metavar="N", help="inference threads (default: PyTorch's choice)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    p.set_defaults(run=run)
    return p


def _backends(args: argparse.Namespace) -> list[str]:
    """The backends to time: those asked for (which must be installed), else every installed one the file runs on."""
    if args.backends:
        for backend in args.backends:
            require(backend)
        return list(dict.fromkeys(args.backends))
    suffix = args.model_file.suffix.lower() if args.model_file else ""
    runs_on = {".xml": ("openvino",), ".onnx": ("onnxruntime", "openvino")}.get(suffix, BACKENDS)
    return [b for b in available_backends() if b in runs_on]


def _opener(args: argparse.Namespace, backend: str) -> Callable[[], Predictor]:
    """How ``fcnseg predict --backend BACKEND`` opens the model (runtimes run on the CPU)."""
    device = args.device if backend == "torch" else "cpu"
    if args.model_file is not None:
        return lambda: Predictor.from_checkpoint(args.model_file, device, backend=backend, precision=args.precision)

    def random_model() -> Predictor:
        torch.manual_seed(0)
        model = models.create_model(args.model, num_classes=args.num_classes)
        return Predictor(model, device=device, backend=backend, precision=args.precision)

    return random_model


def _timed(call: Callable[[], Any], reps: int, bar: Any) -> tuple[float, list[float]]:
    """Seconds of the first call of ``call`` (a warm-up, kept out of the figures), and of ``reps`` more calls."""
    seconds = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
        bar.update(1)
    return seconds[0], seconds[1:]


def _spread(seconds: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds), "all_s": seconds}


def measure(open_predictor: Callable[[], Predictor], args: argparse.Namespace, bar: Any) -> dict[str, Any]:
    """Load time, batch-1 latency and batch throughput of one predictor, as a row of plain values."""
    start = time.perf_counter()
    predictor = open_predictor()
    load_s = time.perf_counter() - start
    h, w = args.size
    arrays = np.random.default_rng(0).integers(0, 256, (args.batch, h, w, predictor.bands), dtype=np.uint8)
    images = [Image.fromarray(a) if predictor.bands == 3 else a for a in arrays]  # RGB: as decoded from files
    first_s, single = _timed(lambda: predictor.predict(images[0]), args.reps, bar)
    _, batched = _timed(lambda: predictor.predict_batch(images, batch_size=args.batch), args.reps, bar)
    throughput = _spread(batched)
    throughput |= {"batch": args.batch, "images_per_s": args.batch / throughput["median_s"]}
    return {
        "backend": predictor.backend,
        "computes_in": predictor.computes_in,
        "device": str(predictor.device),
        "load_s": load_s,
        "first_s": first_s,
        "latency": _spread(single),
        "throughput": throughput,
    }


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}" if seconds < 1 else f"{1000 * seconds:.0f}"


def format_rows(rows: list[dict[str, Any]], batch: int) -> str:
    """The table: one line per timed model."""
    head = (
        f"{'path':<11} {'device':<6} {'computes':<8} {'load s':>6} {'1st ms':>7} {'batch 1 ms (min-max)':>22} "
        f"{f'batch {batch} ms/img':>15} {'img/s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        t, b = r["latency"], r["throughput"]
        spread = f"{_ms(t['median_s'])} ({_ms(t['min_s'])}-{_ms(t['max_s'])})"
        lines.append(
            f"{r['path']:<11} {r['device']:<6} {r['computes_in']:<8} {r['load_s']:>6.1f} {_ms(r['first_s']):>7} "
            f"{spread:>22} {_ms(b['median_s'] / batch):>15} {b['images_per_s']:>7.1f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.model_file is not None and args.model is not None:
        raise UserError("give a MODEL_FILE or --model, not both")
    if args.model_file is not None and not args.model_file.is_file():
        raise UserError(f"model file '{args.model_file}' not found; pass a checkpoint or a .onnx/.xml model")
    if args.int8 is not None and not args.int8.is_file():
        raise UserError(f"int8 model '{args.int8}' not found; write one with `fcnseg quantize`")
    if min(args.batch, args.reps, args.num_classes) < 1:
        raise UserError("--batch, --reps and --num-classes must be at least 1")
    args.model = args.model or (None if args.model_file else TrainConfig.model)
    if args.threads:
        torch.set_num_threads(args.threads)
    jobs = [(backend, _opener(args, backend)) for backend in _backends(args)]
    if args.int8 is not None:
        jobs.append(("int8", lambda: Predictor.from_checkpoint(args.int8, "cpu", backend="openvino")))
    if not jobs:
        raise UserError("no backend can run this model; install one (`pip install openvino` or `onnxruntime`)")
    if os.getloadavg()[0] > 0.5:
        logger.warning("the machine is busy (load average %.1f): the figures will be slower", os.getloadavg()[0])

    rows = []
    with make_bar(len(jobs) * 2 * (args.reps + 1), desc="bench", unit="call") as bar:
        for path, open_predictor in jobs:
            rows.append({"path": path} | measure(open_predictor, args, bar))
    info = processor_info()
    result = {
        "model": str(args.model_file) if args.model_file else f"{args.model} (random weights)",
        "size": list(args.size),
        "batch": args.batch,
        "reps": args.reps,
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "processor": processor_line(info),
        "cpu_flags": info["flags"],
        "rows": rows,
    }
    print(f"processor: {result['processor']}")
    h, w = args.size
    print(f"{result['model']}, {h}x{w}, {result['threads']} threads, torch {torch.__version__}")
    print(format_rows(rows, args.batch))
    if args.json is not None:
        write_text(args.json, json.dumps(result, indent=2) + "\n")
        logger.info("wrote %s", args.json)
    return 0
