"""``fcnseg predict`` over many inputs: a disjoint share per process under ``torchrun``, and ``--skip-existing``.

Under ``torchrun`` every process expands the same sorted input list and takes every ``WORLD_SIZE``-th input from its
``RANK`` on, so the shares are disjoint and cover the inputs, with no communication (a process that fails does not
stop the others; rerun with ``--skip-existing`` to finish). Each output is written once, atomically, by the process
that owns its input; ``legend.png`` by rank 0. With GPUs, each process takes ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def process_share() -> tuple[int, int]:
    """``(rank, world size)`` from ``torchrun``'s environment; ``(0, 1)`` for a single process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def process_device(device: str) -> str:
    """``device``, except ``auto`` under ``torchrun`` with GPUs: this process's own ``cuda:LOCAL_RANK``."""
    local = os.environ.get("LOCAL_RANK")
    if device == "auto" and local is not None and torch.cuda.is_available():
        return f"cuda:{int(local) % torch.cuda.device_count()}"
    return device


def image_outputs(out: Path, stem: Path, args: argparse.Namespace) -> list[Path]:
    """The files ``fcnseg predict`` writes for an image input."""
    files = [out / f"{stem}.png", out / f"{stem}_overlay.jpg"]
    return [*files, out / f"{stem}_probs.npy"] if args.probs else files


def my_share(files: list, outputs, args: argparse.Namespace) -> list:
    """This process's inputs ``[(file, stem), ...]``, less those whose outputs all exist with ``--skip-existing``.

    Args:
        files: every input, in the same order in every process.
        outputs: ``(file, stem) -> [paths written for it]``.
    """
    rank, size = process_share()
    mine = files[rank::size]
    if size > 1:
        logger.info("process %d of %d: %d of %d inputs", rank, size, len(mine), len(files))
    if not getattr(args, "skip_existing", False):
        return mine
    todo = [item for item in mine if not all(path.is_file() for path in outputs(*item))]
    if len(todo) < len(mine):
        logger.info("--skip-existing: %d input(s) already done", len(mine) - len(todo))
    return todo
