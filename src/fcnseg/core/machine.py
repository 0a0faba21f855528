"""The processor a measurement ran on: ``lscpu``'s model name and the matrix-unit flags.

bf16 and int8 speed depend on these flags more than on anything else: AMX (``amx_bf16``, ``amx_int8``,
``amx_tile``: Intel Sapphire Rapids and later) multiplies bf16 and int8 matrices in tile units, AVX512-BF16 and
AVX512-VNNI (``avx512_bf16``, ``avx512_vnni``; AVX-VNNI ``avx_vnni`` on client cores) in vector units. They are read
from ``/proc/cpuinfo`` (Linux); elsewhere the model name is ``platform.processor()`` and the flags are unknown.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

__all__ = ["MATRIX_FLAGS", "processor_info", "processor_line"]

MATRIX_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx_vnni")
"""The ``/proc/cpuinfo`` flags that ``fcnseg bench`` and every benchmark report record."""


def processor_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """``{"model_name": str, "flags": {flag: bool or None}}`` for :data:`MATRIX_FLAGS` (``None``: unknown).

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (read from the file when ``None``).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():  # the first processor's entries are enough: the cores are alike
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {
        "model_name": fields.get("model name") or platform.processor() or "unknown processor",
        "flags": {flag: (flag in flags) if flags else None for flag in MATRIX_FLAGS},
    }


def processor_line(info: dict[str, Any] | None = None) -> str:
    """One line for a report: ``AMD EPYC; amx_bf16 no, amx_int8 no, ..., avx512_bf16 yes, ...``."""
    info = info or processor_info()
    words = {True: "yes", False: "no", None: "unknown"}
    return f"{info['model_name']}; " + ", ".join(f"{flag} {words[value]}" for flag, value in info["flags"].items())
