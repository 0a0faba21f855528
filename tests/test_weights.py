"""Backbone weights from local files: the shared ImageNet SqueezeNet, a saved VGG16, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from conftest import SQUEEZENET_WEIGHTS, require

from fcnseg import create_model
from fcnseg.models.weights import resolve_weights


def test_imagenet_squeezenet_file_loads_into_the_backbone() -> None:
    path = require(SQUEEZENET_WEIGHTS)
    state = torch.load(path, weights_only=True)
    model = create_model("fcn8s_squeezenet1_1", num_classes=11, backbone_weights=path)
    # Backbone parameters are named stages.<s>.<index in features>...; strip the stage to get torchvision's key.
    ours = {"features." + k.split(".", 2)[2]: v for k, v in model.backbone.state_dict().items()}
    assert set(ours) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0)


def test_vgg16_state_dict_transplants_fc6_fc7_by_reshaping(tmp_path: Path) -> None:
    classifier = torchvision.models.vgg16(weights=None).eval()
    path = tmp_path / "vgg16.pth"
    torch.save(classifier.state_dict(), path)
    model = create_model("fcn32s_vgg16", num_classes=21, backbone_weights=str(path)).eval()
    fc6 = model.backbone.stages[2].fc6
    torch.testing.assert_close(fc6.weight, classifier.classifier[0].weight.reshape(4096, 512, 7, 7))
    # Independent check: at 224x224, the default layout's pool5 is 7x7 and fc6 is padded by 3, so the centre cell of
    # fc7 sees exactly the classifier's input window; it must equal the classifier's fc7 activation.
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        fc7 = model.backbone(x)[2][:, :, 3, 3]
        reference = classifier.classifier[:5](torch.flatten(classifier.avgpool(classifier.features(x)), 1))
    torch.testing.assert_close(fc7, reference, rtol=1e-4, atol=1e-4)


def test_wrong_keys_and_shapes_are_listed_and_nothing_loads(tmp_path: Path) -> None:
    state = torchvision.models.squeezenet1_1(weights=None).state_dict()
    renamed = dict(state)
    renamed["features.0.kernel"] = renamed.pop("features.0.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(ValueError, match=r"missing keys: features\.0\.weight; unexpected keys: features\.0\.kernel"):
        create_model("fcn8s_squeezenet1_1", num_classes=3, backbone_weights=tmp_path / "renamed.pth")
    reshaped = dict(state)
    reshaped["features.3.squeeze.weight"] = torch.zeros(8, 64, 1, 1)
    torch.save(reshaped, tmp_path / "reshaped.pth")
    with pytest.raises(ValueError, match=r"wrong shapes: features\.3\.squeeze\.weight \(file \(8, 64, 1, 1\)"):
        create_model("fcn8s_squeezenet1_1", num_classes=3, backbone_weights=tmp_path / "reshaped.pth")
    features_only = {k: v for k, v in torchvision.models.vgg11(weights=None).state_dict().items() if "features" in k}
    torch.save(features_only, tmp_path / "vgg11_features.pth")
    with pytest.raises(ValueError, match=r"missing keys: classifier\.0\.bias, classifier\.0\.weight"):
        create_model("fcn8s_vgg11", num_classes=3, backbone_weights=tmp_path / "vgg11_features.pth")


def test_weight_names_resolve_without_downloading(tmp_path: Path) -> None:
    assert resolve_weights("vgg16", "DEFAULT") is torchvision.models.VGG16_Weights.IMAGENET1K_V1
    assert (
        resolve_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V2")
        is torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    )
    with pytest.raises(ValueError, match=r"unknown backbone weights .IMAGENET.*IMAGENET1K_V1"):
        resolve_weights("vgg16", "IMAGENET")
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        resolve_weights("vgg16", str(tmp_path / "nope.pth"))
    (tmp_path / "bad.pth").write_text("not torch")
    with pytest.raises(ValueError, match="cannot read backbone weights"):
        create_model("fcn8s_vgg11", num_classes=3, backbone_weights=tmp_path / "bad.pth")
