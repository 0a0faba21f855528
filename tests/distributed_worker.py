"""``fcnseg`` under torchrun with test hooks, for tests/test_distributed.py (not a test module itself).

Environment:
    FCNSEG_TEST_HASHES: a folder; each rank writes ``rank<R>.json``, the SHA-256 of its parameters after each step.
    FCNSEG_TEST_INTERRUPT: ``RANK:STEP``, that rank raises KeyboardInterrupt before step STEP + 1 (a SIGTERM).
    FCNSEG_TEST_FAIL: ``RANK:STEP``, that rank raises RuntimeError before step STEP + 1.
    FCNSEG_TEST_HANG: ``RANK:STEP``, that rank stops answering (sleeps for an hour) before step STEP + 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from fcnseg.cli.main import main
from fcnseg.training.loop import Trainer


def _at(name: str) -> tuple[int, int] | None:
    value = os.environ.get(name)
    return tuple(int(v) for v in value.split(":")) if value else None  # type: ignore[return-value]


def _digest(trainer: Trainer) -> str:
    h = hashlib.sha256()
    for p in trainer.model.parameters():
        h.update(p.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _install_hooks() -> None:
    step, hashes = Trainer.train_step, os.environ.get("FCNSEG_TEST_HASHES")
    interrupt, fail, hang = _at("FCNSEG_TEST_INTERRUPT"), _at("FCNSEG_TEST_FAIL"), _at("FCNSEG_TEST_HANG")
    digests: list[str] = []

    def hooked(self: Trainer, images, masks):
        where = (self.world.rank, self.step)
        if where == interrupt:
            raise KeyboardInterrupt("test interruption")
        if where == fail:
            raise RuntimeError(f"test failure on rank {self.world.rank} at step {self.step}")
        if where == hang:
            time.sleep(3600)
        loss = step(self, images, masks)
        if hashes:
            digests.append(_digest(self))
            Path(hashes, f"rank{self.world.rank}.json").write_text(json.dumps(digests))
        return loss

    Trainer.train_step = hooked


if __name__ == "__main__":
    _install_hooks()
    sys.exit(main(sys.argv[1:]))
