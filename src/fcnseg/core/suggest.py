"""'Did you mean ...?' for a mistyped name, from :mod:`difflib`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(value: str, valid: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` naming the valid name closest to ``value``, or ``""`` when none is close."""
    match = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""
