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
from fcnseg.core.checkpoint import load_checkpoint, recorded_scales
from fcnseg.core.device import autocast_dtype, memory_format, resolve_device
from fcnseg.data.classes import ClassInfo, as_class_info
from fcnseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from fcnseg.inference.crf import CRFParams, dense_crf
from fcnseg.inference.engine import choose_tile_size, class_indices, scaled_size, segment_bands, segment_logits
from fcnseg.inference.export import cached_openvino, export_model
from fcnseg.inference.images import load_bands
from fcnseg.inference.inputs import input_bands
from fcnseg.inference.memory import MemoryModel, estimate_memory
from fcnseg.inference.optimize import prepare_for_inference
from fcnseg.inference.runtimes import BACKENDS, RuntimeModel, available_backends, load_onnxruntime, load_openvino

__all__ = ["DEFAULT_MEMORY_BUDGET", "ImageLike", "Predictor"]

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 2 * 2**30
"""Bytes inference may use when ``tile_size="auto"`` (2 GiB): one forward pass plus, when tiling, the logit band."""

ImageLike = str | os.PathLike | Image.Image | np.ndarray | Tensor
Loaded = Image.Image | np.ndarray  # an RGB PIL image, or an (H, W, B) array of another band count


def _runtime_from_torch(model: nn.Module, backend: str, precision: str) -> RuntimeModel:
    """``model`` (normalised input -> logits) exported to ONNX, checked, and compiled by ``backend``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fcnseg-") as folder:
        path = Path(folder) / "model.onnx"
        bands = input_bands(model)
        with torch.inference_mode():
            k = model.cpu().eval()(torch.zeros(1, bands, 64, 64)).shape[1]
        info = as_class_info([f"class_{i}" for i in range(k)])
        classes = {"names": list(info.names), "colors": [list(c) for c in info.colors]}
        export_model(model, path, "onnx", classes=classes, mean=(0.0,) * bands, std=(1.0,) * bands)
        if backend == "onnxruntime":
            return load_onnxruntime(path)
        return load_openvino(path, precision=precision)


class Predictor:
    """Segment single images or batches with ``model``; masks come back at the input's size.

    Args:
        model: maps normalised ``(N, B, H, W)`` to logits ``(N, K, H, W)`` (``B = 3`` for RGB; other band counts
            read images by the decoder's rules for ``B``, see :func:`~fcnseg.inference.images.load_bands`). It is
            moved to ``device``, put in eval mode and, on CPU, converted to ``channels_last`` in place.
        classes: names and colours of the ``K`` classes (:class:`ClassInfo`, or a ``{"names", "colors"}``
            dict); by default ``class_0..`` in the PASCAL VOC colour map.
        mean: per-band mean of the normalisation the model was trained with (``B`` values, [0, 1] scale).
        std: per-band standard deviation of that normalisation.
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
        backend: ``"torch"`` (default: the model itself, prepared for ``device``), ``"onnxruntime"`` or
            ``"openvino"`` (the model exported and compiled by that runtime now, which takes seconds; later changes
            to its weights are not seen). :meth:`from_checkpoint` picks the fastest installed backend by default.
        crf: dense CRF post-processing (:class:`~fcnseg.inference.crf.CRFParams`), or ``None``: mean-field inference
            on the softmax of the logits averaged over windows, scales and flips, with the image's 8-bit colours (RGB;
            other band counts: the first three bands, or the grey band). It runs on the whole image's blended
            logits (in bands of rows beyond :data:`~fcnseg.inference.crf.MAX_PIXELS`); :meth:`infer` then returns
            the log of the CRF's marginals in place of the logits.
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
        crf: CRFParams | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        _check_settings(tile_size, overlap, scales)
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
        self.bands = input_bands(self.model, default=len(self.mean))
        """Image bands the model takes (3: RGB)."""
        self.precision = precision
        self.tile_size = _window(tile_size)
        self.memory_budget = float(memory_budget)
        self.overlap = overlap
        self.scales = tuple(scales)
        self.flip = flip
        self._memory: MemoryModel | None = model.memory if isinstance(model, RuntimeModel) else None
        self.crf = crf

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
            backend: ``"torch"``, ``"onnxruntime"``, ``"openvino"`` or ``"auto"`` (``None``, the default, is
                ``"auto"``, the choice of ``fcnseg predict``): for a checkpoint, OpenVINO on the CPU when it is
                installed, through an IR converted once and cached (:func:`export.cached_openvino`), else torch; for
                an ONNX file, OpenVINO when installed, else ONNX Runtime. The choice is logged and kept in
                :attr:`backend` (and :attr:`computes_in`). Ask for ``"torch"`` to run the PyTorch model itself
                (e.g. to read :attr:`model`'s weights or to score a model that training keeps changing).
            kwargs: passed to ``__init__`` (classes, normalisation and scales default to the file's: a run with
                ``test_scales`` records the scale it chose on validation).
        """
        predictor = cls._open(Path(path), device, backend or "auto", **kwargs)
        name, used = Path(path).name, f"{predictor.backend} ({predictor.computes_in})"
        scales = "" if predictor.scales == (1.0,) else f" at input scale {' + '.join(map(str, predictor.scales))}"
        logger.info("%s runs through %s on %s%s", name, used, predictor.device, scales)
        return predictor

    @classmethod
    def _open(cls, path: Path, device: str | torch.device, backend: str, **kwargs: Any) -> Predictor:
        """:meth:`from_checkpoint` with ``backend`` given (``"auto"`` resolved here)."""
        if path.suffix.lower() in (".onnx", ".xml"):
            return cls._from_exported(path, backend, device, **kwargs)
        on_cpu = resolve_device(device).type == "cpu"
        if backend == "auto":
            backend = "openvino" if on_cpu and "openvino" in available_backends() else "torch"
        if backend == "openvino" and on_cpu:
            return cls._from_exported(cached_openvino(path)[0], "openvino", device, **kwargs)
        ckpt = load_checkpoint(path)
        norm = ckpt.get("normalization") or {}
        kwargs.setdefault("classes", ckpt.get("classes"))
        kwargs.setdefault("scales", recorded_scales(ckpt.get("inference")))
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
        kwargs.setdefault("scales", recorded_scales(model.metadata))
        kwargs |= {"mean": (0.0,) * input_bands(model), "std": (1.0,) * input_bands(model)}
        return cls(model, device=device, **kwargs)

    @property
    def classes(self) -> ClassInfo:
        """Class names and colours (defaults built from the model's number of classes when none were given)."""
        if self._classes is None and getattr(self._fast, "num_classes", None):  # stated by a runtime's graph
            self._classes = as_class_info([f"class_{i}" for i in range(self._fast.num_classes)])
        if self._classes is None:
            with torch.inference_mode():
                x = torch.zeros(1, self.bands, 64, 64, device=self.device)
                k = self._fast(x.contiguous(memory_format=self.memory_format)).shape[1]
            self._classes = as_class_info([f"class_{i}" for i in range(k)])  # VOC colours
        return self._classes

    def load(self, image: ImageLike) -> Loaded:
        """Read ``image`` for the model: an RGB PIL image for RGB models, else an ``(H, W, B)`` array.

        Raises:
            ImageReadError: unreadable, or of another band count than the model's (one line naming both).
        """
        kind = "RGB" if self.bands == 3 else f"{self.bands}-band"
        return load_bands(image, self.bands, f"its checkpoint was trained on {kind} images")

    def _prepare(self, images: Sequence[Loaded]) -> Tensor:
        """Same-size images (RGB PIL images, or ``(H, W, B)`` arrays) -> normalised ``(N, B, H, W)`` float32.

        Normalised in place: one float32 copy of the batch, ``4 B`` bytes per pixel, is the only large allocation
        besides the stacked batch as read (``B`` bytes per pixel for 8-bit images).
        """
        arrays = [np.asarray(im) for im in images]  # (H, W, B)
        if len(self.mean) != arrays[0].shape[-1]:
            raise ValueError(
                f"the normalisation has {len(self.mean)} values but the images have {arrays[0].shape[-1]} bands; "
                "pass the mean and std the model was trained with (its checkpoint's)"
            )
        batch = torch.from_numpy(np.stack(arrays))  # a uint8 copy, writable whatever the images were
        # (N, H, W, B) viewed as (N, B, H, W) is channels_last, a layout the float copy keeps.
        x = normalize_image(batch.to(self.device).permute(0, 3, 1, 2), self.mean, self.std)
        return x.contiguous(memory_format=self.memory_format)

    def tile_size_for(self, height: int, width: int, batch_size: int = 1) -> tuple[int, int] | None:
        """The window ``(h, w)`` used for ``batch_size`` images of ``height x width``; ``None``: whole images."""
        if self.tile_size != "auto":
            return self.tile_size  # type: ignore[return-value]
        if self._memory is None:
            if isinstance(self.model, RuntimeModel):
                raise ValueError("tile_size='auto' needs the memory model stored by `fcnseg export`; pass tile_size")
            self._memory = estimate_memory(self.model)
        hw = scaled_size(height, width, max(self.scales))
        band_row = 4 * len(self.classes.names) * hw[1]  # float32 logits of one image row, blended band by band
        return choose_tile_size(self._memory, hw, self.memory_budget, batch_size=batch_size, bytes_per_row=band_row)

    def logits(self, images: Sequence[Loaded]) -> Tensor:
        """Logits ``(N, K, H, W)`` float32 for same-size images as :meth:`load` returns them."""
        return self.infer(self._prepare(images))

    def infer(self, x: Tensor) -> Tensor:
        """Logits ``(N, K, H, W)`` float32 of already normalised images ``(N, B, H, W)``.

        The path :meth:`predict` takes (prepared model, precision, tiling, scales, flip), for images that a
        dataset's transform has normalised; :func:`fcnseg.evaluation.evaluate` scores through it.
        """
        x = x.to(self.device, non_blocking=True).float().contiguous(memory_format=self.memory_format)
        logits = self._logits(x, self.tile_size_for(x.shape[2], x.shape[3], x.shape[0]))
        return logits if self.crf is None else self._crf_log_marginals(logits, x)

    def _crf_log_marginals(self, logits: Tensor, x: Tensor) -> Tensor:
        """``log Q`` ``(N, K, H, W)`` of the dense CRF on ``logits``, with colours unnormalised from ``x`` (8-bit)."""
        assert self.crf is not None
        bands = min(3, x.shape[1])
        mean = torch.tensor(self.mean[:bands], device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std[:bands], device=x.device).view(1, -1, 1, 1)
        levels = (x[:, :bands].float() * std + mean).mul_(255).round_().clamp_(0, 255).to(torch.uint8)
        with torch.inference_mode():
            return dense_crf(logits, levels, self.crf).clamp_min_(1e-30).log_()

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

    def _labels_in_graph(self, n: int, height: int, width: int) -> bool:
        """Whether masks can be the runtime's own argmax: masks alone, one whole-image pass, no flip, one scale."""
        fast = self._fast
        if not isinstance(fast, RuntimeModel) or not fast.computes_labels or fast.num_classes is None:
            return False
        tile = self.tile_size_for(height, width, n)
        whole = tile is None or (tile[0] >= height and tile[1] >= width)
        return whole and self.scales == (1.0,) and not self.flip and self.crf is None

    def _segment_images(self, images: Sequence[Loaded], return_probs: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`_segment` of same-size images as :meth:`load` returns them.

        Masks alone of uint8 images, through a runtime that takes them (OpenVINO), never leave it: the graph
        normalises the images and takes the argmax (:meth:`RuntimeModel.image_labels`).
        """
        first, fast = images[0], self._fast
        h, w = first.shape[:2] if isinstance(first, np.ndarray) else first.size[::-1]
        if (
            not return_probs
            and isinstance(fast, RuntimeModel)
            and fast.takes_images
            and all(not isinstance(im, np.ndarray) or im.dtype == np.uint8 for im in images)  # PIL images: RGB uint8
            and self._labels_in_graph(len(images), h, w)
        ):
            batch = np.stack([np.asarray(im) for im in images])  # (N, H, W, B) uint8
            return fast.image_labels(batch, self.mean, self.std).numpy(), None
        return self._segment(self._prepare(images), return_probs)

    def _segment(self, x: Tensor, return_probs: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Masks ``(N, H, W)`` and optionally probabilities ``(N, K, H, W)`` of ``x``, filled band by band.

        Single-scale tiled inference never holds the logits of the whole image, only one band of them. Masks alone
        of a whole image, through an OpenVINO model, are the argmax taken inside its graph: no logits leave it.
        """
        n, _, h, w = x.shape
        if self.crf is not None:  # the CRF needs the scores of the whole image: never the graph's own argmax
            log_q = self.infer(x)
            probs = log_q.softmax(1).cpu().numpy() if return_probs else None
            return class_indices(log_q).cpu().numpy(), probs
        if not return_probs and self._labels_in_graph(n, h, w):
            with torch.inference_mode():
                return self._fast.labels(x).cpu().numpy(), None  # type: ignore[operator]
        masks: np.ndarray | None = None
        probs: np.ndarray | None = None
        with torch.inference_mode():
            for top, band in self._bands(x):  # (N, K, rows, W)
                if masks is None:
                    k = band.shape[1]
                    masks = np.empty((n, h, w), dtype=np.uint8 if k <= 255 else np.int64)
                    probs = np.empty((n, k, h, w), dtype=np.float32) if return_probs else None
                rows = slice(top, top + band.shape[2])
                masks[:, rows] = class_indices(band).cpu().numpy()
                if probs is not None:
                    probs[:, :, rows] = band.softmax(1).cpu().numpy()
        assert masks is not None
        return masks, probs

    def predict(self, image: ImageLike, *, return_probs: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Segment one image.

        Args:
            image: path, PIL image, array or tensor (see :func:`~fcnseg.inference.images.load_bands`).
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
        loaded = [self.load(im) for im in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(loaded):
            by_size.setdefault(im.shape[:2] if isinstance(im, np.ndarray) else im.size[::-1], []).append(i)
        results: list[Any] = [None] * len(loaded)
        for indices in by_size.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                masks, probs = self._segment_images([loaded[i] for i in chunk], return_probs)
                for j, i in enumerate(chunk):
                    results[i] = (masks[j], probs[j]) if probs is not None else masks[j]
        return results


def _window(tile_size: Any) -> tuple[int, int] | str | None:
    """``None``, ``"auto"`` or the window as ``(height, width)`` ints (one size is a square)."""
    if tile_size is None or tile_size == "auto":
        return tile_size
    sizes = [int(tile_size)] if isinstance(tile_size, int) else [int(v) for v in tile_size]
    return (sizes[0], sizes[-1])


def _check_settings(tile_size: Any, overlap: float, scales: Sequence[float]) -> None:
    """The one check of the inference settings ``fcnseg predict``, ``fcnseg eval`` and the API share.

    Raises:
        ValueError: a window that is not ``None``, ``"auto"``, one or two positive sizes; an overlap outside
            ``[0, 1)``; a scale that is not positive.
    """
    if tile_size is not None and tile_size != "auto":
        sizes = (
            [tile_size] if isinstance(tile_size, int) else list(tile_size) if isinstance(tile_size, Sequence) else []
        )
        if isinstance(tile_size, str) or len(sizes) not in (1, 2) or min(int(v) for v in sizes) < 1:
            raise ValueError(f"tile_size must be None, 'auto' or a positive (height, width), got {tile_size!r}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {list(scales)}")
