"""What keeps a long run from losing work: stop signals honoured at step boundaries, a free-space check before
training, and checkpoints that are never overwritten by non-finite weights or by a failed write.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A run stopped for a reason the user can act on; the message is one line and says what to do."""


class ForcedStop(KeyboardInterrupt):
    """A second Ctrl-C / SIGTERM: stop at once, without saving (the last saved checkpoint stays as it was)."""


class StopSignals:
    """Turns the first SIGINT or SIGTERM into a request (``requested``) that the loop honours after the current
    step, so that the checkpoint it then saves is consistent; a second signal raises :class:`ForcedStop`.
    """

    def __init__(self) -> None:
        self.requested: int | None = None

    def _handler(self, signum: int, frame: object) -> None:
        if self.requested is not None:
            raise ForcedStop(f"signal {signum} received twice")
        self.requested = signum
        log.warning(
            "%s received: stopping after this step (send it again to stop at once)", signal.Signals(signum).name
        )

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Install the handlers for the ``with`` block (only in the main thread, where Python delivers signals)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def state_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (a checkpoint holds them and about as much optimiser state)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def check_writable(folder: Path) -> None:
    """Before anything is written: the run folder can be created and written (stale temporary files are removed).

    Raises:
        TrainingError: the folder cannot be created or written.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".*.tmp.*"):  # temporary files of saves cut short by SIGKILL or a power cut
            stale.unlink()
        probe = folder / ".fcnseg-write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise TrainingError(
            f"cannot write to the run folder {folder} ({err.strerror or err}); choose another --out"
        ) from err


def check_free_space(folder: Path, model: nn.Module) -> None:
    """Before training: the run folder has room for the checkpoints of ``model``.

    A save needs the new file beside the old one until the rename (``last.pt`` with optimiser state is about twice
    the weights), and ``best.pt`` holds the weights again: about five times the weights in all.

    Raises:
        TrainingError: too little free space.
    """
    need = 5 * state_bytes(model)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise TrainingError(
            f"the run folder {folder} has {free / 2**20:.0f} MiB free but its checkpoints need about "
            f"{need / 2**20:.0f} MiB; free some space or choose another --out"
        )


def finite_weights(model: nn.Module) -> bool:
    """True when every parameter and floating-point buffer is finite."""
    tensors = (*model.parameters(), *(b for b in model.buffers() if b.is_floating_point()))
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def write_failed(path: Path, err: OSError, resume: str) -> TrainingError:
    """The error for a checkpoint that could not be written; the previous file at ``path`` is untouched."""
    reason = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written yet"
    return TrainingError(f"cannot write checkpoint {path} ({reason}); {kept}. Fix it, then resume with: {resume}")
