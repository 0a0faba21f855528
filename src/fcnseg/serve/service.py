"""The model behind the routes: a :class:`Predictor`, its warm-up, the batch queue, and the decoding of requests.

Decoding and encoding run in the event loop's thread pool, forward passes in the batcher's one worker thread
(:mod:`.batching`), so the server keeps accepting and refusing requests while the model runs.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from fcnseg.inference.predictor import Predictor
from fcnseg.serve.batching import Batcher
from fcnseg.serve.config import ServeConfig
from fcnseg.serve.uploads import decode_tensor, decode_upload

__all__ = ["Service"]

logger = logging.getLogger(__name__)

Result = tuple[np.ndarray, np.ndarray | None]  # mask (H, W) and, when asked for, probabilities (K, H, W)


def _size(image: Any) -> tuple[int, int]:
    """``(height, width)`` of an image as :meth:`Predictor.load` returns it (PIL image or ``(H, W, B)`` array)."""
    return tuple(image.shape[:2]) if isinstance(image, np.ndarray) else (image.height, image.width)


class Service:
    """One model served: it decodes requests, batches them and reports readiness.

    Args:
        predictor: the model, as ``fcnseg predict`` runs it.
        config: batching, limits and the API key.
    """

    def __init__(self, predictor: Predictor, config: ServeConfig) -> None:
        self.predictor = predictor
        self.config = config
        self.classes = predictor.classes  # resolved now: a runtime model without class names is run once for K
        self._folder: tempfile.TemporaryDirectory | None = None
        self.batcher: Batcher | None = None

    def start(self) -> None:
        """Start the batch worker, which warms the model up first (in the running event loop)."""
        self._folder = tempfile.TemporaryDirectory(prefix="fcnseg-serve-")
        self.batcher = Batcher(
            self._run,
            max_batch_size=self.config.max_batch_size,
            max_wait_s=self.config.max_wait_ms / 1000,
            max_pixels=self.config.max_pixels,
            max_queue=self.config.max_queue,
            prepare=self._warm_up,
        )
        self.batcher.start()

    async def stop(self) -> None:
        """Stop the worker and remove the temporary files."""
        if self.batcher is not None:
            await self.batcher.stop()
        if self._folder is not None:
            self._folder.cleanup()

    @property
    def ready(self) -> bool:
        """Loaded and warmed up: the answer of the health checks."""
        return self.batcher is not None and self.batcher.ready.is_set() and self.batcher.failure is None

    @property
    def status(self) -> str:
        """``"ready"``, ``"warming up"`` or why the warm-up failed."""
        if self.batcher is not None and self.batcher.failure:
            return self.batcher.failure
        return "ready" if self.ready else "warming up"

    def _warm_up(self) -> None:
        """One prediction of a blank image, so that the first request does not pay for lazy set-up."""
        height, width = self.config.warmup_size
        self.predictor.predict(np.zeros((height, width, self.predictor.bands), dtype=np.uint8))
        logger.info("model warmed up; ready")

    def _run(self, images: list[Any], key: tuple[int, int, bool]) -> list[Result]:
        """One forward pass over same-size images (the batcher's worker thread)."""
        results = self.predictor.predict_batch(images, return_probs=key[2], batch_size=len(images))
        return [result if key[2] else (result, None) for result in results]

    async def decode(self, data: bytes) -> Any:
        """An uploaded file as the model's input (see :func:`decode_upload`)."""
        assert self._folder is not None, "the service is not started"
        folder = Path(self._folder.name)
        return await run_in_threadpool(decode_upload, data, self.predictor, self.config.max_pixels, folder)

    async def decode_tensor(self, tensor: dict[str, Any]) -> list[Any]:
        """The images of an Open Inference Protocol input tensor (see :func:`decode_tensor`)."""
        return await run_in_threadpool(decode_tensor, tensor, self.predictor, self.config.max_pixels)

    async def segment(self, image: Any, return_probs: bool = False) -> Result:
        """The mask ``(H, W)`` (and probabilities ``(K, H, W)`` if asked) of one decoded image, batched with others."""
        assert self.batcher is not None, "the service is not started"
        height, width = _size(image)
        return await self.batcher.submit(image, (height, width, return_probs), height * width)
