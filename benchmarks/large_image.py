"""Segment one large photo with ``Predictor(tile_size="auto")`` and report time, tile size and peak memory.

Run as ``.venv/bin/python benchmarks/large_image.py [--model fcn8s_vgg16] [--size 4000 3000] [--memory-budget GB]``.

The script writes a synthetic JPEG (gradients and shapes) of ``--size`` (width height) to a temporary folder, then,
in a fresh child process so that nothing else counts, builds the model with seeded random weights (21 classes; the
zero-initialised score layers get random weights too, so the mask is not trivially all zeros), and runs the library
path a user runs: ``Predictor.predict(path)`` (decode, normalise, tile, blend, argmax) and ``save_mask_png``. It
reports the wall time of each step (and the CPU time and load average of the prediction: other processes on the
cores lengthen the wall time), the tile the memory budget led to, and the process's peak resident memory
(``VmHWM``), before and after inference. ``--memory-budget`` is the Predictor's ``memory_budget``: one forward
pass plus the band of blended logits; the runtime (importing torch and torchvision: the peak before inference),
the parameters and the image come on top.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

GIB = 2**30
TARGET_GIB = 4.0


def write_synthetic_jpeg(path: Path, width: int, height: int, seed: int = 0) -> None:
    """Gradients plus random rectangles and ellipses: JPEG-compressible, with edges for the net to react to."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = (255 * x).astype(np.uint8)
    rgb[..., 1] = (255 * y).astype(np.uint8)
    rgb[..., 2] = (127 + 127 * np.sin(6.0 * (x + y))).astype(np.uint8)
    image = Image.fromarray(rgb, mode="RGB")
    del rgb
    draw = ImageDraw.Draw(image)
    for _ in range(200):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(20, max(21, width // 6))), int(rng.integers(20, max(21, height // 6)))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=fill)
    image.save(path, format="JPEG", quality=90)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _gib(kib: int) -> float:
    return kib * 1024 / GIB


def child(args: argparse.Namespace) -> dict:
    """The measurement, in a fresh process: returns the figures as a dict."""
    import resource

    import torch

    from fcnseg.core.device import autocast_dtype
    from fcnseg.core.machine import processor_line
    from fcnseg.inference.images import save_mask_png
    from fcnseg.inference.predictor import Predictor
    from fcnseg.models import create_model

    stages = {"imports": _gib(_status_kib("VmRSS"))}
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=args.num_classes)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                torch.nn.init.normal_(p, std=0.01)
    predictor = Predictor(
        model,
        tile_size="auto",
        memory_budget=args.memory_budget * GIB,
        precision=args.precision,
        overlap=args.overlap,
    )
    build_s = time.perf_counter() - start
    stages["model built"] = _gib(_status_kib("VmRSS"))
    peak_build = _gib(_status_kib("VmHWM"))

    load = os.getloadavg()[0]  # other processes competing for the cores make the wall time longer
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    mask = predictor.predict(args.image)
    predict_s = time.perf_counter() - start
    done = resource.getrusage(resource.RUSAGE_SELF)
    predict_cpu_s = done.ru_utime - cpu.ru_utime + done.ru_stime - cpu.ru_stime
    stages["predicted"] = _gib(_status_kib("VmRSS"))

    start = time.perf_counter()
    out = args.image.with_name("mask.png")
    save_mask_png(mask, predictor.classes.colors, out)
    png_s = time.perf_counter() - start
    with Image.open(out) as written:
        assert written.size == (args.size[0], args.size[1]) and written.mode == "P", (written.size, written.mode)
    assert mask.shape == (args.size[1], args.size[0]), mask.shape

    tile = predictor.tile_size_for(*mask.shape)  # the decision predict() made (the memory probe is cached)
    return {
        "processor": processor_line(),
        "model": args.model,
        "image": f"{args.size[0]}x{args.size[1]}",
        "classes": args.num_classes,
        "precision": f"{args.precision} -> {autocast_dtype(args.precision, 'cpu') or 'fp32'}",
        "threads": torch.get_num_threads(),
        "memory_budget_gib": args.memory_budget,
        "tile": list(tile) if tile else None,
        "build_s": round(build_s, 1),
        "predict_s": round(predict_s, 1),
        "predict_cpu_s": round(predict_cpu_s, 1),
        "load_average_before": round(load, 2),
        "png_s": round(png_s, 1),
        "classes_in_mask": len(np.unique(mask)),
        "rss_gib": {k: round(v, 2) for k, v in stages.items()},
        "peak_rss_after_build_gib": round(peak_build, 2),
        "peak_rss_gib": round(_gib(_status_kib("VmHWM")), 2),
        "ru_maxrss_gib": round(_gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), 2),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fcn8s_vgg16", help="registered model name (default fcn8s_vgg16)")
    parser.add_argument("--size", type=int, nargs=2, default=[4000, 3000], metavar=("W", "H"), help="image size")
    parser.add_argument("--memory-budget", type=float, default=2.0, metavar="GB", help="Predictor budget (default 2)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--overlap", type=float, default=1 / 3)
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)  # set for the child process
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.image is not None:  # the child: measure and print one JSON line
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory(prefix="fcnseg-large-") as tmp:
        image = Path(tmp) / "photo.jpg"
        write_synthetic_jpeg(image, *args.size, seed=args.seed)
        print(f"wrote {args.size[0]}x{args.size[1]} JPEG ({image.stat().st_size / 2**20:.1f} MiB)", flush=True)
        run = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--image", str(image)],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            sys.exit(f"measurement failed:\n{run.stderr}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))
    verdict = "within" if result["peak_rss_gib"] < TARGET_GIB else "OVER"
    print(f"peak RSS {result['peak_rss_gib']:.2f} GiB: {verdict} the {TARGET_GIB:.0f} GiB target")


if __name__ == "__main__":
    main()
