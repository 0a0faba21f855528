"""The fast path's model preparation: what ``Predictor`` runs instead of the model it was given.

On CPU, every ``Conv2d`` is run by oneDNN (``torch.ops.mkldnn._convolution_pointwise``) with its weight cast and
reordered into oneDNN's blocked layout once, not on every call as an eager convolution under autocast does; a
``BatchNorm2d`` that directly follows the convolution is folded into its weight, and a ReLU (ReLU6, Hardswish,
SiLU) that follows is fused into it, which saves the casts and reorders that eager autocast repeats at every call
(docs/performance.md says how to time the two). "Follows" is read from a ``Sequential``'s order, and in blocks that
call their layers in their own ``forward`` (ResNet's ``Bottleneck``, SqueezeNet's ``Fire``) from the graph
``torch.fx`` traces: there an unfused batch norm and ReLU cost as much time as the convolutions. The weights are
packed at the first call and again only when they change.

In bf16, two cheap parts stay in fp32: the convolutions that read the 3-channel image (rounding the normalised image
to bf16, 8 significant bits, costs about one grey level) and, for an :class:`~fcnseg.models.FCN`, the head (score
layers, skip fusion and upsampling: well under 1% of the FLOPs, but bf16 rounds logits of magnitude 8-16 to steps
of 1/16, enough to flip close decisions); docs/performance.md says how to measure the argmax agreement with
fp32 that a trained model keeps on real images.

The prepared module shares the parameters of the original (nothing is copied until a layer is packed) and leaves
the original untouched; it computes the same logits at the precision it was prepared for, and is meant to be run
by :func:`~fcnseg.inference.engine.segment_logits` at that precision.
"""

from __future__ import annotations

import copy
import functools
import logging
import operator
from collections.abc import Callable

import torch
from torch import Tensor, fx, nn

import fcnseg.models as models
from fcnseg.core.device import autocast_dtype, cpu_has_native_bf16, memory_format
from fcnseg.inference.inputs import input_bands

__all__ = [
    "Float32Head",
    "PackedConv2d",
    "PerChannelUpsample",
    "packed_bytes",
    "per_channel_upsamplers",
    "prepare_for_inference",
]

logger = logging.getLogger(__name__)

_ADDS = (operator.add, operator.iadd, torch.add)  # how a residual connection is written

# Activation modules that oneDNN applies in the convolution's epilogue: module type -> (attribute, scalars).
_FUSABLE = {
    nn.ReLU: ("relu", []),
    nn.ReLU6: ("hardtanh", [0.0, 6.0]),
    nn.Hardswish: ("hardswish", []),
    nn.SiLU: ("swish", []),
}


class PackedConv2d(nn.Module):
    """A ``Conv2d`` (with a folded ``BatchNorm2d`` and a fused activation) on weights packed once for oneDNN.

    ``(N, C, H, W)`` in any float dtype -> ``(N, C', H', W')`` in ``dtype``. The weight is packed at the first call,
    for that call's input shape (the blocked layout oneDNN picks for 500x500 serves 360x480 as fast as its own),
    and packed again when a source parameter changes (replaced, or updated in place, which bumps its version).
    Called as ``packed(x, other)``, it adds ``other`` (a residual, ``(N, C', H', W')``) to the convolution's output
    before the activation, in the same pass: ``activation(norm(conv(x)) + other)``.

    Args:
        conv: the convolution; its parameters are read, not copied.
        dtype: ``torch.float32`` or ``torch.bfloat16``.
        norm: an eval-mode ``BatchNorm2d`` applied to the convolution's output, folded into the weight.
        activation: ``(attribute, scalars)`` of the activation to fuse, e.g. ``("relu", [])``.
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        dtype: torch.dtype,
        *,
        norm: nn.BatchNorm2d | None = None,
        activation: tuple[str, list[float]] = ("none", []),
    ) -> None:
        super().__init__()
        self.conv, self.norm, self.dtype = conv, norm, dtype
        self.attr, self.scalars = activation
        self._key: tuple | None = None
        self._weight: Tensor | None = None
        self._bias: Tensor | None = None

    def _sources(self) -> list[Tensor]:
        modules = [self.conv] + ([self.norm] if self.norm is not None else [])
        return [t for m in modules for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))]

    def _pack(self, shape: list[int]) -> None:
        c = self.conv
        weight, bias = c.weight.detach(), None if c.bias is None else c.bias.detach()
        if self.norm is not None:  # y = (conv(x) - mean) * gamma / sqrt(var + eps) + beta
            n = self.norm
            scale = n.running_var.add(n.eps).rsqrt() * (n.weight.detach() if n.affine else 1.0)
            shift = (0.0 if bias is None else bias) - n.running_mean
            weight = weight * scale.view(-1, 1, 1, 1)
            bias = shift * scale + (n.bias.detach() if n.affine else 0.0)
        weight = weight.to(self.dtype).contiguous(memory_format=torch.channels_last)
        self._weight = torch.ops.mkldnn._reorder_convolution_weight(
            weight, list(c.padding), list(c.stride), list(c.dilation), c.groups, shape
        )
        self._bias = None if bias is None else bias.to(self.dtype)

    def forward(self, x: Tensor, other: Tensor | None = None) -> Tensor:
        key = tuple((t.data_ptr(), _version(t)) for t in self._sources())
        if key != self._key:
            self._pack(list(x.shape))
            self._key = key
        c = self.conv
        geometry = (list(c.padding), list(c.stride), list(c.dilation), c.groups)
        x = x.to(self.dtype)
        if other is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, self._weight, self._bias, *geometry, self.attr, self.scalars, ""
            )
        other = other.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, other, self._weight, self._bias, *geometry, "add", None, self.attr, self.scalars, ""
        )

    @property
    def packed_bytes(self) -> int:
        """Bytes of the packed weight and bias (0 before the first call)."""
        return sum(t.numel() * t.element_size() for t in (self._weight, self._bias) if t is not None)

    def extra_repr(self) -> str:
        fused = ("batchnorm, " if self.norm is not None else "") + self.attr
        return f"{self.conv.in_channels}, {self.conv.out_channels}, {self.dtype}, fused={fused}"


def _version(t: Tensor) -> int:
    """The in-place update counter of ``t`` (tensors created under ``inference_mode`` have none: -1)."""
    try:
        return t._version
    except RuntimeError:
        return -1


def _packable(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and conv.weight.dtype == torch.float32
    )


def _foldable(norm: nn.Module) -> bool:
    return type(norm) is nn.BatchNorm2d and not norm.training and norm.track_running_stats


@functools.cache
def _packing_works(dtype: torch.dtype) -> bool:
    """Whether this PyTorch build runs packed oneDNN convolutions of ``dtype`` (tried once on a tiny input)."""
    try:
        conv = nn.Conv2d(2, 2, 3, padding=1)
        x = torch.randn(1, 2, 5, 5).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            expected = conv(x)
            got = PackedConv2d(conv, dtype)(x).float()
        return torch.allclose(got, expected, atol=0.1, rtol=0.1)
    except (AttributeError, RuntimeError, NotImplementedError) as err:
        logger.debug("packed oneDNN convolutions unavailable for %s: %s", dtype, err)
        return False


def _shallow_tree(module: nn.Module) -> nn.Module:
    """A copy of the module tree whose modules are new objects and whose parameters and buffers are shared."""
    clone = copy.copy(module)
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    clone._modules = {k: None if m is None else _shallow_tree(m) for k, m in module._modules.items()}
    return clone


class PerChannelUpsample(nn.Module):
    """A fixed bilinear upsampler run per channel, rebuilt when its source's weight changes (the fast path's).

    ``(N, C, h, w) -> (N, C, H, W)``, the source's output: per channel while the source's weight is diagonal
    (:func:`~fcnseg.models.upsample.per_channel_upsampler`), through the source itself once it is not.
    """

    def __init__(self, source: nn.ConvTranspose2d) -> None:
        super().__init__()
        self.source = source
        self._key: tuple | None = None
        self._grouped: nn.Module | None = None

    def forward(self, x: Tensor) -> Tensor:
        weight = self.source.weight
        key = (weight.data_ptr(), _version(weight))
        if key != self._key:
            self._grouped, self._key = models.per_channel_upsampler(self.source), key
        return (self._grouped or self.source)(x)


def per_channel_upsamplers(model: nn.Module, *, follow: bool = False) -> nn.Module:
    """``model`` with its fixed bilinear upsamplers run per channel: the same logits for a fraction of the work.

    Returns a copy of the module tree that shares ``model``'s parameters, each transposed convolution that
    :func:`~fcnseg.models.upsample.per_channel_upsampler` converts replaced by its per-channel equivalent (a copy
    made now; with ``follow``, a :class:`PerChannelUpsample` that follows later weight updates); ``model`` itself
    when there is none.
    """
    tree = _shallow_tree(model)
    count = 0
    for parent in list(tree.modules()):  # listed first: the wrappers added below hold their source as a child
        for name, child in parent._modules.items():
            grouped = None if child is None else models.per_channel_upsampler(child)
            if grouped is not None:
                parent._modules[name] = PerChannelUpsample(child) if follow else grouped
                count += 1
    return tree if count else model


class Float32Head(nn.Module):
    """An FCN head run in fp32 with autocast off: ``features`` (any float dtype), ``image`` -> fp32 logits."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    @property
    def num_used(self) -> int:
        return self.head.num_used

    def forward(self, features: list[Tensor], image: Tensor) -> Tensor:
        with torch.autocast(image.device.type, enabled=False):
            return self.head([f.float() for f in features], image)


def _pack_children(parent: nn.Module, dtype: torch.dtype, fp32: set[nn.Module]) -> int:
    """Replace the packable convolutions among ``parent``'s children by :class:`PackedConv2d`.

    Convolutions in ``fp32`` are packed in float32, the others in ``dtype``. In a ``Sequential``, a foldable
    ``BatchNorm2d`` right after the convolution and a fusable activation right after that are taken into it and
    replaced by ``Identity``.
    """
    if isinstance(parent, PackedConv2d):  # its convolution is packed already
        return 0
    children = parent._modules
    names = list(children)
    count = 0
    for i, name in enumerate(names):
        conv = children[name]
        if conv is None or not _packable(conv):
            continue
        following = [children[n] for n in names[i + 1 : i + 3]] if isinstance(parent, nn.Sequential) else []
        norm = following.pop(0) if following and _foldable(following[0]) else None
        activation = _FUSABLE.get(type(following[0])) if following else None
        conv_dtype = torch.float32 if conv in fp32 else dtype
        children[name] = PackedConv2d(conv, conv_dtype, norm=norm, activation=activation or ("none", []))
        absorbed = (norm is not None) + (activation is not None)
        for follower in names[i + 1 : i + 1 + absorbed]:
            children[follower] = nn.Identity()
        count += 1
    return count


def _only_user(node: fx.Node, modules: dict[str, nn.Module], accept: Callable[[nn.Module], bool]) -> fx.Node | None:
    """The node that alone uses ``node``'s output, when it calls a module that ``accept`` takes."""
    users = list(node.users)
    module = modules.get(users[0].target) if len(users) == 1 and users[0].op == "call_module" else None
    return users[0] if module is not None and accept(module) else None  # (a module fused just now is not listed)


def _residual_add(node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """``(add, other)`` when ``node``'s only user adds another tensor ``other`` to it (a residual connection)."""
    users = list(node.users)
    if len(users) != 1 or users[0].op != "call_function" or users[0].target not in _ADDS or users[0].kwargs:
        return None
    add = users[0]
    if len(add.args) != 2 or add.args.count(node) != 1:
        return None
    other = add.args[1] if add.args[0] is node else add.args[0]
    return (add, other) if isinstance(other, fx.Node) else None


def _fuse_chain(traced: fx.GraphModule, node: fx.Node, modules: dict[str, nn.Module], dtype: torch.dtype) -> bool:
    """Run the chain that starts at the convolution ``node`` (batch norm, residual add, activation: each optional, one
    at least) as one :class:`PackedConv2d` in ``dtype``; returns whether there was a chain."""
    norm_node = _only_user(node, modules, _foldable)
    residual = _residual_add(norm_node or node)
    last = residual[0] if residual else (norm_node or node)
    act_node = _only_user(last, modules, lambda m: type(m) in _FUSABLE)
    if (norm_node, residual, act_node) == (None, None, None) or len(node.args) != 1 or node.kwargs:
        return False
    norm = None if norm_node is None else modules[norm_node.target]
    activation = ("none", []) if act_node is None else _FUSABLE[type(modules[act_node.target])]
    name = f"{node.target.replace('.', '_')}_fused"
    traced.add_submodule(name, PackedConv2d(modules[node.target], dtype, norm=norm, activation=activation))
    end = act_node or last
    with traced.graph.inserting_before(end):  # where every input of the chain exists (the residual may come late)
        fused = traced.graph.call_module(name, (node.args[0], *(residual[1:] if residual else ())))
    end.replace_all_uses_with(fused)
    for dead in (act_node, residual[0] if residual else None, norm_node, node):  # users first
        if dead is not None:
            traced.graph.erase_node(dead)
    return True


def _fuse_graph(block: nn.Module, dtype: torch.dtype, fp32: set[nn.Module]) -> tuple[nn.Module, int]:
    """``block`` traced by ``torch.fx``, each ``Conv2d -> BatchNorm2d -> + residual -> activation`` chain of its graph
    (each step after the convolution optional, one present) run as one :class:`PackedConv2d`.

    This reaches the layers that a block calls in its own ``forward`` (torchvision's ``Bottleneck`` and
    ``BasicBlock``, SqueezeNet's ``Fire``), which :func:`_pack_children` cannot see as a sequence. Returns the new
    module and the number of chains fused, or ``block`` and 0 when it cannot be traced or has no chain.
    """
    try:
        traced = fx.symbolic_trace(block)
    except (fx.proxy.TraceError, TypeError, RuntimeError, AttributeError, NotImplementedError) as err:
        logger.debug("%s not traced (%s): its layers are packed one by one", type(block).__name__, err)
        return block, 0
    modules = dict(traced.named_modules())
    count = 0
    for node in list(traced.graph.nodes):
        conv = modules.get(node.target) if node.op == "call_module" else None
        if conv is not None and _packable(conv):
            count += _fuse_chain(traced, node, modules, torch.float32 if conv in fp32 else dtype)
    if not count:
        return block, 0
    traced.graph.lint()
    traced.recompile()
    traced.delete_all_unused_submodules()
    return traced, count


def _fuse_blocks(module: nn.Module, dtype: torch.dtype, fp32: set[nn.Module]) -> int:
    """Replace the blocks below ``module`` that :func:`_fuse_graph` fuses (not ``Sequential``s: those are
    :func:`_pack_children`'s, nor the fp32 head's); returns the number of chains fused."""
    count = 0
    for name, child in module._modules.items():
        if child is None or isinstance(child, nn.Sequential | PackedConv2d) or child in fp32:
            count += 0 if child is None else _fuse_blocks(child, dtype, fp32)
            continue
        kinds = {type(m) for m in child.children()}
        if nn.Conv2d in kinds and (nn.BatchNorm2d in kinds or kinds & set(_FUSABLE)):
            fused, n = _fuse_graph(child, dtype, fp32)
            if n:
                module._modules[name] = fused
                count += n
                continue
        count += _fuse_blocks(child, dtype, fp32)
    return count


def packed_bytes(module: nn.Module) -> int:
    """Bytes that the :class:`PackedConv2d` layers of ``module`` hold beside the original weights."""
    return sum(m.packed_bytes for m in module.modules() if isinstance(m, PackedConv2d))


def prepare_for_inference(model: nn.Module, device: torch.device | str, precision: str = "auto") -> nn.Module:
    """The module the fast path runs in place of ``model``: the same logits, computed faster.

    ``model`` is put in eval mode on ``device`` and, on CPU, converted to channels_last (in place, as before).
    On a CPU whose PyTorch has oneDNN, the returned module shares ``model``'s parameters and runs its
    convolutions as :class:`PackedConv2d` in the precision that ``precision`` resolves to (fp32, or bf16 where
    the CPU computes bf16 natively; in bf16, the image convolutions and an FCN's head stay fp32, see the module
    docstring); elsewhere it is ``model`` itself.

    Args:
        model: maps ``(N, 3, H, W)`` to ``(N, K, H, W)``.
        device: where inference runs.
        precision: the precision it will run at (see :func:`~fcnseg.core.device.autocast_dtype`).

    Returns:
        A module ``(N, 3, H, W) -> (N, K, H, W)``, to be run by the engine at ``precision``.
    """
    device = torch.device(device)
    amp = autocast_dtype(precision, device)
    model = model.to(device).eval()
    if device.type != "cpu":
        return model
    model.to(memory_format=memory_format(device))  # channels_last: oneDNN convolutions prefer NHWC
    dtype = torch.float32 if amp is None else amp
    if dtype not in (torch.float32, torch.bfloat16) or (dtype is torch.bfloat16 and not cpu_has_native_bf16()):
        return model
    if not _packing_works(dtype):
        return model
    fast = _shallow_tree(per_channel_upsamplers(model, follow=True)).eval()
    bands = input_bands(fast)  # 3 for RGB
    fp32 = {m for m in fast.modules() if isinstance(m, nn.Conv2d) and m.in_channels == bands}  # they read the image
    if isinstance(fast, models.FCN) and dtype is not torch.float32:
        fp32 |= set(fast.head.modules())
        fast.head = Float32Head(fast.head)
    count = _fuse_blocks(fast, dtype, fp32)
    count += sum(_pack_children(m, dtype, fp32) for m in list(fast.modules()))
    logger.debug("packed %d convolutions for %s inference", count, dtype)
    return fast if count or isinstance(fast, models.FCN) else model  # nothing to pack: the model itself
