"""Convolutionalization: a classifier's fully connected layers read as convolutions (Long et al., Sec. 3.1).

The first ``Linear`` after the spatial flatten sees a ``C x k x k`` feature map at the classifier's native input
size and becomes a ``k x k`` convolution with the same weights reshaped (fc6 of VGG-16: 7x7, AlexNet: 6x6); later
``Linear`` layers become 1x1 convolutions. A global pooling head (ResNet, MobileNet, SqueezeNet, DenseNet, ...)
becomes an average pool of the size it pooled at the native input, sliding with stride 1. At the native size
the result is the classifier itself, with a 1x1 score map; on a larger input every score-map cell is the
classifier applied to one input window (exactly so where no zero padding differs between a window and the image).

There is one conversion: :func:`linear_to_conv`. :func:`convolutionalize` applies it to any classifier that
``torch.fx`` can trace; the backbones of fcnseg's FCNs (:mod:`fcnseg.models.backbones`) apply it to VGG's and
AlexNet's fc6/fc7 themselves, because they also cut the network into stages, name its layers as the authors' Caffe
net does, and pad fc6 in the default layout, which a whole-graph conversion does not.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

# Layers that act on each element (or each location, over channels) and so work unchanged on score maps.
_POINTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Dropout,
    nn.Identity,
)
_POINTWISE_FUNCTIONS = (F.relu, torch.relu, F.dropout, F.hardswish, F.gelu, F.silu, torch.sigmoid, torch.tanh)
_GLOBAL_POOL_FUNCTIONS = {F.adaptive_avg_pool2d: nn.AvgPool2d, F.adaptive_max_pool2d: nn.MaxPool2d}
_GLOBAL_POOL_MODULES = {nn.AdaptiveAvgPool2d: nn.AvgPool2d, nn.AdaptiveMaxPool2d: nn.MaxPool2d}


def linear_to_conv(linear: nn.Linear, in_channels: int, kernel_size: tuple[int, int], padding: int = 0) -> nn.Conv2d:
    """The convolution that computes ``linear`` on every ``in_channels x k x k`` window.

    The weight ``(out, in_channels * kh * kw)`` is reshaped to ``(out, in_channels, kh, kw)``, which matches the
    row-major order of ``torch.flatten`` on ``(C, kh, kw)``; nothing is retrained.
    """
    kh, kw = kernel_size
    if linear.in_features != in_channels * kh * kw:
        raise ValueError(
            f"Linear layer with {linear.in_features} inputs cannot read a {in_channels}x{kh}x{kw} feature map"
        )
    conv = nn.Conv2d(in_channels, linear.out_features, (kh, kw), padding=padding, bias=linear.bias is not None)
    conv = conv.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(conv.weight.shape))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def _is_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """An op that turns ``(N, C, h, w)`` into ``(N, C * h * w)``: ``torch.flatten``, ``nn.Flatten`` or a view."""
    flattening = (
        (node.op == "call_module" and isinstance(modules[node.target], nn.Flatten))
        or (node.op == "call_function" and node.target is torch.flatten)
        or (node.op == "call_method" and node.target in ("flatten", "view", "reshape"))
    )
    return flattening and len(_shape(node)) == 2 and len(_shape(node.args[0])) == 4


def _is_spatial_mean(node: fx.Node) -> bool:
    """``x.mean([2, 3])``-style global pooling that also flattens (ShuffleNet)."""
    if node.op not in ("call_method", "call_function") or node.target not in ("mean", torch.mean):
        return False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    return dims is not None and sorted(int(d) % 4 for d in dims) == [2, 3]


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


def _pool_replacement(node: fx.Node, pool_type: type[nn.Module]) -> nn.Module:
    """The sliding pool equivalent to a global/adaptive pool node at the native input size."""
    (_, _, h_in, w_in), (_, _, h_out, w_out) = _shape(node.args[0]), _shape(node)
    if (h_in, w_in) == (h_out, w_out):
        return nn.Identity()
    if h_in % h_out or w_in % w_out:
        raise ValueError(f"cannot convolutionalize adaptive pool '{node.name}': {h_in}x{w_in} -> {h_out}x{w_out}")
    kernel = (h_in // h_out, w_in // w_out)
    return pool_type(kernel, stride=1 if (h_out, w_out) == (1, 1) else kernel)


def _head_pool(flatten: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The pooling node on the single-input chain that feeds the flatten, if any.

    The walk stops at a node with several tensor inputs, so pools inside squeeze-and-excitation blocks (whose
    output multiplies the features) are never taken for the classifier's pooling head.
    """
    node = flatten.args[0]
    while isinstance(node, fx.Node) and node.op in ("call_module", "call_function", "call_method"):
        if node.op == "call_module" and type(modules[node.target]) in _GLOBAL_POOL_MODULES:
            return node
        if node.op == "call_function" and node.target in _GLOBAL_POOL_FUNCTIONS:
            return node
        args = (*node.args, *node.kwargs.values())
        inputs = [a for a in args if isinstance(a, fx.Node) and a.op != "get_attr"]  # parameters are not inputs
        if len(inputs) != 1:
            return None
        node = inputs[0]
    return None


def _replace_with_module(gm: fx.GraphModule, node: fx.Node, name: str, module: nn.Module, arg: fx.Node) -> fx.Node:
    gm.add_submodule(name, module)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(name, (arg,))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def _downstream(node: fx.Node) -> list[fx.Node]:
    """Nodes computed from ``node``, in graph order (the classifier part after the flatten)."""
    seen: set[fx.Node] = set()
    stack = list(node.users)
    while stack:
        user = stack.pop()
        if user not in seen:
            seen.add(user)
            stack.extend(user.users)
    return [n for n in node.graph.nodes if n in seen and n.op != "output"]


def _convert_classifier(gm: fx.GraphModule, nodes: list[fx.Node], channels: int, kernel: tuple[int, int]) -> None:
    """Replace the Linears in ``nodes`` by convolutions; fail on anything that is not pointwise."""
    modules = dict(gm.named_modules())
    for node in nodes:
        if node.op == "call_function" and node.target in _POINTWISE_FUNCTIONS:
            continue
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, nn.Linear):
            parent, _, attr = node.target.rpartition(".")
            setattr(gm.get_submodule(parent), attr, linear_to_conv(module, channels, kernel))
            channels, kernel = module.out_features, (1, 1)
        elif not isinstance(module, _POINTWISE_MODULES):
            what = f"module '{node.target}' ({type(module).__name__})" if module is not None else f"operation '{node}'"
            raise ValueError(
                f"cannot convolutionalize {what}: after the flatten only Linear and pointwise layers "
                "(activations, dropout) have a convolutional equivalent"
            )


def convolutionalize(classifier: nn.Module, *, input_size: tuple[int, int] = (224, 224)) -> fx.GraphModule:
    """Turn a classification network into a fully convolutional one.

    Args:
        classifier: a torchvision-style classifier ``(N, B, H, W) -> (N, num_classes)`` (``B = 3`` for RGB, or the
            inputs of its first convolution). It is copied, not modified.
        input_size: the classifier's native input size ``(H, W)``; it fixes the kernel size of the first
            convolutionalized layer and of pooling heads (224 for torchvision's ImageNet models).

    Returns:
        A module ``(N, B, H, W) -> (N, num_classes, h, w)`` with the classifier's parameters, reshaped; at the
        native size ``h = w = 1`` and the scores equal the classifier's logits.

    Raises:
        ValueError: naming the module that has no convolutional equivalent (for example a transformer block).
    """
    was_training = classifier.training
    try:
        gm = fx.symbolic_trace(copy.deepcopy(classifier).eval())
    except Exception as err:  # fx raises many types; the user needs to know which network failed
        raise ValueError(f"cannot trace {type(classifier).__name__} to convolutionalize it: {err}") from err
    modules = dict(gm.named_modules())
    first = next((m for m in classifier.modules() if isinstance(m, nn.Conv2d)), None)
    bands = first.in_channels if first is not None else 3  # 3 for RGB, or an adapted first convolution's
    sample = torch.zeros(1, bands, *input_size, device=next(classifier.parameters()).device)
    with torch.no_grad():
        ShapeProp(gm).propagate(sample)

    flatten = next((n for n in gm.graph.nodes if _is_flatten(n, modules) or _is_spatial_mean(n)), None)
    if flatten is None:
        raise ValueError(
            f"cannot convolutionalize {type(classifier).__name__}: it never flattens an (N, C, h, w) feature map "
            "into the input of a Linear classifier (is it a transformer?)"
        )
    after = _downstream(flatten)
    _, channels, *spatial = _shape(flatten.args[0])
    if _is_spatial_mean(flatten):  # global mean and flatten in one op (ShuffleNet): a sliding average pool
        _replace_with_module(gm, flatten, "fcn_pool", nn.AvgPool2d(tuple(spatial), stride=1), flatten.args[0])
        kernel = (1, 1)
    else:
        pool = _head_pool(flatten, modules)
        if pool is not None:
            module_type = type(modules[pool.target]) if pool.op == "call_module" else None
            pool_type = _GLOBAL_POOL_MODULES[module_type] if module_type else _GLOBAL_POOL_FUNCTIONS[pool.target]
            _replace_with_module(gm, pool, "fcn_pool", _pool_replacement(pool, pool_type), pool.args[0])
        kernel = tuple(spatial)
        flatten.replace_all_uses_with(flatten.args[0])
        gm.graph.erase_node(flatten)
    _convert_classifier(gm, after, channels, kernel)
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm.train(was_training)
