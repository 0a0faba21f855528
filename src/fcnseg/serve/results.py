"""Masks as the server returns them: the palette PNG ``fcnseg predict`` writes, and the JSON summary of ``/predict``."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from fcnseg.data.classes import ClassInfo
from fcnseg.inference.visualize import Colors, palette

__all__ = ["class_areas", "mask_png", "prediction_json", "probabilities_json"]


def mask_png(mask: np.ndarray, colors: Colors) -> bytes:
    """A class-index mask ``(H, W)`` as the palette PNG of ``fcnseg predict`` (:func:`save_mask_png`): pixel value =
    class index, palette = the class colours (other entries black)."""
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(palette(colors).reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def class_areas(mask: np.ndarray, classes: ClassInfo) -> list[dict[str, Any]]:
    """Per class, in class order: index, name, colour, pixels and share of the image's pixels (void counts in the
    total, in no class)."""
    counts = np.bincount(mask.ravel(), minlength=len(classes.names))
    total = max(int(mask.size), 1)
    return [
        {"index": k, "name": name, "color": [int(c) for c in color], "pixels": int(n), "share": int(n) / total}
        for k, (name, color, n) in enumerate(zip(classes.names, classes.colors, counts, strict=False))
    ]


def probabilities_json(probs: np.ndarray) -> dict[str, Any]:
    """Softmax probabilities ``(K, H, W)`` as ``{"shape", "dtype": "float32", "byte_order": "little", "data"}``,
    ``data`` the base64 of the row-major bytes (``np.frombuffer(base64.b64decode(data), "<f4").reshape(shape)``)."""
    data = np.ascontiguousarray(probs, dtype="<f4")
    return {
        "shape": list(data.shape),
        "dtype": "float32",
        "byte_order": "little",
        "data": base64.b64encode(data.tobytes()).decode("ascii"),
    }


def prediction_json(
    mask: np.ndarray, classes: ClassInfo, model: str, probs: np.ndarray | None = None
) -> dict[str, Any]:
    """The JSON answer of ``/predict?format=json`` for a mask ``(H, W)`` and optional probabilities ``(K, H, W)``."""
    answer = {
        "model": model,
        "width": int(mask.shape[1]),
        "height": int(mask.shape[0]),
        "classes": class_areas(mask, classes),
        "mask_png": base64.b64encode(mask_png(mask, classes.colors)).decode("ascii"),
    }
    if probs is not None:
        answer["probabilities"] = probabilities_json(probs)
    return answer
