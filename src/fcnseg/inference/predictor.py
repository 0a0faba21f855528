"""``Predictor``: segment images (paths, PIL images, arrays, tensors) with a model or a checkpoint.

The fast path is the default: ``precision="auto"`` runs bf16 autocast where the hardware computes bf16
natively (AMX / AVX512-BF16 CPUs, recent CUDA GPUs), and on CPU the model and inputs use the
``channels_last`` memory format, which oneDNN convolutions prefer. Logits are float32 either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from fcnseg.data.classes import ClassInfo, bitget_colormap
from fcnseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fcnseg.inference.engine import autocast_dtype, choose_tile_size, segment_logits
from fcnseg.inference.images import load_image
from fcnseg.inference.memory import MemoryModel, estimate_memory

__all__ = ["DEFAULT_MEMORY_BUDGET", "ImageLike", "Predictor", "class_info_from"]

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 2 * 2**30
"""Bytes one forward pass may use when ``tile_size="auto"`` (2 GiB)."""

ImageLike = str | os.PathLike | Image.Image | np.ndarray | Tensor


def class_info_from(classes: Any) -> ClassInfo | None:
    """A :class:`ClassInfo` from one, from a ``{"names", "colors"}`` dict (checkpoint format) or ``None``."""
    if classes is None or isinstance(classes, ClassInfo):
        return classes
    if isinstance(classes, dict):
        names, colors = classes["names"], classes["colors"]
    else:
        names, colors = classes.names, classes.colors
    return ClassInfo(names=tuple(names), colors=tuple(tuple(int(c) for c in rgb) for rgb in colors))


class Predictor:
    """Segment single images or batches with ``model``; masks come back at the input's size.

    Args:
        model: maps normalised ``(N, 3, H, W)`` to logits ``(N, K, H, W)``. It is moved to ``device``, put in
            eval mode and, on CPU, converted to ``channels_last`` in place.
        classes: names and colours of the ``K`` classes (:class:`ClassInfo`, or a ``{"names", "colors"}``
            dict); by default ``class_0..`` in the PASCAL VOC colour map.
        mean: per-channel mean of the normalisation the model was trained with (RGB in [0, 1]).
        std: per-channel standard deviation of that normalisation.
        device: where inference runs.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :func:`engine.autocast_dtype`).
        tile_size: ``None`` (whole image), ``(h, w)`` or ``"auto"``: tile only when the image does not fit
            ``memory_budget`` (peak memory measured on the model once, at the first prediction).
        memory_budget: bytes one forward pass may use with ``tile_size="auto"``.
        overlap: sliding-window overlap fraction.
        scales: test-time scales (logits averaged).
        flip: also average the horizontally flipped prediction.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        classes: Any = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        tile_size: tuple[int, int] | str | None = None,
        memory_budget: float = DEFAULT_MEMORY_BUDGET,
        overlap: float = 1 / 3,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
    ) -> None:
        if isinstance(tile_size, str) and tile_size != "auto":
            raise ValueError(f"tile_size must be None, (height, width) or 'auto', got {tile_size!r}")
        self.device = torch.device(device)
        autocast_dtype(precision, self.device)  # validate early
        self.channels_last = self.device.type == "cpu"
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._classes = class_info_from(classes)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.precision = precision
        self.tile_size = (
            tuple(tile_size) if isinstance(tile_size, Sequence) and not isinstance(tile_size, str) else tile_size
        )
        self.memory_budget = float(memory_budget)
        self.overlap = overlap
        self.scales = tuple(scales)
        self.flip = flip
        self._memory: MemoryModel | None = None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs: Any) -> Predictor:
        """Build the checkpoint's model with its classes and normalisation; ``kwargs`` go to ``__init__``."""
        from fcnseg.training.checkpoint import load_checkpoint, model_from_checkpoint

        ckpt = load_checkpoint(path)
        norm = ckpt.get("normalization") or {}
        kwargs.setdefault("classes", ckpt.get("classes"))
        kwargs.setdefault("mean", norm.get("mean", IMAGENET_MEAN))
        kwargs.setdefault("std", norm.get("std", IMAGENET_STD))
        return cls(model_from_checkpoint(ckpt), device=device, **kwargs)

    @property
    def classes(self) -> ClassInfo:
        """Class names and colours (defaults built from the model's number of classes when none were given)."""
        if self._classes is None:
            with torch.inference_mode():
                k = self.model(self._prepare([Image.new("RGB", (64, 64))])).shape[1]
            self._classes = ClassInfo(names=tuple(f"class_{i}" for i in range(k)), colors=bitget_colormap(k))
        return self._classes

    def _prepare(self, images: Sequence[Image.Image]) -> Tensor:
        """Same-size RGB images -> normalised ``(N, 3, H, W)`` float32 on the device."""
        batch = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()) for im in images])  # (N, H, W, 3)
        x = batch.to(self.device).permute(0, 3, 1, 2).float().div_(255)  # (N, 3, H, W)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    def _tile_for(self, height: int, width: int, batch_size: int) -> tuple[int, int] | None:
        if self.tile_size != "auto":
            return self.tile_size  # type: ignore[return-value]
        if self._memory is None:
            self._memory = estimate_memory(self.model)
        scale = max(self.scales)
        hw = (max(1, round(height * scale)), max(1, round(width * scale)))
        return choose_tile_size(self._memory, hw, self.memory_budget, batch_size=batch_size)

    def logits(self, images: Sequence[Image.Image]) -> Tensor:
        """Logits ``(N, K, H, W)`` float32 for same-size RGB images."""
        x = self._prepare(images)
        return segment_logits(
            self.model,
            x,
            tile_size=self._tile_for(x.shape[2], x.shape[3], x.shape[0]),
            overlap=self.overlap,
            scales=self.scales,
            flip=self.flip,
            precision=self.precision,
        )

    def predict(self, image: ImageLike, *, return_probs: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Segment one image.

        Args:
            image: path, PIL image, array or tensor (see :func:`~fcnseg.inference.images.load_image`).
            return_probs: also return the softmax probabilities.

        Returns:
            The class-index mask ``(H, W)`` (uint8 for up to 255 classes, else int64) at the input's size, or
            ``(mask, probs)`` with ``probs`` ``(K, H, W)`` float32.
        """
        return self.predict_batch([image], return_probs=return_probs)[0]

    def predict_batch(
        self, images: Sequence[ImageLike], *, return_probs: bool = False, batch_size: int = 4
    ) -> list[np.ndarray] | list[tuple[np.ndarray, np.ndarray]]:
        """Segment several images, inferring same-size images together ``batch_size`` at a time.

        Returns:
            One result per input, in order, as :meth:`predict` returns them.
        """
        loaded = [load_image(im) for im in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(loaded):
            by_size.setdefault(im.size, []).append(i)
        results: list[Any] = [None] * len(loaded)
        for indices in by_size.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                logits = self.logits([loaded[i] for i in chunk])  # (n, K, H, W)
                masks = logits.argmax(1).cpu().numpy()
                masks = masks.astype(np.uint8) if logits.shape[1] <= 255 else masks
                probs = logits.softmax(1).cpu().numpy() if return_probs else None
                for j, i in enumerate(chunk):
                    results[i] = (masks[j], probs[j]) if probs is not None else masks[j]
        return results
