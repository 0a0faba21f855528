"""The dataset options every command shares: one definition for ``check-data``, ``train`` and ``eval``.

Each field is a flag of those commands (``--mask-values``), a key of ``fcnseg train``'s config file and of the
``config`` a checkpoint records, so ``fcnseg eval RUN/best.pt --split test`` reads the data the way the run did.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from typing import Any

from fcnseg.core.flags import option_field
from fcnseg.data.errors import DataError

_FOLDER_ONLY = (
    "classes",
    "num_classes",
    "mask_values",
    "image_dir",
    "mask_dir",
    "mask_format",
    "void_index",
    "unknown_colors",
    "color_tolerance",
    "resize_masks",
    "bands",
)
_LAYOUT_ONLY = {"voc": ("sbd_root", "split_file"), "sbd": ("voc_root",)}
MASK_FORMATS = ("auto", "index", "rgb")


@dataclass
class DataOptions:
    """How to read a dataset: its layout and root, and how a folder dataset's masks and images are decoded."""

    dataset: str | None = option_field(
        None, "dataset layout: folder (your own data), voc, sbd, camvid, cityscapes, ade20k"
    )
    data_root: str = option_field("", "folder that holds the dataset", metavar="DIR")
    classes: str | None = option_field(
        None, "class file: 'name r g b' per line (grey colours r = g = b match grey-level masks)", metavar="FILE"
    )
    num_classes: int | None = option_field(None, "index masks without a class file: values 0..N-1 are the classes")
    mask_values: list[int] | None = dataclasses.field(
        default=None,
        metadata={
            "help": "single-channel masks: the stored value of each class in class order, e.g. 0 255 for binary masks",
            "metavar": "V",
        },
    )
    image_dir: str = option_field("images", "image folder under the root (a folder dataset)", metavar="DIR")
    mask_dir: str = option_field("masks", "mask folder under the root (a folder dataset)", metavar="DIR")
    mask_format: str = option_field("auto", "auto (the rule of docs/data.md), index or rgb", choices=MASK_FORMATS)
    void_index: int | None = option_field(None, "a stored mask value meaning void, besides 255", metavar="V")
    unknown_colors: str = option_field(
        "error", "mask colours and values neither a class nor void: an error, or void", choices=("error", "void")
    )
    color_tolerance: int = option_field(
        0,
        "match mask colours within N per channel of a class or void colour, and grey levels within N (JPEG masks)",
        metavar="N",
    )
    resize_masks: bool = option_field(
        False, "masks stored at another scale than their images (same aspect ratio): resize them (nearest)"
    )
    bands: int | None = option_field(None, "image bands the model takes (default: from the images)", metavar="B")
    sbd_root: str | None = option_field(None, "voc: SBD benchmark_RELEASE/dataset folder (aug splits)", metavar="DIR")
    voc_root: str | None = option_field(None, "sbd: VOCdevkit/VOC2012 folder (aug split)", metavar="DIR")
    split_file: str | None = option_field(None, "voc: list of image ids used instead of the split's", metavar="FILE")

    def builder_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`fcnseg.data.build_dataset` for the options that differ from the defaults.

        Raises:
            DataError: an option of another layout was set (e.g. ``--mask-values`` with ``--dataset camvid``).
        """
        defaults = DataOptions()
        allowed = _FOLDER_ONLY if self.dataset == "folder" else _LAYOUT_ONLY.get(self.dataset or "", ())
        options = {}
        for name in (*_FOLDER_ONLY, "sbd_root", "voc_root", "split_file"):
            value = getattr(self, name)
            if value == getattr(defaults, name):
                continue
            if name not in allowed:
                raise DataError(f"--{name.replace('_', '-')} does not apply to --dataset {self.dataset}")
            options[name] = list(value) if isinstance(value, tuple) else value
        return options

    def flags(self) -> list[str]:
        """The command-line words that reproduce these options (the non-default ones)."""
        words: list[str] = []
        defaults = DataOptions()
        for f in dataclasses.fields(DataOptions):
            value = getattr(self, f.name)
            if value == getattr(defaults, f.name) or value is None:
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                words.append(flag if value else f"--no-{f.name.replace('_', '-')}")
            elif isinstance(value, list | tuple):
                words += [flag, *map(str, value)]
            else:
                words += [flag, str(value)]
        return words

    def command(self, verb: str = "check-data") -> str:
        """``fcnseg VERB`` with these options, e.g. the ``check-data`` command that lists every problem."""
        return shlex.join(["fcnseg", verb, *self.flags()])


DATA_FIELDS = tuple(f.name for f in dataclasses.fields(DataOptions))
"""Names of the shared dataset options, in flag order."""


def data_options_from(values: dict[str, Any]) -> DataOptions:
    """A :class:`DataOptions` from any mapping (a checkpoint's ``config``, a namespace's dict): unknown keys ignored."""
    return DataOptions(**{k: v for k, v in values.items() if k in DATA_FIELDS})
