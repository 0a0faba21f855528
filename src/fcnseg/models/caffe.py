"""The authors' Caffe weights (``fcn8s-heavy-pascal.caffemodel`` and friends) on the ``layout="caffe"`` VGG16 nets.

Layer names map one to one:

| Caffe layer (voc-fcn*s)                      | fcnseg module                                   |
| -------------------------------------------- | ----------------------------------------------- |
| ``conv1_1`` .. ``conv5_3``, ``fc6``, ``fc7``  | ``backbone.stages.{0,1,2}.<same name>``         |
| ``score_fr``                                 | ``head.score_fr``                               |
| ``upscore2`` (16s, 8s)                       | ``head.skips.0.upscore``                        |
| ``score_pool4`` (16s, 8s)                    | ``head.skips.0.score``                          |
| ``upscore_pool4`` (8s)                       | ``head.skips.1.upscore``                        |
| ``score_pool3`` (8s)                         | ``head.skips.1.score``                          |
| ``upscore`` (32s), ``upscore16``, ``upscore8`` | ``head.upscore``                              |

Blob layouts agree: Caffe convolutions are ``(out, in, kh, kw)`` and deconvolutions ``(in, out, kh, kw)``, as in
PyTorch. The at-once net's ``scale_pool4``/``scale_pool3`` layers hold the constants 0.01 and 0.0001, which are
``head.skips[i].scale`` here (``at_once=True``). Caffe nets take BGR images in 0..255 minus a per-channel mean; rather
than change the data pipeline, the loader reverses conv1_1's input channels and returns the normalisation
(mean = Caffe mean / 255, std = 1 / 255) under which the model computes exactly the Caffe net's function.

Blobs can be read with pycaffe (``{name: [b.data for b in net.params[name]]}``) and saved with ``numpy.savez``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

# Mean pixel of the authors' VOC nets, BGR order (voc-fcn*/{voc_layers.py, infer.py}).
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


def caffe_layer_names(model: nn.Module) -> dict[str, str]:
    """``{caffe layer name: fcnseg module path}`` for a VGG FCN (see the table in this module's docstring)."""
    names = {}
    for path, module in model.named_modules():
        leaf = path.rsplit(".", 1)[-1]
        if path.startswith("backbone.stages.") and isinstance(module, nn.Conv2d):
            names[leaf] = path
    names["score_fr"] = "head.score_fr"
    skips = len(model.head.skips)
    skip_names = [("upscore2", "score_pool4"), ("upscore_pool4", "score_pool3")]
    for i in range(skips):
        up, score = skip_names[i]
        names[up], names[score] = f"head.skips.{i}.upscore", f"head.skips.{i}.score"
    names[{0: "upscore", 1: "upscore16", 2: "upscore8"}[skips]] = "head.upscore"
    return names


def load_caffe_params(model: nn.Module, params: Mapping[str, Sequence[np.ndarray]]) -> dict[str, list[float]]:
    """Copy Caffe blobs into ``model`` (a ``layout="caffe"`` VGG16 FCN), all or nothing.

    Args:
        model: e.g. ``create_model("fcn8s_vgg16", num_classes=21, layout="caffe")``.
        params: ``{layer name: [weight, bias?]}``; extra layers (``scale_pool*``) are ignored.

    Returns:
        The normalisation ``{"mean": [...], "std": [...]}`` (RGB, [0, 1] scale) to use with these weights.

    Raises:
        ValueError: listing every missing layer and every blob whose shape differs.
    """
    names = caffe_layer_names(model)
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in params]
    wrong = []
    for name, path in names.items():
        if name in missing:
            continue
        module = modules[path]
        tensors = [module.weight] + ([module.bias] if module.bias is not None else [])
        blobs = list(params[name])
        if len(blobs) != len(tensors) or any(
            tuple(b.shape) != tuple(t.shape) for b, t in zip(blobs, tensors, strict=False)
        ):
            wrong.append(f"{name}: {[tuple(b.shape) for b in blobs]} != {[tuple(t.shape) for t in tensors]}")
    if missing or wrong:
        raise ValueError(f"Caffe weights do not fit the model: missing layers {missing}; wrong shapes {wrong}")
    with torch.no_grad():
        for name, path in names.items():
            module = modules[path]
            blobs = [torch.from_numpy(np.asarray(b, dtype=np.float32)) for b in params[name]]
            if name == "conv1_1":
                blobs[0] = blobs[0].flip(1)  # BGR -> RGB input channels
            module.weight.copy_(blobs[0])
            if module.bias is not None:
                module.bias.copy_(blobs[1])
    rgb_mean = CAFFE_MEAN_BGR[::-1]
    return {"mean": [m / 255 for m in rgb_mean], "std": [1 / 255] * 3}
