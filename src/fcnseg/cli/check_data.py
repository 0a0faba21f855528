"""``fcnseg check-data``: scan a dataset, print its class statistics and every problem found.

Exit status 0 when the data is clean, 1 when problems were found (2 for usage errors, from the dispatcher).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from fcnseg.data import DATASETS, DataReport, check_dataset, median_frequency_weights


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    """Register the ``check-data`` subcommand."""
    p = subparsers.add_parser(
        name,
        help="scan a dataset for missing/unreadable files, size mismatches and bad labels; print class statistics",
        description=__doc__,
    )
    p.add_argument("--dataset", required=True, choices=list(DATASETS), help="dataset layout")
    p.add_argument("--data-root", required=True, help="dataset folder")
    p.add_argument(
        "--split",
        action="append",
        dest="splits",
        metavar="SPLIT",
        help="split to scan (repeatable; default: the dataset's labelled splits, or every split of a folder dataset)",
    )
    folder = p.add_argument_group("folder dataset")
    folder.add_argument(
        "--classes", metavar="FILE", help="class file: lines 'name r g b' (a 'void r g b' line optional)"
    )
    folder.add_argument("--num-classes", type=int, help="number of classes of index masks without a class file")
    folder.add_argument("--image-dir", default="images", help="image folder under the root (default: images)")
    folder.add_argument("--mask-dir", default="masks", help="mask folder under the root (default: masks)")
    folder.add_argument("--mask-format", choices=("auto", "index", "rgb"), default="auto", help="mask encoding")
    folder.add_argument("--void-index", type=int, help="stored mask value meaning void, besides 255")
    voc = p.add_argument_group("VOC / SBD derived splits")
    voc.add_argument("--sbd-root", help="SBD benchmark_RELEASE/dataset folder (voc splits aug, seg11valid)")
    voc.add_argument("--voc-root", help="VOCdevkit/VOC2012 folder (sbd split aug)")
    voc.add_argument("--split-file", help="list of image ids used instead of the voc split's own list")
    p.add_argument("--weights", action="store_true", help="also print median-frequency class weights")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)
    return p


def _dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.dataset == "folder":
        options = {
            "classes": args.classes,
            "num_classes": args.num_classes,
            "image_dir": args.image_dir,
            "mask_dir": args.mask_dir,
            "mask_format": args.mask_format,
            "void_index": args.void_index,
        }
    elif args.dataset == "voc":
        options = {"sbd_root": args.sbd_root, "split_file": args.split_file}
    elif args.dataset == "sbd":
        options = {"voc_root": args.voc_root}
    else:
        options = {}
    return {key: value for key, value in options.items() if value is not None}


def format_report(report: DataReport, weights: bool = False) -> str:
    """Render a check report as text: per-split counts and sizes, a class table, and the problems."""
    lines = [f"dataset {report.name} at {report.root}"]
    for split, sr in report.splits.items():
        stats = sr.size_stats()
        sizes = (
            f"sizes HxW min {stats['min_hw'][0]}x{stats['min_hw'][1]}, max {stats['max_hw'][0]}x{stats['max_hw'][1]}, "
            f"mean {stats['mean_hw'][0]:.0f}x{stats['mean_hw'][1]:.0f} ({stats['distinct_sizes']} distinct)"
            if stats
            else "no readable item"
        )
        lines.append(f"  {split}: {sr.num_items} items, {sr.num_ok} read without problems; {sizes}")
    if report.splits and report.classes is not None:
        counts = report.class_counts()
        freq = counts.frequencies
        total = max(counts.total_pixels, 1)
        weight_col = median_frequency_weights(counts) if weights and counts.pixels.any() else None
        lines.append(f"class pixel frequencies over {', '.join(report.splits)} (share of labelled pixels):")
        header = f"  {'id':>3}  {'class':<20} {'pixels':>12} {'freq':>8}" + (
            "  mf-weight" if weight_col is not None else ""
        )
        lines.append(header)
        for k, name in enumerate(report.classes.names):
            row = f"  {k:>3}  {name[:20]:<20} {counts.pixels[k]:>12d} {freq[k]:>8.4f}"
            if weight_col is not None:
                row += f"  {weight_col[k]:>9.4f}"
            lines.append(row)
        lines.append(f"  {255:>3}  {'(void)':<20} {counts.void_pixels:>12d} {counts.void_pixels / total:>8.4f} of all")
        if not np.all(counts.pixels):
            absent = [report.classes.names[k] for k in np.flatnonzero(counts.pixels == 0)]
            lines.append(f"  classes never seen: {', '.join(absent)}")
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        lines.extend(f"  {problem}" for problem in report.problems)
    else:
        lines.append("no problems found")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Scan the dataset; print the report; 0 if clean, 1 if any problem was found."""
    report = check_dataset(
        args.dataset, args.data_root, args.splits, progress=not args.no_progress, **_dataset_options(args)
    )
    print(format_report(report, weights=args.weights))
    return 0 if report.ok else 1
