"""The fast path's model preparation: what ``Predictor`` runs instead of the model it was given.

On CPU, every ``Conv2d`` is run by oneDNN (``torch.ops.mkldnn._convolution_pointwise``) with its weight cast and
reordered into oneDNN's blocked layout once, not on every call as an eager convolution under autocast does; a
``BatchNorm2d`` that directly follows the convolution in a ``Sequential`` is folded into its weight, and a ReLU
(ReLU6, Hardswish, SiLU) that follows is fused into it. On a 2-core AVX512-BF16 CPU this makes FCN-8s VGG16 at
500x500 about 1.3-1.5x faster than eager bf16 autocast (benchmarks/README.md). The weights are packed at the first
call and again only when they change.

In bf16, two cheap parts stay in fp32: the convolutions that read the 3-channel image (rounding the normalised image
to bf16, 8 significant bits, costs about one grey level) and, for an :class:`~fcnseg.models.FCN`, the head (score
layers, skip fusion and upsampling: well under 1% of the FLOPs, but bf16 rounds logits of magnitude 8-16 to steps
of 1/16, enough to flip close decisions). On CamVid test images through a trained FCN-8s SqueezeNet this lifts
the argmax agreement with fp32 from 99.56% (plain autocast) to 99.80%.

The prepared module shares the parameters of the original (nothing is copied until a layer is packed) and leaves
the original untouched; it computes the same logits at the precision it was prepared for, and is meant to be run
by :func:`~fcnseg.inference.engine.segment_logits` at that precision.
"""

from __future__ import annotations

import copy
import functools
import logging

import torch
from torch import Tensor, nn

import fcnseg.models as models
from fcnseg.core.device import autocast_dtype, cpu_has_native_bf16, memory_format

__all__ = [
    "Float32Head",
    "PackedConv2d",
    "PerChannelUpsample",
    "packed_bytes",
    "per_channel_upsamplers",
    "prepare_for_inference",
]

logger = logging.getLogger(__name__)

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

    def forward(self, x: Tensor) -> Tensor:
        key = tuple((t.data_ptr(), _version(t)) for t in self._sources())
        if key != self._key:
            self._pack(list(x.shape))
            self._key = key
        c = self.conv
        return torch.ops.mkldnn._convolution_pointwise(
            x.to(self.dtype),
            self._weight,
            self._bias,
            list(c.padding),
            list(c.stride),
            list(c.dilation),
            c.groups,
            self.attr,
            self.scalars,
            "",
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
    fp32 = {m for m in fast.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3}  # they read the image
    if isinstance(fast, models.FCN) and dtype is not torch.float32:
        fp32 |= set(fast.head.modules())
        fast.head = Float32Head(fast.head)
    count = sum(_pack_children(m, dtype, fp32) for m in list(fast.modules()))
    logger.debug("packed %d convolutions for %s inference", count, dtype)
    return fast if count or isinstance(fast, models.FCN) else model  # nothing to pack: the model itself
