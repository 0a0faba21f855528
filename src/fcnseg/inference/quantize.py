"""Static post-training int8 quantization through OpenVINO and NNCF, calibrated on a few training images.

The model is exported as for ``fcnseg export --format openvino`` (fcnseg's ONNX, converted, checked in fp32), then
``nncf.quantize`` inserts int8 quantize/dequantize pairs whose scales come from the activations of the calibration
images (symmetric int8 weights per output channel, int8 activations; NNCF's default "performance" preset, with
its fast bias correction). OpenVINO's CPU plugin then runs the convolutions on int8 (AVX512-VNNI where present).
The result is an IR (``.xml`` + ``.bin``) that :meth:`fcnseg.Predictor.from_checkpoint` opens like any export; it
takes RGB in ``[0, 1]`` (``B`` bands for a ``B``-band model) and normalises it itself.

Why OpenVINO and not PyTorch 2 export quantization: the PT2E flow (``X86InductorQuantizer``) is only fast once
compiled by Inductor, whose compile time would be paid at every start of ``fcnseg predict``; an OpenVINO IR
compiles at load time with no such cost.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import fcnseg.models as models
from fcnseg.core.checkpoint import load_checkpoint, recorded_scales
from fcnseg.inference.engine import rescale
from fcnseg.inference.export import export_model
from fcnseg.inference.images import load_bands
from fcnseg.inference.runtimes import load_openvino, openvino_metadata, require

__all__ = ["calibration_arrays", "quantize_checkpoint", "quantize_openvino"]

logger = logging.getLogger(__name__)


def calibration_arrays(images: Sequence[Any], bands: int = 3, scale: float = 1.0) -> list[np.ndarray]:
    """Images (paths, PIL images, arrays) -> ``(1, B, H, W)`` float32 arrays in ``[0, 1]``, one per image.

    Read for a model of ``bands`` bands by the decoder's rules (RGB for 3), in the scale the exported graph takes:
    8-bit data / 255, other data as decoded (16-bit / 65535); resized by ``scale`` as inference resizes them (the
    input scale a checkpoint records), so that calibration sees what the graph will.
    """
    arrays = []
    for image in images:
        reason = f"its checkpoint was trained on {'RGB' if bands == 3 else f'{bands}-band'} images"
        values = np.asarray(load_bands(image, bands, reason))  # (H, W, B)
        scaled = values.astype(np.float32) / 255.0 if values.dtype == np.uint8 else values.astype(np.float32)
        array = torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)[None]))
        arrays.append(np.ascontiguousarray(rescale(array, scale).numpy()))
    return arrays


def quantize_openvino(fp32_model: Any, calibration: Sequence[np.ndarray]) -> Any:
    """``nncf.quantize`` an ``openvino.Model`` on ``calibration`` inputs; its fcnseg metadata records how.

    Args:
        fp32_model: the float model; its inputs are what ``calibration`` holds.
        calibration: model inputs, each ``(1, B, H, W)`` float32 (sizes may differ).

    Returns:
        The quantized ``openvino.Model``.
    """
    require("openvino")
    import nncf

    if not calibration:
        raise ValueError("int8 calibration needs at least one image")
    quantized = nncf.quantize(fp32_model, nncf.Dataset(list(calibration)), subset_size=len(calibration))
    metadata = openvino_metadata(fp32_model) or {}
    metadata["quantization"] = {"method": "nncf.quantize (static, int8)", "calibration_images": len(calibration)}
    quantized.set_rt_info(json.dumps(metadata), ["fcnseg"])
    return quantized


def quantize_checkpoint(
    checkpoint: str | os.PathLike, calibration_images: Sequence[Any], out: str | os.PathLike
) -> dict[str, Any]:
    """Quantize a checkpoint's model to an int8 OpenVINO IR at ``out`` (``.xml``, with the ``.bin`` beside it).

    Returns:
        ``calibration_images`` and, on those images, the argmax ``agreement`` of int8 with the fp32 IR (a quick
        sanity figure: the real test is the mean IoU on held-out images).
    """
    require("openvino")
    import openvino as ov

    out = Path(out)
    if out.suffix != ".xml":
        raise ValueError(f"the int8 model is written as FILE.xml and FILE.bin; got --out '{out}'")
    ckpt = load_checkpoint(checkpoint)
    model: nn.Module = models.model_from_checkpoint(ckpt)
    norm = ckpt["normalization"]
    scales = recorded_scales(ckpt.get("inference"))
    calibration = [a for s in scales for a in calibration_arrays(calibration_images, len(norm["mean"]), s)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as folder:
        fp32_path = Path(folder) / "fp32.xml"
        export_model(model, fp32_path, "openvino", classes=ckpt["classes"], mean=norm["mean"], std=norm["std"],
                     scales=scales)  # fmt: skip
        fp32 = ov.Core().read_model(str(fp32_path))
        int8 = quantize_openvino(fp32, calibration)
        tmp = Path(folder) / out.name
        ov.serialize(int8, str(tmp), str(tmp.with_suffix(".bin")))
        agreement = _agreement(load_openvino(fp32_path, precision="fp32"), load_openvino(tmp), calibration)
        os.replace(tmp.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(tmp, out)
    logger.info("int8 vs fp32 argmax agreement on the calibration images: %.3f%%", 100 * agreement)
    return {"calibration_images": len(calibration), "agreement": agreement}


def _agreement(fp32: nn.Module, int8: nn.Module, inputs: Sequence[np.ndarray]) -> float:
    same = total = 0
    for array in inputs[:8]:
        x = torch.from_numpy(array)
        a, b = fp32(x).argmax(1), int8(x).argmax(1)
        same, total = same + int((a == b).sum()), total + a.numel()
    return same / total
