"""Every registered model: exact output shape at even and odd sizes, gradients everywhere, no NaN; head details."""

from __future__ import annotations

import pytest
import torch

from fcnseg import create_model, list_models
from fcnseg.models import bilinear_kernel, bilinear_upsampler, count_parameters, per_channel_upsampler


def _randomize_scores(model: torch.nn.Module) -> None:
    """Score layers start at zero, which blocks gradients to the backbone; give them random weights."""
    for p in model.head.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.01)


@pytest.mark.parametrize("name", list_models())
def test_model_shapes_and_gradients(name: str) -> None:
    model = create_model(name, num_classes=5)
    _randomize_scores(model)
    for h, w in [(64, 96), (37, 53)]:
        model.zero_grad()
        x = torch.randn(2, 3, h, w)
        y = model(x)
        assert y.shape == (2, 5, h, w)
        assert torch.isfinite(y).all()
        y.square().mean().backward()
        no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
        assert not no_grad, f"no gradient reached {no_grad[:5]}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_list_models_covers_the_paper_nets_and_filters() -> None:
    names = list_models()
    assert {"fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16", "fcn8s_squeezenet1_1", "fcn32s_resnet50"} <= set(names)
    assert list_models("fcn8s_*") == [n for n in names if n.startswith("fcn8s_")]
    # SqueezeNet's features end at stride 16: there is no FCN-32s on it.
    assert "fcn32s_squeezenet1_1" not in names


def test_unknown_model_and_option_errors_are_helpful() -> None:
    with pytest.raises(ValueError, match=r"unknown model .fcn8s_vgg15.*fcn8s_vgg16"):
        create_model("fcn8s_vgg15", num_classes=3)
    with pytest.raises(ValueError, match="layout"):
        create_model("fcn8s_resnet18", num_classes=3, layout="caffe")
    with pytest.raises(ValueError, match="layout must be"):
        create_model("fcn8s_vgg11", num_classes=3, layout="tf")


def test_bilinear_kernel_matches_the_references_closed_form() -> None:
    # upsample_filt(4): factor 2, centre 1.5, ramp 1 - |i - 1.5| / 2 = [0.25, 0.75, 0.75, 0.25]
    ramp4 = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(bilinear_kernel(4), torch.outer(ramp4, ramp4))
    # upsample_filt(3): factor 2, centre 1, ramp [0.5, 1, 0.5]
    ramp3 = torch.tensor([0.5, 1.0, 0.5])
    torch.testing.assert_close(bilinear_kernel(3), torch.outer(ramp3, ramp3))
    # upsample_filt(16) (factor 8, centre 7.5): first and middle taps
    k16 = bilinear_kernel(16)
    assert k16[0, 0].item() == pytest.approx((1 - 7.5 / 8) ** 2)
    assert k16[7, 8].item() == pytest.approx((1 - 0.5 / 8) ** 2)


def test_fixed_upsampling_interpolates_linear_ramps_exactly() -> None:
    """Bilinear interpolation reproduces a linear function away from the borders."""
    model = create_model("fcn32s_vgg11", num_classes=2)
    up = model.head.upscore  # kernel 64, stride 32
    ramp = torch.arange(6, dtype=torch.float32)
    score = torch.stack([ramp.expand(6, 6), ramp[:, None].expand(6, 6)])[None]  # (1, 2, 6, 6), x and y ramps
    out = up(score)[0]  # (2, 224, 224); input cell i sits at output 32 * i + 31.5
    cols = torch.arange(40, 180)
    expected = (cols - 31.5) / 32
    torch.testing.assert_close(out[0, 100, 40:180], expected)
    torch.testing.assert_close(out[1, 40:180, 100], expected)
    assert up.weight[0, 1].abs().sum() == 0  # no mixing between classes


def test_per_channel_upsampler_equals_the_full_one_and_refuses_mixing_layers() -> None:
    up = bilinear_upsampler(5, 8, kernel=15)
    grouped = per_channel_upsampler(up)
    assert grouped.groups == 5 and grouped.weight.shape == (5, 1, 15, 15)
    score = torch.randn(2, 5, 7, 9) * 10
    torch.testing.assert_close(grouped(score), up(score), rtol=0, atol=1e-5)
    # A layer that mixes classes, or may learn to, keeps its full weight.
    mixing = bilinear_upsampler(5, 2)
    with torch.no_grad():
        mixing.weight[0, 3, 1, 1] = 0.1
    assert per_channel_upsampler(mixing) is None
    assert per_channel_upsampler(bilinear_upsampler(5, 2, learnable=True)) is None


def test_head_initialisation_and_options() -> None:
    model = create_model("fcn8s_vgg11", num_classes=4)
    scores = [model.head.score_fr, *(s.score for s in model.head.skips)]
    assert all(layer.weight.abs().sum() == 0 and layer.bias.abs().sum() == 0 for layer in scores)
    ups = [model.head.upscore, *(s.upscore for s in model.head.skips)]
    assert not any(u.weight.requires_grad for u in ups)
    torch.testing.assert_close(model.head.upscore.weight[3, 3], bilinear_kernel(16))
    learn = create_model("fcn8s_vgg11", num_classes=4, learnable_upsampling=True)
    assert all(u.weight.requires_grad for u in [learn.head.upscore, *(s.upscore for s in learn.head.skips)])
    assert model.config == {"name": "fcn8s_vgg11", "num_classes": 4, "options": {}}


@pytest.mark.parametrize(("skip", "scale"), [(0, 0.01), (1, 0.0001)])  # pool4, pool3 as in voc-fcn8s-atonce
def test_at_once_scales_what_each_skip_contributes(skip: int, scale: float) -> None:
    plain = create_model("fcn8s_resnet18", num_classes=3).eval()
    at_once = create_model("fcn8s_resnet18", num_classes=3, at_once=True).eval()
    at_once.load_state_dict(plain.state_dict())
    for model in (plain, at_once):  # only this skip's score layer, without bias: the output is linear in its input
        torch.nn.init.normal_(model.head.skips[skip].score.weight, generator=torch.Generator().manual_seed(1))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        reference, scaled = plain(x), at_once(x)
    assert reference.abs().max() > 0
    torch.testing.assert_close(scaled, scale * reference, rtol=1e-4, atol=1e-5 * scale * reference.abs().max().item())


# The authors' voc-fcn{32,16,8}s nets (21 classes), parameter by parameter, as listed in their net.py:
VGG16_CONVS = 14_714_688  # conv1_1 .. conv5_3 with biases
FC6 = 512 * 7 * 7 * 4096 + 4096
FC7 = 4096 * 4096 + 4096
SCORE_FR = 4096 * 21 + 21
SCORE_POOL4 = 512 * 21 + 21
SCORE_POOL3 = 256 * 21 + 21


def _deconv(kernel: int) -> int:  # Deconvolution num_output=21 on 21 channels, bias_term=False
    return 21 * 21 * kernel * kernel


@pytest.mark.parametrize(
    ("name", "expected_params", "expected_crops"),
    [
        ("fcn32s_vgg16", VGG16_CONVS + FC6 + FC7 + SCORE_FR + _deconv(64), [19]),
        ("fcn16s_vgg16", VGG16_CONVS + FC6 + FC7 + SCORE_FR + _deconv(4) + SCORE_POOL4 + _deconv(32), [5, 27]),
        (
            "fcn8s_vgg16",
            VGG16_CONVS + FC6 + FC7 + SCORE_FR + _deconv(4) + SCORE_POOL4 + _deconv(4) + SCORE_POOL3 + _deconv(16),
            [5, 9, 31],
        ),
    ],
)
def test_caffe_layout_is_the_authors_net(name: str, expected_params: int, expected_crops: list[int]) -> None:
    model = create_model(name, num_classes=21, layout="caffe")
    assert count_parameters(model) == expected_params
    assert model.head.crops == expected_crops
    stages = model.backbone.stages
    assert stages[0].conv1_1.padding == (100, 100)
    assert stages[2].fc6.kernel_size == (7, 7) and stages[2].fc6.padding == (0, 0)
    assert all(m.ceil_mode for s in stages for m in s if isinstance(m, torch.nn.MaxPool2d))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 53)).shape == (1, 21, 37, 53)


def test_default_layout_has_the_same_weights_without_padding_waste() -> None:
    caffe = create_model("fcn8s_vgg16", num_classes=21, layout="caffe")
    default = create_model("fcn8s_vgg16", num_classes=21)
    assert count_parameters(caffe) == count_parameters(default)
    assert default.backbone.stages[0].conv1_1.padding == (1, 1)
    # Stride-32 map of a 500x500 image: ceil(500 / 32) = 16 cells here; (500 + 200) pixels reach pool5 in Caffe.
    x = torch.randn(1, 3, 500, 500)
    with torch.no_grad():
        assert default.backbone(x)[2].shape[-2:] == (16, 16)
        assert caffe.backbone(x)[1].shape[-2:] == (44, 44)  # pool4 of a 700x700 padded image
