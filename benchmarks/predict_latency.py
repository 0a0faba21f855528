"""Latency of ``fcnseg predict``'s default path next to plain runtimes on the same network, argmax included.

Run as ``.venv/bin/python benchmarks/predict_latency.py [--models fcn8s_resnet50 ...] [--size 500 500]
[--batches 1 8] [--reps 5] [--threads 2] [--json FILE]``.

For each network (seeded random weights, 21 classes, the zero-initialised score layers random too, as in
``benchmarks/suite.py``; VGG backbones in the default layout) it writes a checkpoint as ``fcnseg train`` does,
builds every path below, and times them interleaved: one call of each path per round, ``--reps`` rounds after a
warm-up round, so that a change of machine load hits every path alike. The figure is the median, of wall time, or with
``--clock cpu`` of the process's CPU time (all threads): with ``--threads 1`` that is the work each path does,
which other jobs on a shared machine barely change (with more threads it also counts threads spinning while they
wait).

- ``predict``: ``Predictor.from_checkpoint(ckpt)`` (backend ``auto``: OpenVINO, the checkpoint converted once and
  cached) ``.predict_batch(images)`` on uint8 RGB arrays: normalisation, inference and masks, what ``fcnseg predict``
  runs per batch (without decoding and writing files). Also the default of ``Predictor.from_checkpoint``.
- ``torch``: the same with ``backend="torch"`` (fcnseg's PyTorch fast path, ``Predictor(model)``'s default).
- ``int8``: ``quantize_checkpoint`` (what ``fcnseg quantize`` runs) on the calibration images, then
  ``Predictor.from_checkpoint(int8.xml).predict_batch(images)``.
- ``openvino``: plain OpenVINO on a plain ``torch.onnx.export`` of the model (dynamic batch, height and width):
  ``ov.Core().compile_model(onnx, "CPU", {"INFERENCE_NUM_THREADS": threads})`` (bf16 where the CPU computes it
  natively), one ``infer`` on normalised float32 input; the ``+argmax`` figure adds ``np.argmax(logits, 1)``.
- ``openvino-int8``: ``nncf.quantize`` of that OpenVINO model on the same calibration images (normalised), the same
  two figures.
- ``onnxruntime``: that ONNX file in an ``InferenceSession`` (CPU, fp32), the same two figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchlib.networks import build_network
from fcnseg.core.checkpoint import make_checkpoint, save_checkpoint
from fcnseg.core.machine import processor_line
from fcnseg.data.classes import as_class_info
from fcnseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.quantize import quantize_checkpoint

PATHS = ("predict", "torch", "int8", "openvino", "openvino-int8", "onnxruntime")
PEERS = ("openvino", "openvino-int8", "onnxruntime")


def uint8_images(n: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    """``n`` smooth random ``(H, W, 3)`` uint8 images (image-like structure, so that the logits vary)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(2, height // 24), max(2, width // 24), generator=gen)
    up = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return list((up.clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy())


def normalised(images: list[np.ndarray]) -> np.ndarray:
    """uint8 ``(H, W, 3)`` images -> ``(N, 3, H, W)`` float32 normalised as the checkpoint's (ImageNet) mean/std."""
    x = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    return np.ascontiguousarray((x - mean[:, None, None]) / std[:, None, None])


def plain_onnx(model: torch.nn.Module, path: Path, height: int, width: int) -> None:
    """``torch.onnx.export`` as its documentation shows it, with dynamic batch, height and width."""
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.rand(1, 3, height, width),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
        )


def peer_calls(onnx: Path, calibration: np.ndarray, threads: int, paths: tuple[str, ...]) -> dict[str, Callable]:
    """``{peer: run}`` with ``run(array) -> logits``, for the peers in ``paths``."""
    calls: dict[str, Callable] = {}
    if "onnxruntime" in paths:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
        calls["onnxruntime"] = lambda a: session.run(None, {"image": a})[0]
    for peer in ("openvino", "openvino-int8"):
        if peer not in paths:
            continue
        import openvino as ov

        model = ov.convert_model(str(onnx))
        if peer == "openvino-int8":
            import nncf

            samples = [calibration[i : i + 1] for i in range(len(calibration))]
            model = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
        request = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads}).create_infer_request()
        calls[peer] = lambda a, r=request: r.infer({0: a})[0]
    return calls


def build_paths(name: str, args: argparse.Namespace, folder: Path) -> dict[str, Callable[[int], Callable]]:
    """``{path: make}``: ``make(batch)`` returns a call that segments the first ``batch`` images."""
    h, w = args.size
    model = build_network(name, "default" if "_vgg" in name else None, num_classes=21, seed=args.seed)
    ckpt = folder / f"{name}.pt"
    info = as_class_info([f"class_{i}" for i in range(21)])
    classes = {"names": list(info.names), "colors": [list(c) for c in info.colors]}
    save_checkpoint(make_checkpoint(model, classes=classes, mean=IMAGENET_MEAN, std=IMAGENET_STD), ckpt)
    images = uint8_images(max(args.batches), h, w, seed=args.seed)
    inputs = normalised(images)
    calibration = uint8_images(args.calib_images, h, w, seed=args.seed + 1)
    makers: dict[str, Callable[[int], Callable]] = {}
    predictors = {}
    if "predict" in args.paths:
        predictors["predict"] = Predictor.from_checkpoint(ckpt)
    if "torch" in args.paths:
        predictors["torch"] = Predictor.from_checkpoint(ckpt, backend="torch")
    if "int8" in args.paths:
        quantize_checkpoint(ckpt, calibration, folder / f"{name}-int8.xml")
        predictors["int8"] = Predictor.from_checkpoint(folder / f"{name}-int8.xml")
    for path, predictor in predictors.items():
        print(f"  {path}: {predictor.backend} ({predictor.computes_in})", flush=True)
        makers[path] = lambda b, p=predictor: lambda: p.predict_batch(images[:b], batch_size=b)
    onnx = folder / f"{name}.onnx"
    plain_onnx(model, onnx, h, w)
    for peer, run in peer_calls(onnx, normalised(calibration), args.threads, args.paths).items():
        makers[peer] = lambda b, r=run: lambda: r(inputs[:b])
    return makers


def measure(makers: dict[str, Callable[[int], Callable]], batch: int, reps: int, clock: Callable) -> dict[str, dict]:
    """Interleaved timing with ``clock``; peers also get ``+argmax`` (``np.argmax`` of their logits, same call)."""
    calls = {path: make(batch) for path, make in makers.items()}
    seconds: dict[str, list[float]] = {path: [] for path in calls}
    with_argmax: dict[str, list[float]] = {path: [] for path in calls if path in PEERS}
    for round_ in range(reps + 1):  # round 0 warms up (compilation, packing, first-run allocations)
        for path, call in calls.items():
            start = clock()
            out = call()
            mid = clock()
            if path in PEERS:
                np.argmax(out, axis=1)
            end = clock()
            if round_:
                seconds[path].append(mid - start)
                if path in PEERS:
                    with_argmax[path].append(end - start)
            del out
    result = {path: {"median_s": statistics.median(s), "all_s": s} for path, s in seconds.items()}
    for path, s in with_argmax.items():
        result[f"{path} +argmax"] = {"median_s": statistics.median(s), "all_s": s}
    return result


def report(name: str, batch: int, rows: dict[str, dict]) -> str:
    """The rows, each against the fastest peer of its kind: int8 paths against ``openvino-int8``, the others against
    the fastest of ``openvino`` and ``onnxruntime`` (their own latency, without the argmax)."""
    floats = [rows[p]["median_s"] for p in ("openvino", "onnxruntime") if p in rows]
    fastest = {"float": min(floats) if floats else None, "int8": rows.get("openvino-int8", {}).get("median_s")}
    lines = [f"{name}, batch {batch}:"]
    for path, row in rows.items():
        ms = [1000 * s for s in row["all_s"]]
        reference = fastest["int8" if "int8" in path else "float"]
        vs = (
            f"{row['median_s'] / reference:5.2f}x the fastest {'int8 ' if 'int8' in path else ''}peer"
            if reference
            else ""
        )
        spread, per_image = f"({min(ms):.0f}-{max(ms):.0f})", 1000 * row["median_s"] / batch
        lines.append(f"  {path:<22} {1000 * row['median_s']:8.1f} ms {spread:>13} {per_image:7.1f} ms/img  {vs}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["fcn8s_vgg16", "fcn8s_resnet50", "fcn8s_squeezenet1_1"])
    parser.add_argument("--size", type=int, nargs=2, default=[500, 500], metavar=("H", "W"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--reps", type=int, default=5, help="timed rounds after one warm-up round (default 5)")
    parser.add_argument("--calib-images", type=int, default=4, help="int8 calibration images (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="threads of every runtime (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time (default), or the process's CPU time: with --threads 1, a figure that other jobs on the "
        "machine barely move",
    )
    parser.add_argument("--json", type=Path, help="also write every timing as JSON")
    args = parser.parse_args()
    args.paths = tuple(args.paths)
    torch.set_num_threads(args.threads)
    print(f"processor: {processor_line()}; {args.threads} threads, torch {torch.__version__}; {args.clock} time")
    results = []
    with tempfile.TemporaryDirectory(prefix="fcnseg-latency-") as tmp:
        os.environ["FCNSEG_CACHE"] = tmp  # converted models go to the temporary folder
        for name in args.models:
            print(f"{name} at {args.size[0]}x{args.size[1]}: building", flush=True)
            makers = build_paths(name, args, Path(tmp))
            for batch in args.batches:
                load = os.getloadavg()[0]
                rows = measure(
                    makers, batch, args.reps, time.perf_counter if args.clock == "wall" else time.process_time
                )
                print(
                    report(name, batch, rows) + f"\n  load average {load:.1f} -> {os.getloadavg()[0]:.1f}", flush=True
                )
                results.append({"model": name, "batch": batch, "size": args.size, "load_start": load, "rows": rows})
            del makers
    if args.json:
        args.json.write_text(json.dumps({"processor": processor_line(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
