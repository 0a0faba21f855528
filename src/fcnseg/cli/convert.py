"""``fcnseg convert WEIGHTS --out CHECKPOINT``: others' FCN weights as an fcnseg checkpoint.

WEIGHTS is one of: the authors' Caffe ``.caffemodel`` (voc-fcn32s/16s/8s, voc-fcn8s-atonce; read without Caffe),
a wkentaro/pytorch-fcn state dict (FCN32s/16s/8s, e.g. ``fcn8s_from_caffe.pth``), or torchvision's
``fcn_resnet50``/``fcn_resnet101`` state dict. The converted model computes what the original computes, with the
original's input convention folded into the checkpoint's normalisation. The checkpoint is an ordinary one: ``eval``,
``predict``, ``export`` and ``train --init-from`` take it (docs/transfer.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fcnseg.cli.main import UserError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="convert Caffe (.caffemodel), pytorch-fcn or torchvision FCN weights", description=__doc__
    )
    p.add_argument("weights", type=Path, help="the weights file: .caffemodel, or a PyTorch state dict (.pth)")
    p.add_argument("--out", type=Path, required=True, help="the fcnseg checkpoint to write, e.g. fcn8s-voc.pt")
    p.add_argument(
        "--prototxt",
        type=Path,
        metavar="FILE",
        help="the Caffe net definition (deploy.prototxt): checks conv1_1's padding and the crops against the "
        "fcnseg net where the .caffemodel does not record them",
    )
    p.add_argument("--at-once", action="store_true", help="a pytorch-fcn FCN8sAtOnce state dict (its keys are FCN8s's)")
    p.add_argument(
        "--classes",
        default="voc",
        metavar="voc|FILE",
        help="class names and colours: voc (default: the 21 classes of every net above) or a class file "
        "('name r g b' per line) with as many classes as the weights score",
    )
    p.add_argument("--weights-sha256", metavar="HEX", help="SHA-256 the weights file must have, checked first")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from fcnseg.core.checkpoint import make_checkpoint, save_checkpoint
    from fcnseg.core.safe_load import verify_sha256
    from fcnseg.data import VOC_CLASSES, load_class_file
    from fcnseg.models.ports import convert_weights

    if not args.weights.is_file():
        raise UserError(f"weights file '{args.weights}' does not exist")
    if args.weights_sha256:
        verify_sha256(args.weights, args.weights_sha256)
    converted = convert_weights(args.weights, prototxt=args.prototxt, at_once=True if args.at_once else None)
    model = converted.model
    classes = VOC_CLASSES if args.classes == "voc" else load_class_file(args.classes)[0]
    if classes.num_classes != model.num_classes:
        what = "VOC's 21 classes" if args.classes == "voc" else f"the {classes.num_classes} classes of {args.classes}"
        raise UserError(
            f"'{args.weights}' scores {model.num_classes} classes, not {what}: pass --classes FILE with its "
            f"{model.num_classes} class names"
        )
    norm = converted.normalization
    config = {"converted_from": str(args.weights)} | ({"dataset": "voc"} if args.classes == "voc" else {})
    ckpt = make_checkpoint(model, classes=classes.as_dict(), mean=norm["mean"], std=norm["std"], config=config)
    save_checkpoint(ckpt, args.out)
    if converted.dropped:
        log.info("left out (not part of the model's output): %s", ", ".join(converted.dropped))
    options = ", ".join(f"{k}={v}" for k, v in model.config["options"].items())
    print(
        f"wrote {args.out}: {model.config['name']}{f' ({options})' if options else ''}, {model.num_classes} classes, "
        f"from {converted.source}; normalisation mean {[round(m, 5) for m in norm['mean']]}, "
        f"std {[round(s, 5) for s in norm['std']]}"
    )
    return 0
