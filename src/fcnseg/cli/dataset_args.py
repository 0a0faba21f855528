"""Dataset flags shared by the commands that read a dataset (``check-data``, ``eval``)."""

from __future__ import annotations

import argparse
from typing import Any

from fcnseg.data import DATASETS

_FOLDER_FLAGS = (
    "classes",
    "num_classes",
    "image_dir",
    "mask_dir",
    "mask_format",
    "void_index",
    "unknown_colors",
    "color_tolerance",
)
_VOC_FLAGS = {"voc": ("sbd_root", "split_file"), "sbd": ("voc_root",)}


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dataset``, ``--data-root`` and the options of the folder, VOC and SBD layouts."""
    parser.add_argument("--dataset", required=True, choices=list(DATASETS), help="dataset layout")
    parser.add_argument("--data-root", metavar="DIR", required=True, help="folder that holds the dataset")
    folder = parser.add_argument_group("folder dataset")
    folder.add_argument(
        "--classes", metavar="FILE", help="class file: lines 'name r g b' (optional 'void r g b' lines)"
    )
    folder.add_argument("--num-classes", type=int, help="number of classes of index masks without a class file")
    folder.add_argument("--image-dir", metavar="DIR", help="image folder under the root (default: images)")
    folder.add_argument("--mask-dir", metavar="DIR", help="mask folder under the root (default: masks)")
    folder.add_argument("--mask-format", choices=("auto", "index", "rgb"), help="mask encoding (default: auto)")
    folder.add_argument("--void-index", metavar="V", type=int, help="stored mask value meaning void, besides 255")
    folder.add_argument(
        "--unknown-colors",
        choices=("error", "void"),
        help="mask colours that are neither a class nor void: an error (default) or void",
    )
    folder.add_argument(
        "--color-tolerance",
        metavar="N",
        type=int,
        help="match mask colours within N per channel of a class or void colour, e.g. for JPEG masks (default: 0)",
    )
    voc = parser.add_argument_group("VOC / SBD derived splits")
    voc.add_argument(
        "--sbd-root", metavar="DIR", help="SBD benchmark_RELEASE/dataset folder (voc splits aug, seg11valid)"
    )
    voc.add_argument("--voc-root", metavar="DIR", help="VOCdevkit/VOC2012 folder (sbd split aug)")
    voc.add_argument("--split-file", metavar="FILE", help="list of image ids used instead of the voc split's own list")


def dataset_options(args: argparse.Namespace, *, num_classes: int | None = None) -> dict[str, Any]:
    """Builder options for ``build_dataset`` from the flags; ``num_classes`` is the default for folder index masks.

    Raises:
        ValueError: a layout-specific flag was given for another layout.
    """
    allowed = _FOLDER_FLAGS if args.dataset == "folder" else _VOC_FLAGS.get(args.dataset, ())
    given = [k for k in (*_FOLDER_FLAGS, "sbd_root", "voc_root", "split_file") if getattr(args, k, None) is not None]
    wrong = [f"--{k.replace('_', '-')}" for k in given if k not in allowed]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} do not apply to --dataset {args.dataset}")
    options = {k: getattr(args, k) for k in given}
    if args.dataset == "folder" and args.classes is None and args.num_classes is None and num_classes is not None:
        options["num_classes"] = num_classes
    return options
