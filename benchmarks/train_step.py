"""Time of one training step (forward, loss, backward, SGD update) in fp32 and bf16 autocast, eager and compiled.

Run as ``.venv/bin/python benchmarks/train_step.py [--models fcn4s_squeezenet1_1 fcn8s_resnet50] [--size 320 320]
[--batch 8] [--reps 3] [--variants fp32 bf16 fp32-compiled bf16-compiled] [--threads 2]``.

Every variant runs :class:`fcnseg.training.step.SGDStep`, the step ``fcnseg train`` runs (channels_last on the CPU,
the paper's parameter groups, autocast at the given precision: ``bf16`` is what ``fcnseg train`` runs on a CPU with
AVX512-BF16 or AMX), on a copy of the same seeded network and the same random batch. ``-compiled`` replaces the
network it runs by ``torch.compile(network)`` (inductor, default options): the first step compiles the forward and
the backward, and is reported apart (in wall time). The figure is the median of ``--reps`` steps after that first
one; the loss of the first step of each variant is printed too, so that a variant that changed the results beyond
bf16 rounding shows.
With ``--clock cpu`` the figures are the process's CPU time (all threads): with ``--threads 1``, the work of a step,
which other jobs on a shared machine barely change.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable

import torch

from benchlib.networks import build_network
from benchlib.training import random_batch
from fcnseg.core.machine import processor_line
from fcnseg.training.config import TrainConfig
from fcnseg.training.step import SGDStep

VARIANTS = ("fp32", "bf16", "fp32-compiled", "bf16-compiled")
LR = 1e-8  # a small rate keeps random networks finite; the step's cost does not depend on it


def time_variant(
    model: torch.nn.Module, variant: str, images: torch.Tensor, masks: torch.Tensor, reps: int, clock: Callable
) -> dict:
    """Seconds (by ``clock``) of the first step and of ``reps`` more, and the first step's loss."""
    precision, _, compiled = variant.partition("-")
    step = SGDStep(model, TrainConfig(precision=precision, device="cpu", lr=LR, iters=10**6), torch.device("cpu"))
    if compiled:
        step.network = torch.compile(step.network)
    start = time.perf_counter()  # wall time: inductor compiles in worker processes
    first_loss = step(images, masks, 0, 10**6).item()
    first = time.perf_counter() - start
    seconds = []
    for i in range(reps):
        start = clock()
        step(images, masks, i + 1, 10**6).item()
        seconds.append(clock() - start)
    return {"first_s": first, "median_s": statistics.median(seconds), "all_s": seconds, "first_loss": first_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["fcn4s_squeezenet1_1", "fcn8s_resnet50"])
    parser.add_argument("--size", type=int, nargs=2, default=[320, 320], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3, help="timed steps after the first (default 3)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="wall time, or the process's CPU time (see above)"
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    print(f"processor: {processor_line()}; {args.threads} threads, torch {torch.__version__}; {args.clock} time")
    images, masks = random_batch(args.batch, *args.size, 21, seed=0)
    for name in args.models:
        network = build_network(name, "default" if "_vgg" in name else None, num_classes=21).train()
        print(f"{name}, batch {args.batch}, {args.size[0]}x{args.size[1]}:", flush=True)
        base = None
        for variant in args.variants:
            load = os.getloadavg()[0]
            r = time_variant(copy.deepcopy(network), variant, images, masks, args.reps, clock)
            base = base or r["median_s"]
            steps = ", ".join(f"{s:.2f}" for s in r["all_s"])
            print(
                f"  {variant:<14} {r['median_s']:6.2f} s/step ({steps}; first {r['first_s']:.1f} s) "
                f"{args.batch / r['median_s']:5.2f} img/s {base / r['median_s']:5.2f}x  "
                f"first loss {r['first_loss']:.6f}  (load {load:.1f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
