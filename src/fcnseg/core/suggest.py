"""'Did you mean ...?' for a mistyped name, from :mod:`difflib`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(value: str, valid: Iterable[str], limit: int = 4) -> str:
    """``"; did you mean 'x'?"`` naming the valid names closest to ``value``, or ``""`` when none is close.

    Names that are equally close are all given (up to ``limit``): ``fcn8s_vgg15`` is one keystroke from
    ``fcn8s_vgg16`` and from ``fcn8s_vgg19``, and the user meant one of them, not whichever sorts first.
    """
    value = str(value)
    scored = []
    for name in map(str, valid):
        matcher = difflib.SequenceMatcher(None, value, name)
        if matcher.real_quick_ratio() >= 0.5 and matcher.quick_ratio() >= 0.5 and (ratio := matcher.ratio()) >= 0.5:
            scored.append((ratio, name))
    if not scored:
        return ""
    best = max(score for score, _ in scored)
    names = sorted(name for score, name in scored if score == best)[:limit]
    quoted = [repr(name) for name in names]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"; did you mean {listed}?"
