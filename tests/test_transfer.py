"""``--init-from`` across datasets: a model trained on other classes starts one for yours.

The backbone is loaded bit for bit; the class-dependent layers are what a new model has (score layers zero, the
bilinear filter of ``upsample_filt`` on the diagonal of each upsampling, zero elsewhere), checked against those
closed forms rather than against the code that builds them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fcnseg.training.loop as loop
from fcnseg import create_model
from fcnseg.cli.main import main
from fcnseg.core.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from fcnseg.data import CAMVID_CLASSES, IMAGENET_MEAN, IMAGENET_STD
from fcnseg.models import load_init_weights

MODEL = "fcn8s_squeezenet1_1"  # small; fuses strides 16 and 8: two score layers, two upsamplings
TWO_CLASSES = (("background", (0, 0, 0)), ("object", (250, 40, 40)))


def camvid_checkpoint(name: str = MODEL, seed: int = 1) -> dict:
    """An 11-class checkpoint with CamVid's classes whose every tensor differs from a freshly built model's."""
    model = create_model(name, num_classes=CAMVID_CLASSES.num_classes)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.01)
    return make_checkpoint(model, classes=CAMVID_CLASSES.as_dict(), mean=IMAGENET_MEAN, std=IMAGENET_STD)


def assert_new_head(model: torch.nn.Module, num_classes: int) -> None:
    """Score layers zero; each upsampling holds the bilinear filter on its diagonal and zeros elsewhere."""
    head = model.head
    for score in [head.score_fr, *(s.score for s in head.skips)]:
        assert score.out_channels == num_classes
        assert not score.weight.any() and not score.bias.any()
    for up in [head.upscore, *(s.upscore for s in head.skips)]:
        weight = up.weight.detach()
        k = weight.shape[-1]
        # upsample_filt(k): factor (k + 1) // 2, centre factor - 1 (odd k) or factor - 0.5 (even k)
        factor = (k + 1) // 2
        centre = factor - 1 if k % 2 else factor - 0.5
        ramp = 1 - np.abs(np.arange(k) - centre) / factor
        expected = torch.zeros(num_classes, num_classes, k, k)
        for c in range(num_classes):
            expected[c, c] = torch.from_numpy(np.outer(ramp, ramp)).float()
        torch.testing.assert_close(weight, expected, rtol=0, atol=1e-7)


def test_other_classes_keep_the_backbone_bit_for_bit_and_get_a_new_head(caplog: pytest.LogCaptureFixture) -> None:
    ckpt = camvid_checkpoint()
    model = create_model(MODEL, num_classes=2)
    with caplog.at_level(logging.INFO, logger="fcnseg.models.restore"):
        fresh = load_init_weights(model, ckpt, classes=[n for n, _ in TWO_CLASSES], source="camvid.pt")
    own = model.state_dict()
    backbone = [k for k in own if k.startswith("backbone.")]
    assert backbone and all(torch.equal(own[k], ckpt["state_dict"][k]) for k in backbone)
    assert sorted(fresh) == sorted(k for k in own if k.startswith("head."))
    assert_new_head(model, 2)
    lines = [r.getMessage() for r in caplog.records if r.name == "fcnseg.models.restore"]
    assert len(lines) == 1
    assert f"kept backbone ({len(backbone)} tensors)" in lines[0] and "re-created for 2 classes" in lines[0]
    assert "head.score_fr" in lines[0] and "head.upscore" in lines[0]


def test_same_count_of_other_classes_recreates_the_head_and_same_classes_keep_it() -> None:
    ckpt = camvid_checkpoint()
    renamed = create_model(MODEL, num_classes=11)
    load_init_weights(renamed, ckpt, classes=[f"class {i}" for i in range(11)])
    assert_new_head(renamed, 11)  # the shapes fit, but the classes mean something else
    same = create_model(MODEL, num_classes=11)
    assert load_init_weights(same, ckpt, classes=CAMVID_CLASSES.names) == []
    for key, value in same.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][key]), key


def test_the_first_convolution_is_reexpressed_for_the_runs_normalisation(caplog: pytest.LogCaptureFixture) -> None:
    # A checkpoint whose weights take Caffe's input (0..255 minus a mean), fine-tuned with ImageNet's normalisation.
    caffe = {"mean": [122.7 / 255, 116.7 / 255, 104.0 / 255], "std": [1 / 255] * 3}
    ckpt = camvid_checkpoint() | {"normalization": caffe}
    imagenet = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    model = create_model(MODEL, num_classes=2)
    with caplog.at_level(logging.INFO, logger="fcnseg.models.restore"):
        load_init_weights(model, ckpt, classes=["a", "b"], normalization=imagenet)
    assert "first convolution re-expressed for mean [0.485, 0.456, 0.406]" in caplog.records[-1].getMessage()
    pixels = torch.rand(1, 3, 21, 25, generator=torch.Generator().manual_seed(2))
    old_conv = torch.nn.functional.conv2d(  # the checkpoint's first layer on the input it was trained on
        (pixels - torch.tensor(caffe["mean"]).view(1, 3, 1, 1)) / torch.tensor(caffe["std"]).view(1, 3, 1, 1),
        ckpt["state_dict"]["backbone.stages.0.0.weight"],
        ckpt["state_dict"]["backbone.stages.0.0.bias"],
        stride=2,
    )  # no padding: the interior, where the kernel sees no padded pixel
    conv = model.backbone.stages[0][0]
    new = (pixels - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        got = torch.nn.functional.conv2d(new, conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(got, old_conv, rtol=1e-5, atol=1e-5 * old_conv.abs().max().item())
    same = create_model(MODEL, num_classes=2)
    load_init_weights(same, ckpt | {"normalization": imagenet}, normalization=imagenet)
    assert torch.equal(same.backbone.stages[0][0].weight, ckpt["state_dict"]["backbone.stages.0.0.weight"])

    # ResNet's conv1 has no bias: the mean shift goes into bn1's running mean (eval mode: exact in the interior).
    resnet = camvid_checkpoint("fcn8s_resnet18") | {"normalization": caffe}
    old = create_model("fcn8s_resnet18", num_classes=11)
    old.load_state_dict(resnet["state_dict"])
    new_model = create_model("fcn8s_resnet18", num_classes=2)
    load_init_weights(new_model, resnet, classes=["a", "b"], normalization=imagenet)
    caffe_input = (pixels - torch.tensor(caffe["mean"]).view(1, 3, 1, 1)) / torch.tensor(caffe["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = old.eval().backbone.stages[0][:2](caffe_input)[..., 2:-2, 2:-2]  # conv1 (7x7, pad 3), bn1
        got = new_model.eval().backbone.stages[0][:2](new)[..., 2:-2, 2:-2]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_another_backbone_layout_or_band_count_is_one_line() -> None:
    model = create_model(MODEL, num_classes=2)
    with pytest.raises(ValueError, match=r"camvid.pt \(fcn8s_resnet18\).*backbone resnet18, not squeezenet1_1") as err:
        load_init_weights(model, camvid_checkpoint("fcn8s_resnet18"), source="camvid.pt")
    assert "\n" not in str(err.value)
    with torch.device("meta"):  # only the checks run: no weights are needed
        vgg = create_model("fcn32s_vgg11", num_classes=2)
    caffe = {"model": {"name": "fcn32s_vgg11", "num_classes": 21, "options": {"layout": "caffe"}}, "state_dict": {}}
    with pytest.raises(ValueError, match=r"VGG layout is caffe, this model's default; use --layout caffe"):
        load_init_weights(vgg, caffe)
    bands = camvid_checkpoint() | {"model": {"name": MODEL, "num_classes": 11, "options": {"in_channels": 4}}}
    with pytest.raises(ValueError, match="reads 4-band images, this model 3-band ones"):
        load_init_weights(model, bands)
    at_once = camvid_checkpoint() | {"model": {"name": MODEL, "num_classes": 11, "options": {"at_once": True}}}
    with pytest.raises(ValueError, match="is the at-once FCN-8s and keeps its classes: pass --at-once"):
        load_init_weights(create_model(MODEL, num_classes=11), at_once, classes=CAMVID_CLASSES.names)


def write_two_class_folder(root: Path, count: int = 8, size: tuple[int, int] = (48, 64)) -> Path:
    """A folder dataset of bright squares on noise: ``images/``, index ``masks/``, ``classes.txt``, split lists."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    names = []
    for i in range(count):
        image = rng.integers(0, 120, (*size, 3), dtype=np.uint8)
        mask = np.zeros(size, np.uint8)
        y, x = rng.integers(4, size[0] - 20), rng.integers(4, size[1] - 20)
        image[y : y + 16, x : x + 16] = 230
        mask[y : y + 16, x : x + 16] = 1
        Image.fromarray(image).save(root / "images" / f"s{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"s{i}.png")
        names.append(f"s{i}")
    (root / "train.txt").write_text("\n".join(names[:6]) + "\n")
    (root / "val.txt").write_text("\n".join(names[6:]) + "\n")
    (root / "classes.txt").write_text("".join(f"{n} {r} {g} {b}\n" for n, (r, g, b) in TWO_CLASSES))
    return root


def test_fcnseg_train_fine_tunes_a_camvid_checkpoint_on_two_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = camvid_checkpoint()
    init = save_checkpoint(ckpt, tmp_path / "camvid.pt")
    data = write_two_class_folder(tmp_path / "data")
    loaded = {}
    real = loop.load_init_weights

    def spy(model, checkpoint, **kwargs):  # the trainer's model right after loading, before any step
        fresh = real(model, checkpoint, **kwargs)
        loaded.update({k: v.detach().clone() for k, v in model.state_dict().items()}, model=model)
        return fresh

    monkeypatch.setattr(loop, "load_init_weights", spy)
    args = ["train", "--model", MODEL, "--dataset", "folder", "--data-root", str(data), "--classes"]
    args += [str(data / "classes.txt"), "--init-from", str(init), "--out", str(tmp_path / "run"), "--iters", "2"]
    args += ["--batch-size", "2", "--crop-size", "48", "48", "--val-every", "2", "--workers", "0", "--device", "cpu"]
    with caplog.at_level(logging.INFO):
        assert main([*args, "--precision", "fp32"]) == 0

    model = loaded.pop("model")
    backbone = [k for k in loaded if k.startswith("backbone.")]
    assert all(torch.equal(loaded[k], ckpt["state_dict"][k]) for k in backbone)
    with torch.no_grad():
        model.load_state_dict(loaded)
    assert_new_head(model, 2)
    lines = [r.getMessage() for r in caplog.records if r.name == "fcnseg.models.restore"]
    assert len(lines) == 1 and lines[0].startswith(f"initialised from {init} ({MODEL}, 11 classes): kept backbone")
    assert "re-expressed" not in lines[0]  # the run normalises as the checkpoint did (ImageNet's, for RGB)
    print(lines[0])  # the line the report quotes
    tuned = load_checkpoint(tmp_path / "run" / "last.pt")
    assert tuned["model"]["num_classes"] == 2
    assert tuned["classes"] == {"names": [n for n, _ in TWO_CLASSES], "colors": [list(c) for _, c in TWO_CLASSES]}
    assert tuned["config"]["init_from"] == str(init)
