"""The dataset flags of ``check-data``, ``train`` and ``eval``: the fields of :class:`fcnseg.data.DataOptions`."""

from __future__ import annotations

import argparse
from typing import Any

from fcnseg.core.flags import add_dataclass_flags, given_flags
from fcnseg.data.options import DATA_FIELDS, DataOptions, data_options_from


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The shared dataset flags, in one ``dataset`` group of ``parser``'s help."""
    group = parser.add_argument_group("dataset (the same flags in check-data, train and eval)")
    add_dataclass_flags(group, DataOptions, DATA_FIELDS)


def data_options(args: argparse.Namespace, base: dict[str, Any] | None = None) -> DataOptions:
    """The options given as flags over ``base`` (e.g. the ``config`` a checkpoint recorded) over the defaults."""
    return data_options_from((base or {}) | given_flags(args, DataOptions))
