"""Every score path of every model is centred on the pixel it scores, measured from outside the model.

The probe linearises a model without looking at its geometry code: constant positive weights, max pools replaced
by average pools of the same window, activations replaced by the identity, the fixed bilinear upsampling kept. The
network is then a positive linear map, and the centroid of ``|d output[c] / d input|`` is where output pixel ``c``
reads the image. Each path's score layer writes its own class, so one backward pass per class measures one path:
class 0 is the coarsest (``score_fr``), class i the i-th skip (``score_pool4``, then ``score_pool3``). A path is
aligned when that centroid is ``c`` itself.

The input is one pixel wide (or high): with separable constant kernels and zero padding, the linear map along one
axis does not depend on the extent of the other, and the receptive fields of the widest backbones (ResNet-101) fit
in the 2049-pixel axis without touching the border.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

from fcnseg import create_model, list_models
from fcnseg.models.torchvision_fcn import TORCHVISION_FCNS

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU)
LENGTH = 2049  # 64 cells of stride 32, plus one: the centre pixel 1024 is interior for every backbone
CENTRE = LENGTH // 2
WIDTH = 33  # the other axis: wide enough for every unpadded pooling window


def _replace(model: nn.Module) -> None:
    for name, module in list(model.named_modules()):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(module, nn.MaxPool2d):
            pool = nn.AvgPool2d(module.kernel_size, module.stride, module.padding, ceil_mode=module.ceil_mode)
            setattr(parent, child, pool)
        elif isinstance(module, SqueezeExcitation):
            # A per-channel gain that does not move coordinates; its global pool would spread the gradient
            # uniformly over the image and pull every centroid towards the image centre.
            setattr(parent, child, nn.Identity())
        elif isinstance(module, _ACTIVATIONS):
            setattr(parent, child, nn.Identity())


def linearised(name: str) -> tuple[nn.Module, int]:
    """``name`` with constant positive weights and one class per score path; returns it and the number of paths."""
    probe = create_model(name, num_classes=1)
    paths = 1 + len(probe.head.skips)
    model = create_model(name, num_classes=paths).eval()
    _replace(model)
    scores = [model.head.score_fr, *(s.score for s in model.head.skips)]
    upsamplers = {id(m) for m in model.head.modules() if isinstance(m, nn.ConvTranspose2d)}
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module not in scores:
                fan_in = module.weight[0].numel()
                module.weight.fill_(1.0 / fan_in)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()  # weight 1, bias 0, mean 0, var 1
            elif isinstance(module, nn.ConvTranspose2d):
                assert id(module) in upsamplers  # the fixed bilinear filters stay as they are
        for path, layer in enumerate(scores):
            layer.weight.zero_()
            layer.bias.zero_()
            layer.weight[path].fill_(1.0 / layer.weight[path].numel())
    return model, paths


def path_centroids(model: nn.Module, paths: int, axis: int) -> list[float]:
    """Centroid along ``axis`` (2: rows, 3: columns) of the input gradient of pixel ``CENTRE``, for each path."""
    shape = [paths, 3, WIDTH, WIDTH]
    shape[axis] = LENGTH
    x = torch.full(shape, 0.5, requires_grad=True)
    out = model(x)  # (paths, paths, LENGTH, WIDTH) or (paths, paths, WIDTH, LENGTH)
    assert out.shape[-2:] == x.shape[-2:]
    picked = out.narrow(axis, CENTRE, 1).narrow(5 - axis, WIDTH // 2, 1).flatten(2)[:, :, 0]  # (paths, paths)
    picked.diagonal().sum().backward()  # sample b carries the gradient of class b only
    weight = x.grad.abs().sum((1, 5 - axis))  # (paths, LENGTH)
    assert (weight.sum(1) > 0).all(), "a path does not reach the centre pixel"
    assert (weight[:, [0, -1]] == 0).all(), "the receptive field reaches the border: lengthen the probe"
    positions = torch.arange(LENGTH, dtype=torch.float64)
    return ((weight * positions).sum(1) / weight.sum(1)).tolist()


# torchvision's FCN interpolates its scores 3.5 px off centre by design (tests/test_convert.py measures it).
@pytest.mark.parametrize("name", [n for n in list_models() if n not in TORCHVISION_FCNS])
def test_every_score_path_is_centred_on_its_pixel(name: str) -> None:
    model, paths = linearised(name)
    for axis in (2, 3):
        offsets = [c - CENTRE for c in path_centroids(model, paths, axis)]
        assert offsets == pytest.approx([0.0] * paths, abs=1e-2), f"path offsets in pixels along axis {axis}"


def test_a_checkpoint_with_the_old_even_kernels_is_refused_with_the_reason() -> None:
    from fcnseg.models import model_from_checkpoint

    model = create_model("fcn8s_resnet18", num_classes=2)
    state = model.state_dict()
    state["head.upscore.weight"] = torch.zeros(2, 2, 16, 16)  # the kernel 2f of the misaligned head
    ckpt = {"model": {"name": "fcn8s_resnet18", "num_classes": 2, "options": {}}, "state_dict": state}
    with pytest.raises(ValueError, match="retrain"):
        model_from_checkpoint(ckpt)
