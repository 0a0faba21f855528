"""What a run records: the loss window between logged rows, ``metrics.jsonl``, ``curves.png`` and TensorBoard."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from fcnseg.core.io import write_text
from fcnseg.evaluation.plots import plot_curves


class LossWindow:
    """The losses of the steps since the last logged row, summed on the device and read back once per row.

    A loss that is ``None`` (a batch skipped in fp32/bf16) is not counted; a non-finite one (fp16, whose grad scaler
    skipped the update) is counted as skipped, not summed.
    """

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.finite: torch.Tensor | None = None
        self.steps, self.images, self.start = 0, 0, time.perf_counter()

    def add(self, loss: torch.Tensor | None, images: int) -> None:
        self.images += images
        if loss is None:
            return
        finite = torch.isfinite(loss)
        value = torch.where(finite, loss, torch.zeros_like(loss))
        self.total = value if self.total is None else self.total + value
        self.finite = finite.long() if self.finite is None else self.finite + finite
        self.steps += 1

    def read(self) -> tuple[float, int]:
        """Mean loss of the finite steps and the number of non-finite ones (one device-to-host copy)."""
        if self.total is None or self.finite is None:
            return 0.0, 0
        total, finite = torch.stack([self.total.float(), self.finite.float()]).tolist()
        return total / max(finite, 1), self.steps - int(finite)


class RunLog:
    """``metrics.jsonl`` (one JSON object per row), ``curves.png`` and optionally TensorBoard events in the run folder.

    With ``write=False`` (processes other than rank 0) nothing is written.
    """

    def __init__(self, folder: Path, resume_step: int | None, *, write: bool = True, tensorboard: bool = False) -> None:
        self.path = folder / "metrics.jsonl"
        self.curves = folder / "curves.png"
        self.rows: list[dict] = []
        self.write, self.board = write, None
        if not write:
            return
        if resume_step is not None and self.path.exists():  # drop rows written after the checkpoint
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            self.rows = [r for r in rows if r["step"] <= resume_step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
        if tensorboard:
            self.board = _summary_writer(folder / "tensorboard", None if resume_step is None else resume_step + 1)

    def add(self, row: dict) -> None:
        if not self.write:
            return
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.board is not None:
            for key, value in row.items():
                if key not in ("step", "epoch") and isinstance(value, int | float):
                    self.board.add_scalar(key.replace("val_", "val/", 1), value, row["step"])
            self.board.flush()

    def plot(self) -> None:
        if self.write:
            plot_curves(self.rows, self.curves)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def _summary_writer(folder: Path, purge_step: int | None):
    """A TensorBoard writer; on resume, events from ``purge_step`` on (written after the checkpoint) are dropped."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ValueError("--tensorboard needs the tensorboard package: pip install 'fcnseg[tensorboard]'") from err
    return SummaryWriter(str(folder), purge_step=purge_step)
