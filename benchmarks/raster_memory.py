"""Peak memory and time of ``fcnseg predict`` on generated GeoTIFFs of growing size (docs/geo.md).

For each size, a tiled (512), DEFLATE-compressed 3-band uint8 GeoTIFF in UTM zone 33N with a nodata border is
written block by block (never held whole), and ``fcnseg predict`` runs on it in a fresh process; the child's peak
resident memory (``ru_maxrss``) and wall time are reported. Memory bounded by the window shows as the same peak for
every size. The model is FCN-8s on SqueezeNet 1.1 with 21 classes and random weights (the time does not depend on
the weights).

    python benchmarks/raster_memory.py --sizes 4096 8192 --tile 1024
    python benchmarks/raster_memory.py --sizes 9492x8616 --work /tmp/geo_bench   # width x height
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.windows import Window

from fcnseg.core.checkpoint import make_checkpoint, save_checkpoint
from fcnseg.data.classes import as_class_info
from fcnseg.models import create_model

BLOCK = 512
CLASSES = 21


def processor() -> str:
    """The CPU's model name, from lscpu (or the platform's description)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def raster_size(text: str) -> tuple[int, int]:
    """``"4096"`` -> ``(4096, 4096)``; ``"9492x8616"`` (width x height) -> ``(8616, 9492)``, as ``(height, width)``."""
    width, _, height = text.partition("x")
    return int(height or width), int(width)


def write_scene(path: Path, height: int, width: int | None = None) -> None:
    """A ``height x width`` 3-band uint8 tiled GeoTIFF: smooth stripes and blobs, a nodata (0) border of 1/16 of the
    shorter side."""
    width = width or height
    profile = {"driver": "GTiff", "height": height, "width": width, "count": 3, "dtype": "uint8", "nodata": 0}
    profile |= {"crs": "EPSG:32633", "transform": Affine(10.0, 0, 400_000.0, 0, -10.0, 5_000_000.0)}
    profile |= {"tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "BIGTIFF": "YES"}
    border = min(height, width) // 16
    with rasterio.open(path, "w", **profile) as ds:
        for top in range(0, height, BLOCK):
            for left in range(0, width, BLOCK):
                h, w = min(BLOCK, height - top), min(BLOCK, width - left)
                y, x = np.mgrid[top : top + h, left : left + w].astype(np.float32)
                bands = [np.sin(x / 97.0) + np.cos(y / 131.0), np.sin((x + y) / 211.0), np.cos(x * y / 5e6)]
                block = np.stack([(b * 60 + 128).clip(1, 255) for b in bands]).astype(np.uint8)
                block[:, (y < border) | (x < border)] = 0
                ds.write(block, window=Window(left, top, w, h))


def run_predict(model: Path, scene: Path, out: Path, tile: int, extra: list[str]) -> tuple[float, float]:
    """``(peak RSS in MiB, seconds)`` of ``fcnseg predict`` on ``scene`` in a child process."""
    code = (
        "import resource, sys, time\n"
        "from fcnseg.cli.main import main\n"
        "t = time.perf_counter()\n"
        "rc = main(sys.argv[1:])\n"
        "print('SECONDS', time.perf_counter() - t)\n"
        "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    argv = ["predict", str(model), str(scene), "--out", str(out), "--tile-size", str(tile), str(tile), *extra]
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr)
    fields = dict(line.split() for line in result.stdout.splitlines() if line.startswith(("SECONDS", "PEAK_KIB")))
    return float(fields["PEAK_KIB"]) / 1024, float(fields["SECONDS"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", type=raster_size, nargs="+", default=[(4096, 4096), (8192, 8192)], help="rasters: N (square) or WxH"
    )
    parser.add_argument("--tile", type=int, default=1024, help="window side (--tile-size)")
    parser.add_argument("--work", type=Path, help="folder for the rasters (default: a temporary one)")
    parser.add_argument("predict_flags", nargs="*", help="more `fcnseg predict` flags, after --")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="raster-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    model = create_model("fcn8s_squeezenet1_1", num_classes=CLASSES).eval()
    info = as_class_info([f"class_{i}" for i in range(CLASSES)])
    classes = {"names": list(info.names), "colors": [list(c) for c in info.colors]}
    ckpt = make_checkpoint(model, classes=classes, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    save_checkpoint(ckpt, work / "model.pt")
    print(f"processor: {processor()} ({os.cpu_count()} logical CPUs); window {args.tile}; {args.predict_flags}")
    write_scene(work / "warmup.tif", 1024)
    run_predict(work / "model.pt", work / "warmup.tif", work / "out", args.tile, args.predict_flags)  # converts once
    print(f"{'raster':>13} {'megapixels':>10} {'write s':>8} {'predict s':>9} {'s/MP':>6} {'peak RSS MiB':>12}")
    for height, width in args.sizes:
        scene = work / f"scene_{width}x{height}.tif"
        start = time.perf_counter()
        if not scene.exists():
            write_scene(scene, height, width)
        written = time.perf_counter() - start
        peak, seconds = run_predict(work / "model.pt", scene, work / "out", args.tile, args.predict_flags)
        mp = height * width / 1e6
        print(f"{width:>6}x{height:<6} {mp:>10.1f} {written:>8.1f} {seconds:>9.1f} {seconds / mp:>6.2f} {peak:>12.0f}")
        if args.work is None:
            scene.unlink()
        (work / "out" / scene.name).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
