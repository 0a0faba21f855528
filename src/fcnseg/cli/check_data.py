"""``fcnseg check-data``: scan a dataset, print its class statistics and every problem found.

Exit status 0 when the data is clean, 1 when problems were found (2 for usage errors, from the dispatcher).
"""

from __future__ import annotations

import argparse

from fcnseg.cli.dataset_args import add_dataset_arguments, data_options
from fcnseg.cli.main import UserError
from fcnseg.data import IGNORE_INDEX, DataReport, check_dataset, median_frequency_weights


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    """Register the ``check-data`` subcommand."""
    p = subparsers.add_parser(
        name,
        help="scan a dataset for missing/unreadable files, size mismatches and bad labels; print class statistics",
        description=__doc__,
    )
    add_dataset_arguments(p)
    p.add_argument(
        "--split",
        action="append",
        dest="splits",
        metavar="SPLIT",
        help="split to scan (repeatable; default: the dataset's labelled splits, or every split of a folder dataset)",
    )
    p.add_argument("--weights", action="store_true", help="also print median-frequency class weights")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)
    return p


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
    lines.extend(band_lines(report))
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
        void = counts.void_pixels
        lines.append(f"  {IGNORE_INDEX:>3}  {'(void)':<20} {void:>12d} {void / total:>8.4f} of all")
    for split, reading in report.readings.items():
        if reading:
            lines.append(f"masks of {split}: {reading}")
    lines.extend(_color_lines(report))
    lines.extend(_problem_lines(report))
    return "\n".join(lines)


def _problem_lines(report: DataReport) -> list[str]:
    """Problems one per line, masks stored at another scale as one group, then warnings."""
    errors = [p for p in report.problems if p.kind in ("error", "labels")]
    scaled = [p for p in report.problems if p.kind == "scale"]
    warnings = [p for p in report.problems if p.kind == "warning"]
    lines = []
    if errors or scaled:
        lines.append(f"{len(errors) + len(scaled)} problem(s):")
        lines.extend(f"  {problem}" for problem in errors)
    if scaled:
        lines.append(f"  {len(scaled)} mask(s) stored at another scale than their images, with the same aspect "
                     f"ratio; e.g. {scaled[0]}")  # fmt: skip
    lines.extend(f"warning: {problem}" for problem in warnings)
    if not errors and not scaled:
        lines.append("no problems found")
    return lines


def band_lines(report: DataReport) -> list[str]:
    """The band count of the images and the per-band mean and std a model of them is normalised with."""
    if report.bands is None:
        return []
    kind = {1: "1 band (grey)", 3: "3 bands (RGB)"}.get(report.bands, f"{report.bands} bands")
    norm = report.normalization()
    if norm is None:
        return [f"images: {kind}; none read, so no per-band mean and std"]
    if report.bands == 3:
        source = "ImageNet's (RGB images are read as 8-bit)"
    else:
        images = sum(sr.num_ok for sr in report.splits.values())
        source = f"of the {images} images read, [0, 1] scale (training takes them from its training split)"
    mean, std = ("[" + ", ".join(f"{v:.4f}" for v in values) + "]" for values in norm)
    return [f"images: {kind}; per-band normalisation {source}:", f"  mean {mean}", f"  std  {std}"]


def _color_lines(report: DataReport) -> list[str]:
    """Unknown colours with their pixel and file counts over the dataset, and colours matched by tolerance."""
    lines = []
    if report.unknown_pixels:
        lines.append("unknown mask colours over the dataset (neither a class nor void), most frequent first:")
        for color, pixels in report.unknown_pixels.most_common(50):
            files = report.unknown_files[color]
            lines.append(f"  rgb {color[0]:>3} {color[1]:>3} {color[2]:>3}: {pixels:>12d} px in {files} file(s)")
        if len(report.unknown_pixels) > 50:
            lines.append(f"  ... and {len(report.unknown_pixels) - 50} more colours")
    if report.near_colors:
        total = sum(report.near_colors.values())
        lines.append(f"{total} px of near colours matched within --color-tolerance:")
        for (seen, matched), pixels in report.near_colors.most_common(20):
            lines.append(f"  rgb {seen} -> {matched}: {pixels} px")
    return lines


def run(args: argparse.Namespace) -> int:
    """Scan the dataset; print the report; 0 if clean, 1 if any problem was found."""
    options = data_options(args)
    if not options.dataset or not options.data_root:
        raise UserError("give --dataset (folder for your own images/ and masks/ folders) and --data-root DIR")
    report = check_dataset(
        options.dataset, options.data_root, args.splits, progress=not args.no_progress, **options.builder_options()
    )
    print(format_report(report, weights=args.weights))
    return 0 if report.ok else 1
