"""``fcnseg train --model NAME --dataset NAME --data-root DIR --out RUN_DIR [...]``: train an FCN."""

from __future__ import annotations

import argparse
import json
import os

from fcnseg.training.config import add_config_arguments, config_from_args


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(
        name,
        help="train an FCN on a labelled dataset",
        description="Train an FCN. Every flag is also a key of the optional --config file (YAML or TOML); "
        "flags given here override the file, which overrides --preset.",
    )
    add_config_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fcnseg.training.loop import train

    summary = train(config_from_args(args))
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 reports for all
        print(json.dumps(summary, indent=2))
    return 0
