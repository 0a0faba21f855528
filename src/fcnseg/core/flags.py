"""Command-line flags from dataclass fields: one definition gives the flag, its help and the config-file key.

A field ``name: T = field(default=..., metadata={"help": ...})`` becomes ``--name`` (underscores as dashes), typed
from the real annotation (``typing.get_type_hints``): ``bool`` is ``--name`` (``--name/--no-name`` when it defaults
to true), a ``tuple``/``list`` takes
several values (``'none'`` disables a tuple), ``int``/``float``/``str`` are parsed as such; ``metadata["choices"]``
limits the values. Every flag's default is left unset (``None``), so that callers can tell a given flag from a
default and resolve precedence (field default < preset < config file < command line).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def _base_type(hint: Any) -> Any:
    """``int | None`` -> ``int``; other hints unchanged."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return hint


def _none_or(cast: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else cast(text)

    parse.__name__ = getattr(cast, "__name__", "value")  # argparse names the type in its errors
    return parse


def add_dataclass_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, names: typing.Iterable[str] | None = None
) -> None:
    """Add one flag per field of dataclass ``cls`` (or of the fields ``names``, in that order)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names if names is not None else fields:
        f = fields[name]
        flag = "--" + name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = default not in (None, "", (), False)
        help_text = f.metadata.get("help", "") + (f" (default: {default})" if shown else "")
        kind = _base_type(hints[name])
        origin = typing.get_origin(kind)
        choices = f.metadata.get("choices")
        if kind is bool and default:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind is bool:
            parser.add_argument(flag, action="store_const", const=True, default=None, help=help_text)
        elif origin in (tuple, list):
            item = next((a for a in typing.get_args(kind) if a is not Ellipsis), str)
            nargs = "+" if origin is list else len(typing.get_args(kind))
            metavar = f.metadata.get("metavar")
            if origin is tuple:
                nargs, help_text = "+", help_text + "; 'none' to disable"
            parser.add_argument(flag, nargs=nargs, type=_none_or(item), default=None, help=help_text, metavar=metavar)
        else:
            parser.add_argument(
                flag,
                type=kind if kind in (int, float) else str,
                choices=choices,
                default=None,
                help=help_text,
                metavar=f.metadata.get("metavar"),
            )


def given_flags(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line (flags left unset are ``None``)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def option_field(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field carrying its flag's help (and optional ``choices``, ``metavar``, ``group``)."""
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return dataclasses.field(default=default, metadata={"help": help, **metadata})
