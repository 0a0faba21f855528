"""Progress bars that suit where stderr goes: a redrawn tqdm bar on a terminal, occasional log lines elsewhere.

A bar written to a log file or a pipe redraws into one ever-growing line of carriage returns; there, progress is
instead one ``logging`` line every ``every`` steps or ``seconds`` seconds, whichever comes first.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

log = logging.getLogger("fcnseg.progress")
T = TypeVar("T")

LOG_EVERY_SECONDS = 30.0
"""Without a terminal, the longest time between two progress lines."""
QUIET_SECONDS = 5.0
"""Without a terminal, no progress line before this many seconds: a loop done in a few seconds logs nothing."""


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class LogProgress:
    """The part of tqdm's interface fcnseg uses, writing ``desc: n/total (p%) [postfix], rate`` log lines.

    The first line comes after ``quiet`` seconds at the earliest, so short loops stay silent.

    Args:
        total: number of steps (``None`` when unknown).
        initial: steps already done (a resumed run).
        desc: label of each line.
        unit: name of a step.
        every: a line every ``every`` steps (default: about 20 lines per run).
        seconds: and at least one every ``seconds`` seconds.
        quiet: seconds without any line at the start (default :data:`QUIET_SECONDS`).
    """

    def __init__(
        self,
        total: int | None = None,
        initial: int = 0,
        desc: str = "",
        unit: str = "it",
        every: int | None = None,
        seconds: float = LOG_EVERY_SECONDS,
        quiet: float | None = None,
    ) -> None:
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.every = every or max(1, (total or 0) // 20) or 1
        self.seconds, self.quiet = seconds, QUIET_SECONDS if quiet is None else quiet
        self.postfix = ""
        self._start = self._last_time = time.monotonic()
        self._start_n = self._last_n = initial

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps; log a line when ``every`` steps or ``seconds`` have passed, and at the end."""
        self.n += n
        now = time.monotonic()
        done = self.total is not None and self.n >= self.total
        if now - self._start < self.quiet:
            return
        if done or self.n - self._last_n >= self.every or now - self._last_time >= self.seconds:
            self._emit(now)

    def _emit(self, now: float) -> None:
        rate = (self.n - self._start_n) / max(now - self._start, 1e-9)
        share = f"/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else ""
        postfix = f" {self.postfix}" if self.postfix else ""
        log.info("%s: %d%s%s, %.2f %s/s", self.desc, self.n, share, postfix, rate, self.unit)
        self._last_time, self._last_n = now, self.n

    def set_postfix(self, **values: Any) -> None:
        """Values shown at the end of the next line, as ``key=value``."""
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        """Nothing to release (tqdm's interface)."""

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_bar(
    total: int | None, *, initial: int = 0, desc: str = "", unit: str = "it", enabled: bool = True
) -> tqdm | LogProgress:
    """A tqdm bar on a terminal, else a :class:`LogProgress`; a disabled tqdm bar when not ``enabled``."""
    if not enabled:
        return tqdm(total=total, initial=initial, disable=True)
    if stderr_is_terminal():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
    return LogProgress(total, initial, desc, unit)


def progress_bar(items: Iterable[T], *, desc: str, unit: str = "it", enabled: bool = True) -> Iterator[T]:
    """Iterate over ``items`` with a progress display (none when ``enabled`` is false)."""
    if not enabled:
        yield from items
        return
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    bar = make_bar(total, desc=desc, unit=unit)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
