"""The rows of ``benchmarks/suite.py``: every measurement of the comparison, as plain dicts.

Inference rows: for each network (model and layout), input size, path, precision and batch size: latency
(median and spread), the ratio to the baseline's time per image at the same size and batch, the network's FLOPs
(counted once on its fp32 reference), achieved FLOP/s and its fraction of this machine's measured matrix-multiply
peak in the same precision, peak activation memory, and the agreement of the first image's logits with the fp32
reference (the baseline for FCN-8s VGG16 in the caffe layout, else the network's own fp32 eager output).

Training rows: images per second of a full SGD step (see :mod:`benchlib.training`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from benchlib import peers
from benchlib.baseline import baseline_from_fcnseg
from benchlib.measure import Timing, agreement, matmul_peak, peak_bytes, run_counted, time_call
from benchlib.networks import build_network, inference_path, network_label, smooth_images
from benchlib.peers import PEERS
from benchlib.training import baseline_step, fast_step, random_batch
from fcnseg.core.device import autocast_dtype
from fcnseg.core.machine import processor_info, processor_line
from fcnseg.inference.optimize import packed_bytes
from fcnseg.inference.runtimes import RuntimeModel

__all__ = ["BenchSettings", "inference_rows", "machine_info", "training_rows"]

logger = logging.getLogger(__name__)

BASELINE_NETWORK = ("fcn8s_vgg16", "caffe")


@dataclass
class BenchSettings:
    """What ``benchmarks/suite.py`` measures (by default FCN-8s VGG16 at 500x500, the size of the paper's timings)."""

    models: tuple[str, ...] = ("fcn8s_vgg16",)
    layouts: tuple[str, ...] = ("caffe", "default")  # VGG backbones only; other backbones have one layout
    sizes: tuple[tuple[int, int], ...] = ((500, 500),)
    precisions: tuple[str, ...] = ("fp32", "bf16")
    batches: tuple[int, ...] = (1, 2)
    paths: tuple[str, ...] = ("baseline", "fast", "ov", "int8")  # add "eager" for fcnseg's own fp32 eager rows
    peers: tuple[str, ...] = PEERS  # other runtimes on the same network (skipped when not installed)
    calibration_images: int = 8  # images the int8 path and the openvino-int8 peer are calibrated on
    warmup: int = 1
    reps: int = 3
    train_size: tuple[int, int] | None = (360, 480)
    train_batch: int = 8
    train_reps: int = 1
    train_precision: str = "auto"
    matmul_size: int = 4096
    num_classes: int = 21
    device: str = "cpu"
    seed: int = 0


def machine_info(settings: BenchSettings) -> dict[str, Any]:
    """The machine, the library versions and the measured matrix-multiply peak (GFLOP/s) per precision."""
    device = torch.device(settings.device)
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peaks[name] = matmul_peak(dtype, size=settings.matmul_size, device=device) / 1e9
        logger.info("matmul peak %s: %.1f GFLOP/s", name, peaks[name])
    processor = processor_info()
    return {
        "cpu": processor["model_name"],
        "cpu_flags": processor["flags"],
        "processor": processor_line(processor),
        "cores": caps.get("num_physical_cores"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "matmul_gflops": peaks,
        "matmul_size": settings.matmul_size,
        "load_average_start": os.getloadavg()[0],  # other work on the machine makes every figure slower
    }


def _networks(settings: BenchSettings) -> list[tuple[str, str | None]]:
    return [(name, layout) for name in settings.models for layout in (settings.layouts if "_vgg" in name else (None,))]


def _measure_interleaved(
    runs: list[Callable[[Tensor], Tensor]], x: Tensor, settings: BenchSettings, count_memory: list[bool]
) -> list[tuple[Tensor, dict[str, Any]]]:
    """Time every ``run(x)`` of ``runs`` in turn, so that a change of machine load hits them alike.

    Each run's first call is timed alone (one-time work: packing, primitive creation), then one call counts its
    peak memory (where ``count_memory``; runtimes outside PyTorch are not seen), then ``warmup - 1`` rounds, then
    ``reps`` rounds of one timed call of each run.

    Returns:
        For each run, its last output and ``first_s``, ``peak_bytes`` and the timing (``median_s``, ...).
    """
    device = settings.device
    last: list[Tensor | None] = [None] * len(runs)

    def call(i: int) -> Callable[[], None]:
        def go() -> None:
            last[i] = None  # keep only the latest output alive
            last[i] = runs[i](x)

        return go

    firsts = [time_call(call(i), reps=1, warmup=0, device=device).median for i in range(len(runs))]
    memory = [peak_bytes(call(i)) if count_memory[i] else None for i in range(len(runs))]
    for _ in range(settings.warmup - 1):
        for i in range(len(runs)):
            call(i)()
    seconds: list[list[float]] = [[] for _ in runs]
    for _ in range(settings.reps):
        for i in range(len(runs)):
            seconds[i] += time_call(call(i), reps=1, warmup=0, device=device).seconds
    return [
        (last[i], {"first_s": firsts[i], "peak_bytes": memory[i], **Timing(tuple(seconds[i])).to_dict()})
        for i in range(len(runs))
    ]


def _computes_in(precision: str, device: torch.device | str) -> str:
    """The precision the convolutions run in: ``auto`` resolved for the device."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast_dtype(precision, device)]


def _row(settings: BenchSettings, peaks: dict[str, float], **fields: Any) -> dict[str, Any]:
    """An inference row: ``fields`` and what follows from them (time per image, FLOP/s, fraction of peak)."""
    batch, timing = fields["batch"], fields["latency"]
    effective = fields.pop("computes_in", None) or _computes_in(fields["precision"], settings.device)
    gflops = fields["gflops_per_image"] * batch
    achieved = gflops / timing["median_s"]
    return fields | {
        "ms_per_image": 1000 * timing["median_s"] / batch,
        "computes_in": effective,
        "gflops": gflops,
        "achieved_gflops_per_s": achieved,
        "peak_fraction": achieved / peaks[effective] if effective in peaks else None,
        "peak_bytes": timing["peak_bytes"],
    }


def _runs(settings: BenchSettings, paths: tuple[str, ...], is_baseline: bool) -> list[tuple[str, str]]:
    """``(path, precision)`` pairs to measure on one network: baseline and eager in fp32, fast in each precision."""
    return [
        (path, precision)
        for path in paths
        if path != "baseline" or is_baseline
        for precision in (settings.precisions if path in ("fast", "ov") else ("int8",) if path == "int8" else ("fp32",))
    ]


def _paths(
    settings: BenchSettings, model: nn.Module, reference_model: nn.Module, is_baseline: bool, calibration: Tensor
) -> list[dict[str, Any]]:
    """Every path to time on one network: fcnseg's (and the baseline) and the peers', each with its run."""
    found = []
    for path, precision in _runs(settings, settings.paths, is_baseline):
        missing = peers.missing_packages({"int8": "openvino-int8", "ov": "openvino"}.get(path, "onnxruntime"))
        if path in ("int8", "ov") and missing:
            logger.warning("path %s skipped: needs %s", path, " and ".join(missing))
            continue
        target = reference_model if path == "baseline" else model
        run, module = inference_path(path, target, precision=precision, device=settings.device, calibration=calibration)
        computes_in = module.computes_in if path in ("int8", "ov") else None
        found.append({"path": path, "precision": precision, "run": run, "module": module, "computes_in": computes_in})
    if settings.peers and torch.device(settings.device).type == "cpu":
        runs, _ = peers.peer_runs(copy.deepcopy(model), settings.peers, calibration=calibration)
        for peer, computes_in, run in runs:
            found.append({"path": peer, "precision": "auto", "run": run, "module": None, "computes_in": computes_in})
    return found


def _counts_memory(module: nn.Module | None) -> bool:
    """Whether the peak memory of a path can be counted: PyTorch's allocations are seen, a runtime's are not."""
    return module is not None and not isinstance(module, RuntimeModel)


def _network_rows(
    settings: BenchSettings, peaks: dict[str, float], network: tuple[str, str | None], paths: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Rows of one network at every size, for each path (fcnseg's, the baseline, peers), precision and batch.

    All paths of one size and batch are timed interleaved (:func:`_measure_interleaved`).
    """
    name, layout = network
    model = build_network(name, layout, num_classes=settings.num_classes, seed=settings.seed)
    is_baseline = network == BASELINE_NETWORK
    reference_model = baseline_from_fcnseg(model) if is_baseline else model
    local = dataclasses.replace(settings, paths=paths, peers=settings.peers if paths != ("baseline",) else ())
    rows = []
    for h, w in settings.sizes:
        images = smooth_images(max(settings.batches), h, w, seed=settings.seed)
        calibration = smooth_images(settings.calibration_images, h, w, seed=settings.seed + 1)
        eager, _ = inference_path("eager", reference_model, device=settings.device)
        reference, flops, _ = run_counted(lambda run=eager, x=images[:1]: run(x))  # (1, K, H, W) fp32
        found = _paths(local, model, reference_model, is_baseline, calibration)
        for batch in settings.batches:
            logger.info("%s: %d paths, b%d %dx%d", network_label(name, layout), len(found), batch, h, w)
            runs = [p["run"] for p in found]
            measured = _measure_interleaved(
                runs, images[:batch], settings, [_counts_memory(p["module"]) for p in found]
            )
            for p, (out, timing) in zip(found, measured, strict=True):
                same, diff = agreement(out[:1], reference)
                fields = {"network": network_label(name, layout), "model": name, "layout": layout, "path": p["path"]}
                fields |= {"precision": p["precision"], "batch": batch, "height": h, "width": w, "latency": timing}
                fields |= {"gflops_per_image": flops / 1e9, "argmax_agreement": same, "max_logit_diff": diff}
                prepared = packed_bytes(p["module"]) if p["module"] is not None else 0
                rows.append(_row(settings, peaks, **fields, computes_in=p["computes_in"], prepared_bytes=prepared))
        del found
    order = {(r["path"], r["precision"]): i for i, r in enumerate(rows)}  # path-major, as before
    return sorted(rows, key=lambda r: (r["height"], r["width"], order[(r["path"], r["precision"])], r["batch"]))


def inference_rows(settings: BenchSettings, peaks: dict[str, float]) -> list[dict[str, Any]]:
    """Latency, FLOPs, memory and agreement rows for every network, size, path, precision and batch.

    The baseline network comes first, so that every row can be compared with the baseline at its size and batch.
    """
    networks = _networks(settings)
    if "baseline" in settings.paths and BASELINE_NETWORK not in networks:
        networks.insert(0, BASELINE_NETWORK)
    networks.sort(key=lambda n: n != BASELINE_NETWORK)
    rows: list[dict[str, Any]] = []
    for network in networks:
        requested = network in _networks(settings)
        rows += _network_rows(settings, peaks, network, settings.paths if requested else ("baseline",))
    baseline_ms = {(r["height"], r["width"], r["batch"]): r["ms_per_image"] for r in rows if r["path"] == "baseline"}
    for r in rows:
        base = baseline_ms.get((r["height"], r["width"], r["batch"]))
        r["ratio_vs_baseline"] = base / r["ms_per_image"] if base else None
    return rows


def training_rows(settings: BenchSettings) -> list[dict[str, Any]]:
    """Images per second of one SGD step: the baseline and fcnseg's trainer on every network."""
    if settings.train_size is None:
        return []
    h, w = settings.train_size
    images, masks = random_batch(settings.train_batch, h, w, settings.num_classes, seed=settings.seed)
    device = torch.device(settings.device)
    images, masks = images.to(device), masks.to(device)
    jobs: list[tuple[str, str | None, str]] = []
    if "baseline" in settings.paths:
        jobs.append((*BASELINE_NETWORK, "baseline"))
    jobs += [(name, layout, "fast") for name, layout in _networks(settings)]
    rows, baseline_rate = [], None
    for name, layout, path in jobs:
        model = build_network(name, layout, num_classes=settings.num_classes, seed=settings.seed)
        if path == "baseline":
            step = baseline_step(baseline_from_fcnseg(model).to(device), images, masks)
        else:
            step = fast_step(model, images, masks, precision=settings.train_precision, device=device)
        del model
        logger.info("training step %s %s b%d %dx%d", network_label(name, layout), path, settings.train_batch, h, w)
        memory = peak_bytes(step)  # the first (warm-up) step
        timing = time_call(step, reps=settings.train_reps, warmup=max(settings.warmup - 1, 0), device=device)
        rate = settings.train_batch / timing.median
        baseline_rate = rate if path == "baseline" else baseline_rate
        rows.append(
            {
                "network": network_label(name, layout),
                "path": path,
                "precision": "fp32" if path == "baseline" else _computes_in(settings.train_precision, device),
                "batch": settings.train_batch,
                "height": h,
                "width": w,
                "step": timing.to_dict(),
                "images_per_s": rate,
                "ratio_vs_baseline": rate / baseline_rate if baseline_rate else None,
                "peak_bytes": memory,
            }
        )
        del step
    return rows
