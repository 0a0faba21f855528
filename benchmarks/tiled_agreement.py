"""Tiled vs whole-image agreement on real images: the share of pixels whose class is the same.

Run as ``.venv/bin/python benchmarks/tiled_agreement.py [--checkpoint runs/x/best.pt] [--tiles 256 320 320 320]``.
The model is a trained checkpoint or, with ``--backbone-weights``, an FCN-8s SqueezeNet with those ImageNet
features and a seeded random head (what a checkout without a trained model can run). Images are every
``--every``-th PNG of ``--images`` (CamVid test by default), segmented at full precision.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from fcnseg.core.machine import processor_line
from fcnseg.inference import tiling
from fcnseg.inference.predictor import Predictor
from fcnseg.models import create_model

ROOT = Path(__file__).resolve().parents[1]
CAMVID_TEST = ROOT.parent / "shared" / "data" / "camvid" / "test"


def predictor_factory(args: argparse.Namespace):
    if args.checkpoint is not None:
        return lambda **kw: Predictor.from_checkpoint(args.checkpoint, backend="torch", precision="fp32", **kw)
    torch.manual_seed(args.seed)
    model = create_model("fcn8s_squeezenet1_1", num_classes=args.num_classes, backbone_weights=args.backbone_weights)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():  # zero-initialised score layers: make the head random
                torch.nn.init.normal_(p, std=0.01)
    return lambda **kw: Predictor(model, precision="fp32", **kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="trained checkpoint (fcnseg train)")
    source.add_argument("--backbone-weights", type=Path, help="torchvision SqueezeNet 1.1 state dict; random head")
    parser.add_argument("--images", type=Path, default=CAMVID_TEST, help="folder of PNG images")
    parser.add_argument("--every", type=int, default=2, help="use every N-th image (default 2)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 256, 256, 320, 320, 320], help="H W pairs")
    parser.add_argument("--overlap", type=float, default=1 / 3)
    parser.add_argument(
        "--margin-fraction", type=float, help=f"override tiling.MARGIN_FRACTION ({tiling.MARGIN_FRACTION})"
    )
    parser.add_argument("--num-classes", type=int, default=11, help="classes of the random head (default 11)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.info("processor: %s", processor_line())
    if args.margin_fraction is not None:
        tiling.MARGIN_FRACTION = args.margin_fraction
    files = sorted(args.images.glob("*.png"))[:: args.every]
    if not files:
        parser.error(f"no PNG images in {args.images}")
    make = predictor_factory(args)
    start = time.perf_counter()
    whole = make()
    reference = [whole.predict(f) for f in files]
    tiles = list(zip(args.tiles[::2], args.tiles[1::2], strict=True))
    for tile in tiles:
        tiled = make(tile_size=tile, overlap=args.overlap)
        agreement = np.array([(tiled.predict(f) == ref).mean() for f, ref in zip(files, reference, strict=True)])
        logging.info(
            "tile %dx%d, overlap %.3g, margin fraction %.3g: %d images, agreement %.5f (worst image %.5f)",
            *tile,
            args.overlap,
            tiling.MARGIN_FRACTION,
            len(files),
            agreement.mean(),  # images of one size: the share of all pixels
            agreement.min(),
        )
    logging.info("%.0f s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
