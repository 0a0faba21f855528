"""Backbones: torchvision classifiers cut into stages that end at strides 8, 16 and 32 (and 4, for FCN-4s).

A backbone returns one feature map per stage, finest first, and describes each with a ``FeatureInfo``
(stride, channels, and the coordinate map that the head uses to derive its crops), in the manner of timm's
``feature_info``: heads are sized from this metadata, never from literals.

Which feature is tapped at each stride:
- VGG and AlexNet (the paper's nets): the pooling outputs pool3 and pool4, and fc7 (fc6/fc7 convolutionalized)
  at stride 32, as in the authors' ``net.py``.
- ResNet, MobileNet, SqueezeNet: the last layer computed at each stride (``layer2/3/4`` for ResNet), as torchvision's
  segmentation models do. SqueezeNet's features end at stride 16, so its coarsest head is FCN-16s.

A stride-4 stage (VGG's pool2, ResNet's layer1, the last stride-4 layer of the others) is cut only when a head fuses
it (FCN-4s), so that the other heads keep their stages, and their checkpoints their keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.squeezenet import Fire

from .convolutionalize import linear_to_conv
from .geometry import CoordMap, path_map


@dataclass(frozen=True)
class FeatureInfo:
    """One backbone output: its nominal stride, its channel count and its map to input coordinates."""

    stride: int
    channels: int
    coords: CoordMap


class Backbone(nn.Module):
    """A sequence of stages; the output of each stage is one feature map.

    ``(N, B, H, W) -> [(N, C_i, ~H / s_i, ~W / s_i) for each stage i]``, strides ``s_i`` increasing; ``B`` (3 for
    RGB) is :attr:`in_channels`, the inputs of the first convolution.
    """

    def __init__(self, stages: list[tuple[int, nn.Sequential]]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stage for _, stage in stages)
        infos, coords = [], CoordMap()
        for stride, stage in stages:
            coords = path_map(stage.named_modules(), coords)
            if round(coords.scale) != stride:
                raise AssertionError(f"stage declared at stride {stride} has stride {coords.scale}")
            infos.append(FeatureInfo(stride, _out_channels(stage), coords))
        self.feature_info: list[FeatureInfo] = infos
        first = next((m for m in self.stages.modules() if isinstance(m, nn.Conv2d)), None)
        self.in_channels: int = first.in_channels if first is not None else 3

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def _out_channels(module: nn.Module) -> int:
    """Channels produced by the last layer of ``module`` that sets them."""
    if isinstance(module, Fire):  # concatenates two expand branches
        return module.expand1x1.out_channels + module.expand3x3.out_channels
    if isinstance(module, nn.Conv2d) or hasattr(module, "out_channels"):
        return module.out_channels
    for child in reversed(list(module.children())):
        try:
            return _out_channels(child)
        except LookupError:
            continue
    raise LookupError(f"cannot tell the output channels of {type(module).__name__}")


def _split(layers: list[tuple[str, nn.Module]], ends: list[int]) -> list[nn.Sequential]:
    """Cut ``layers`` into consecutive stages ending just after each index in ``ends``."""
    stages, start = [], 0
    for end in ends:
        stages.append(nn.Sequential(OrderedDict(layers[start : end + 1])))
        start = end + 1
    return stages


def _last_at_stride(layers: list[tuple[str, nn.Module]], strides: tuple[int, ...]) -> list[int]:
    """Index of the last layer computed at each stride (layer strides taken from their coordinate maps)."""
    ends, coords = {}, CoordMap()
    for i, (name, layer) in enumerate(layers):
        coords = path_map(layer.named_modules(prefix=name), coords)
        ends[round(coords.scale)] = i
    missing = [s for s in strides if s not in ends]
    if missing:
        raise ValueError(f"the network has no layer at stride {missing}")
    return [ends[s] for s in strides]


# --- VGG ---------------------------------------------------------------------------------------------------------

# The authors' VGG16 FCN (voc-fcn*/net.py) pads conv1_1 by 100 so that, for any input size, every crop offset is
# non-negative: fc6 (7x7, unpadded) removes 6 cells at stride 32, i.e. 192 input pixels, which the 2 x 100 padding
# more than covers. Their pooling rounds up (Caffe's ceil mode).
CAFFE_CONV1_PADDING = 100


def vgg_backbone(classifier: nn.Module, strides: tuple[int, ...] = (8, 16, 32), *, layout: str = "default") -> Backbone:
    """Stages of a torchvision VGG (with or without BN): to pool3, to pool4, to fc7 (and first to pool2 with stride 4).

    Layers are named as in the authors' Caffe net (``conv1_1``, ``relu1_1``, ``pool1``, ..., ``fc6``, ``drop7``),
    so Caffe weights map by name.

    Args:
        classifier: a torchvision ``VGG`` (its weights are shared, not copied).
        strides: the strides of the stages, ``(8, 16, 32)`` or ``(4, 8, 16, 32)``.
        layout: ``"caffe"``, the authors' net exactly (conv1_1 padded by 100, fc6 unpadded); or ``"default"``, the
            same weights with 'same' padding everywhere (fc6 padded by 3), which spends no work on the padding.
    """
    if layout not in ("default", "caffe"):
        raise ValueError(f"layout must be 'default' or 'caffe', not {layout!r}")
    named, block, index = [], 1, 1
    for layer in classifier.features:
        if isinstance(layer, nn.Conv2d):
            named.append((f"conv{block}_{index}", layer))
        elif isinstance(layer, nn.BatchNorm2d):
            named.append((f"bn{block}_{index}", layer))
        elif isinstance(layer, nn.ReLU):
            named.append((f"relu{block}_{index}", layer))
            index += 1
        elif isinstance(layer, nn.MaxPool2d):
            layer.ceil_mode = True
            named.append((f"pool{block}", layer))
            block, index = block + 1, 1
        else:
            raise ValueError(f"unexpected layer {type(layer).__name__} in VGG features")
    if layout == "caffe":
        named[0][1].padding = (CAFFE_CONV1_PADDING, CAFFE_CONV1_PADDING)
    fc6_in = named[-1 - [isinstance(m, nn.Conv2d) for _, m in reversed(named)].index(True)][1].out_channels
    fc6_padding = 0 if layout == "caffe" else 3  # 7x7 kernel: 3 keeps the size
    head = classifier.classifier  # Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear(1000)
    fc = [
        ("fc6", linear_to_conv(head[0], fc6_in, (7, 7), padding=fc6_padding)),
        ("relu6", head[1]),
        ("drop6", head[2]),
        ("fc7", linear_to_conv(head[3], head[3].in_features, (1, 1))),
        ("relu7", head[4]),
        ("drop7", head[5]),
    ]
    names = [n for n, _ in named]
    pools = {4: "pool2", 8: "pool3", 16: "pool4"}
    stages = _split(named, [names.index(pools[s]) for s in _checked(strides, (8, 16, 32), (4, 8, 16, 32))[:-1]])
    stages.append(nn.Sequential(OrderedDict(named[names.index("pool4") + 1 :] + fc)))
    return Backbone(list(zip(strides, stages, strict=True)))


def alexnet_backbone(classifier: nn.Module, strides: tuple[int, ...] = (8, 16, 32)) -> Backbone:
    """Stages of torchvision's AlexNet: to pool1 (stride 8), to pool2 (16), to fc7 (32).

    Unlike torchvision's (padding 2), conv1 (11x11, stride 4) is padded by 5 so that its output covers the whole
    input (``ceil(H / 4)`` cells) and is centred on it; pooling rounds up so that small inputs still produce a score
    map; fc6 (6x6) is padded by 3. The weights are unchanged.
    """
    features = list(classifier.features)
    features[0].padding = (5, 5)
    for layer in features:
        if isinstance(layer, nn.MaxPool2d):
            layer.ceil_mode = True
    names = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "conv4", "relu4"]
    named = list(zip([*names, "conv5", "relu5", "pool5"], features, strict=True))
    head = classifier.classifier  # Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear(1000)
    fc = [
        ("drop6", head[0]),
        ("fc6", linear_to_conv(head[1], features[10].out_channels, (6, 6), padding=3)),
        ("relu6", head[2]),
        ("drop7", head[3]),
        ("fc7", linear_to_conv(head[4], head[4].in_features, (1, 1))),
        ("relu7", head[5]),
    ]
    stages = _split(named, [2, 5])
    stages.append(nn.Sequential(OrderedDict(named[6:] + fc)))
    return Backbone(list(zip(_checked(strides, (8, 16, 32)), stages, strict=True)))


def resnet_backbone(classifier: nn.Module, strides: tuple[int, ...] = (8, 16, 32)) -> Backbone:
    """Stages of a torchvision ResNet: stem to layer2 (stride 8), layer3 (16), layer4 (32).

    With stride 4 first: stem to layer1 (4), then layer2 alone (8).
    """
    c = classifier
    stem = [("conv1", c.conv1), ("bn1", c.bn1), ("relu", c.relu), ("maxpool", c.maxpool), ("layer1", c.layer1)]
    first = (
        [stem, [("layer2", c.layer2)]]
        if 4 in _checked(strides, (8, 16, 32), (4, 8, 16, 32))
        else [[*stem, ("layer2", c.layer2)]]
    )
    layers = [*first, [("layer3", c.layer3)], [("layer4", c.layer4)]]
    return Backbone([(s, nn.Sequential(OrderedDict(stage))) for s, stage in zip(strides, layers, strict=True)])


def _checked(strides: tuple[int, ...], *allowed: tuple[int, ...]) -> tuple[int, ...]:
    """``strides`` if it is one of the ``allowed`` stage layouts of a backbone."""
    if tuple(strides) not in allowed:
        raise ValueError(f"stages at strides {tuple(strides)} are not supported; use one of {list(allowed)}")
    return tuple(strides)


def features_backbone(classifier: nn.Module, strides: tuple[int, ...]) -> Backbone:
    """Stages of a classifier whose ``features`` is a Sequential (MobileNet, SqueezeNet), cut by stride.

    An unpadded first convolution (SqueezeNet's) is given 'same' padding, ``k // 2``, so that the score map covers
    the image from its first pixel; the weights are unchanged.
    """
    first = classifier.features[0]
    if isinstance(first, nn.Conv2d) and first.padding == (0, 0):
        first.padding = (first.kernel_size[0] // 2, first.kernel_size[1] // 2)
    layers = [(str(i), layer) for i, layer in enumerate(classifier.features)]
    ends = _last_at_stride(layers, strides)
    return Backbone(list(zip(strides, _split(layers, ends), strict=True)))


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone from its torchvision classifier."""

    build: Callable[..., Backbone]  # build(classifier, strides, **options)
    strides: tuple[int, ...]  # strides it can cut at (4 only for FCN-4s, see the module docstring)
    final_layer: str  # the 1000-way classification layer, which an FCN does not use
    options: tuple[str, ...] = ()  # keyword options that ``build`` accepts


BACKBONES: dict[str, BackboneSpec] = {
    **{
        name: BackboneSpec(vgg_backbone, (4, 8, 16, 32), "classifier.6", ("layout",))
        for name in ("vgg11", "vgg13", "vgg16", "vgg19", "vgg16_bn")
    },
    "alexnet": BackboneSpec(alexnet_backbone, (8, 16, 32), "classifier.6"),
    **{
        name: BackboneSpec(resnet_backbone, (4, 8, 16, 32), "fc")
        for name in ("resnet18", "resnet34", "resnet50", "resnet101")
    },
    "squeezenet1_0": BackboneSpec(features_backbone, (4, 8, 16), "classifier.1"),
    "squeezenet1_1": BackboneSpec(features_backbone, (4, 8, 16), "classifier.1"),
    "mobilenet_v2": BackboneSpec(features_backbone, (4, 8, 16, 32), "classifier.1"),
    "mobilenet_v3_large": BackboneSpec(features_backbone, (4, 8, 16, 32), "classifier.3"),
}
