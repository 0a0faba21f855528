"""``fcnseg serve MODEL``: serve a model over HTTP, with a browser page at ``/`` (docs/serve.md).

MODEL is what ``fcnseg predict`` takes (a checkpoint, a ``.onnx``, an OpenVINO ``.xml``, int8 included), run with the
same inference flags, so a served mask is the mask ``predict`` writes. Routes: ``POST /predict`` (an image, as a
multipart upload or the raw body -> its mask as a palette PNG, or JSON with ``format=json``), ``GET /health``,
``GET /info``, the Open Inference Protocol v2 routes under ``/v2`` and the OpenAPI page at ``/docs``. Concurrent
requests of one image size run as one forward pass (``--max-batch-size``, ``--max-wait-ms``). It listens on
127.0.0.1 unless ``--host`` says otherwise; with ``--api-key`` (better: the environment variable FCNSEG_API_KEY,
which ``ps`` does not show) every route but the health checks requires ``Authorization: Bearer KEY``. SIGTERM or
Ctrl-C lets the requests in flight finish, then stops.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os

from fcnseg.cli.inference_args import add_inference_arguments, add_model_argument, checked_model_file, predictor_options
from fcnseg.cli.main import UserError
from fcnseg.inference.predictor import Predictor
from fcnseg.serve.config import ServeConfig, default_max_pixels

logger = logging.getLogger(__name__)

API_KEY_VARIABLE = "FCNSEG_API_KEY"


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="serve a model over HTTP (API, browser page, KServe v2)", description=__doc__)
    add_model_argument(p)
    server = p.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    server.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    server.add_argument(
        "--api-key",
        metavar="KEY",
        default=os.environ.get(API_KEY_VARIABLE),
        help=f"bearer token required on every route but health (default: ${API_KEY_VARIABLE}, else none)",
    )
    server.add_argument(
        "--model-name", metavar="NAME", help="the model's name in /info and /v2/models/NAME (default: the file's stem)"
    )
    server.add_argument("--no-access-log", action="store_true", help="do not log every request")
    batching = p.add_argument_group("batching")
    batching.add_argument(
        "--max-batch-size", metavar="N", type=int, default=8, help="images in one forward pass (default 8; 1: off)"
    )
    batching.add_argument(
        "--max-wait-ms",
        metavar="MS",
        type=float,
        default=10.0,
        help="how long an image waits for others of its size (default 10)",
    )
    limits = p.add_argument_group("limits (refused with a 4xx and a one-line JSON error)")
    limits.add_argument(
        "--max-pixels",
        metavar="N",
        type=int,
        help=f"largest image, width x height (default: sized to the memory, {default_max_pixels():,} here)",
    )
    limits.add_argument(
        "--max-body-mb", metavar="MB", type=float, default=64.0, help="largest request body in MiB (default 64)"
    )
    limits.add_argument(
        "--max-queue", metavar="N", type=int, default=64, help="images waiting for the model before 503s (default 64)"
    )
    add_inference_arguments(p, batch_size=False)
    p.set_defaults(run=run)
    return p


def serve_config(args: argparse.Namespace) -> ServeConfig:
    """The :class:`ServeConfig` of the flags (it checks their values)."""
    options = {"max_pixels": args.max_pixels} if args.max_pixels is not None else {}
    return ServeConfig(
        model_name=args.model_name or args.checkpoint.stem,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_queue=args.max_queue,
        api_key=args.api_key,
        **options,
    )


def fix_mmap_threshold(threshold: int = 128 * 1024) -> None:
    """Have glibc's malloc map blocks of ``threshold`` bytes or more on their own, and unmap them when freed.

    glibc raises that threshold whenever such a block is freed; image buffers of varying size (batches of 1 to 8
    images) then come from heaps that fragment, and a long-running server grows: in ``benchmarks/serve_load.py``
    (batching on) its resident memory rose by about 50 MiB per 320 requests, and stays flat with the threshold
    fixed (docs/serve.md). Nothing happens where the C library is not glibc or where ``MALLOC_MMAP_THRESHOLD_`` is
    set.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD (malloc.h); setting it also stops glibc from moving it
    except (OSError, AttributeError):
        logger.debug("not glibc: the mmap threshold stays as it is")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from fcnseg.serve.app import create_app
    except ImportError as err:
        raise UserError(f"`fcnseg serve` needs FastAPI and uvicorn ({err}): pip install 'fcnseg[serve]'") from err
    config = serve_config(args)
    fix_mmap_threshold()
    predictor = Predictor.from_checkpoint(checked_model_file(args), **predictor_options(args))
    print(f"backend: {predictor.backend} ({predictor.computes_in}) on {predictor.device}", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") and config.api_key is None:
        logger.warning("listening on %s without an API key: anyone who reaches it can use the model", args.host)
    uvicorn.run(
        create_app(predictor, config),
        host=args.host,
        port=args.port,
        access_log=not args.no_access_log,
        log_level="info",
    )
    return 0
