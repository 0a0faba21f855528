"""Reading tensor files that may come from anywhere: a hash check before reading, and no code run on load.

``torch.load(weights_only=True)`` unpickles only tensors and plain containers; a file that names other Python
objects (a pickle that would import and call them) is refused. PyTorch says so in a long message that suggests
turning the protection off; :func:`load_tensors` says it in one line and does not.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

_CHUNK = 1 << 20


class UntrustedFileError(ValueError):
    """A file failed its hash check, or would run code when loaded."""


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    """Check ``path`` against ``expected`` (hex, case-insensitive; a full or a leading prefix of >= 8 digits).

    Raises:
        UntrustedFileError: the digest differs, or ``expected`` is not hexadecimal.
    """
    want = expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", want):
        raise UntrustedFileError(f"--weights-sha256 {expected!r} is not a hexadecimal SHA-256 (8 to 64 digits)")
    actual = sha256_of(path)
    if not actual.startswith(want):
        raise UntrustedFileError(
            f"'{path}' has SHA-256 {actual}, not {want}: the file is not the one expected; download it again"
        )


def load_tensors(path: str | os.PathLike, *, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load`` restricted to tensors and plain data.

    Args:
        path: the file.
        what: what the file is, for messages ("checkpoint", "backbone weights").
        map_location: as for ``torch.load``.

    Raises:
        UntrustedFileError: the file would run code when loaded (it names Python objects other than tensors).
        ValueError: the file is not readable by ``torch.load`` (truncated, not a PyTorch file).
    """
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"(?:GLOBAL|global) ([\w.]+)", text)
        if found is None:  # not a pickle of allowed types, nor one naming code: a damaged or foreign file
            detail = next((ln.strip() for ln in text.splitlines()[1:] if ln.strip() and "error:" not in ln), "")
            raise ValueError(f"cannot read {what} '{path}': not a PyTorch file, or a damaged one ({detail})") from None
        raise UntrustedFileError(
            f"refused to load {what} '{path}': it would run Python code when loaded (it calls {found.group(1)}); "
            "fcnseg reads only tensors and plain data. Re-save it as a state dict from a trusted source"
        ) from None
    except Exception as err:
        raise ValueError(f"cannot read {what} '{path}': {_first_line(str(err)) or type(err).__name__}") from err


def _first_line(text: str) -> str:
    """The first sentence of the first line (PyTorch's messages run on with advice)."""
    return text.strip().splitlines()[0].split(". ")[0] if text.strip() else ""
