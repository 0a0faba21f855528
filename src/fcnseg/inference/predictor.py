"""``Predictor``: segment images (paths, PIL images, arrays, tensors) with a model or a checkpoint.

The fast path is the default: ``precision="auto"`` runs bf16 autocast where the hardware computes bf16
natively (AMX / AVX512-BF16 CPUs, recent CUDA GPUs), and on CPU the model and inputs use the
``channels_last`` memory format, which oneDNN convolutions prefer, and the convolutions run on weights cast and
packed for oneDNN once (:func:`~fcnseg.inference.optimize.prepare_for_inference`) instead of at every call.
Logits are float32 either way.

Backends: ``backend="onnxruntime"`` or ``"openvino"`` runs the same model through that runtime instead
(:mod:`fcnseg.inference.runtimes`); the engine, and with it tiling, batching, flips and scales, is the same.
:meth:`Predictor.from_checkpoint` also opens what ``fcnseg export`` and ``fcnseg quantize`` write (``.onnx``,
``.xml``), whose graphs normalise the image themselves.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

import fcnseg.models as models
from fcnseg.core.checkpoint import load_checkpoint
from fcnseg.core.device import autocast_dtype, memory_format, resolve_device
from fcnseg.data.classes import ClassInfo, as_class_info
from fcnseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD, normalize_uint8
from fcnseg.inference.engine import choose_tile_size, segment_bands, segment_logits
from fcnseg.inference.export import cached_openvino, export_model
from fcnseg.inference.images import load_image
from fcnseg.inference.memory import MemoryModel, estimate_memory
from fcnseg.inference.optimize import prepare_for_inference
from fcnseg.inference.runtimes import BACKENDS, RuntimeModel, available_backends, load_onnxruntime, load_openvino

__all__ = ["DEFAULT_MEMORY_BUDGET", "ImageLike", "Predictor"]

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 2 * 2**30
"""Bytes inference may use when ``tile_size="auto"`` (2 GiB): one forward pass plus, when tiling, the logit band."""

ImageLike = str | os.PathLike | Image.Image | np.ndarray | Tensor


def _runtime_from_torch(model: nn.Module, backend: str, precision: str) -> RuntimeModel:
    """``model`` (normalised input -> logits) exported to ONNX, checked, and compiled by ``backend``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fcnseg-") as folder:
        path = Path(folder) / "model.onnx"
        with torch.inference_mode():
            k = model.cpu().eval()(torch.zeros(1, 3, 64, 64)).shape[1]
        info = as_class_info([f"class_{i}" for i in range(k)])
        classes = {"names": list(info.names), "colors": [list(c) for c in info.colors]}
        export_model(model, path, "onnx", classes=classes, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        if backend == "onnxruntime":
            return load_onnxruntime(path)
        return load_openvino(path, precision=precision)


class Predictor:
    """Segment single images or batches with ``model``; masks come back at the input's size.

    Args:
        model: maps normalised ``(N, 3, H, W)`` to logits ``(N, K, H, W)``. It is moved to ``device``, put in
            eval mode and, on CPU, converted to ``channels_last`` in place.
        classes: names and colours of the ``K`` classes (:class:`ClassInfo`, or a ``{"names", "colors"}``
            dict); by default ``class_0..`` in the PASCAL VOC colour map.
        mean: per-channel mean of the normalisation the model was trained with (RGB in [0, 1]).
        std: per-channel standard deviation of that normalisation.
        device: where inference runs: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (see
            :func:`fcnseg.core.device.resolve_device`).
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :func:`fcnseg.core.device.autocast_dtype`).
        tile_size: ``None`` (whole image), ``(h, w)`` or ``"auto"``: tile only when the image does not fit
            ``memory_budget`` (peak memory measured on the model once, at the first prediction).
        memory_budget: bytes inference may use with ``tile_size="auto"``, besides the model and the image: one
            forward pass and, when tiling, the band of blended logits (see :func:`engine.choose_tile_size`).
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
        backend: str = "torch",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if isinstance(tile_size, str) and tile_size != "auto":
            raise ValueError(f"tile_size must be None, (height, width) or 'auto', got {tile_size!r}")
        self.device = resolve_device(device)
        autocast_dtype(precision, self.device)  # validate early
        if backend != "torch" and not isinstance(model, RuntimeModel):
            model = _runtime_from_torch(model, backend, precision)
        self.backend = model.backend if isinstance(model, RuntimeModel) else "torch"
        if isinstance(model, RuntimeModel):  # runs on the CPU, takes contiguous NCHW
            self.memory_format = torch.contiguous_format
            self.model = self._fast = model
        else:
            self.memory_format = memory_format(self.device)  # channels_last on the CPU
            self.model = model.to(self.device, memory_format=self.memory_format).eval()
            self._fast = prepare_for_inference(self.model, self.device, precision)  # shares the model's weights
        self._classes = None if classes is None else as_class_info(classes)
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self.precision = precision
        self.tile_size = (
            tuple(tile_size) if isinstance(tile_size, Sequence) and not isinstance(tile_size, str) else tile_size
        )
        self.memory_budget = float(memory_budget)
        self.overlap = overlap
        self.scales = tuple(scales)
        self.flip = flip
        self._memory: MemoryModel | None = model.memory if isinstance(model, RuntimeModel) else None

    @property
    def computes_in(self) -> str:
        """What the convolutions run in: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"int8"``."""
        if isinstance(self._fast, RuntimeModel):
            return self._fast.computes_in
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[
            autocast_dtype(self.precision, self.device)
        ]

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", *, backend: str | None = None, **kwargs: Any
    ) -> Predictor:
        """A predictor for a checkpoint (``.pt``) or for a model written by ``fcnseg export``/``quantize``.

        Args:
            path: a checkpoint written by ``fcnseg train``, an ONNX file (``.onnx``) or an OpenVINO IR (``.xml``,
                e.g. an int8 model from ``fcnseg quantize``).
            device: where inference runs (exported models run on the CPU).
            backend: ``"torch"``, ``"onnxruntime"``, ``"openvino"`` or ``"auto"``: for a checkpoint, OpenVINO when
                it is installed, through an IR converted once and cached (:func:`export.cached_openvino`), else
                torch; for an ONNX file, OpenVINO when installed, else ONNX Runtime. ``None`` (default): torch for
                a checkpoint, ``"auto"`` for an exported file.
            kwargs: passed to ``__init__`` (classes and normalisation default to the file's).
        """
        if Path(path).suffix.lower() in (".onnx", ".xml"):
            return cls._from_exported(Path(path), backend or "auto", device, **kwargs)
        backend = backend or "torch"
        on_cpu = resolve_device(device).type == "cpu"
        if backend == "auto":
            backend = "openvino" if on_cpu and "openvino" in available_backends() else "torch"
        if backend == "openvino" and on_cpu:
            return cls._from_exported(cached_openvino(path)[0], "openvino", device, **kwargs)
        ckpt = load_checkpoint(path)
        norm = ckpt.get("normalization") or {}
        kwargs.setdefault("classes", ckpt.get("classes"))
        kwargs.setdefault("mean", norm.get("mean", IMAGENET_MEAN))
        kwargs.setdefault("std", norm.get("std", IMAGENET_STD))
        return cls(models.model_from_checkpoint(ckpt), device=device, backend=backend, **kwargs)

    @classmethod
    def _from_exported(cls, path: Path, backend: str, device: str | torch.device, **kwargs: Any) -> Predictor:
        """A predictor on an exported graph, which normalises ``[0, 1]`` RGB itself (so the predictor does not)."""
        if not path.is_file():
            raise FileNotFoundError(f"exported model '{path}' does not exist")
        if backend == "auto":
            backend = "openvino" if "openvino" in available_backends() else "onnxruntime"
        if path.suffix.lower() == ".xml" and backend != "openvino":
            raise ValueError(f"'{path}' is an OpenVINO model: use backend='openvino' (or 'auto'), not {backend!r}")
        if backend == "torch":
            raise ValueError(f"'{path}' is an exported model: use backend 'onnxruntime', 'openvino' or 'auto'")
        precision = kwargs.get("precision", "auto")
        model = load_onnxruntime(path) if backend == "onnxruntime" else load_openvino(path, precision=precision)
        kwargs.setdefault("classes", model.metadata.get("classes"))
        kwargs |= {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
        return cls(model, device=device, **kwargs)

    @property
    def classes(self) -> ClassInfo:
        """Class names and colours (defaults built from the model's number of classes when none were given)."""
        if self._classes is None:
            with torch.inference_mode():
                k = self._fast(self._prepare([Image.new("RGB", (64, 64))])).shape[1]
            self._classes = as_class_info([f"class_{i}" for i in range(k)])  # VOC colours
        return self._classes

    def _prepare(self, images: Sequence[Image.Image]) -> Tensor:
        """Same-size RGB images -> normalised ``(N, 3, H, W)`` float32 on the device.

        Normalised in place: one float32 copy of the batch, 12 bytes per pixel, is the only large allocation.
        """
        arrays = [np.array(im, dtype=np.uint8) for im in images]  # (H, W, 3) each, writable
        batch = torch.from_numpy(arrays[0])[None] if len(arrays) == 1 else torch.from_numpy(np.stack(arrays))
        # (N, H, W, 3) viewed as (N, 3, H, W) is channels_last, a layout the float copy keeps.
        x = normalize_uint8(batch.to(self.device).permute(0, 3, 1, 2), self.mean, self.std)
        return x.contiguous(memory_format=self.memory_format)

    def tile_size_for(self, height: int, width: int, batch_size: int = 1) -> tuple[int, int] | None:
        """The window ``(h, w)`` used for ``batch_size`` images of ``height x width``; ``None``: whole images."""
        if self.tile_size != "auto":
            return self.tile_size  # type: ignore[return-value]
        if self._memory is None:
            if isinstance(self.model, RuntimeModel):
                raise ValueError("tile_size='auto' needs the memory model stored by `fcnseg export`; pass tile_size")
            self._memory = estimate_memory(self.model)
        scale = max(self.scales)
        hw = (max(1, round(height * scale)), max(1, round(width * scale)))
        band_row = 4 * len(self.classes.names) * hw[1]  # float32 logits of one image row, blended band by band
        return choose_tile_size(self._memory, hw, self.memory_budget, batch_size=batch_size, bytes_per_row=band_row)

    def logits(self, images: Sequence[Image.Image]) -> Tensor:
        """Logits ``(N, K, H, W)`` float32 for same-size RGB images."""
        return self.infer(self._prepare(images))

    def infer(self, x: Tensor) -> Tensor:
        """Logits ``(N, K, H, W)`` float32 of already normalised images ``(N, 3, H, W)``.

        The path :meth:`predict` takes (prepared model, precision, tiling, scales, flip), for images that a
        dataset's transform has normalised; :func:`fcnseg.evaluation.evaluate` scores through it.
        """
        x = x.to(self.device, non_blocking=True).float().contiguous(memory_format=self.memory_format)
        return self._logits(x, self.tile_size_for(x.shape[2], x.shape[3], x.shape[0]))

    def _logits(self, x: Tensor, tile: tuple[int, int] | None) -> Tensor:
        return segment_logits(
            self._fast,
            x,
            tile_size=tile,
            overlap=self.overlap,
            scales=self.scales,
            flip=self.flip,
            precision=self.precision,
        )

    def _bands(self, x: Tensor) -> Iterator[tuple[int, Tensor]]:
        """Logits of normalised images in horizontal bands (one band when several scales are averaged)."""
        tile = self.tile_size_for(x.shape[2], x.shape[3], x.shape[0])
        if self.scales != (1.0,):
            yield 0, self._logits(x, tile)
            return
        yield from segment_bands(
            self._fast, x, tile_size=tile, overlap=self.overlap, flip=self.flip, precision=self.precision
        )

    def _segment(self, x: Tensor, return_probs: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Masks ``(N, H, W)`` and optionally probabilities ``(N, K, H, W)`` of ``x``, filled band by band.

        Single-scale tiled inference never holds the logits of the whole image, only one band of them.
        """
        n, _, h, w = x.shape
        masks: np.ndarray | None = None
        probs: np.ndarray | None = None
        with torch.inference_mode():
            for top, band in self._bands(x):  # (N, K, rows, W)
                if masks is None:
                    k = band.shape[1]
                    masks = np.empty((n, h, w), dtype=np.uint8 if k <= 255 else np.int64)
                    probs = np.empty((n, k, h, w), dtype=np.float32) if return_probs else None
                rows = slice(top, top + band.shape[2])
                masks[:, rows] = band.argmax(1).cpu().numpy()
                if probs is not None:
                    probs[:, :, rows] = band.softmax(1).cpu().numpy()
        assert masks is not None
        return masks, probs

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
                masks, probs = self._segment(self._prepare([loaded[i] for i in chunk]), return_probs)
                for j, i in enumerate(chunk):
                    results[i] = (masks[j], probs[j]) if probs is not None else masks[j]
        return results
