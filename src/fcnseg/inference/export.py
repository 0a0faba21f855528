"""Export a model for deployment: ONNX (dynamic batch, height, width) or TorchScript, verified against eager.

The exported graph takes what a deployment has at hand, float32 RGB ``(N, 3, H, W)`` in ``[0, 1]``, applies the
checkpoint's normalisation itself and returns logits ``(N, K, H, W)``. Class names, colours and the
normalisation travel with the file: ONNX ``metadata_props`` (JSON values under the keys ``fcnseg``,
``classes`` and ``normalization``) or TorchScript ``_extra_files["fcnseg.json"]``.

FCN crops its upsampled scores with offsets and sizes taken from the input, so a graph that bakes in the
example's size would be silently wrong at others. ONNX uses the TorchScript-based exporter
(``dynamo=False``) with ``dynamic_axes``: on torch 2.14 the ``torch.export`` path rejects FCN's derived crop
sizes (``16 * height - 5 >= 0`` cannot be proven without hand-set bounds) and takes ~20x longer. TorchScript
uses ``torch.jit.trace``, which records ``aten::size`` for shapes read from the input. Either way every export
is run at two input sizes (one odd) and a batch of two and compared with eager; when the largest logit difference
exceeds ``tolerance`` the export raises :class:`ExportCheckError` and leaves no file behind.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fcnseg.utils.io import atomic_path

__all__ = [
    "CHECK_SIZES",
    "FORMATS",
    "ExportCheckError",
    "NormalizedModel",
    "export_checkpoint",
    "export_onnx",
    "export_torchscript",
]

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
CHECK_SIZES = ((64, 96), (75, 101))
"""Input sizes an export is verified at: one even, one odd (FCN crop offsets depend on the size)."""


class ExportCheckError(RuntimeError):
    """The exported model does not reproduce eager logits; nothing is written. ``max_diff`` is the measured gap."""

    def __init__(self, message: str, max_diff: float) -> None:
        super().__init__(message)
        self.max_diff = max_diff


class NormalizedModel(nn.Module):
    """``(N, 3, H, W)`` RGB in ``[0, 1]`` -> normalise with ``mean``/``std`` -> ``model`` -> ``(N, K, H, W)``."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean) / self.std)


def _metadata(classes: dict[str, Any], mean: Sequence[float], std: Sequence[float]) -> dict[str, str]:
    info = {
        "input": "float32 RGB (N, 3, H, W) in [0, 1]; normalisation is inside the graph",
        "output": "logits (N, K, H, W); argmax over K gives the class index",
        "classes": {"names": list(classes["names"]), "colors": [list(map(int, c)) for c in classes["colors"]]},
        "normalization": {"mean": list(map(float, mean)), "std": list(map(float, std))},
    }
    return {
        "fcnseg": json.dumps(info),
        "classes": json.dumps(info["classes"]),
        "normalization": json.dumps(info["normalization"]),
    }


def _check_inputs(sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(2, 3, h, w, generator=g) for h, w in sizes]


def _max_diff(wrapper: nn.Module, run_exported, sizes: Sequence[tuple[int, int]], tolerance: float) -> float:
    worst = 0.0
    with torch.inference_mode():
        for x in _check_inputs(sizes):
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


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    classes: dict[str, Any],
    mean: Sequence[float],
    std: Sequence[float],
    opset: int = 17,
    check_sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
    tolerance: float = 1e-3,
) -> float:
    """Write ONNX with dynamic ``N, H, W`` and metadata; returns the max |logit difference| vs eager.

    Verified with onnxruntime (CPU) at ``check_sizes``.
    """
    import onnx
    import onnxruntime as ort

    wrapper = NormalizedModel(model, mean, std).eval().float().cpu()
    example = torch.rand(1, 3, *check_sizes[-1])
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about shape reads: FCN's crops are checked below
            torch.onnx.export(
                wrapper,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": axes, "logits": axes},
            )
        proto = onnx.load(str(tmp))
        for key, value in _metadata(classes, mean, std).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        diff = _max_diff(wrapper, lambda x: session.run(None, {"image": x.numpy()})[0], check_sizes, tolerance)
    return diff


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    classes: dict[str, Any],
    mean: Sequence[float],
    std: Sequence[float],
    check_sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
    tolerance: float = 1e-3,
) -> float:
    """Write a traced TorchScript module with metadata in ``fcnseg.json``; returns the max |logit difference|.

    Load it with ``torch.jit.load(path, _extra_files={"fcnseg.json": ""})``.
    """
    wrapper = NormalizedModel(model, mean, std).eval().float().cpu()
    example = torch.rand(1, 3, *check_sizes[-1])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: generalisation to other sizes is checked below
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={"fcnseg.json": _metadata(classes, mean, std)["fcnseg"]})
        loaded = torch.jit.load(str(tmp))
        diff = _max_diff(wrapper, loaded, check_sizes, tolerance)
    return diff


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, **kwargs: Any) -> float:
    """Export a checkpoint's model with its classes and normalisation; returns the measured max difference."""
    from fcnseg.training.checkpoint import load_checkpoint, model_from_checkpoint

    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    norm = ckpt["normalization"]
    export = export_onnx if fmt == "onnx" else export_torchscript
    diff = export(model, Path(out), classes=ckpt["classes"], mean=norm["mean"], std=norm["std"], **kwargs)
    logger.info("exported %s to %s (max |logit difference| vs eager: %.3g)", fmt, out, diff)
    return diff
