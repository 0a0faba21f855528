"""Inference backends besides PyTorch: ONNX Runtime and OpenVINO, run as modules the engine can call.

A model exported by :mod:`fcnseg.inference.export` (ONNX, or the OpenVINO IR that is converted from that ONNX
file) takes float32 RGB ``(N, 3, H, W)`` in ``[0, 1]`` with any ``N``, ``H`` and ``W`` and returns logits
``(N, K, H, W)``. :class:`RuntimeModel` wraps such a compiled model as an ``nn.Module``, so that whole-image,
tiled, batched, flipped and multi-scale inference (:mod:`fcnseg.inference.engine`) run through it unchanged.

Precision: ONNX Runtime runs fp32. OpenVINO's CPU plugin runs bf16 by default where the CPU has AVX512-BF16 or
AMX (``precision="auto"``), fp32 with ``precision="fp32"``; an int8 IR (:mod:`fcnseg.inference.quantize`) runs its
quantized layers in int8 whatever the hint. Both packages are optional (``pip install fcnseg[deploy]``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fcnseg.inference.memory import MemoryModel

__all__ = [
    "BACKENDS",
    "RuntimeModel",
    "available_backends",
    "load_onnxruntime",
    "load_openvino",
    "openvino_from_onnx",
]

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino")
_PACKAGES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}
_OV_PRECISION = {"auto": None, "fp32": "f32", "bf16": "bf16", "fp16": "f16"}
METADATA_KEY = "fcnseg"


def available_backends() -> tuple[str, ...]:
    """The backends whose package is installed, in :data:`BACKENDS` order."""
    return tuple(b for b in BACKENDS if importlib.util.find_spec(_PACKAGES[b]) is not None)


def require(backend: str) -> None:
    """Raise an error that says how to install ``backend`` when it is missing."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend not in available_backends():
        raise ValueError(f"backend {backend!r} is not installed; run `pip install {_PACKAGES[backend]}`")


class RuntimeModel(nn.Module):
    """A compiled ONNX Runtime or OpenVINO model as a module: ``(N, 3, H, W) -> (N, K, H, W)`` float32.

    Args:
        run: maps a C-contiguous float32 array ``(N, 3, H, W)`` to logits ``(N, K, H, W)``.
        backend: ``"onnxruntime"`` or ``"openvino"``.
        computes_in: what the convolutions run in (``"fp32"``, ``"bf16"``, ``"int8"``), for reports.
        metadata: the JSON metadata stored with the exported file (classes, normalisation, memory), if any.
    """

    def __init__(self, run: Any, backend: str, computes_in: str, metadata: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._run, self.backend, self.computes_in = run, backend, computes_in
        self.metadata = metadata or {}

    @property
    def memory(self) -> MemoryModel | None:
        """Peak activation memory model measured on the PyTorch model at export time (``None`` if not stored)."""
        mem = self.metadata.get("memory")
        return None if not mem else MemoryModel(bytes_per_pixel=mem["bytes_per_pixel"], pad=mem["pad"])

    def forward(self, x: Tensor) -> Tensor:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(np.asarray(self._run(array))).to(x.device)

    def extra_repr(self) -> str:
        return f"backend={self.backend}, computes_in={self.computes_in}"


def load_onnxruntime(path: str | os.PathLike, *, threads: int | None = None) -> RuntimeModel:
    """An ONNX file written by ``fcnseg export`` run by ONNX Runtime's CPU provider (fp32)."""
    require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    name = session.get_inputs()[0].name
    return RuntimeModel(
        lambda a: session.run(None, {name: a})[0], "onnxruntime", "fp32", json.loads(meta) if meta else None
    )


def openvino_from_onnx(onnx_path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Any:
    """Convert an ONNX file to an ``openvino.Model`` (fp32 weights), with ``metadata`` in its runtime info."""
    require("openvino")
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    if metadata is not None:
        model.set_rt_info(json.dumps(metadata), [METADATA_KEY])
    return model


def openvino_metadata(model: Any) -> dict[str, Any] | None:
    """The fcnseg metadata of an ``openvino.Model``, or ``None``."""
    if not model.has_rt_info([METADATA_KEY]):
        return None
    return json.loads(model.get_rt_info([METADATA_KEY]).astype(str))


def load_openvino(
    model_or_path: Any, *, precision: str = "auto", threads: int | None = None, int8: bool | None = None
) -> RuntimeModel:
    """Compile an OpenVINO IR (``.xml``), an ONNX file or an ``openvino.Model`` for the CPU.

    Args:
        model_or_path: what to compile.
        precision: ``"auto"`` (the plugin's default: bf16 on CPUs that compute it natively), ``"fp32"``, ``"bf16"``.
        threads: inference threads (default ``torch.get_num_threads()``).
        int8: whether the model holds quantized layers (read from its metadata when ``None``), for reports.
    """
    require("openvino")
    import openvino as ov

    if precision not in _OV_PRECISION:
        raise ValueError(f"precision must be one of {', '.join(_OV_PRECISION)}, got {precision!r}")
    core = ov.Core()
    model = core.read_model(str(model_or_path)) if isinstance(model_or_path, str | Path) else model_or_path
    metadata = openvino_metadata(model)
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
    config["PERFORMANCE_HINT"] = "LATENCY"  # one stream: the engine sends one batch at a time
    if _OV_PRECISION[precision] is not None:
        config["INFERENCE_PRECISION_HINT"] = _OV_PRECISION[precision]
    compiled = core.compile_model(model, "CPU", config)
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", "f16"
    int8 = bool((metadata or {}).get("quantization")) if int8 is None else int8
    computes_in = "int8" if int8 else {"bf16": "bf16", "f16": "fp16"}.get(hint, "fp32")
    request = compiled.create_infer_request()

    def run(array: np.ndarray) -> np.ndarray:
        return request.infer({0: array}, share_inputs=True)[0]  # copied out: the request reuses its buffer

    logger.debug("OpenVINO model compiled for CPU, %s", computes_in)
    return RuntimeModel(run, "openvino", computes_in, metadata)
