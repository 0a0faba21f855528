"""The settings of ``fcnseg serve`` (batching, limits, API key), checked once, and the memory-sized pixel limit."""

from __future__ import annotations

import dataclasses
import os
from importlib import metadata
from pathlib import Path

__all__ = ["BYTES_PER_PIXEL", "ServeConfig", "default_max_pixels", "fcnseg_version", "machine_memory"]

BYTES_PER_PIXEL = 1024
"""Memory one image pixel may cost while it is served whole: the order of FCN-8s VGG16's forward pass (about 870
bytes per pixel in bf16, from the peak of ``benchmarks/large_image.py``), plus the decoded image and the mask."""


def fcnseg_version() -> str:
    """The installed fcnseg's version, for the API description and the Open Inference Protocol's server metadata."""
    try:
        return metadata.version("fcnseg")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit when that is lower (containers)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = limit.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def default_max_pixels(memory_bytes: int | None = None) -> int:
    """The default ``--max-pixels``: half of ``memory_bytes`` (the machine's by default) at :data:`BYTES_PER_PIXEL`.

    One forward pass runs at a time and a batch holds at most this many pixels, so the limit bounds the memory of
    inference; it is kept within 1 to 100 megapixels. 24 GiB give about 12 megapixels (a 4000 x 3000 photo).
    """
    memory = machine_memory() if memory_bytes is None else memory_bytes
    return int(min(max(memory // 2 // BYTES_PER_PIXEL, 10**6), 10**8))


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """How ``fcnseg serve`` batches, what it accepts, and who may call it.

    Attributes:
        model_name: the model's name in ``/info`` and in the Open Inference Protocol routes (``/v2/models/{name}``).
        max_batch_size: images run in one forward pass at most (1: no batching).
        max_wait_ms: how long the first image of a batch waits for others of its size.
        max_pixels: the largest image accepted, in pixels (width x height); also the most pixels in one batch.
        max_body_bytes: the largest request body accepted.
        max_queue: images waiting for the model at most; more are refused with 503 until the queue drains.
        api_key: the bearer token every route but the health checks requires (``None``: open).
        warmup_size: ``(height, width)`` of the blank image inferred once before the server reports ready.
    """

    model_name: str = "fcnseg"
    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_pixels: int = dataclasses.field(default_factory=default_max_pixels)
    max_body_bytes: int = 64 * 2**20
    max_queue: int = 64
    api_key: str | None = None
    warmup_size: tuple[int, int] = (256, 256)

    def __post_init__(self) -> None:
        checks = {
            "--max-batch-size": (self.max_batch_size, 1),
            "--max-wait-ms": (self.max_wait_ms, 0),
            "--max-pixels": (self.max_pixels, 1),
            "--max-body-mb": (self.max_body_bytes, 1),
            "--max-queue": (self.max_queue, 1),
        }
        for flag, (value, least) in checks.items():
            if value < least:
                raise ValueError(f"{flag} must be at least {least}, got {value}")
        if not self.model_name or "/" in self.model_name:
            raise ValueError(f"--model-name must be a non-empty name without '/', got {self.model_name!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("--api-key (or FCNSEG_API_KEY) is empty; set a token or leave it unset")
