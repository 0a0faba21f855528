"""Server-side batching: images of concurrent requests that share a size run as one forward pass.

Requests queue in arrival order. The oldest waiting image opens the next batch: images of its key (size, and
whether probabilities are asked for) join it, in arrival order, until the batch holds ``max_batch_size`` images or
``max_pixels`` pixels, or until that oldest image has waited ``max_wait_s``; then the batch runs. Images of other
sizes keep their place, so an image waits at most for the batches of the images older than it: a stream of one
size cannot starve another. One forward pass runs at a time, in one worker thread, so inference memory is that of
one batch, and the event loop keeps accepting and decoding requests meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Batcher", "QueueFull"]

logger = logging.getLogger(__name__)

RunBatch = Callable[[list[Any], Hashable], Sequence[Any]]
"""``run(items, key) -> results``: one forward pass over items that share ``key``, one result per item."""


class QueueFull(RuntimeError):
    """More images wait for the model than the queue holds; the caller should retry later."""


@dataclass
class _Job:
    item: Any
    key: Hashable
    pixels: int
    deadline: float
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Collects items submitted concurrently and runs those of one key together through ``run``.

    Args:
        run: runs one batch (in the worker thread); its exception fails every item of that batch only.
        max_batch_size: items in one batch at most (1: every item alone, no waiting).
        max_wait_s: how long the oldest item waits for others of its key before its batch runs anyway.
        max_pixels: pixels in one batch at most (an item larger than this still runs, alone).
        max_queue: items waiting at most; :meth:`submit` raises :class:`QueueFull` beyond.
        prepare: called once in the worker thread before the first batch (warm-up); :attr:`ready` is set after it.
    """

    def __init__(
        self,
        run: RunBatch,
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_pixels: int | None = None,
        max_queue: int = 64,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_pixels = max_pixels
        self.max_queue = max_queue
        self._prepare = prepare
        self._queue: list[_Job] = []
        self._running: list[_Job] = []  # the batch in the worker thread
        self._arrived = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self.ready = asyncio.Event()
        """Set once ``prepare`` has run (or failed: see :attr:`failure`)."""
        self.failure: str | None = None
        """Why ``prepare`` failed, if it did."""

    @property
    def pending(self) -> int:
        """Items queued or in the batch that runs now."""
        return len(self._queue) + len(self._running)

    def start(self) -> None:
        """Start the worker (in the running event loop)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fcnseg-forward")
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Stop the worker; items not answered yet fail with :class:`RuntimeError` (uvicorn stops the app only once
        the requests in flight are answered, so none are left then)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for job in self._queue + self._running:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._queue.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, item: Any, key: Hashable, pixels: int = 0) -> Any:
        """Queue ``item`` and wait for its result.

        Raises:
            QueueFull: ``max_queue`` items are waiting already.
        """
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"{len(self._queue)} images are waiting for the model; retry shortly")
        loop = asyncio.get_running_loop()
        job = _Job(item, key, pixels, loop.time() + self.max_wait_s, loop.create_future())
        self._queue.append(job)
        self._arrived.set()
        return await job.future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        if self._prepare is not None:
            try:
                await loop.run_in_executor(self._executor, self._prepare)
            except Exception as err:  # the model cannot run: report it in /health, fail the requests one by one
                logger.exception("warm-up failed")
                self.failure = f"warm-up failed: {err}"
        self.ready.set()
        while True:
            self._queue = [job for job in self._queue if not job.future.done()]  # callers that went away
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch = await self._gather()
            if batch:
                await self._execute(batch)

    def _group(self, key: Hashable) -> list[_Job]:
        """The next batch of ``key``: queued jobs in arrival order, within the size and pixel limits."""
        group: list[_Job] = []
        pixels = 0
        for job in self._queue:
            if job.key != key or job.future.done():
                continue
            if group and (len(group) >= self.max_batch_size or self._over(pixels + job.pixels)):
                break
            group.append(job)
            pixels += job.pixels
        return group

    def _over(self, pixels: int) -> bool:
        return self.max_pixels is not None and pixels > self.max_pixels

    async def _gather(self) -> list[_Job]:
        """Wait until the oldest job's batch is full or its wait is over, then take that batch off the queue."""
        loop = asyncio.get_running_loop()
        head = self._queue[0]
        while True:
            group = self._group(head.key)
            remaining = head.deadline - loop.time()
            full = len(group) >= self.max_batch_size or len(group) < len(self._same_key(head.key))
            if full or remaining <= 0 or head.future.done():
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        group = self._group(head.key)
        taken = {id(job) for job in group}
        self._queue = [job for job in self._queue if id(job) not in taken]
        return group

    def _same_key(self, key: Hashable) -> list[_Job]:
        return [job for job in self._queue if job.key == key and not job.future.done()]

    async def _execute(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        self._running = batch
        try:
            results = await loop.run_in_executor(self._executor, self._run, [job.item for job in batch], batch[0].key)
        except Exception as err:
            logger.exception("a batch of %d image(s) failed", len(batch))
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(err)
        else:
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)
        finally:
            self._running = []
