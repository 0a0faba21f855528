"""Entry point of the ``fcnseg`` command: ``fcnseg {demo,train,eval,predict,export,quantize,check-data,bench} ...``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NoReturn

from fcnseg.core.suggest import did_you_mean
from fcnseg.training.guards import TrainingError

# Subcommand name -> module under fcnseg.cli that defines ``add_parser(subparsers)`` and ``run(args) -> int``.
SUBCOMMANDS = {
    "demo": "demo",
    "train": "train",
    "eval": "evaluate",
    "predict": "predict",
    "export": "export",
    "quantize": "quantize",
    "check-data": "check_data",
    "bench": "bench",
    "models": "models",
    "serve": "serve",
    "convert": "convert",
}


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (exit status 2) and suggest the closest valid name."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def _check_value(self, action: argparse.Action, value: object) -> None:
        if action.choices is not None and value not in action.choices:
            names = [str(c) for c in action.choices]
            shown = ", ".join(names) if len(names) <= 12 else ", ".join(names[:12]) + ", ..."
            hint = did_you_mean(str(value), names)
            raise argparse.ArgumentError(action, f"invalid choice {value!r}{hint} (choose from {shown})")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse's, but an unrecognized option is named with the closest option of its subcommand."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            options = _subcommand_options(self, getattr(parsed, "command", None))
            hint = _closest_option(extra[0].split("=")[0], options) if extra[0].startswith("-") else ""
            self.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
        return parsed


def _closest_option(typo: str, options: list[str]) -> str:
    """The option ``typo`` extends or abbreviates (``--lr-rate`` -> ``--lr``), else the closest by difflib."""
    related = [o for o in options if o.startswith("--") and (typo.startswith(o + "-") or o.startswith(typo))]
    return f"; did you mean {max(related, key=len)!r}?" if related else did_you_mean(typo, options)


def _subcommand_options(parser: argparse.ArgumentParser, command: str | None) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return list(action.choices[command]._option_string_actions)
    return list(parser._option_string_actions)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``fcnseg`` parser; with ``only``, just that subcommand's options are built (the others are bare names).

    Each subcommand's module is imported to build its options, so ``only`` keeps ``fcnseg predict`` from loading
    the training and evaluation code (and torchvision) at every start.
    """
    parser = Parser(prog="fcnseg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        if only is None or name == only:
            importlib.import_module(f"fcnseg.cli.{module_name}").add_parser(sub, name)
        else:
            sub.add_parser(name)
    return parser


def _subcommand(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names, if its first argument after the global options is one."""
    words = [a for a in argv if a not in ("-v", "--verbose")]
    return words[0] if words and words[0] in SUBCOMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_subcommand(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.run(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as err:
        print(f"fcnseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:
        print(f"fcnseg {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fcnseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
