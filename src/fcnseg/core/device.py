"""One device, precision and memory-format policy for training, evaluation and inference.

- **Device**: ``"auto"`` is the first CUDA GPU when PyTorch sees one, else the CPU; ``cpu``, ``cuda`` and
  ``cuda:N`` are taken as given, and asking for a GPU that is not there is an error. ``fcnseg train``, ``eval`` and
  ``predict`` share the flag (:data:`DEVICE_HELP`) and its default, :data:`DEFAULT_DEVICE`.
- **Precision**: ``"auto"`` autocasts to bf16 where the hardware computes it natively (a CPU with AMX or
  AVX512-BF16, a CUDA GPU with bf16), else runs fp32; ``fp32``, ``bf16`` and ``fp16`` are taken as given.
- **Memory format**: channels_last on the CPU, where oneDNN convolutions are fastest in NHWC; the default
  (contiguous NCHW) elsewhere.
- **cuDNN autotuning** (:func:`cudnn_benchmark`): on for training steps, whose crops all have one size, so each
  convolution's fastest algorithm is timed once; off for evaluation, whose images may each have their own size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = [
    "DEFAULT_DEVICE",
    "DEVICE_HELP",
    "PRECISIONS",
    "PRECISION_HELP",
    "autocast",
    "autocast_dtype",
    "cpu_has_native_bf16",
    "cudnn_benchmark",
    "memory_format",
    "resolve_device",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

DEFAULT_DEVICE = "auto"
DEVICE_HELP = "auto (a CUDA GPU when PyTorch sees one, else the CPU), cpu, cuda or cuda:N"
PRECISION_HELP = "auto (bf16 where the device computes it natively, else fp32), fp32, bf16 or fp16"


def resolve_device(name: str | torch.device = DEFAULT_DEVICE) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; any other name is checked and returned as a device.

    Raises:
        ValueError: ``name`` is not a device, or names a CUDA device that PyTorch does not see.
    """
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name} was asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name}: PyTorch sees only {count} CUDA GPU(s), cuda:0..{count - 1}")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AMX or AVX512-BF16)."""
    caps = getattr(torch.cpu, "get_capabilities", None)
    if callable(caps):
        found = caps()
        return bool(found.get("amx_bf16") or found.get("avx512_bf16"))
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
        return "amx_bf16" in flags or "avx512_bf16" in flags
    return False


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means plain float32.

    ``"auto"`` picks bf16 on a CPU with AMX or AVX512-BF16 and on a CUDA GPU with bf16 tensor cores, else fp32.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision != "auto":
        return _DTYPES[precision]
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    if device.type == "cuda" and _cuda_has_native_bf16(device):
        return torch.bfloat16
    return None


def _cuda_has_native_bf16(device: torch.device) -> bool:
    """bf16 tensor cores: compute capability 8.0 (Ampere) or later, or ROCm. ``torch.cuda.is_bf16_supported()``
    also says yes where bf16 is only emulated (slower than fp16), and asks the current device, not ``device``."""
    return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type; a no-op context for ``None`` (float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def memory_format(device: torch.device | str) -> torch.memory_format:
    """The memory format of models and images on ``device``: channels_last on the CPU, else contiguous."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` set to ``enabled`` inside the block, as it was after it."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
