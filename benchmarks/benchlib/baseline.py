"""The reference point of ``benchmarks/suite.py``: FCN-8s VGG16 as common PyTorch reimplementations write it.

One ``nn.Module`` that declares every layer of the authors' ``voc-fcn8s`` net by name (``conv1_1`` .. ``fc7``,
``score_fr``, ``upscore2``, ``score_pool4``, ``upscore_pool4``, ``score_pool3``, ``upscore8``), in the style of
wkentaro/pytorch-fcn: ``conv1_1`` padded by 100, ceil-mode pooling, ``ConvTranspose2d`` upsamplers and the literal
crop offsets 5, 9 and 31. It runs in plain fp32 eager mode with contiguous (NCHW) tensors, and is what the speed of
fcnseg's default path is measured against. :func:`baseline_from_fcnseg` copies the weights of fcnseg's
``fcn8s_vgg16`` in the ``caffe`` layout, so both compute the same function (Long, Shelhamer and Darrell, 2015).
"""

from __future__ import annotations

import torch
from torch import nn

from fcnseg.models import FCN

__all__ = ["REFERENCE_CROPS", "BaselineFCN8s", "baseline_from_fcnseg"]

# The crop offsets of the authors' voc-fcn8s/net.py (score_pool4c, score_pool3c, score), which fcnseg derives from
# coordinate maps (fcnseg.models.geometry); baseline_from_fcnseg checks that the two agree.
REFERENCE_CROPS = (5, 9, 31)

# (name, in_channels, out_channels) of the 3x3 convolutions of VGG16, block by block.
_VGG16_BLOCKS = (
    (("conv1_1", 3, 64), ("conv1_2", 64, 64)),
    (("conv2_1", 64, 128), ("conv2_2", 128, 128)),
    (("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256)),
    (("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512)),
    (("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)),
)


class BaselineFCN8s(nn.Module):
    """FCN-8s VGG16, authors' layout, every layer an attribute. ``(N, 3, H, W) -> (N, K, H, W)``."""

    def __init__(self, num_classes: int = 21) -> None:
        super().__init__()
        for block, convs in enumerate(_VGG16_BLOCKS, start=1):
            for name, cin, cout in convs:
                padding = 100 if name == "conv1_1" else 1  # pad 100: every crop offset stays non-negative
                setattr(self, name, nn.Conv2d(cin, cout, 3, padding=padding))
                setattr(self, name.replace("conv", "relu"), nn.ReLU(inplace=True))
            setattr(self, f"pool{block}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
        self.fc6 = nn.Conv2d(512, 4096, 7)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout2d()
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout2d()
        self.score_fr = nn.Conv2d(4096, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        h = self.relu1_1(self.conv1_1(h))
        h = self.relu1_2(self.conv1_2(h))
        h = self.pool1(h)  # 1/2
        h = self.relu2_1(self.conv2_1(h))
        h = self.relu2_2(self.conv2_2(h))
        h = self.pool2(h)  # 1/4
        h = self.relu3_1(self.conv3_1(h))
        h = self.relu3_2(self.conv3_2(h))
        h = self.relu3_3(self.conv3_3(h))
        h = self.pool3(h)  # 1/8
        pool3 = h
        h = self.relu4_1(self.conv4_1(h))
        h = self.relu4_2(self.conv4_2(h))
        h = self.relu4_3(self.conv4_3(h))
        h = self.pool4(h)  # 1/16
        pool4 = h
        h = self.relu5_1(self.conv5_1(h))
        h = self.relu5_2(self.conv5_2(h))
        h = self.relu5_3(self.conv5_3(h))
        h = self.pool5(h)  # 1/32
        h = self.drop6(self.relu6(self.fc6(h)))
        h = self.drop7(self.relu7(self.fc7(h)))
        h = self.score_fr(h)
        h = self.upscore2(h)
        upscore2 = h  # 1/16
        h = self.score_pool4(pool4)
        h = h[:, :, 5 : 5 + upscore2.size(2), 5 : 5 + upscore2.size(3)]
        score_pool4c = h
        h = upscore2 + score_pool4c
        h = self.upscore_pool4(h)
        upscore_pool4 = h  # 1/8
        h = self.score_pool3(pool3)
        h = h[:, :, 9 : 9 + upscore_pool4.size(2), 9 : 9 + upscore_pool4.size(3)]
        score_pool3c = h
        h = upscore_pool4 + score_pool3c
        h = self.upscore8(h)
        h = h[:, :, 31 : 31 + x.size(2), 31 : 31 + x.size(3)].contiguous()
        return h


def baseline_from_fcnseg(model: FCN) -> BaselineFCN8s:
    """A :class:`BaselineFCN8s` holding copies of the weights of fcnseg's caffe-layout ``fcn8s_vgg16``.

    Args:
        model: ``create_model("fcn8s_vgg16", num_classes=K, layout="caffe")``, in any state; it is not modified.

    Returns:
        The baseline on the model's device, in eval mode, with the upsampling weights fixed as in fcnseg.

    Raises:
        ValueError: when ``model`` is not an FCN-8s VGG16 in the authors' layout (other crops, shapes or layers).
    """
    config = getattr(model, "config", {})
    if config.get("name") != "fcn8s_vgg16" or config.get("options", {}).get("layout") != "caffe":
        raise ValueError(f"the baseline is FCN-8s VGG16 in the caffe layout; got {config or type(model).__name__}")
    if config["options"].get("at_once"):
        raise ValueError("the baseline is the staged FCN-8s; the at-once variant scales its skips")
    if tuple(model.head.crops) != REFERENCE_CROPS:
        raise ValueError(f"fcnseg derived crops {model.head.crops}, the reference uses {REFERENCE_CROPS}")
    head = model.head
    sources: dict[str, nn.Module] = {
        name: module
        for stage in model.backbone.stages
        for name, module in stage.named_children()
        if name.startswith(("conv", "fc"))
    }
    sources |= {
        "score_fr": head.score_fr,
        "upscore2": head.skips[0].upscore,
        "score_pool4": head.skips[0].score,
        "upscore_pool4": head.skips[1].upscore,
        "score_pool3": head.skips[1].score,
        "upscore8": head.upscore,
    }
    weight = next(model.parameters())
    baseline = BaselineFCN8s(model.num_classes).to(device=weight.device, dtype=weight.dtype)
    targets = {name: m for name, m in baseline.named_children() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}
    if sorted(sources) != sorted(targets):
        raise ValueError(f"layers differ: fcnseg has {sorted(sources)}, the baseline {sorted(targets)}")
    with torch.no_grad():
        for name, target in targets.items():
            source = sources[name]
            for attr in ("weight", "bias"):
                dst, src = getattr(target, attr), getattr(source, attr)
                if (dst is None) != (src is None) or (dst is not None and dst.shape != src.shape):
                    shapes = [None if t is None else tuple(t.shape) for t in (src, dst)]
                    raise ValueError(f"{name}.{attr}: fcnseg {shapes[0]} vs baseline {shapes[1]}")
                if dst is not None:
                    dst.copy_(src)
                    dst.requires_grad_(src.requires_grad)  # fixed bilinear upsampling stays fixed (lr_mult 0)
    return baseline.eval()
