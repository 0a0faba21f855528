"""What ``benchmarks/suite.py`` runs on: seeded networks, image-like inputs, and the inference paths it compares.

Paths:
- ``baseline``: :class:`~benchlib.baseline.BaselineFCN8s` (FCN-8s VGG16, authors' layout) in fp32, eager,
  NCHW, under ``torch.no_grad``, as common reimplementations run it.
- ``eager``: the fcnseg model itself, the same way (fp32, NCHW, ``no_grad``); the fp32 reference of a network
  that has no baseline (another backbone or layout).
- ``fast``: what :class:`~fcnseg.inference.Predictor` does: the model prepared by
  :func:`fcnseg.inference.optimize.prepare_for_inference`, channels_last input on CPU and
  :func:`fcnseg.inference.engine.segment_logits` at the given precision.
- ``ov``: what ``fcnseg predict`` runs by default when OpenVINO is installed (``backend="auto"``): the network
  exported to an OpenVINO IR, compiled by :func:`fcnseg.inference.runtimes.load_openvino` at the given precision
  (``auto``: the plugin's default, bf16 on this CPU) and run through the same engine, to logits (``fcnseg predict``
  takes its masks from an argmax inside the graph instead: ``benchmarks/predict_latency.py`` times that, argmax
  included, against the plain runtimes).
- ``int8``: what ``fcnseg quantize`` makes and the Predictor runs: the network exported to OpenVINO, quantized by
  :func:`fcnseg.inference.quantize.quantize_openvino` on calibration images, run through the same engine.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.core.device import memory_format
from fcnseg.inference.engine import segment_logits
from fcnseg.inference.export import export_model
from fcnseg.inference.optimize import prepare_for_inference
from fcnseg.inference.quantize import quantize_openvino
from fcnseg.inference.runtimes import RuntimeModel, load_openvino
from fcnseg.models import FCN, create_model

__all__ = ["PATHS", "build_network", "inference_path", "network_label", "smooth_images"]

PATHS = ("baseline", "eager", "fast", "ov", "int8")


def build_network(name: str, layout: str | None, *, num_classes: int, seed: int = 0) -> FCN:
    """A seeded random FCN in eval mode, its zero-initialised score layers given random weights too.

    FCN's score layers start at zero (as the reference), which would make every logit 0 and every argmax agree;
    small random weights give logits that depend on the input, so precision changes show up in the agreement.
    ``layout`` applies to VGG backbones only (``None`` elsewhere).
    """
    torch.manual_seed(seed)
    options = {"layout": layout} if layout else {}
    model = create_model(name, num_classes=num_classes, **options)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                nn.init.normal_(p, std=0.01)
    return model.eval()


def network_label(name: str, layout: str | None) -> str:
    """``fcn8s_vgg16/caffe``-style name of a network and its layout."""
    return f"{name}/{layout}" if layout else name


def smooth_images(n: int, height: int, width: int, *, seed: int = 0) -> Tensor:
    """``(n, 3, height, width)`` float32 images with smooth structure, roughly normalised (zero mean, unit std)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 3, max(2, height // 24), max(2, width // 24), generator=gen)
    fine = 0.1 * torch.randn(n, 3, height, width, generator=gen)
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False) + fine


def inference_path(
    path: str,
    model: nn.Module,
    *,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
    calibration: Tensor | None = None,
) -> tuple[Callable[[Tensor], Tensor], nn.Module]:
    """How ``path`` runs ``model``: a function ``(N, 3, H, W) normalised images -> (N, K, H, W) logits``.

    Args:
        path: ``baseline`` or ``eager`` (``model`` as it is, fp32 NCHW, ``no_grad``) or ``fast`` (a copy of
            ``model`` prepared as the Predictor prepares it, run by the inference engine at ``precision``).
        model: the network (for ``baseline``, a :class:`~benchlib.baseline.BaselineFCN8s`).
        precision: for ``fast`` and ``ov``: ``fp32``, ``bf16``, ``fp16`` or ``auto``.
        device: where to run.
        calibration: for ``int8``: ``(M, 3, H, W)`` normalised images to calibrate on.

    Returns:
        The function and the module it runs.
    """
    device = torch.device(device)
    if path in ("baseline", "eager"):
        plain = model.to(device).eval()

        def run_plain(x: Tensor) -> Tensor:
            with torch.no_grad():
                return plain(x.to(device))

        return run_plain, plain
    if path in ("ov", "int8"):
        if path == "int8" and calibration is None:
            raise ValueError("the int8 path needs calibration images")
        runtime = _openvino_model(model, calibration if path == "int8" else None, precision)
        return lambda x: segment_logits(runtime, x.cpu().contiguous()), runtime
    if path != "fast":
        raise ValueError(f"unknown path {path!r}; choose one of {', '.join(PATHS)}")
    fast = prepare_for_inference(copy.deepcopy(model), device, precision)
    layout = memory_format(device)  # channels_last on the CPU, as Predictor

    def run_fast(x: Tensor) -> Tensor:
        x = x.to(device).contiguous(memory_format=layout)
        return segment_logits(fast, x, precision=precision)

    return run_fast, fast


def _openvino_model(model: nn.Module, calibration: Tensor | None, precision: str) -> RuntimeModel:
    """``model`` exported to OpenVINO, quantized to int8 on ``calibration`` (normalised images) when given."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="fcnseg-bench-") as folder:
        path = Path(folder) / "model.xml"
        with torch.inference_mode():
            k = model.cpu().eval()(torch.zeros(1, 3, 64, 64)).shape[1]
        classes = {"names": [str(i) for i in range(k)], "colors": [[0, 0, 0]] * k}
        export_model(model, path, "openvino", classes=classes, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        if calibration is None:
            return load_openvino(path, precision=precision)
        samples = [image[None].numpy() for image in calibration]
        return load_openvino(quantize_openvino(ov.Core().read_model(str(path)), samples))
