"""Entry point of the ``fcnseg`` command: ``fcnseg {demo,train,eval,predict,export,check-data,bench} ...``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Subcommand name -> module under fcnseg.cli that defines ``add_parser(subparsers)`` and ``run(args) -> int``.
SUBCOMMANDS = {
    "demo": "demo",
    "train": "train",
    "eval": "evaluate",
    "predict": "predict",
    "export": "export",
    "check-data": "check_data",
    "bench": "bench",
    "models": "models",
}


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcnseg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        importlib.import_module(f"fcnseg.cli.{module_name}").add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.run(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as err:
        print(f"fcnseg {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
