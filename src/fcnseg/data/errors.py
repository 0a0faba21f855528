"""The one exception type for bad data on disk, and the folder check that every dataset starts with."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file and the problem."""


def require_dir(path: Path, what: str, expected: str) -> Path:
    """``path`` if it is a folder; else a :class:`DataError` naming ``what`` (a dataset) and the ``expected`` layout."""
    if not path.is_dir():
        raise DataError(f"{what} root {path} does not exist or is not a directory; expected {expected}")
    return path
