"""Training speed of ``fcnseg train`` in one process and under ``torchrun`` with N processes, same global batch.

    python benchmarks/distributed_speed.py                       # CPU, 2 processes (Gloo)
    python benchmarks/distributed_speed.py --device cuda --nproc 1 2 4 --size 512 --crop 320

Trains FCN-8s SqueezeNet 1.1 (random weights) on a generated shapes dataset and reports the median images/s of the
``metrics.jsonl`` rows (the global batch's images per second of training, validation excluded), dropping the first
row (start-up and warm-up). On a machine with fewer cores than processes x threads the figure measures the
overheads of distribution (process start, gradient all-reduce, one thread per process), not scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(nproc: int, data: Path, out: Path, args: argparse.Namespace) -> float:
    flags = [
        "train", "--model", args.model, "--dataset", "folder", "--data-root", str(data),
        "--classes", str(data / "classes.txt"), "--out", str(out), "--iters", str(args.iters),
        "--batch-size", str(args.batch // nproc), "--crop-size", str(args.crop), str(args.crop),
        "--val-split", "", "--val-every", str(args.iters), "--log-every", str(args.log_every),
        "--workers", str(args.workers), "--device", args.device, "--precision", args.precision,
    ]  # fmt: skip
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), "-m", "fcnseg"]
    command = [sys.executable, *(launcher if nproc > 1 else ["-m", "fcnseg"]), *flags]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(command, env=env, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r][1:]
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--model", default="fcn8s_squeezenet1_1")
    parser.add_argument("--batch", type=int, default=8, help="global batch (divided among the processes)")
    parser.add_argument("--size", type=int, default=192, help="side of the generated images")
    parser.add_argument("--crop", type=int, default=160, help="side of the training crops")
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from fcnseg.core.machine import processor_line
    from fcnseg.data.synthetic import write_shapes_dataset

    print(f"processor: {processor_line()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = write_shapes_dataset(Path(tmp, "data"), num_train=48, num_val=1, size=(args.size, args.size))
        print(f"load average at the start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
        rates = {n: run(n, data, Path(tmp, f"run{n}"), args) for n in args.nproc}
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    base = rates[args.nproc[0]]
    for n, rate in rates.items():
        print(f"{n} process(es), global batch {args.batch}: {rate:.1f} images/s ({rate / base:.2f}x)")


if __name__ == "__main__":
    main()
