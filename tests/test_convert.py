"""``fcnseg convert``: others' FCN weights become fcnseg models that compute what the originals compute.

- The authors' ``.caffemodel``: the test writes one with its own protobuf encoder from the public ``caffe.proto``
  field numbers (BVLC/caffe ``src/caffe/proto/caffe.proto``), with random blobs for the whole VGG16 FCN-8s, and
  checks the converted model against a NumPy forward of Caffe's first layers (BGR, 0..255, mean subtracted, padded
  by 100) and against the existing blob path (``load_caffe_params`` on the same blobs).
- wkentaro/pytorch-fcn: a reference module written here from its key layout and forward (``torchfcn/models/
  fcn{32,16,8}s.py``: pad 100, crops 19; 5, 27; 5, 9, 31), random weights, fed Caffe's input convention.
- torchvision's ``fcn_resnet50``/``fcn_resnet101`` with random weights and batch-norm statistics.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from test_alignment import _replace
from test_transfer import write_two_class_folder
from torch import nn

from fcnseg import create_model
from fcnseg.cli.main import main
from fcnseg.core.checkpoint import load_checkpoint
from fcnseg.data import VOC_CLASSES
from fcnseg.models import convert_weights, read_caffemodel
from fcnseg.models.caffe import CAFFE_MEAN_BGR, load_caffe_params

# --- a protobuf encoder, from the wire format (protobuf.dev/programming-guides/encoding) -------------------------

LEN, VARINT, I32, I64 = 2, 0, 5, 1


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def nbytes(chunks: list) -> int:
    return sum(memoryview(c).nbytes for c in chunks)


def ld(number: int, chunks: list) -> list:
    """A length-delimited field holding ``chunks`` (kept as a list so that big blobs are written, never joined)."""
    return [key(number, LEN) + varint(nbytes(chunks)), *chunks]


def blob(array: np.ndarray, *, legacy: bool = False, packed: bool = True, double: bool = False) -> list:
    """BlobProto: shape = 7 (BlobShape: dim = 1, packed) or legacy num/channels/height/width = 1..4; data = 5."""
    a = np.ascontiguousarray(array, dtype="<f8" if double else "<f4")
    if legacy:
        dims = (1,) * (4 - a.ndim) + a.shape
        head = [b"".join(key(n, VARINT) + varint(d) for n, d in zip((1, 2, 3, 4), dims, strict=True))]
    else:
        head = ld(7, ld(1, [b"".join(varint(d) for d in a.shape)]))
    if double:  # double_data = 8
        return head + ld(8, [memoryview(a).cast("B")])
    if packed:
        return head + ld(5, [memoryview(a).cast("B")])
    return head + [key(5, I32) + struct.pack("<f", v) for v in a.ravel()]


def layer(name: str, kind: str, blobs: list[list] = (), *, pad: int | None = None, crop: int | None = None) -> list:
    """LayerParameter: name = 1, type = 2, blobs = 7, convolution_param = 106 (pad = 3), crop_param = 144
    (offset = 2)."""
    out = ld(1, [name.encode()]) + ld(2, [kind.encode()])
    for b in blobs:
        out += ld(7, b)
    if pad is not None:
        out += ld(106, [key(1, VARINT) + varint(1), key(3, VARINT) + varint(pad)])  # num_output (unused), pad
    if crop is not None:
        out += ld(144, [key(1, VARINT) + varint(2), key(2, VARINT) + varint(crop)])  # axis 2, offset
    return out


def v1_layer(name: str, kind: int, blobs: list[list] = ()) -> list:
    """V1LayerParameter: name = 4, type = 5 (enum LayerType: CONVOLUTION 4, DECONVOLUTION 39), blobs = 6."""
    out = [*ld(4, [name.encode()]), key(5, VARINT) + varint(kind)]
    for b in blobs:
        out += ld(6, b)
    return out


def write_net(path: Path, layers: list[list], *, v1: bool = False) -> Path:
    """NetParameter: name = 1, layer = 100 (or the V1 layers = 2)."""
    chunks = ld(1, [b"test-net"])
    for lay in layers:
        chunks += ld(2 if v1 else 100, lay)
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
    return path


def test_the_reader_takes_v2_and_v1_layers_legacy_shapes_unpacked_and_double_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w, b, d = rng.normal(size=(2, 3, 1, 1)), rng.normal(size=2), rng.normal(size=(2, 2, 4, 4))
    layers = read_caffemodel(
        write_net(
            tmp_path / "v2.caffemodel",
            [
                layer("data", "Input"),
                layer("conv", "Convolution", [blob(w), blob(b, legacy=True, packed=False)], pad=100),
                layer("up", "Deconvolution", [blob(d, double=True)]),
                layer("score", "Crop", crop=31),
            ],
        )
    )
    assert [(x.name, x.type, x.pad, x.crop_offset) for x in layers] == [
        ("data", "Input", (), ()),
        ("conv", "Convolution", (100,), ()),
        ("up", "Deconvolution", (), ()),
        ("score", "Crop", (), (31,)),
    ]
    np.testing.assert_array_equal(layers[1].blobs[0], w.astype(np.float32))
    np.testing.assert_array_equal(layers[1].blobs[1], b.astype(np.float32).reshape(1, 1, 1, 2))  # legacy 4-D
    np.testing.assert_array_equal(layers[2].blobs[0], d.astype(np.float32))
    old = read_caffemodel(
        write_net(tmp_path / "v1.caffemodel", [v1_layer("c", 4, [blob(w)]), v1_layer("u", 39)], v1=True)
    )
    assert [(x.name, x.type) for x in old] == [("c", "Convolution"), ("u", "Deconvolution")]
    np.testing.assert_array_equal(old[0].blobs[0], w.astype(np.float32))
    (tmp_path / "junk.caffemodel").write_bytes(b"\x07\x00not protobuf")
    with pytest.raises(ValueError, match=r"junk.caffemodel' is not a Caffe .caffemodel"):
        read_caffemodel(tmp_path / "junk.caffemodel")


# --- the authors' VGG16 FCN-8s (voc-fcn8s/net.py), independent of fcnseg's model code -----------------------------

VGG16 = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
K = 21


def fcn8s_layers(rng: np.random.Generator) -> tuple[list[list], dict[str, list[np.ndarray]]]:
    """The net's layers (with crops 5, 9, 31 and conv1_1's pad 100, as net.py writes them) and their random blobs."""
    layers, blobs, c_in = [layer("data", "Input")], {}, 3

    def param(name: str, kind: str, weight: tuple, bias: bool = True, **geometry) -> None:
        fan_in = int(np.prod(weight[1:]))
        w = rng.standard_normal(weight, dtype=np.float32)
        w *= np.float32((2 / fan_in) ** 0.5)
        blobs[name] = [w] + ([rng.normal(0, 0.1, weight[0]).astype(np.float32)] if bias else [])
        layers.append(layer(name, kind, [blob(x) for x in blobs[name]], **geometry))

    for i, widths in enumerate(VGG16, 1):
        for j, c in enumerate(widths, 1):
            param(f"conv{i}_{j}", "Convolution", (c, c_in, 3, 3), pad=100 if (i, j) == (1, 1) else 1)
            layers.append(layer(f"relu{i}_{j}", "ReLU"))
            c_in = c
        layers.append(layer(f"pool{i}", "Pooling"))
    param("fc6", "Convolution", (4096, 512, 7, 7), pad=0)
    param("fc7", "Convolution", (4096, 4096, 1, 1), pad=0)
    param("score_fr", "Convolution", (K, 4096, 1, 1))
    param("upscore2", "Deconvolution", (K, K, 4, 4), bias=False)
    param("score_pool4", "Convolution", (K, 512, 1, 1))
    layers += [layer("score_pool4c", "Crop", crop=5), layer("fuse_pool4", "Eltwise")]
    param("upscore_pool4", "Deconvolution", (K, K, 4, 4), bias=False)
    param("score_pool3", "Convolution", (K, 256, 1, 1))
    layers += [layer("score_pool3c", "Crop", crop=9), layer("fuse_pool3", "Eltwise")]
    param("upscore8", "Deconvolution", (K, K, 16, 16), bias=False)
    layers.append(layer("score", "Crop", crop=31))
    return layers, blobs


@pytest.fixture(scope="module")
def caffe_fcn8s(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """A full FCN-8s .caffemodel (134M random parameters, 538 MB), written once for this module, and its blobs."""
    layers, blobs = fcn8s_layers(np.random.default_rng(0))
    path = write_net(tmp_path_factory.mktemp("caffe") / "fcn8s.caffemodel", layers)
    del layers
    return path, blobs


@pytest.fixture(scope="module")
def converted_fcn8s(caffe_fcn8s):
    return convert_weights(caffe_fcn8s[0])


def test_a_caffemodel_converts_to_what_the_blob_path_loads(caffe_fcn8s, converted_fcn8s) -> None:
    _, blobs = caffe_fcn8s
    model = converted_fcn8s.model
    assert model.config == {"name": "fcn8s_vgg16", "num_classes": K, "options": {"layout": "caffe", "at_once": False}}
    reference = create_model("fcn8s_vgg16", num_classes=K, layout="caffe")
    normalization = load_caffe_params(reference, blobs)
    assert converted_fcn8s.normalization == normalization
    theirs = reference.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name
    assert converted_fcn8s.dropped == []


def caffe_first_layers(rgb: np.ndarray, blobs: dict[str, list[np.ndarray]]) -> np.ndarray:
    """Caffe's conv1_1 + relu1_1 + conv1_2 + relu1_2 in float64: ``(H, W, 3)`` uint8 RGB -> ``(64, H + 198, W + 198)``.

    The image as voc_layers.py feeds it (BGR, 0..255, minus the mean), zero-padded by 100 (conv1_1) then by 1
    (conv1_2), each layer a correlation plus bias (Caffe's im2col + GEMM), then max(0, .).
    """
    x = (rgb[:, :, ::-1].astype(np.float64) - np.asarray(CAFFE_MEAN_BGR)).transpose(2, 0, 1)  # (3, H, W)
    for name, pad in (("conv1_1", 100), ("conv1_2", 1)):
        weight, bias = (b.astype(np.float64) for b in blobs[name])
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
        k = weight.shape[-1]
        h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
        out = np.zeros((weight.shape[0], h, w))
        for i in range(k):
            for j in range(k):
                out += np.einsum("oc,chw->ohw", weight[:, :, i, j], x[:, i : i + h, j : j + w])
        x = np.maximum(out + bias[:, None, None], 0)
    return x


def test_a_converted_caffemodel_computes_caffes_first_layers(caffe_fcn8s, converted_fcn8s) -> None:
    _, blobs = caffe_fcn8s
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)  # pure red: a missing channel flip shows here
    expected = caffe_first_layers(rgb, blobs)  # (64, 203, 205)
    norm = converted_fcn8s.normalization
    mean, std = (torch.tensor(norm[k]).view(3, 1, 1) for k in ("mean", "std"))
    x = ((torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - mean) / std)[None]
    with torch.no_grad():
        got = converted_fcn8s.model.backbone.stages[0][:4](x)[0].double().numpy()  # conv1_1, relu, conv1_2, relu
    assert got.shape == expected.shape == (64, 5 + 198, 7 + 198)
    diff = np.abs(got - expected).max()
    print(f"caffemodel conv1_2 max |difference| {diff:.3g} (outputs up to {np.abs(expected).max():.3g})")
    assert diff <= 1e-5 * np.abs(expected).max()


def deploy_prototxt(path: Path, crops: tuple[int, int, int] = (5, 9, 31), pad: int = 100) -> Path:
    """The parts of voc-fcn8s/deploy.prototxt that carry geometry (and every parameter layer's name)."""
    names = [f"conv{i}_{j}" for i, widths in enumerate(VGG16, 1) for j in range(1, len(widths) + 1)]
    names += ["fc6", "fc7", "score_fr", "upscore2", "score_pool4", "upscore_pool4", "score_pool3", "upscore8"]
    text = [f'layer {{ name: "{n}" type: "Convolution" }}' for n in names[1:]]
    text.insert(0, f'layer {{ name: "conv1_1" type: "Convolution" convolution_param {{ num_output: 64 pad: {pad} }} }}')
    for name, offset in zip(("score_pool4c", "score_pool3c", "score"), crops, strict=True):
        text.append(
            f'layer {{ name: "{name}" type: "Crop"  # a comment\n  crop_param {{ axis: 2 offset: {offset} }} }}'
        )
    path.write_text('name: "voc-fcn8s"\n' + "\n".join(text) + "\n")
    return path


def test_a_prototxt_of_other_geometry_is_refused(caffe_fcn8s, tmp_path: Path) -> None:
    path, _ = caffe_fcn8s
    with pytest.raises(ValueError, match=r"crops at \[5, 9, 30\], where the fcnseg net derives \[5, 9, 31\]"):
        convert_weights(path, prototxt=deploy_prototxt(tmp_path / "a.prototxt", crops=(5, 9, 30)))
    with pytest.raises(ValueError, match=r"pads conv1_1 by \(1,\)"):
        convert_weights(path, prototxt=deploy_prototxt(tmp_path / "b.prototxt", pad=1))


def test_fcnseg_convert_writes_an_ordinary_voc_checkpoint(caffe_fcn8s, tmp_path: Path, capsys) -> None:
    path, blobs = caffe_fcn8s
    out = tmp_path / "fcn8s-voc.pt"
    assert (
        main(["convert", str(path), "--out", str(out), "--prototxt", str(deploy_prototxt(tmp_path / "d.prototxt"))])
        == 0
    )
    assert "fcn8s_vgg16 (layout=caffe, at_once=False), 21 classes" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert ckpt["model"]["name"] == "fcn8s_vgg16" and ckpt["classes"] == VOC_CLASSES.as_dict()
    assert ckpt["config"]["dataset"] == "voc"
    np.testing.assert_allclose(ckpt["normalization"]["mean"], [m / 255 for m in CAFFE_MEAN_BGR[::-1]])
    torch.testing.assert_close(  # conv1_1's input channels flipped from Caffe's BGR to RGB
        ckpt["state_dict"]["backbone.stages.0.conv1_1.weight"], torch.from_numpy(blobs["conv1_1"][0][:, ::-1].copy())
    )


# --- wkentaro/pytorch-fcn ------------------------------------------------------------------------------------------


class PytorchFCN(nn.Module):
    """FCN32s / FCN16s / FCN8s / FCN8sAtOnce as torchfcn/models/fcn*.py declare and run them (eval mode)."""

    def __init__(self, variant: str, n_class: int = K) -> None:
        super().__init__()
        self.variant = variant
        c_in = 3
        for i, widths in enumerate(VGG16, 1):
            for j, c in enumerate(widths, 1):
                setattr(self, f"conv{i}_{j}", nn.Conv2d(c_in, c, 3, padding=100 if (i, j) == (1, 1) else 1))
                c_in = c
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.fc6, self.fc7 = nn.Conv2d(512, 4096, 7), nn.Conv2d(4096, 4096, 1)
        self.score_fr = nn.Conv2d(4096, n_class, 1)
        if variant == "FCN32s":
            self.upscore = nn.ConvTranspose2d(n_class, n_class, 64, stride=32, bias=False)
            return
        self.score_pool4 = nn.Conv2d(512, n_class, 1)
        self.upscore2 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)
        if variant == "FCN16s":
            self.upscore16 = nn.ConvTranspose2d(n_class, n_class, 32, stride=16, bias=False)
            return
        self.score_pool3 = nn.Conv2d(256, n_class, 1)
        self.upscore_pool4 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(n_class, n_class, 16, stride=8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, pools = x, {}
        for i, widths in enumerate(VGG16, 1):
            for j in range(1, len(widths) + 1):
                h = torch.relu(getattr(self, f"conv{i}_{j}")(h))
            h = pools[i] = self.pool(h)
        h = self.score_fr(torch.relu(self.fc7(torch.relu(self.fc6(h)))))  # drop6, drop7: identity in eval
        if self.variant == "FCN32s":
            return self.upscore(h)[:, :, 19 : 19 + x.size(2), 19 : 19 + x.size(3)]
        up = self.upscore2(h)
        scale4, scale3 = (0.01, 0.0001) if self.variant == "FCN8sAtOnce" else (1, 1)
        h = up + self.score_pool4(pools[4] * scale4)[:, :, 5 : 5 + up.size(2), 5 : 5 + up.size(3)]
        if self.variant == "FCN16s":
            return self.upscore16(h)[:, :, 27 : 27 + x.size(2), 27 : 27 + x.size(3)]
        up = self.upscore_pool4(h)
        h = up + self.score_pool3(pools[3] * scale3)[:, :, 9 : 9 + up.size(2), 9 : 9 + up.size(3)]
        return self.upscore8(h)[:, :, 31 : 31 + x.size(2), 31 : 31 + x.size(3)]


@pytest.mark.parametrize("variant", ["FCN32s", "FCN16s", "FCN8s", "FCN8sAtOnce"])
def test_pytorch_fcn_state_dicts_compute_the_same_function(variant: str, tmp_path: Path) -> None:
    reference = PytorchFCN(variant).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random everywhere, the upsamplings included, with activations of unit scale
        for p in reference.parameters():
            std = (2 / p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    state = reference.state_dict()
    if variant == "FCN8sAtOnce":  # as pytorch-fcn's trainer saves it: the arch names the at-once net
        state = {"arch": "FCN8sAtOnce", "iteration": 1, "model_state_dict": state}
    torch.save(state, tmp_path / "fcn.pth")
    converted = convert_weights(tmp_path / "fcn.pth")
    assert converted.model.config["options"]["at_once"] == (variant == "FCN8sAtOnce")

    rgb = torch.randint(0, 256, (1, 3, 45, 61), generator=generator).float()
    bgr = rgb.flip(1) - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)  # pytorch-fcn's datasets: RGB -> BGR - mean
    mean, std = (torch.tensor(converted.normalization[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        expected, got = reference(bgr), converted.model((rgb / 255 - mean) / std)
    diff = (got - expected).abs().max().item()
    print(f"pytorch-fcn {variant}: max |logit difference| {diff:.3g} (logits up to {expected.abs().max():.3g})")
    assert got.shape == expected.shape == (1, K, 45, 61)
    assert diff <= 1e-5 * expected.abs().max().item()


# --- torchvision -----------------------------------------------------------------------------------------------------


def random_torchvision_fcn(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    builder = getattr(torchvision.models.segmentation, name)
    model = builder(weights=None, weights_backbone=None, aux_loss=True)
    with torch.no_grad():  # batch-norm statistics and affine terms away from identity, so that a mix-up shows
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["fcn_resnet50", "fcn_resnet101"])
def test_torchvision_fcns_compute_what_torchvision_computes(name: str, tmp_path: Path) -> None:
    reference = random_torchvision_fcn(name)
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    converted = convert_weights(tmp_path / "tv.pth")
    assert converted.model.config["name"] == name and converted.dropped == ["aux_classifier"]
    x = torch.randn(2, 3, 61, 75)
    with torch.no_grad():
        expected, got = reference(x)["out"], converted.model(x)
    diff = (got - expected).abs().max().item()
    print(f"torchvision {name}: max |logit difference| {diff:.3g} (logits up to {expected.abs().max():.3g})")
    assert diff <= 1e-5 * expected.abs().max().item()


def receptive_centre(model: nn.Module, height: int, row: int) -> float:
    """Centroid (rows) of |d logit(row, centre column) / d input| for a ``height`` x 33 image."""
    x = torch.full((1, 3, height, 33), 0.5, requires_grad=True)
    model(x)[0, 0, row, 16].backward()
    weight = x.grad.abs().sum((0, 1, 3)).double()
    assert weight[0] == 0 and weight[-1] == 0, "the receptive field reaches the border: lengthen the probe"
    return float((weight * torch.arange(height)).sum() / weight.sum())


@pytest.mark.parametrize("height", [1024, 1025])
def test_torchvisions_scores_sit_off_their_pixels(height: int) -> None:
    """What docs/transfer.md says of its head, measured as tests/test_alignment.py measures fcnseg's heads.

    Interpolation maps the n = ceil(H / 8) score cells corner to corner onto the H rows, reading row y at cell
    (y + 0.5) n / H - 0.5, whose receptive field is centred on 8 times that: 3.5 rows above y when H = 8n.
    """
    model = create_model("fcn_resnet50", num_classes=1).eval()
    _replace(model)  # average pools, identity activations
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
    row, n = height // 2, -(-height // 8)
    expected = 8 * ((row + 0.5) * n / height - 0.5)
    assert expected - row == {1024: -3.5, 1025: 0.0}[height]
    assert receptive_centre(model, height, row) == pytest.approx(expected, abs=0.05)


@pytest.mark.slow
def test_a_converted_torchvision_fcn_predicts_exports_and_fine_tunes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference = random_torchvision_fcn("fcn_resnet50", seed=1)
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    ckpt = tmp_path / "fcn_resnet50-voc.pt"
    assert main(["convert", str(tmp_path / "tv.pth"), "--out", str(ckpt)]) == 0

    data = write_two_class_folder(tmp_path / "data")
    image = data / "images" / "s0.png"
    assert main(["predict", str(ckpt), str(image), "--out", str(tmp_path / "pred"), "--backend", "torch"]) == 0
    mask = np.asarray(Image.open(tmp_path / "pred" / "s0.png"))
    pixels = torch.from_numpy(np.array(Image.open(image))).permute(2, 0, 1).float() / 255
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    with torch.no_grad():
        expected = reference(((pixels - mean) / std)[None])["out"][0].argmax(0).numpy()
    assert (mask == expected).mean() > 0.99  # the same labels, but for near-ties of other rounding

    assert main(["export", str(ckpt), "--format", "pt2", "--out", str(tmp_path / "m.pt2")]) == 0  # checked vs eager

    args = ["train", "--model", "fcn_resnet50", "--dataset", "folder", "--data-root", str(data), "--classes"]
    args += [str(data / "classes.txt"), "--init-from", str(ckpt), "--out", str(tmp_path / "run"), "--iters", "2"]
    args += ["--batch-size", "2", "--crop-size", "48", "48", "--val-every", "2", "--workers", "0", "--device", "cpu"]
    with caplog.at_level(logging.INFO):
        assert main([*args, "--precision", "fp32"]) == 0
    line = next(r.getMessage() for r in caplog.records if r.name == "fcnseg.models.restore")
    assert "head.classifier.0, head.classifier.1; re-created for 2 classes as in a new model: head.classifier.4" in line
    assert load_checkpoint(tmp_path / "run" / "last.pt")["model"]["num_classes"] == 2
