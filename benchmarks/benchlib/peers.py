"""The runtimes a deployment would compare fcnseg with, run on the very network ``benchmarks/suite.py`` measures.

The network is exported once by fcnseg's own exporter (:func:`fcnseg.inference.export.export_model`, ONNX, with an
identity normalisation: the benchmark's inputs are already normalised), then run as each runtime's documentation
runs a model, with its default settings and the benchmark's thread count:

- ``onnxruntime``: an ``InferenceSession`` on the CPU execution provider (fp32).
- ``openvino``: ``openvino.convert_model`` of that ONNX file, ``compile_model(..., "CPU")`` with the default hints
  (bf16 on a CPU that computes it natively, else fp32).
- ``openvino-int8``: the same model after ``nncf.quantize`` (static int8, default preset), calibrated on the same
  images as fcnseg's int8 path.

A peer whose package is missing is reported as skipped, never as an error.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fcnseg.inference.export import export_model

__all__ = ["PEERS", "PeerRun", "missing_packages", "peer_runs"]

logger = logging.getLogger(__name__)

PEERS = ("onnxruntime", "openvino", "openvino-int8")
_NEEDS = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",), "openvino-int8": ("openvino", "nncf")}

PeerRun = tuple[str, str, Callable[[Tensor], Tensor]]
"""``(peer, computes_in, run)``: ``run`` maps normalised ``(N, 3, H, W)`` images to ``(N, K, H, W)`` logits."""


def missing_packages(peer: str) -> list[str]:
    """The packages ``peer`` needs that are not installed."""
    return [p for p in _NEEDS[peer] if importlib.util.find_spec(p) is None]


def _export_onnx(model: nn.Module, folder: Path) -> Path:
    """``model`` as ONNX, written and checked by fcnseg's exporter; its inputs are normalised images."""
    path = folder / "model.onnx"
    with torch.inference_mode():
        k = model(torch.zeros(1, 3, 64, 64)).shape[1]
    classes = {"names": [str(i) for i in range(k)], "colors": [[0, 0, 0]] * k}
    export_model(model, path, "onnx", classes=classes, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return path


def _numpy_run(call: Callable[[np.ndarray], np.ndarray]) -> Callable[[Tensor], Tensor]:
    return lambda x: torch.from_numpy(np.asarray(call(np.ascontiguousarray(x.float().numpy()))))


def _onnxruntime(onnx_path: Path, threads: int) -> tuple[str, Callable]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return "fp32", lambda a: session.run(None, {"image": a})[0]


def _openvino(onnx_path: Path, threads: int, calibration: Tensor | None) -> tuple[str, Callable]:
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    if calibration is not None:
        import nncf

        samples = [np.ascontiguousarray(image[None].numpy()) for image in calibration]
        model = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads})
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", "f16"
    computes_in = "int8" if calibration is not None else {"bf16": "bf16", "f16": "fp16"}.get(hint, "fp32")
    request = compiled.create_infer_request()
    return computes_in, lambda a: request.infer({0: a})[0]


def peer_runs(
    model: nn.Module, peers: tuple[str, ...], *, calibration: Tensor, threads: int | None = None
) -> tuple[list[PeerRun], dict[str, str]]:
    """Build each of ``peers`` on ``model`` (CPU).

    Args:
        model: the network, normalised ``(N, 3, H, W)`` -> logits ``(N, K, H, W)``.
        peers: names from :data:`PEERS`.
        calibration: ``(M, 3, H, W)`` normalised images that ``openvino-int8`` is calibrated on.
        threads: inference threads (default ``torch.get_num_threads()``).

    Returns:
        The runs, and ``{peer: reason}`` for each peer skipped.
    """
    threads = threads or torch.get_num_threads()
    runs: list[PeerRun] = []
    skipped = {p: f"not installed ({', '.join(missing_packages(p))})" for p in peers if missing_packages(p)}
    wanted = [p for p in peers if p not in skipped]
    if not wanted:
        return runs, skipped
    with tempfile.TemporaryDirectory(prefix="fcnseg-bench-") as folder:
        onnx_path = _export_onnx(model.cpu().eval(), Path(folder))
        for peer in wanted:
            if peer == "onnxruntime":
                computes_in, call = _onnxruntime(onnx_path, threads)
            else:
                computes_in, call = _openvino(onnx_path, threads, calibration if peer == "openvino-int8" else None)
            runs.append((peer, computes_in, _numpy_run(call)))
    for peer, reason in skipped.items():
        logger.warning("peer %s skipped: %s", peer, reason)
    return runs, skipped
