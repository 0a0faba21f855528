"""Export a model for deployment, verified against eager: ONNX, OpenVINO IR, ``torch.export`` (``.pt2``), TorchScript.

The exported graph takes what a deployment has at hand, float32 RGB ``(N, 3, H, W)`` in ``[0, 1]`` (or, for a model of
``B`` bands, ``(N, B, H, W)`` in the decoder's ``[0, 1]`` scale: 8-bit / 255, 16-bit / 65535, see
:mod:`fcnseg.data.decode`), applies the checkpoint's per-band normalisation itself and returns logits
``(N, K, H, W)``, for any ``N``, ``H`` and ``W``. Class names,
colours, the normalisation and the peak-memory model (for automatic tiling) travel with the file: ONNX
``metadata_props`` (JSON values under the keys ``fcnseg``, ``classes`` and ``normalization``), the runtime info
``fcnseg`` of an OpenVINO model, or the extra file ``fcnseg.json`` of a ``.pt2`` archive or TorchScript module.

FCN crops its upsampled scores with offsets and sizes taken from the input, so a graph that bakes in the example's
size would be silently wrong at others:

- ONNX uses the TorchScript-based exporter (``dynamo=False``) with ``dynamic_axes``. On torch 2.14 the dynamo ONNX
  exporter rejects FCN's derived crop sizes and takes about 20x longer.
- ``openvino`` converts that ONNX file with ``openvino.convert_model`` and writes the IR, ``FILE.xml`` beside
  ``FILE.bin``, with fp32 weights; it is checked through OpenVINO's CPU plugin in fp32.
- ``pt2`` is ``torch.export.export`` with ``Dim.AUTO`` batch, height and width, traced at a batch of two (a batch of
  one would be specialised). It is PyTorch's successor to TorchScript; load it with ``torch.export.load``.
- TorchScript uses ``torch.jit.trace``, which records ``aten::size`` for shapes read from the input. PyTorch has
  deprecated TorchScript; it stays for runtimes that still need it.

Every export is run at two input sizes (one odd) and a batch of two and compared with eager. When the largest logit
difference exceeds ``tolerance`` the export raises :class:`ExportCheckError` and leaves no file behind.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import Dim

import fcnseg.models as models
from fcnseg.core.checkpoint import load_checkpoint, recorded_scales
from fcnseg.inference.memory import estimate_memory
from fcnseg.inference.optimize import per_channel_upsamplers
from fcnseg.inference.runtimes import load_openvino, openvino_from_onnx

__all__ = [
    "CHECK_SIZES",
    "FORMATS",
    "ExportCheckError",
    "NormalizedModel",
    "cache_folder",
    "cached_openvino",
    "export_checkpoint",
    "export_model",
]

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
CHECK_SIZES = ((64, 96), (75, 101))
"""Input sizes an export is verified at: one even, one odd (FCN crop offsets depend on the size)."""


class ExportCheckError(RuntimeError):
    """The exported model does not reproduce eager logits; nothing is written. ``max_diff`` is the measured gap."""

    def __init__(self, message: str, max_diff: float) -> None:
        super().__init__(message)
        self.max_diff = max_diff


class NormalizedModel(nn.Module):
    """``(N, B, H, W)`` in ``[0, 1]`` (RGB: ``B = 3``) -> normalise with ``mean``/``std`` -> ``model`` -> logits."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean) / self.std)


def _metadata(
    model: nn.Module, classes: dict[str, Any], mean: Sequence[float], std: Sequence[float], scales: Sequence[float]
) -> dict[str, str]:
    memory = estimate_memory(model)  # measured in fp32 on the PyTorch model: lets a runtime choose tiles
    bands = len(mean)
    kind = "RGB" if bands == 3 else f"{bands}-band"
    info = {
        "input": f"float32 {kind} (N, {bands}, H, W) in [0, 1]; normalisation is inside the graph",
        "output": "logits (N, K, H, W); argmax over K gives the class index",
        "classes": {"names": list(classes["names"]), "colors": [list(map(int, c)) for c in classes["colors"]]},
        "normalization": {"mean": list(map(float, mean)), "std": list(map(float, std))},
        "memory": {"bytes_per_pixel": memory.bytes_per_pixel, "pad": memory.pad},
        "scales": [float(s) for s in scales],  # the input scale(s) the model is run at by default
    }
    return {
        "fcnseg": json.dumps(info),
        "classes": json.dumps(info["classes"]),
        "normalization": json.dumps(info["normalization"]),
    }


def _check_inputs(sizes: Sequence[tuple[int, int]], bands: int = 3) -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(2, bands, h, w, generator=g) for h, w in sizes]


def _max_diff(wrapper: nn.Module, run_exported, sizes: Sequence[tuple[int, int]], tolerance: float) -> float:
    worst = 0.0
    with torch.inference_mode():
        for x in _check_inputs(sizes, wrapper.mean.shape[1]):
            ref = wrapper(x).float()
            out = torch.as_tensor(run_exported(x)).float()
            if out.shape != ref.shape:
                raise ExportCheckError(
                    f"exported model returned {tuple(out.shape)} for input {tuple(x.shape)}, eager {tuple(ref.shape)}",
                    float("inf"),
                )
            diff = (out - ref).abs().max().item()
            logger.info("input %s: max |logit difference| vs eager %.3g", tuple(x.shape), diff)
            worst = max(worst, diff)
    if not worst <= tolerance:
        raise ExportCheckError(
            f"exported logits differ from eager by {worst:.3g} (more than the tolerance {tolerance:g})", worst
        )
    return worst


def _write_onnx(wrapper: nn.Module, tmp: Path, example: Tensor, metadata: dict[str, str]) -> None:
    import onnx

    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape reads: FCN's crops are checked after
        torch.onnx.export(
            wrapper,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
        )
    proto = onnx.load(str(tmp))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp))


def _load_onnx(tmp: Path) -> Callable[[Tensor], Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x.numpy()})[0]


def _write_openvino(wrapper: nn.Module, tmp: Path, example: Tensor, metadata: dict[str, str]) -> None:
    import openvino as ov

    onnx_path = tmp.with_suffix(".onnx")
    _write_onnx(wrapper, onnx_path, example, metadata)
    model = openvino_from_onnx(onnx_path, json.loads(metadata["fcnseg"]))
    ov.serialize(model, str(tmp), str(tmp.with_suffix(".bin")))  # fp32 weights (save_model would halve them)
    onnx_path.unlink()


def _load_openvino(tmp: Path) -> Callable[[Tensor], Any]:
    return load_openvino(tmp, precision="fp32")


def _write_pt2(wrapper: nn.Module, tmp: Path, example: Tensor, metadata: dict[str, str]) -> None:
    dims = {"x": {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}}
    program = torch.export.export(wrapper, (example,), dynamic_shapes=dims)
    torch.export.save(program, str(tmp), extra_files={"fcnseg.json": metadata["fcnseg"]})


def _load_pt2(tmp: Path) -> Callable[[Tensor], Any]:
    return torch.export.load(str(tmp)).module()


def _write_torchscript(wrapper: nn.Module, tmp: Path, example: Tensor, metadata: dict[str, str]) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings, and the deprecation: TorchScript is asked for here
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        torch.jit.save(traced, str(tmp), _extra_files={"fcnseg.json": metadata["fcnseg"]})


def _load_torchscript(tmp: Path) -> Callable[[Tensor], Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        return torch.jit.load(str(tmp))


# Format -> (write the wrapper to a file, load that file back as a callable on (N, B, H, W) tensors).
_FORMATS = {
    "onnx": (_write_onnx, _load_onnx),
    "openvino": (_write_openvino, _load_openvino),
    "pt2": (_write_pt2, _load_pt2),
    "torchscript": (_write_torchscript, _load_torchscript),
}
FORMATS = tuple(_FORMATS)


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    fmt: str,
    *,
    classes: dict[str, Any],
    mean: Sequence[float],
    std: Sequence[float],
    check_sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
    tolerance: float = 1e-3,
    scales: Sequence[float] = (1.0,),
) -> float:
    """Write ``model`` (with its normalisation) in ``fmt`` to ``path``, load it back and compare it with eager.

    ``onnx`` is checked through onnxruntime (CPU), ``openvino`` (``path`` ending in ``.xml``; the weights go to the
    ``.bin`` beside it) through OpenVINO in fp32. Load the others with
    ``torch.export.load(path, extra_files={"fcnseg.json": ""}).module()`` (``pt2``) or
    ``torch.jit.load(path, _extra_files={"fcnseg.json": ""})`` (``torchscript``). The file appears at ``path`` only
    when the check passes. Returns the max |logit difference| vs eager. The ``onnx`` and ``openvino`` graphs run
    fixed bilinear upsamplers per channel (:func:`~fcnseg.inference.optimize.per_channel_upsamplers`).
    """
    if fmt not in _FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    write, load = _FORMATS[fmt]
    was_training = model.training
    reference = NormalizedModel(_on_cpu_fp32(model), mean, std).eval()
    wrapper = reference
    if fmt in ("onnx", "openvino"):  # the same logits for less work; the torch formats stay bit-exact with eager
        wrapper = NormalizedModel(per_channel_upsamplers(reference.model), mean, std).eval()
    path = Path(path)
    if fmt == "openvino" and path.suffix != ".xml":
        raise ValueError(f"an OpenVINO model is written as FILE.xml and FILE.bin; got --out '{path}'")
    example = torch.rand(2, len(mean), *check_sizes[-1])  # a batch of two: torch.export specialises a batch of one
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as folder:
            tmp = Path(folder) / path.name
            write(wrapper, tmp, example, _metadata(wrapper, classes, mean, std, scales))
            diff = _max_diff(reference, load(tmp), check_sizes, tolerance)
            for written in sorted(Path(folder).iterdir(), key=lambda f: f == tmp):  # the main file last
                os.replace(written, path.with_suffix(written.suffix) if written != tmp else path)
        return diff
    finally:
        model.train(was_training)


def _on_cpu_fp32(model: nn.Module) -> nn.Module:
    """``model`` if it is an fp32 CPU model, else an fp32 CPU copy: the caller's model stays where and as it is."""
    tensors = (*model.parameters(), *model.buffers())
    if all(t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point()) for t in tensors):
        return model
    return copy.deepcopy(model).float().cpu()


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, **kwargs: Any) -> float:
    """Export a checkpoint's model with its classes and normalisation; returns the measured max difference."""
    ckpt = load_checkpoint(checkpoint)
    model = models.model_from_checkpoint(ckpt)
    norm = ckpt["normalization"]
    kwargs.setdefault("scales", recorded_scales(ckpt.get("inference")))
    diff = export_model(model, Path(out), fmt, classes=ckpt["classes"], mean=norm["mean"], std=norm["std"], **kwargs)
    logger.info("exported %s to %s (max |logit difference| vs eager: %.3g)", fmt, out, diff)
    return diff


def cache_folder() -> Path:
    """Where converted models are cached: ``$FCNSEG_CACHE``, else ``$XDG_CACHE_HOME/fcnseg`` or ``~/.cache/fcnseg``."""
    if os.environ.get("FCNSEG_CACHE"):
        return Path(os.environ["FCNSEG_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fcnseg"


def _network_code() -> bytes:
    """The source of the modules that define the exported graph: a conversion made by other code is not reused."""
    folders = (Path(models.__file__).parent, Path(__file__).parent)
    return b"".join(p.read_bytes() for folder in folders for p in sorted(folder.glob("*.py")))


def cached_openvino(checkpoint: str | os.PathLike) -> tuple[Path, bool]:
    """The OpenVINO IR of a checkpoint, converted (and checked) once and cached.

    The cache key is the checkpoint's path, size and modification time (hashing a large checkpoint would slow every
    start) and the source of fcnseg's models and inference modules, so that a checkpoint converted
    by another version of the code, whose graph may differ, is converted again.

    Returns:
        The ``.xml`` path and whether it was already cached (``False``: it was converted now, which takes seconds).
    """
    import hashlib

    stat = Path(checkpoint).stat()
    digest = hashlib.sha256(f"{Path(checkpoint).resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(_network_code())
    path = cache_folder() / "openvino" / f"{digest.hexdigest()[:32]}.xml"
    if path.is_file() and path.with_suffix(".bin").is_file():
        return path, True
    logger.info("converting %s to OpenVINO once (cached in %s)", checkpoint, path.parent)
    export_checkpoint(checkpoint, "openvino", path)
    return path, False
