"""What ``Predictor.predict`` adds around the network: normalisation, argmax, copies (OpenVINO and torch backends).

Run as ``.venv/bin/python benchmarks/predict_overhead.py [--model fcn8s_resnet50] [--size 500 500] [--reps 7]
[--scale 1.25]``.

On one seeded network (21 classes, random score layers) and one uint8 image, interleaved, medians of ``--reps``:

- ``predict``: ``Predictor.from_checkpoint(ckpt).predict(image)`` (the default, OpenVINO: the uint8 image goes into
  the graph, which normalises it and takes the argmax) and the same with ``backend="torch"``.
- ``network``: the forward pass alone on the prepared input: OpenVINO's labels graph (``RuntimeModel.labels``), or
  the torch fast path's logits (``segment_logits``); ``network from uint8``: OpenVINO's graph that ``predict`` runs
  (``RuntimeModel.image_labels``), on the uint8 image.
- ``logits path``: the OpenVINO predictor when the masks come from its logits (channels-last) through
  :func:`fcnseg.inference.engine.class_indices`, as with ``--probs``, tiles, flips or scales.
- ``as before``: OpenVINO's logits delivered NCHW, then ``torch.argmax`` over the classes, what ``predict`` ran before
  (the issue measured 47 ms of argmax against 34 ms of network for ResNet-50 on a 2-thread AMX machine).
- ``input (_prepare)``: the input side alone: the uint8 image to the normalised float32 batch the network takes.

With ``--scale S`` (a test-time input scale, as a checkpoint may record) the predictors run at that scale, and the
``network`` rows on the normalised input already resized by ``S``: the network's own work at that size. ``predict``
then takes the logits path (the image resized, the logits resized back to the image outside the runtime), and the
``network from uint8`` row stays at scale 1 (the graph that ``predict`` runs at scale 1 only).

``--clock cpu`` times the process's CPU time instead of wall time (with ``--threads 1``: the work of each call,
which other jobs on a shared machine barely change).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from PIL import Image
from predict_latency import uint8_images

from benchlib.networks import build_network
from fcnseg.core.checkpoint import make_checkpoint, save_checkpoint
from fcnseg.core.machine import processor_line
from fcnseg.data.classes import as_class_info
from fcnseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from fcnseg.inference.engine import rescale, segment_logits
from fcnseg.inference.export import cached_openvino
from fcnseg.inference.predictor import Predictor


def timed(calls: dict[str, Callable[[], object]], reps: int, clock: Callable[[], float]) -> dict[str, float]:
    """Median seconds (by ``clock``) of each call, interleaved, after one untimed round."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(reps + 1):
        for name, call in calls.items():
            start = clock()
            call()
            if round_:
                seconds[name].append(clock() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fcn8s_resnet50")
    parser.add_argument("--size", type=int, nargs=2, default=[500, 500], metavar=("H", "W"))
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall or process CPU time")
    parser.add_argument("--scale", type=float, default=1.0, help="test-time input scale (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"processor: {processor_line()}; {args.threads} threads, torch {torch.__version__}; {args.clock} time")
    with tempfile.TemporaryDirectory(prefix="fcnseg-overhead-") as tmp:
        os.environ["FCNSEG_CACHE"] = tmp
        model = build_network(args.model, "default" if "_vgg" in args.model else None, num_classes=21)
        info = as_class_info([f"class_{i}" for i in range(21)])
        classes = {"names": list(info.names), "colors": [list(c) for c in info.colors]}
        ckpt = Path(tmp) / "model.pt"
        save_checkpoint(make_checkpoint(model, classes=classes, mean=IMAGENET_MEAN, std=IMAGENET_STD), ckpt)
        image = uint8_images(1, *args.size, seed=0)[0]
        scales = (args.scale,)
        ovp, tp = (
            Predictor.from_checkpoint(ckpt, scales=scales),
            Predictor.from_checkpoint(ckpt, backend="torch", scales=scales),
        )
        x_ov = rescale(ovp._prepare([Image.fromarray(image)]), args.scale).contiguous()
        x_t = rescale(tp._prepare([Image.fromarray(image)]), args.scale).contiguous()
        request = ov.Core().compile_model(str(cached_openvino(ckpt)[0]), "CPU", {"INFERENCE_NUM_THREADS": args.threads})
        request = request.create_infer_request()
        array = x_ov.numpy()
        logits_only = Predictor.from_checkpoint(ckpt, scales=scales)
        logits_only._labels_in_graph = lambda *shape, **kw: False  # masks from the logits, as with --probs or tiles

        def before() -> np.ndarray:
            return torch.from_numpy(request.infer({0: array})[0]).argmax(1).to(torch.uint8).numpy()

        calls = {
            "openvino predict": lambda: ovp.predict(image),
            "openvino network (labels graph)": lambda: ovp.model.labels(x_ov),
            "openvino network from uint8": lambda: ovp.model.image_labels(image[None], ovp.mean, ovp.std),
            "openvino logits path": lambda: logits_only.predict(image),
            "openvino as before": before,
            "openvino input (_prepare)": lambda: ovp._prepare([Image.fromarray(image)]),
            "torch predict": lambda: tp.predict(image),
            "torch network": lambda: segment_logits(tp._fast, x_t, precision=tp.precision),
            "torch input (_prepare)": lambda: tp._prepare([Image.fromarray(image)]),
        }
        result = timed(calls, args.reps, time.perf_counter if args.clock == "wall" else time.process_time)
    print(
        f"{args.model}, {args.size[0]}x{args.size[1]} at input scale {args.scale:g}, batch 1, medians of {args.reps}:"
    )
    for name, seconds in result.items():
        backend = name.split()[0]
        network = result[f"{backend} network" + (" (labels graph)" if backend == "openvino" else "")]
        extra = (
            f"  (+{100 * (seconds / network - 1):.1f}% over the network)" if "predict" in name or "path" in name else ""
        )
        extra = f"  ({100 * seconds / network:.1f}% of the network)" if "_prepare" in name else extra
        print(f"  {name:<32} {1000 * seconds:7.1f} ms{extra}")


if __name__ == "__main__":
    main()
