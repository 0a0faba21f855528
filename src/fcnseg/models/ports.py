"""Weights trained elsewhere, onto fcnseg models that compute the same function: ``fcnseg convert``'s conversions.

- the authors' ``.caffemodel`` files (voc-fcn32s/16s/8s, voc-fcn8s-atonce) -> ``fcn{32,16,8}s_vgg16`` with
  ``layout="caffe"``; the weights expect BGR images in 0..255 minus the mean;
- wkentaro/pytorch-fcn state dicts (``FCN32s``/``FCN16s``/``FCN8s``, e.g. ``fcn8s_from_caffe.pth``) -> the same
  models, with the same input;
- torchvision's ``fcn_resnet50`` / ``fcn_resnet101`` state dicts -> fcnseg's ``fcn_resnet50`` / ``fcn_resnet101``
  (:mod:`.torchvision_fcn`); the weights expect RGB in [0, 1] normalised with ImageNet's mean and std.

pytorch-fcn keeps the Caffe nets' layer names (``conv1_1`` .. ``fc7``, ``score_fr``, ``score_pool4``, ``upscore2``,
...), their layouts and their input (its datasets flip RGB to BGR and subtract the same mean), so both go through
:func:`.caffe.load_caffe_params`, which folds that input convention into conv1_1 and the normalisation it returns.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision

from fcnseg.core.safe_load import load_tensors

from .backbones import CAFFE_CONV1_PADDING
from .caffe import caffe_layer_names, load_caffe_params
from .caffemodel import CaffeLayer, read_caffemodel, read_prototxt
from .fcn import FCN
from .head import AT_ONCE_SKIP_SCALES
from .registry import create_model
from .torchvision_fcn import IMAGENET_NORMALIZATION, TORCHVISION_FCNS

log = logging.getLogger(__name__)

# The layer that upsamples to the image names the authors' nets (voc-fcn*/net.py); see the table in .caffe.
FINAL_UPSCORE = {"upscore": "fcn32s", "upscore16": "fcn16s", "upscore8": "fcn8s"}
# The at-once FCN-8s scales pool4 and pool3 with these constant Scale layers before scoring them.
AT_ONCE_SCALE_LAYERS = {"scale_pool4": AT_ONCE_SKIP_SCALES[16], "scale_pool3": AT_ONCE_SKIP_SCALES[8]}
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # zip, or a legacy pickle


@dataclass
class Converted:
    """A converted model, the normalisation its weights expect, and what the conversion read and left out."""

    model: FCN
    normalization: dict[str, list[float]]
    source: str  # what the file was, in words
    dropped: list[str] = field(default_factory=list)  # layers of the file that the model does not compute


def convert_weights(
    path: str | os.PathLike, *, prototxt: str | os.PathLike | None = None, at_once: bool | None = None
) -> Converted:
    """Read a weights file of a kind this module lists and build the fcnseg model it describes.

    Args:
        path: a ``.caffemodel``, or a PyTorch state dict file (pytorch-fcn's or torchvision's FCN).
        prototxt: the Caffe net definition (``deploy.prototxt``), checked against the fcnseg net (conv1_1's padding
            and the crops) where the ``.caffemodel`` does not record them.
        at_once: whether the net is the at-once FCN-8s (scaled skips). Caffe files say so themselves (their
            ``scale_pool*`` layers); pytorch-fcn state dicts do not, unless wrapped in its trainer's checkpoint.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: the file is none of these kinds, or its layers do not fit the model (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file '{path}' does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic.startswith(_TORCH_MAGIC):
        description = read_prototxt(prototxt) if prototxt is not None else None
        return from_caffe_layers(read_caffemodel(path), description=description, at_once=at_once, name=str(path))
    if prototxt is not None:
        raise ValueError(f"--prototxt describes a Caffe net, but '{path}' is a PyTorch file")
    state = load_tensors(path, what="weights", map_location="cpu")
    if isinstance(state, dict) and state.get("format") == "fcnseg-checkpoint":
        raise ValueError(f"'{path}' is already an fcnseg checkpoint: use it as it is")
    if isinstance(state, dict) and isinstance(state.get("model_state_dict"), dict):  # pytorch-fcn's trainer
        at_once = at_once if at_once is not None else "AtOnce" in str(state.get("arch", ""))
        state = state["model_state_dict"]
    elif isinstance(state, dict) and isinstance(state.get("model"), dict):  # torchvision's reference scripts
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"'{path}' does not hold a state dict of tensors")
    if "score_fr.weight" in state:
        return from_pytorch_fcn(state, at_once=bool(at_once), name=str(path))
    if "classifier.4.weight" in state and any(k.startswith("backbone.layer4.") for k in state):
        if at_once:
            raise ValueError("--at-once applies to the VGG16 FCN-8s, not to torchvision's FCN")
        return from_torchvision(state, name=str(path))
    raise ValueError(
        f"'{path}' is neither a pytorch-fcn FCN32s/16s/8s state dict (keys conv1_1.weight ... score_fr.weight) nor "
        f"torchvision's fcn_resnet50/101 (backbone.layer4.*, classifier.4.weight); its first keys: {list(state)[:4]}"
    )


def from_caffe_layers(
    layers: Sequence[CaffeLayer],
    *,
    description: Sequence[CaffeLayer] | None = None,
    at_once: bool | None = None,
    name: str = "the Caffe net",
) -> Converted:
    """The ``layout="caffe"`` VGG16 FCN of a Caffe net's layers (from :func:`.caffemodel.read_caffemodel`).

    Args:
        layers: the net's layers with their blobs.
        description: the net definition's layers (a ``.prototxt``), if given; else the layers' own geometry is used.
        at_once: expected to agree with the net's ``scale_pool*`` layers when given.
        name: the file, for messages.
    """
    params = {layer.name: list(layer.blobs) for layer in layers if layer.blobs}  # what load_caffe_params takes
    scales = _at_once_scales(params, name)
    if at_once is not None and at_once != bool(scales):
        has = "has" if scales else "has no"
        raise ValueError(f"{name} {has} the at-once net's scale_pool4/scale_pool3 layers; drop --at-once or check")
    geometry = description if description is not None else layers
    model, normalization = _caffe_model(
        params, at_once=bool(scales), name=name, description=geometry, given=description is not None
    )
    used = set(caffe_layer_names(model)) | set(AT_ONCE_SCALE_LAYERS)
    return Converted(model, normalization, "the authors' Caffe net", [n for n in params if n not in used])


def from_pytorch_fcn(state: Mapping[str, torch.Tensor], *, at_once: bool = False, name: str = "weights") -> Converted:
    """The ``layout="caffe"`` VGG16 FCN of a wkentaro/pytorch-fcn ``FCN32s``/``FCN16s``/``FCN8s`` state dict.

    Its modules carry the Caffe layer names, its tensors the Caffe blobs' layouts, so each ``<layer>.weight`` and
    ``<layer>.bias`` become that layer's blobs. ``at_once``: the state dict is ``FCN8sAtOnce``'s (same keys).
    """
    params: dict[str, list[np.ndarray]] = {}
    for key, tensor in state.items():
        layer, _, kind = key.rpartition(".")
        blobs = params.setdefault(layer, [])
        blobs.insert(0 if kind == "weight" else len(blobs), tensor.detach().float().numpy())
    model, normalization = _caffe_model(params, at_once=at_once, name=name)
    used = set(caffe_layer_names(model))
    return Converted(model, normalization, "a pytorch-fcn state dict", [n for n in params if n not in used])


def from_torchvision(state: Mapping[str, torch.Tensor], *, name: str = "weights") -> Converted:
    """``fcn_resnet50``/``fcn_resnet101`` from a torchvision ``FCN`` state dict (its auxiliary head left out)."""
    blocks = 1 + max((int(k.split(".")[2]) for k in state if k.startswith("backbone.layer3.")), default=-1)
    with torch.device("meta"):  # only the block counts of the candidates are read
        depth = {n: len(torchvision.models.get_model(a, weights=None).layer3) for n, a in TORCHVISION_FCNS.items()}
    model_name = next((n for n, d in depth.items() if d == blocks), None)
    if model_name is None:
        raise ValueError(f"{name}: a ResNet with {blocks} blocks in layer3 is neither of {sorted(TORCHVISION_FCNS)}")
    model = create_model(model_name, num_classes=state["classifier.4.weight"].shape[0])
    stage_of = {child: i for i, stage in enumerate(model.backbone.stages) for child, _ in stage.named_children()}
    mapped, dropped = {}, []
    for key, tensor in state.items():
        top, _, rest = key.partition(".")
        child = rest.partition(".")[0]
        if top == "backbone" and child in stage_of:
            mapped[f"backbone.stages.{stage_of[child]}.{rest}"] = tensor
        elif top == "classifier":
            mapped[f"head.{key}"] = tensor
        else:
            dropped.append(key)
    result = model.load_state_dict(mapped, strict=False)
    wrong = [k for k in mapped if k in model.state_dict() and model.state_dict()[k].shape != mapped[k].shape]
    if result.missing_keys or result.unexpected_keys or wrong:
        raise ValueError(
            f"{name} does not fit {model_name}: missing {result.missing_keys[:4]}, "
            f"unexpected {result.unexpected_keys[:4]}, other shapes {wrong[:4]}"
        )
    layers = sorted({k.partition(".")[0] for k in dropped})
    return Converted(model.eval(), dict(IMAGENET_NORMALIZATION), "a torchvision FCN state dict", layers)


def _caffe_model(
    params: dict[str, list[np.ndarray]],
    *,
    at_once: bool,
    name: str,
    description: Sequence[CaffeLayer] | None = None,
    given: bool = False,
) -> tuple[FCN, dict[str, list[float]]]:
    """Build the VGG16 FCN the layer names say, check its geometry against ``description``, load the blobs."""
    finals = [layer for layer in FINAL_UPSCORE if layer in params]
    if len(finals) != 1 or "score_fr" not in params:
        raise ValueError(
            f"{name} is not one of the authors' VGG16 FCN-32s/16s/8s nets: it needs a score_fr layer and one of "
            f"{list(FINAL_UPSCORE)}; its layers: {list(params)[:12]}"
        )
    head = FINAL_UPSCORE[finals[0]]
    num_classes = int(params["score_fr"][0].shape[0])
    model = create_model(f"{head}_vgg16", num_classes=num_classes, layout="caffe", at_once=at_once)
    if description is not None:
        _check_geometry(model, description, name, given=given)
    _fit_legacy_shapes(params, model)
    try:
        normalization = load_caffe_params(model, params)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    return model.eval(), normalization


def _fit_legacy_shapes(params: dict[str, list[np.ndarray]], model: FCN) -> None:
    """Reshape blobs saved with Caffe's legacy 4-D shapes (a bias as ``(1, 1, 1, K)``) to the model's tensors."""
    modules = dict(model.named_modules())
    for layer, path in caffe_layer_names(model).items():
        module = modules[path]
        tensors = [module.weight] + ([module.bias] if module.bias is not None else [])
        for i, (blob, tensor) in enumerate(zip(params.get(layer, []), tensors, strict=False)):
            squeezed = [d for d in blob.shape if d != 1] == [d for d in tensor.shape if d != 1]
            if tuple(blob.shape) != tuple(tensor.shape) and squeezed:
                params[layer][i] = blob.reshape(tuple(tensor.shape))


def _at_once_scales(params: dict[str, list[np.ndarray]], name: str) -> bool:
    """Whether the net has the at-once scale layers; they must hold the constants that fcnseg's head applies."""
    present = [layer for layer in AT_ONCE_SCALE_LAYERS if layer in params]
    for layer in present:
        values, expected = params[layer][0], AT_ONCE_SCALE_LAYERS[layer]
        if not np.allclose(values, expected, rtol=1e-6, atol=0):
            raise ValueError(
                f"{name}: {layer} scales by {float(values.ravel()[0]):g}, not {expected:g} as the at-once net"
            )
    if len(present) not in (0, len(AT_ONCE_SCALE_LAYERS)):
        raise ValueError(f"{name} has {present} but not all of {list(AT_ONCE_SCALE_LAYERS)}")
    return bool(present)


def _check_geometry(model: FCN, layers: Sequence[CaffeLayer], name: str, *, given: bool) -> None:
    """The net pads conv1_1 and crops as fcnseg's Caffe layout does, where ``layers`` say how."""
    by_name = {layer.name: layer for layer in layers}
    if given:
        missing = [layer for layer in caffe_layer_names(model) if layer not in by_name]
        if missing:
            raise ValueError(f"the net definition does not describe the weights' layers {missing[:6]}")
    conv1 = by_name.get("conv1_1")
    if conv1 is not None and conv1.pad and set(conv1.pad) != {CAFFE_CONV1_PADDING}:
        raise ValueError(
            f"{name} pads conv1_1 by {conv1.pad}; fcnseg's Caffe layout is the authors' net, which pads it by "
            f"{CAFFE_CONV1_PADDING}"
        )
    crops = [layer.crop_offset for layer in layers if layer.type == "Crop"]
    if not crops or not all(crops):
        log.info("%s does not record its crops; checked by layer names only (--prototxt checks them)", name)
        return
    offsets = [offset[0] for offset in crops]
    if any(len(set(offset)) != 1 for offset in crops) or offsets != model.head.crops:
        shown = [o[0] if len(set(o)) == 1 else o for o in crops]
        raise ValueError(f"{name} crops at {shown}, where the fcnseg net derives {model.head.crops}")
