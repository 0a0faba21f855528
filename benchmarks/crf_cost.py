"""Cost of the dense CRF (fcnseg.inference.crf) against the model's own forward pass, per image.

Run as ``.venv/bin/python benchmarks/crf_cost.py [--checkpoint runs/camvid/best.pt] [--device cuda]``. Sizes: CamVid's
360x480 test images and the same images resized to 500x500 (VOC's size). The forward pass is timed on the path
``fcnseg predict`` takes by default (``Predictor.from_checkpoint``: OpenVINO on the CPU when installed, else the
PyTorch fast path; ``--backend`` to choose), the CRF on those logits, with the default :class:`CRFParams` unless
``--crf-iters`` says otherwise. Without a checkpoint the model is ``--model`` with random weights (the cost of a
forward pass does not depend on the weights). Prints the processor, the load average and the median of ``--reps``
timings (images x reps) and their minimum, the figure least disturbed by other load.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fcnseg.core.checkpoint import make_checkpoint, save_checkpoint
from fcnseg.core.machine import processor_line
from fcnseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from fcnseg.inference.crf import CRFParams, dense_crf
from fcnseg.inference.predictor import Predictor
from fcnseg.models import create_model

ROOT = Path(__file__).resolve().parents[1]
CAMVID_TEST = ROOT.parent / "shared" / "data" / "camvid" / "test"


def _times_ms(fn, reps: int, device: torch.device) -> list[float]:
    fn()  # warm-up (OpenVINO compiles, oneDNN picks kernels)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return [1e3 * t for t in times]


def _predictor(args: argparse.Namespace, folder: str) -> Predictor:
    path = args.checkpoint
    if path is None:  # a random model of the default architecture, saved so that the default path can open it
        model = create_model(args.model, num_classes=args.num_classes)
        path = Path(folder) / "random.pt"
        classes = {"names": [f"class_{i}" for i in range(args.num_classes)], "colors": [[0, 0, 0]] * args.num_classes}
        save_checkpoint(make_checkpoint(model, classes=classes, mean=IMAGENET_MEAN, std=IMAGENET_STD), path)
    return Predictor.from_checkpoint(path, args.device, backend=args.backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="trained checkpoint (default: a random --model)")
    parser.add_argument("--model", default="fcn4s_squeezenet1_1", help="architecture without a checkpoint")
    parser.add_argument("--num-classes", type=int, default=11)
    parser.add_argument("--backend", default="auto", help="auto (fcnseg predict's default), torch, openvino, ...")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=Path, default=CAMVID_TEST, help="folder of PNG images")
    parser.add_argument("--count", type=int, default=3, help="images timed per size (default 3)")
    parser.add_argument("--reps", type=int, default=3, help="timings per image (default 3)")
    parser.add_argument("--crf-iters", type=int, help="mean-field iterations (default: CRFParams')")
    parser.add_argument("--threads", type=int, help="torch threads (the CRF's; OpenVINO keeps its own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.info("processor: %s; torch threads %d; load %s", processor_line(), torch.get_num_threads(),
                 " ".join(f"{v:.1f}" for v in os.getloadavg()))  # fmt: skip
    params = CRFParams() if args.crf_iters is None else CRFParams(iterations=args.crf_iters)
    files = sorted(args.images.glob("*.png"))[: args.count]
    if not files:
        parser.error(f"no PNG images in {args.images}")
    with tempfile.TemporaryDirectory() as folder:
        predictor = _predictor(args, folder)
        used = f"{predictor.backend} {predictor.computes_in} on {predictor.device}"
        logging.info("forward: %s; CRF: %s", used, params)
        for size in (None, (500, 500)):
            forward, crf = [], []
            for file in files:
                image = Image.open(file).convert("RGB")
                image = image if size is None else image.resize(size[::-1], Image.BILINEAR)
                logits = predictor.logits([image])
                colours = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].to(logits.device)
                forward += _times_ms(lambda im=image: predictor.logits([im]), args.reps, logits.device)
                crf += _times_ms(lambda lg=logits, c=colours: dense_crf(lg, c, params), args.reps, logits.device)
            h, w = size or np.array(Image.open(files[0])).shape[:2]
            logging.info("%dx%d: forward %.0f ms (min %.0f), CRF %.0f ms (min %.0f) per image; median and minimum of "
                         "%d images x %d reps", h, w, statistics.median(forward), min(forward), statistics.median(crf),
                         min(crf), len(files), args.reps)  # fmt: skip


if __name__ == "__main__":
    main()
