"""Peak memory of ``fcnseg predict`` on one large photo, per backend: the maximum resident set size of the process.

Run as ``.venv/bin/python benchmarks/predict_memory.py [--model fcn8s_squeezenet1_1] [--size 4000 3000]
[--backends torch openvino] [-- EXTRA fcnseg predict OPTIONS]``.

It writes a checkpoint of the model with seeded random weights (21 classes, the zero-initialised score layers random
too) as ``fcnseg train`` does, a synthetic JPEG of ``--size`` (width height; gradients and shapes, see
``large_image.py``), converts the checkpoint to OpenVINO once (the cache ``fcnseg predict`` fills on its first run,
so the figure is that of every later run), then runs ``/usr/bin/time -v fcnseg predict CKPT PHOTO --out DIR
--backend B`` for each backend and reports the "Maximum resident set size" and the wall time. The whole process
counts: Python, PyTorch, the runtime, the model, the decoded image, inference, the mask PNG and the overlay JPEG.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from large_image import write_synthetic_jpeg  # a sibling script: the folder of the script run is on sys.path

from benchlib.networks import build_network
from fcnseg.core.checkpoint import make_checkpoint, save_checkpoint
from fcnseg.core.machine import processor_line
from fcnseg.data.classes import as_class_info
from fcnseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from fcnseg.inference.export import cached_openvino

FCNSEG = Path(sys.executable).with_name("fcnseg")


def write_checkpoint(name: str, path: Path, seed: int) -> None:
    """A checkpoint of ``name`` with seeded random weights and 21 VOC-coloured classes."""
    model = build_network(name, "default" if "_vgg" in name else None, num_classes=21, seed=seed)
    info = as_class_info([f"class_{i}" for i in range(21)])
    classes = {"names": list(info.names), "colors": [list(c) for c in info.colors]}
    save_checkpoint(make_checkpoint(model, classes=classes, mean=IMAGENET_MEAN, std=IMAGENET_STD), path)


def peak_rss(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """``(maximum resident set size in MiB, wall seconds, output)`` of ``command`` under ``/usr/bin/time -v``."""
    run = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env, check=False)
    if run.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{run.stdout}\n{run.stderr}")
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", run.stderr).group(1)
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(clock.split(":"))))
    return kib / 1024, seconds, run.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fcn8s_squeezenet1_1", help="registered model (default fcn8s_squeezenet1_1)")
    parser.add_argument("--size", type=int, nargs=2, default=[4000, 3000], metavar=("W", "H"), help="photo size")
    parser.add_argument("--backends", nargs="+", default=["torch", "openvino"], choices=("torch", "openvino"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("extra", nargs="*", help="more `fcnseg predict` options, after --")
    args = parser.parse_args()
    print(f"processor: {processor_line()}; torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fcnseg-memory-") as tmp:
        folder = Path(tmp)
        env = dict(os.environ, FCNSEG_CACHE=str(folder / "cache"))
        os.environ["FCNSEG_CACHE"] = env["FCNSEG_CACHE"]
        ckpt, photo = folder / "model.pt", folder / "photo.jpg"
        write_checkpoint(args.model, ckpt, args.seed)
        write_synthetic_jpeg(photo, *args.size, seed=args.seed)
        if "openvino" in args.backends:
            cached_openvino(ckpt)  # what the first `fcnseg predict` run does once
        print(f"{args.model}, {args.size[0]}x{args.size[1]} JPEG, `fcnseg predict` {' '.join(args.extra)}", flush=True)
        for backend in args.backends:
            command = [str(FCNSEG), "predict", str(ckpt), str(photo), "--out", str(folder / backend)]
            mib, seconds, out = peak_rss([*command, "--backend", backend, *args.extra], env)
            used = next((line for line in out.splitlines() if line.startswith("backend:")), "")
            print(f"  --backend {backend:<9} peak RSS {mib:7.0f} MiB, {seconds:5.1f} s  ({used})", flush=True)


if __name__ == "__main__":
    main()
