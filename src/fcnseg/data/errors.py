"""The one exception type for bad data on disk."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file and the problem."""
