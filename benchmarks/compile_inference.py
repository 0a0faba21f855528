"""``torch.compile`` (inductor) against fcnseg's PyTorch fast path and plain eager autocast, for inference.

Run as ``.venv/bin/python benchmarks/compile_inference.py [--model fcn8s_resnet50] [--size 500 500]
[--new-size 480 640] [--reps 7] [--threads 2] [--clock wall|cpu]``.

On one seeded network (21 classes, random score layers), batch 1, bf16 (``precision="bf16"``), channels_last:

- ``fast``: :func:`fcnseg.inference.optimize.prepare_for_inference`, what ``Predictor(model)`` runs (convolutions
  packed once for oneDNN, batch norms folded, activations and residual adds fused, head in fp32).
- ``fast, blocks unfused``: the same without the ``torch.fx`` fusion of residual blocks (the convolutions that a
  ``Sequential`` holds are still fused), what the fast path ran before it.
- ``eager``: the model under ``torch.autocast("cpu", torch.bfloat16)``, ``inference_mode``.
- ``compiled``: ``torch.compile`` of the model (inductor, with ``freezing`` and weight prepacking, the settings for
  CPU inference) under the same autocast.

It reports the first call of each (for ``compiled``: the compilation) and the first call at ``--new-size`` (a
recompilation for dynamic shapes) in wall time, and the median of ``--reps`` interleaved calls (wall time, or with
``--clock cpu`` the process's CPU time: with ``--threads 1`` a figure that other jobs on the machine barely move).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch._inductor.config as inductor_config

from benchlib.networks import build_network
from fcnseg.core.machine import processor_line
from fcnseg.inference import optimize
from fcnseg.inference.engine import segment_logits
from fcnseg.inference.optimize import prepare_for_inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fcn8s_resnet50")
    parser.add_argument("--size", type=int, nargs=2, default=[500, 500], metavar=("H", "W"))
    parser.add_argument("--new-size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"processor: {processor_line()}; {args.threads} threads, torch {torch.__version__}; {args.clock} time")
    model = build_network(args.model, "default" if "_vgg" in args.model else None, num_classes=21)
    x = torch.randn(1, 3, *args.size).contiguous(memory_format=torch.channels_last)
    fast = prepare_for_inference(copy.deepcopy(model), "cpu", "bf16")
    fuse_blocks, optimize._fuse_blocks = optimize._fuse_blocks, lambda *args: 0  # the fast path without block fusion
    unfused = prepare_for_inference(copy.deepcopy(model), "cpu", "bf16")
    optimize._fuse_blocks = fuse_blocks
    eager = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()
    inductor_config.freezing = True
    inductor_config.cpp.weight_prepack = True
    compiled = torch.compile(copy.deepcopy(model).to(memory_format=torch.channels_last).eval())

    def autocast_call(module: torch.nn.Module):
        def call(t: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
                return module(t).float()

        return call

    runs = {
        "fast": lambda t: segment_logits(fast, t, precision="bf16"),
        "fast, blocks unfused": lambda t: segment_logits(unfused, t, precision="bf16"),
        "eager": autocast_call(eager),
        "compiled": autocast_call(compiled),
    }
    for name, run in runs.items():  # first calls in wall time: inductor compiles in worker processes
        start = time.perf_counter()
        run(x)
        print(f"  {name:<20} first call {time.perf_counter() - start:7.1f} s", flush=True)
    start = time.perf_counter()
    runs["compiled"](torch.randn(1, 3, *args.new_size).contiguous(memory_format=torch.channels_last))
    new_size = f"{args.new_size[0]}x{args.new_size[1]}"
    print(f"  compiled first call at {new_size}: {time.perf_counter() - start:.1f} s", flush=True)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.reps):
        for name, run in runs.items():
            start = clock()
            run(x)
            seconds[name].append(clock() - start)
    reference = runs["fast"](x)
    for name, s in seconds.items():
        out = runs[name](x)
        same = (out.argmax(1) == reference.argmax(1)).float().mean().item()
        print(
            f"  {name:<20} median {1000 * statistics.median(s):7.1f} ms  "
            f"(max |logit - fast| {(out - reference).abs().max().item():.3f}, argmax agreement {100 * same:.2f}%)"
        )


if __name__ == "__main__":
    main()
