"""``fcnseg export CHECKPOINT --format onnx|pt2|torchscript --out FILE``: a deployable model, checked against eager.

The exported model takes float32 RGB ``(N, 3, H, W)`` in ``[0, 1]`` (any N, H, W), normalises it itself and
returns logits ``(N, K, H, W)``; class names and colours are stored in the file as JSON metadata. ``pt2`` is a
``torch.export`` program (load it with ``torch.export.load``), PyTorch's successor to the deprecated TorchScript.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from fcnseg.cli.main import UserError
from fcnseg.inference.export import FORMATS, ExportCheckError, export_checkpoint


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="export a checkpoint to ONNX, torch.export (.pt2) or TorchScript", description=__doc__
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint file written by `fcnseg train`")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="output format (default onnx)")
    p.add_argument("--out", type=Path, required=True, help="output file, e.g. model.onnx, model.pt2 or model.pt")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest logit difference vs eager allowed")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    if not args.checkpoint.is_file():
        raise UserError(f"checkpoint '{args.checkpoint}' does not exist")
    try:
        diff = export_checkpoint(args.checkpoint, args.format, args.out, tolerance=args.tolerance)
    except ExportCheckError as err:
        hint = "try --format " + " or ".join(f for f in FORMATS if f != args.format)
        if math.isfinite(err.max_diff):
            hint = f"if a gap of {err.max_diff:.3g} is acceptable, pass --tolerance {2 * err.max_diff:.2g}; else {hint}"
        raise UserError(
            f"the {args.format} export of '{args.checkpoint}' does not reproduce the eager model: {err}. "
            f"Nothing was written to '{args.out}'; {hint}"
        ) from err
    print(f"wrote {args.out} ({args.format}); max |logit difference| vs eager: {diff:.3g}", file=sys.stdout)
    return 0
