"""The inference flags of ``predict`` and ``eval``: one definition, checked once (by :class:`Predictor`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fcnseg.cli.main import UserError
from fcnseg.core.device import DEFAULT_DEVICE, DEVICE_HELP, PRECISION_HELP, PRECISIONS
from fcnseg.inference.crf import CRFParams
from fcnseg.inference.runtimes import BACKENDS

DEFAULT_MEMORY_BUDGET_GB = 2.0


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """The model file (``checkpoint``) and the check of its digest."""
    parser.add_argument(
        "checkpoint", type=Path, help="checkpoint written by `fcnseg train`, or a .onnx/.xml from export/quantize"
    )
    parser.add_argument(
        "--weights-sha256", metavar="HEX", help="SHA-256 the model file must have, checked before reading it"
    )


def add_inference_arguments(parser: argparse.ArgumentParser, *, batch_size: bool = True) -> None:
    """How the model runs: backend, device, precision, tiling, test-time scales and flips, batch size.

    ``batch_size=False`` leaves out ``--batch-size``, for ``fcnseg serve``, whose batches are its own flags.
    """
    group = parser.add_argument_group("inference (the same flags in predict and eval)")
    group.add_argument(
        "--backend",
        choices=("auto", *BACKENDS),
        default="auto",
        help="runtime (default auto: openvino when installed and on CPU, else torch)",
    )
    group.add_argument("--device", default=DEFAULT_DEVICE, help=f"{DEVICE_HELP} (default: {DEFAULT_DEVICE})")
    group.add_argument("--precision", choices=PRECISIONS, default="auto", help=f"{PRECISION_HELP} (default: auto)")
    tiling = group.add_mutually_exclusive_group()
    tiling.add_argument("--tile-size", type=int, nargs=2, metavar=("H", "W"), help="sliding-window size in pixels")
    tiling.add_argument(
        "--memory-budget",
        type=float,
        metavar="GB",
        help="tile automatically when an image needs more than GB GiB (default: whole images)",
    )
    group.add_argument("--overlap", type=float, default=1 / 3, help="sliding-window overlap fraction (default 1/3)")
    group.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=None,
        help="test-time scales, logits averaged (default: the scale the checkpoint records, else 1.0)",
    )
    group.add_argument("--flip", action="store_true", help="also average the horizontally flipped prediction")
    if batch_size:
        group.add_argument("--batch-size", type=int, default=1, help="same-size images inferred together (default 1)")
    add_crf_arguments(parser)


_CRF_FLAGS = {  # flag -> (CRFParams field, help)
    "--crf-iters": ("iterations", "mean-field iterations"),
    "--crf-w1": ("w1", "weight of the bilateral (position + colour) kernel"),
    "--crf-theta-alpha": ("theta_alpha", "bilateral kernel's position width, pixels"),
    "--crf-theta-beta": ("theta_beta", "bilateral kernel's colour width, 8-bit levels"),
    "--crf-w2": ("w2", "weight of the Gaussian (position) kernel"),
    "--crf-theta-gamma": ("theta_gamma", "Gaussian kernel's position width, pixels"),
}


def add_crf_arguments(parser: argparse.ArgumentParser) -> None:
    """``--crf`` and its parameters (defaults: :class:`~fcnseg.inference.crf.CRFParams`', see docs/crf.md)."""
    group = parser.add_argument_group("dense CRF post-processing (docs/crf.md)")
    group.add_argument(
        "--crf", action="store_true", help="refine the scores with a fully connected CRF (mean field, on the softmax)"
    )
    defaults = CRFParams()
    for flag, (name, text) in _CRF_FLAGS.items():
        kind = int if name == "iterations" else float
        group.add_argument(flag, type=kind, metavar="N" if kind is int else "X",
                           help=f"{text} (default {getattr(defaults, name)}; needs --crf)")  # fmt: skip


def crf_params(args: argparse.Namespace) -> CRFParams | None:
    """The CRF the flags ask for, or ``None`` without ``--crf``.

    Raises:
        UserError: a ``--crf-*`` flag without ``--crf``, or a parameter out of range.
    """
    values = {flag: getattr(args, flag[2:].replace("-", "_"), None) for flag in _CRF_FLAGS}
    given = {flag: value for flag, value in values.items() if value is not None}
    if not getattr(args, "crf", False):
        if given:
            raise UserError(f"{', '.join(given)} given without --crf: add --crf to post-process with the dense CRF")
        return None
    try:
        return CRFParams(**{_CRF_FLAGS[flag][0]: value for flag, value in given.items()})
    except ValueError as err:
        raise UserError(f"{err} (see `--help` for the --crf-* flags)") from err


def checked_model_file(args: argparse.Namespace) -> Path:
    """``args.checkpoint`` if it exists and has the digest ``--weights-sha256`` names.

    Raises:
        UserError: the file does not exist.
    """
    path: Path = args.checkpoint
    if not path.is_file():
        raise UserError(f"model file {path} not found; pass a checkpoint of `fcnseg train` or a .onnx/.xml model")
    if args.weights_sha256:
        from fcnseg.core.safe_load import verify_sha256

        verify_sha256(path, args.weights_sha256)
    if getattr(args, "batch_size", 1) < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    return path


def predictor_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :meth:`Predictor.from_checkpoint` from the flags (it checks their values)."""
    budget = args.memory_budget or DEFAULT_MEMORY_BUDGET_GB
    return {
        "device": args.device,
        "backend": args.backend,
        "precision": args.precision,
        "tile_size": tuple(args.tile_size) if args.tile_size else ("auto" if args.memory_budget else None),
        "memory_budget": budget * 2**30,
        "overlap": args.overlap,
        "flip": args.flip,
        "crf": crf_params(args),
    } | ({"scales": tuple(args.scales)} if args.scales else {})
