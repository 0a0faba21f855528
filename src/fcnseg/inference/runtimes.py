"""Inference backends besides PyTorch: ONNX Runtime and OpenVINO, run as modules the engine can call.

A model exported by :mod:`fcnseg.inference.export` (ONNX, or the OpenVINO IR that is converted from that ONNX
file) takes float32 RGB ``(N, 3, H, W)`` in ``[0, 1]`` (``(N, B, H, W)`` for a ``B``-band model) with any ``N``, ``H``
and ``W`` and returns logits ``(N, K, H, W)``. :class:`RuntimeModel` wraps such a compiled model as an ``nn.Module``,
so that whole-image, tiled, batched, flipped and multi-scale inference (:mod:`fcnseg.inference.engine`) run through
it unchanged.

Precision: ONNX Runtime runs fp32. OpenVINO's CPU plugin runs bf16 by default where the CPU has AVX512-BF16 or
AMX (``precision="auto"``), fp32 with ``precision="fp32"``; an int8 IR (:mod:`fcnseg.inference.quantize`) runs its
quantized layers in int8 whatever the hint. Both packages are optional (``pip install fcnseg[deploy]``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
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
STATIC_PIXELS = 2**22
"""Batch x height x width above which OpenVINO's labels graph is compiled for the input's own shape (4 megapixels)."""


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
        run: maps a C-contiguous float32 array ``(N, 3, H, W)`` to logits ``(N, K, H, W)`` (any strides: OpenVINO's
            are channels-last, the layout its CPU plugin computes in).
        backend: ``"onnxruntime"`` or ``"openvino"``.
        computes_in: what the convolutions run in (``"fp32"``, ``"bf16"``, ``"int8"``), for reports.
        metadata: the JSON metadata stored with the exported file (classes, normalisation, memory), if any.
        labels: maps the same array to class indices ``(N, H, W)``, the argmax of the logits over ``K`` computed
            inside the runtime's graph (lowest index on ties); ``None`` when the runtime has no such graph.
        num_classes: ``K`` when the graph states it.
        image_labels: maps ``(mean, std)`` to a function of uint8 images ``(N, H, W, B)`` that returns their class
            indices, the image normalised with ``mean`` and ``std`` inside the graph (see :meth:`image_labels`).
        shape_graphs: the logits compiled for one input shape at a time, which :meth:`graphs_per_shape` turns on.
    """

    def __init__(
        self,
        run: Any,
        backend: str,
        computes_in: str,
        metadata: dict[str, Any] | None = None,
        *,
        labels: Any = None,
        num_classes: int | None = None,
        image_labels: Callable[[tuple[float, ...], tuple[float, ...]], Callable[[np.ndarray], np.ndarray]]
        | None = None,
        shape_graphs: _ShapeGraphs | None = None,
    ) -> None:
        super().__init__()
        self._run, self.backend, self.computes_in = run, backend, computes_in
        self.metadata = metadata or {}
        self._labels = labels
        self.num_classes = num_classes
        self._make_image_labels = image_labels
        self._image_labels: dict[tuple, Callable[[np.ndarray], np.ndarray]] = {}
        self._shape_graphs = shape_graphs

    @contextlib.contextmanager
    def graphs_per_shape(self) -> Iterator[None]:
        """Within: :meth:`forward` runs a graph compiled for its input's shape, kept until a call of another shape.

        For many inputs of a few shapes (a raster's windows): a graph compiled for one shape plans its buffers ahead
        and runs faster than the graph for any shape, whose buffers stay at their largest (docs/geo.md, "Memory").
        Compiling takes a fraction of a second per change of shape; the graph is freed on leaving. A no-op for a
        runtime without such graphs (ONNX Runtime).
        """
        if self._shape_graphs is None:
            yield
            return
        self._shape_graphs.on = True
        try:
            yield
        finally:
            self._shape_graphs.on = False
            self._shape_graphs.release()

    @property
    def memory(self) -> MemoryModel | None:
        """Peak activation memory model measured on the PyTorch model at export time (``None`` if not stored)."""
        mem = self.metadata.get("memory")
        return None if not mem else MemoryModel(bytes_per_pixel=mem["bytes_per_pixel"], pad=mem["pad"])

    @property
    def computes_labels(self) -> bool:
        """Whether :meth:`labels` takes the argmax inside the runtime (no float logits leave the graph)."""
        return self._labels is not None

    @staticmethod
    def _array(x: Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())

    def forward(self, x: Tensor) -> Tensor:
        return torch.from_numpy(np.asarray(self._run(self._array(x)))).to(x.device)

    def labels(self, x: Tensor) -> Tensor:
        """Class indices ``(N, H, W)`` of ``x``: ``forward(x).argmax(1)``, taken inside the graph.

        uint8 when the graph has at most 255 classes, else int64. Only for a model whose :attr:`computes_labels`.
        """
        if self._labels is None:
            raise ValueError(f"this {self.backend} model computes no labels in its graph; take logits.argmax(1)")
        return _indices(self._labels(self._array(x))).to(x.device)

    @property
    def takes_images(self) -> bool:
        """Whether :meth:`image_labels` runs: uint8 images in, class indices out, all inside the runtime."""
        return self._make_image_labels is not None

    def image_labels(self, images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> Tensor:
        """Class indices ``(N, H, W)`` of uint8 images ``(N, H, W, B)`` (channels last, as decoded).

        The graph converts them to float32, normalises them (``(x / 255 - mean) / std``), runs the network and takes
        the argmax as :meth:`labels` does: nothing is prepared outside the runtime, and no float copy of the images
        or the logits leaves it. The graph is compiled at the first call for each ``(mean, std)``.
        """
        if self._make_image_labels is None:
            raise ValueError(f"this {self.backend} model takes no uint8 images; normalise them and call labels()")
        key = (tuple(float(m) for m in mean), tuple(float(v) for v in std))
        if key not in self._image_labels:
            self._image_labels[key] = self._make_image_labels(*key)
        return _indices(self._image_labels[key](np.ascontiguousarray(images, dtype=np.uint8)))

    def extra_repr(self) -> str:
        return f"backend={self.backend}, computes_in={self.computes_in}"


def _indices(array: np.ndarray) -> Tensor:
    """Class indices from a runtime as a tensor: uint8 kept, other integer types as int64."""
    indices = torch.from_numpy(np.asarray(array))
    return indices if indices.dtype == torch.uint8 else indices.long()


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
        model_or_path: what to compile: the logits, delivered channels-last (:class:`RuntimeModel`), now; their
            argmax over classes (:meth:`RuntimeModel.labels`), and the same from uint8 images normalised in the
            graph (:meth:`RuntimeModel.image_labels`), each at its first use.
        precision: ``"auto"`` (the plugin's default: bf16 on CPUs that compute it natively), ``"fp32"``, ``"bf16"``.
        threads: inference threads (default ``torch.get_num_threads()``).
        int8: whether the model holds quantized layers (read from its metadata when ``None``), for reports.
    """
    require("openvino")
    import openvino as ov

    if precision not in _OV_PRECISION:
        raise ValueError(f"precision must be one of {', '.join(_OV_PRECISION)}, got {precision!r}")
    core = ov.Core()
    is_path = isinstance(model_or_path, str | Path)
    model = core.read_model(str(model_or_path)) if is_path else model_or_path.clone()  # the caller's stays as it is
    metadata = openvino_metadata(model)
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
    config["PERFORMANCE_HINT"] = "LATENCY"  # one stream: the engine sends one batch at a time
    if _OV_PRECISION[precision] is not None:
        config["INFERENCE_PRECISION_HINT"] = _OV_PRECISION[precision]
    num_classes = _openvino_classes(model)
    network = model.clone()  # the graphs below rebuild their ends (and the image one its start) on copies of it

    def labels_of(prefix: Callable[[Any], Any], channel_axis: int) -> Callable[[np.ndarray], np.ndarray]:
        # Large inputs take the argmax by TopK, slower but without a class-sized temporary (docs/performance.md).
        graphs = [prefix(_openvino_labels(ov, network.clone(), num_classes, lean=lean)) for lean in (False, True)]
        return _runner(core, graphs[0], config, large=graphs[1], channel_axis=channel_axis)[0]

    labels = _lazy(lambda: labels_of(lambda graph: graph, 1))
    channels_last = _channels_last_output(ov, model)
    shape_graphs = _ShapeGraphs(core, channels_last, config)
    logits, compiled = _runner(core, channels_last, config, shape_graphs=shape_graphs)
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", "f16"
    int8 = bool((metadata or {}).get("quantization")) if int8 is None else int8
    computes_in = "int8" if int8 else {"bf16": "bf16", "f16": "fp16"}.get(hint, "fp32")

    def run(array: np.ndarray) -> np.ndarray:
        return logits(array).transpose(0, 3, 1, 2)  # (N, H, W, K) -> a channels-last (N, K, H, W) view

    logger.debug("OpenVINO model compiled for CPU, %s", computes_in)

    def image_labels(mean: tuple[float, ...], std: tuple[float, ...]) -> Callable[[np.ndarray], np.ndarray]:
        return labels_of(lambda graph: _uint8_images_in(ov, graph, mean, std), 3)

    return RuntimeModel(run, "openvino", computes_in, metadata, labels=labels, num_classes=num_classes,
                        image_labels=image_labels, shape_graphs=shape_graphs)  # fmt: skip


def _lazy(make: Callable[[], Callable[[np.ndarray], np.ndarray]]) -> Callable[[np.ndarray], np.ndarray]:
    """``make()``'s function, made at its first call (a graph compiled only if it is used)."""
    made: list[Callable[[np.ndarray], np.ndarray]] = []

    def run(array: np.ndarray) -> np.ndarray:
        if not made:
            made.append(make())
        return made[0](array)

    return run


def _uint8_images_in(ov: Any, model: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """``model`` (normalised NCHW float32 in) taking uint8 NHWC images, converted and normalised in its graph."""
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input(0).tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input(0).model().set_layout(ov.Layout("NCHW"))
    ppp.input(0).preprocess().convert_element_type(ov.Type.f32).scale(255.0).mean(list(mean)).scale(list(std))
    return ppp.build()


class _ShapeGraphs:
    """``model`` compiled for the shape of the input it runs, one shape at a time, while :attr:`on`."""

    def __init__(self, core: Any, model: Any, config: dict[str, Any]) -> None:
        self.core, self.model, self.config = core, model, config
        self.on = False
        self._shape: tuple[int, ...] | None = None
        self._request: Any = None

    def __call__(self, array: np.ndarray) -> np.ndarray:
        if array.shape != self._shape:
            self.release()  # the last shape's graph and buffers go before the next is compiled
            fixed = self.model.clone()
            fixed.reshape(list(array.shape))
            self._request = self.core.compile_model(fixed, "CPU", self.config).create_infer_request()
            self._shape = array.shape
        return self._request.infer({0: array}, share_inputs=True)[0]  # copied out: the request reuses its buffer

    def release(self) -> None:
        self._shape, self._request = None, None


def _runner(
    core: Any,
    model: Any,
    config: dict[str, Any],
    large: Any = None,
    channel_axis: int = 1,
    shape_graphs: _ShapeGraphs | None = None,
) -> tuple[Callable[[np.ndarray], np.ndarray], Any]:
    """A function ``array -> first output`` of ``model``, and ``model`` compiled for any input shape.

    The compiled model runs inputs of up to :data:`STATIC_PIXELS` pixels; a larger input gets ``large`` (by default
    ``model``; the same function of the input) compiled for its own shape, freed after the call. The CPU plugin keeps
    the buffers of a graph compiled for any shape at their largest after a call; a graph compiled for one shape plans
    its buffers ahead and reuses them more: at 4000x3000, the labels of FCN-8s SqueezeNet 1.1 need 0.9 GB instead of
    1.6 GB (docs/performance.md). Compiling takes a fraction of a second, little beside such an image's inference.
    While ``shape_graphs`` is on (:meth:`RuntimeModel.graphs_per_shape`), it runs every input instead.
    """
    compiled = core.compile_model(model, "CPU", config)  # its buffers and packed weights come at its first run
    any_shape = compiled.create_infer_request()
    template = (model if large is None else large).clone()

    def run(array: np.ndarray) -> np.ndarray:
        if shape_graphs is not None and shape_graphs.on:
            return shape_graphs(array)
        if array.size // array.shape[channel_axis] <= STATIC_PIXELS:
            return any_shape.infer({0: array}, share_inputs=True)[0]  # copied out: the request reuses its buffer
        fixed = template.clone()
        fixed.reshape(list(array.shape))
        request = core.compile_model(fixed, "CPU", config).create_infer_request()
        return request.infer({0: array}, share_inputs=True)[0]  # a copy: the graph and its buffers go on return

    return run, compiled


def _openvino_classes(model: Any) -> int | None:
    """``K`` of the logits ``(N, K, H, W)`` of an ``openvino.Model`` when its shape fixes it."""
    shape = model.output(0).get_partial_shape()
    return (
        shape[1].get_length() if shape.rank.is_static and shape.rank.get_length() == 4 and shape[1].is_static else None
    )


def _channels_last_output(ov: Any, model: Any) -> Any:
    """``model`` with its logits delivered as ``(N, H, W, K)``: the CPU plugin computes them channels-last, so this
    skips a transpose inside the graph, and an argmax over ``K`` then reads contiguous memory."""
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.output(0).model().set_layout(ov.Layout("NCHW"))
    ppp.output(0).tensor().set_layout(ov.Layout("NHWC"))
    return ppp.build()


def _openvino_labels(ov: Any, model: Any, num_classes: int | None, *, lean: bool = False) -> Any:
    """A model on the same nodes as ``model`` whose output is the argmax of its logits over ``K``: ``(N, H, W)``.

    The index is the lowest class whose logit equals the maximum (``ReduceMax``, ``Equal``, ``Select``,
    ``ReduceMin``), ties resolved as ``Tensor.argmax`` resolves them, as uint8 when ``K <= 255`` (else int32); a NaN
    maximum matches no class and gives ``K``. These element-wise passes cost about 1% of the network where a stable
    ``TopK`` cost 10%; they run on the logits in the precision the plugin computes them in (f32 for fcnseg's FCN
    heads). A stable ``TopK`` does the same where ``K`` is not fixed by the graph, and with ``lean``: it needs no
    temporary the size of the logits (200 MB less at 12 megapixels and 21 classes). When the logits are a spatial crop
    (FCN crops its upsampled scores to the input), the argmax is taken before the crop and the indices are cropped
    instead: the same values, without the float copy that the crop makes (1 GB at 12 megapixels and 21 classes).
    """
    import openvino.opset13 as ops

    logits = model.output(0).get_node().input_value(0)  # what the logits Result reads
    crop = logits.get_node() if _spatial_slice(logits.get_node()) else None
    scores = logits if crop is None else crop.input_value(0)
    if num_classes is None or lean:
        top = ops.topk(scores, np.int64(1), axis=1, mode="max", sort="value", index_element_type="i32", stable=True)
        indices = top.output(1)  # (N, 1, H, W) int32
        if num_classes is not None and num_classes <= 255:
            indices = ops.convert(indices, "u8").output(0)
    else:
        dtype = np.uint8 if num_classes <= 255 else np.int32
        best = ops.reduce_max(scores, np.array([1]), keep_dims=True)  # (N, 1, H, W)
        classes = ops.constant(np.arange(num_classes, dtype=dtype).reshape(1, num_classes, 1, 1))
        candidates = ops.select(ops.equal(scores, best), classes, ops.constant(dtype(num_classes)))
        indices = ops.reduce_min(candidates, np.array([1]), keep_dims=True).output(0)
    if crop is not None:  # the same slice (on the axes H and W only) of the indices
        indices = ops.slice(indices, *crop.input_values()[1:]).output(0)
    indices = ops.squeeze(indices, np.array([1], dtype=np.int64))
    return ov.Model([ops.result(indices)], model.get_parameters(), "labels")


def _spatial_slice(node: Any) -> bool:
    """Whether ``node`` is an ``opset8`` ``Slice`` of a 4-D tensor on the axes 2 and 3 only (constant axes)."""
    if node.get_type_name() != "Slice" or len(node.input_values()) != 5:
        return False
    axes = node.input_value(4).get_node()
    if axes.get_type_name() != "Constant" or node.get_input_partial_shape(0).rank.get_length() != 4:
        return False
    return {int(a) % 4 for a in np.asarray(axes.get_data()).reshape(-1)} <= {2, 3}
