"""``load_caffe_params``: with the normalisation it returns, the model computes what the Caffe net computes.

The reference is Caffe's data path and first layer written out by hand in NumPy (float64), independently of the
code under test: the image is read as BGR in 0..255 (``voc_layers.py``: ``in_[:, :, ::-1]``, ``in_ -= mean``),
zero-padded by 100 after the mean is subtracted (Caffe pads the blob it receives), and correlated with
conv1_1's blob, whose input channels are in BGR order, plus its bias.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from fcnseg import create_model
from fcnseg.data import eval_transforms
from fcnseg.models.caffe import CAFFE_MEAN_BGR, caffe_layer_names, load_caffe_params

PAD = 100  # voc-fcn*s/net.py: conv1_1 pad=100


def caffe_conv1_1(rgb: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Caffe's conv1_1 output ``(64, H + 198, W + 198)`` for an RGB uint8 image ``(H, W, 3)``."""
    bgr = rgb[:, :, ::-1].astype(np.float64) - np.asarray(CAFFE_MEAN_BGR)  # (H, W, 3), BGR, mean subtracted
    blob = np.pad(bgr.transpose(2, 0, 1), ((0, 0), (PAD, PAD), (PAD, PAD)))  # (3, H + 200, W + 200)
    k = weight.shape[-1]
    out_h, out_w = blob.shape[1] - k + 1, blob.shape[2] - k + 1
    out = np.zeros((weight.shape[0], out_h, out_w))
    for i in range(k):
        for j in range(k):  # correlation, as Caffe's im2col + GEMM computes it
            out += np.einsum("oc,chw->ohw", weight[:, :, i, j], blob[:, i : i + out_h, j : j + out_w])
    return out + bias[:, None, None]


@pytest.fixture(scope="module")
def caffe_vgg() -> torch.nn.Module:
    # vgg11's caffe layout has the same conv1_1 (3 -> 64, 3x3, pad 100) as the authors' VGG16 and is cheaper to build
    return create_model("fcn32s_vgg11", num_classes=3, layout="caffe").eval()


def synthetic_blobs(model: torch.nn.Module, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Caffe-shaped blobs for every layer: random for conv1_1, zeros (not touched by this test) elsewhere."""
    rng = np.random.default_rng(seed)
    modules = dict(model.named_modules())
    blobs = {}
    for name, path in caffe_layer_names(model).items():
        module = modules[path]
        shapes = [module.weight.shape] + ([module.bias.shape] if module.bias is not None else [])
        if name == "conv1_1":
            blobs[name] = [rng.normal(0, 0.05, s).astype(np.float32) for s in shapes]
        else:
            blobs[name] = [np.zeros(tuple(s), np.float32) for s in shapes]
    return blobs


def test_conv1_1_matches_a_hand_computed_caffe_forward(caffe_vgg: torch.nn.Module) -> None:
    blobs = synthetic_blobs(caffe_vgg)
    norm = load_caffe_params(caffe_vgg, blobs)
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)  # a pure red pixel: a missing channel flip would show in it
    expected = caffe_conv1_1(rgb, *blobs["conv1_1"])  # (64, 203, 205)

    got = _conv1_1_output(caffe_vgg, rgb, norm["mean"], norm["std"])
    assert got.shape == expected.shape == (64, 5 + 2 * PAD - 2, 7 + 2 * PAD - 2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    # The padded border sees only zeros in Caffe's blob (mean-subtracted image padded by 0): the bias alone.
    np.testing.assert_allclose(got[:, 0, 0], blobs["conv1_1"][1], rtol=1e-5, atol=1e-5)


def _conv1_1_output(model: torch.nn.Module, rgb: np.ndarray, mean, std) -> np.ndarray:
    image = tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1))  # what datasets return
    mask = tv_tensors.Mask(torch.zeros(rgb.shape[:2], dtype=torch.int64))
    x, _ = eval_transforms(mean, std)(image, mask)  # the pipeline fcnseg feeds the model
    with torch.no_grad():
        return model.backbone.stages[0].conv1_1(x[None].float())[0].double().numpy()


def test_the_check_sees_a_missing_flip_or_a_mean_in_bgr_order(caffe_vgg: torch.nn.Module) -> None:
    """The comparison above can fail: a loader that forgot either half of the conversion does not pass it."""
    blobs = synthetic_blobs(caffe_vgg)
    norm = load_caffe_params(caffe_vgg, blobs)
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = caffe_conv1_1(rgb, *blobs["conv1_1"])
    conv = caffe_vgg.backbone.stages[0].conv1_1
    assert np.allclose(_conv1_1_output(caffe_vgg, rgb, norm["mean"], norm["std"]), expected, rtol=1e-4, atol=1e-3)
    assert not np.allclose(_conv1_1_output(caffe_vgg, rgb, norm["mean"][::-1], norm["std"]), expected, atol=1e-2)
    with torch.no_grad():
        conv.weight.copy_(conv.weight.flip(1))  # the blob as stored, BGR input channels
    assert not np.allclose(_conv1_1_output(caffe_vgg, rgb, norm["mean"], norm["std"]), expected, atol=1e-2)


def test_missing_or_misshapen_blobs_are_all_reported(caffe_vgg: torch.nn.Module) -> None:
    blobs = synthetic_blobs(caffe_vgg)
    del blobs["fc7"]
    blobs["conv1_1"] = [blobs["conv1_1"][0][:, :2]]  # two input channels, and no bias
    before = caffe_vgg.backbone.stages[0].conv1_1.weight.clone()
    with pytest.raises(ValueError, match=r"missing layers \['fc7'\].*conv1_1"):
        load_caffe_params(caffe_vgg, blobs)
    assert torch.equal(caffe_vgg.backbone.stages[0].conv1_1.weight, before)  # all or nothing
