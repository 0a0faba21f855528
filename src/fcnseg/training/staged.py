"""``--staged``: FCN-32s, then FCN-16s from it, then FCN-8s from that, as the paper trained its skip nets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from fcnseg.core.checkpoint import load_checkpoint
from fcnseg.models import HEADS, list_models

from .config import TrainConfig


def stage_configs(config: TrainConfig) -> list[TrainConfig]:
    """The runs of ``--staged``: the coarsest head, then each finer one down to ``config.model``'s, in ``OUT/<head>``.

    Stage ``i`` trains at ``lr * stage_lr_factor**i`` and starts from the previous stage's best checkpoint (the
    first from ``init_from``, if any, and the backbone weights). The modern preset keeps one rate for every stage
    (``stage_lr_factor`` 1: each stage runs its own poly schedule from the base rate, and no measurement here shows
    a lower one to help); the paper preset divides it by 100 per stage, as the reference solvers do.
    """
    head, _, arch = config.model.partition("_")
    if head not in HEADS:
        raise ValueError(f"--staged trains FCN-32s, 16s, 8s in turn; {config.model} is not one of these heads")
    available = list_models(f"*_{arch}")  # SqueezeNet has no FCN-32s: its stages start at FCN-16s
    heads = [
        h for h, s in sorted(HEADS.items(), key=lambda kv: -kv[1]) if s >= HEADS[head] and f"{h}_{arch}" in available
    ]
    stages, previous = [], config.init_from
    for i, stage in enumerate(heads):
        folder = Path(config.out) / stage
        stages.append(
            replace(
                config,
                model=f"{stage}_{arch}",
                out=str(folder),
                staged=False,
                init_from=previous,
                lr=config.lr * config.stage_lr_factor**i,
                backbone_weights=config.backbone_weights if i == 0 else None,  # later: from the previous stage
            )
        )
        previous = str(folder / "best.pt")
    return stages


def finished_summary(folder: Path) -> dict | None:
    """The summary of a stage that ran to its end (its ``last.pt`` is at the step ``summary.json`` reports)."""
    summary, last = folder / "summary.json", folder / "last.pt"
    if not (summary.is_file() and last.is_file()):
        return None
    done = json.loads(summary.read_text())
    return done if load_checkpoint(last)["train_state"]["step"] == done["steps"] else None
