"""``fcnseg models [PATTERN]``: list the model names that ``create_model`` and ``--model`` accept."""

from __future__ import annotations

import argparse

from fcnseg.models import list_models


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(name, help="list model names")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'fcn8s_*'")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for model in list_models(args.pattern):
        print(model)
    return 0
