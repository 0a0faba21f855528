"""Convolutionalization against the classifiers it came from."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from fcnseg import convolutionalize
from fcnseg.models.backbones import vgg_backbone

FAMILIES = [
    "vgg11",
    "vgg16",
    "vgg11_bn",
    "alexnet",
    "resnet18",
    "resnet50",
    "squeezenet1_0",
    "squeezenet1_1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "densenet121",
    "efficientnet_b0",
    "shufflenet_v2_x0_5",
    "regnet_y_400mf",
    "convnext_tiny",
]


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", FAMILIES)
def test_native_size_gives_the_classifier_logits(name: str) -> None:
    classifier = torchvision.models.get_model(name, weights=None).eval()
    fcn = convolutionalize(classifier).eval()
    assert _params(fcn) == _params(classifier)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = classifier(x)
        scores = fcn(x)
    assert scores.shape == (2, 1000, 1, 1)
    torch.testing.assert_close(scores.flatten(1), logits, rtol=1e-4, atol=1e-4)
    assert classifier(x).shape == (2, 1000)  # the classifier itself is left as it was


@pytest.mark.parametrize(
    ("name", "size", "expected"),
    [
        # VGG/ResNet/MobileNet: stride 32; the 7x7 window of fc6 / the 7x7 global pool slides with stride 1:
        # a 288x320 input gives 9x10 cells at stride 32, so (9 - 7 + 1) x (10 - 7 + 1) scores.
        ("vgg16", (288, 320), (3, 4)),
        ("resnet18", (288, 320), (3, 4)),
        ("mobilenet_v3_large", (288, 320), (3, 4)),
        # AlexNet: fc6 is 6x6 on conv features of (H + 4 - 11) // 4 + 1 -> three 3x3/2 pools: 288 -> 8, 320 -> 9.
        ("alexnet", (288, 320), (3, 4)),
        # SqueezeNet 1.1 pools 13x13 cells at stride 16: 288 -> 17, 320 -> 19 (ceil-mode pools).
        ("squeezenet1_1", (288, 320), (5, 7)),
    ],
)
def test_larger_inputs_give_the_predicted_score_map_size(name: str, size: tuple, expected: tuple) -> None:
    fcn = convolutionalize(torchvision.models.get_model(name, weights=None)).eval()
    with torch.no_grad():
        assert fcn(torch.randn(1, 3, *size)).shape == (1, 1000, *expected)


def test_each_score_is_the_classifier_on_its_window_for_an_unpadded_vgg16() -> None:
    """Without zero padding, score (i, j) at stride 32 is the classifier applied to the 404x404 window at (32i, 32j).

    An unpadded VGG16 maps 404 -> 7 cells at pool5 (each 3x3 conv removes 2 pixels, each pool halves), so its
    native size is 404; 436 x 468 gives 8 x 9 cells and a 2 x 3 score map.
    """
    classifier = torchvision.models.vgg16(weights=None).eval()
    for m in classifier.features:
        if isinstance(m, nn.Conv2d):
            m.padding = (0, 0)
    fcn = convolutionalize(classifier, input_size=(404, 404)).eval()
    assert fcn.get_submodule("classifier.0").kernel_size == (7, 7)
    x = torch.randn(1, 3, 436, 468)
    with torch.no_grad():
        scores = fcn(x)
        assert scores.shape == (1, 1000, 2, 3)
        for i in range(2):
            for j in range(3):
                window = x[:, :, 32 * i : 32 * i + 404, 32 * j : 32 * j + 404]
                torch.testing.assert_close(scores[:, :, i, j], classifier(window), rtol=1e-4, atol=1e-4)


def test_unconvertible_network_error_names_the_module() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.norm = nn.LayerNorm(4 * 222 * 222)
            self.fc = nn.Linear(4 * 222 * 222, 10)

        def forward(self, x):
            return self.fc(self.norm(torch.flatten(self.conv(x), 1)))

    with pytest.raises(ValueError, match=r"cannot convolutionalize module 'norm' \(LayerNorm\)"):
        convolutionalize(Odd())
    with pytest.raises(ValueError, match="cannot convolutionalize VisionTransformer"):
        convolutionalize(torchvision.models.vit_b_16(weights=None))


@pytest.mark.parametrize("name", ["vgg11", "vgg11_bn"])
def test_vgg_backbone_computes_fc7_as_the_classifier_does(name: str) -> None:
    """The VGG backbone's fc6/fc7 (``linear_to_conv``, the conversion ``convolutionalize`` uses) are the classifier's.

    At 224x224 the centre cell of the stride-32 feature sees exactly the classifier's fc6 window (fc6 is padded by 3
    in the default layout), so fc8 applied to it must give the classifier's logits. (AlexNet's backbone pads conv1
    unlike torchvision's classifier, on purpose: see ``alexnet_backbone``.)
    """
    torch.manual_seed(0)
    classifier = torchvision.models.get_model(name, weights=None).eval()
    backbone = vgg_backbone(copy.deepcopy(classifier)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        fc7 = backbone(x)[-1]
        logits = classifier.classifier[-1](fc7[:, :, 3, 3])
        torch.testing.assert_close(logits, classifier(x), rtol=1e-4, atol=1e-4)
