"""``fcnseg quantize CHECKPOINT --calib-data IMAGES... --num-calib N --out MODEL.xml``: a static int8 model.

Post-training quantization (OpenVINO + NNCF): activation ranges are calibrated on N images taken evenly from the
sorted image files under ``--calib-data`` (files, folders or glob patterns; use training images). The result is an
OpenVINO IR, ``MODEL.xml`` and ``MODEL.bin``, that ``fcnseg predict MODEL.xml ...`` and
``Predictor.from_checkpoint("MODEL.xml")`` open like an export. Needs ``pip install openvino nncf``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from fcnseg.cli.main import UserError
from fcnseg.cli.predict import expand_inputs


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="static int8 post-training quantization (OpenVINO/NNCF)", description=__doc__)
    p.add_argument("checkpoint", type=Path, help="checkpoint file written by `fcnseg train`")
    p.add_argument("--calib-data", nargs="+", required=True, metavar="IMAGES", help="calibration images or folders")
    p.add_argument("--num-calib", type=int, default=100, metavar="N", help="calibration images used (default 100)")
    p.add_argument("--out", type=Path, required=True, help="output IR, e.g. model_int8.xml (.bin written beside)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    if not args.checkpoint.is_file():
        raise UserError(f"checkpoint '{args.checkpoint}' does not exist")
    missing = [m for m in ("openvino", "nncf") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"quantization needs {' and '.join(missing)}: run `pip install openvino nncf`")
    if args.num_calib < 1:
        raise UserError(f"--num-calib must be at least 1, got {args.num_calib}")
    if args.out.suffix != ".xml":
        raise UserError(f"--out must end in .xml (the weights go to the .bin beside it), got '{args.out}'")
    files = [f for f, _ in expand_inputs(args.calib_data) if f.is_file()]
    if not files:
        raise UserError(f"no calibration images found in {args.calib_data}")
    n = min(args.num_calib, len(files))
    chosen = [files[i * len(files) // n] for i in range(n)]  # evenly spread over the sorted files
    from fcnseg.inference.quantize import quantize_checkpoint

    result = quantize_checkpoint(args.checkpoint, chosen, args.out)
    print(
        f"wrote {args.out} (int8, calibrated on {n} images); argmax agreement with fp32 on calibration images: "
        f"{100 * result['agreement']:.2f}%",
        file=sys.stdout,
    )
    return 0
