"""Images of any band count: grey 8- and 16-bit, RGB, 4-band 16-bit RGB + NIR and 13-band TIFFs.

Each decoding rule of :mod:`fcnseg.data.decode` is checked against a plain NumPy reference; the adapted first
convolution against its closed form (a grey image through the 1-band model gives the logits of its RGB replica
through the RGB model); and a user's 4-band 16-bit TIFF folder goes from ``check-data`` to ``train``, ``eval``,
``predict`` (tiled too) and ``export`` (ONNX, OpenVINO), whose masks are the checkpoint's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from torch import nn
from torchvision import tv_tensors

from fcnseg.cli.main import main
from fcnseg.data import (
    DataError,
    band_statistics,
    eval_transforms,
    folder_dataset,
    infer_bands,
    normalize_image,
    normalize_uint8,
    train_transforms,
)
from fcnseg.data.decode import image_bands, read_bands, read_image
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.quantize import calibration_arrays
from fcnseg.inference.visualize import display_rgb
from fcnseg.models import BACKBONES, create_model, list_models, model_from_checkpoint
from fcnseg.models.weights import adapt_input_conv

# --- a user's 4-band dataset ---------------------------------------------------------------------------------------

CLASSES = (("background", (0, 0, 0)), ("water", (0, 0, 255)), ("vegetation", (0, 255, 0)))
# Per-class band means of 12-bit data (0..4095) in a 16-bit container: R, G, B, NIR (vegetation is bright in NIR).
BAND_MEANS = np.array([[1800, 1700, 1600, 900], [600, 800, 1400, 300], [500, 1200, 600, 3500]], dtype=np.int64)
# (stem, (H, W), planar layout): non-square, one larger than the 64x64 training crop, both TIFF layouts.
TILES = (
    ("a", (48, 72), "contig"),
    ("b", (56, 40), "separate"),
    ("c", (40, 60), "contig"),
    ("d", (64, 48), "separate"),
    ("big", (96, 128), "contig"),
)
CROP = 64


def _labels(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    labels = np.zeros(shape, np.uint8)
    labels[:, : w // 3] = 1  # water on the left
    top = int(rng.integers(h // 4, h // 2))
    labels[top:, w // 2 :] = 2  # vegetation bottom right
    return labels


def write_multiband(root: Path) -> dict[str, np.ndarray]:
    """``images/*.tif`` (4-band uint16, 12-bit values), ``masks/*.png`` (RGB colours), ``classes.txt``.

    Returns:
        ``stem -> (H, W, 4)`` uint16 array as written (the reference for every decoding check).
    """
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("".join(f"{n} {r} {g} {b}\n" for n, (r, g, b) in CLASSES))
    written = {}
    for i, (stem, shape, layout) in enumerate(TILES):
        rng = np.random.default_rng(i)
        labels = _labels(shape, rng)
        values = (BAND_MEANS[labels] + rng.integers(-150, 151, (*shape, 4))).clip(0, 4095).astype(np.uint16)
        data = values if layout == "contig" else np.moveaxis(values, -1, 0)
        tifffile.imwrite(root / "images" / f"{stem}.tif", data, photometric="minisblack", planarconfig=layout)
        colors = np.array([c for _, c in CLASSES], dtype=np.uint8)[labels]
        Image.fromarray(colors).save(root / "masks" / f"{stem}.png")
        written[stem] = values
    return written


def _unit(values: np.ndarray) -> np.ndarray:
    """The decoder's scale for 16-bit data, in NumPy: value / 65535 as float32."""
    return values.astype(np.float32) / np.float32(65535)


# --- decoding rules against NumPy --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["contig", "separate"])
@pytest.mark.parametrize("bands", [4, 13])
def test_multiband_tiff_is_read_as_stored_over_65535(tmp_path, layout: str, bands: int) -> None:
    values = np.random.default_rng(bands).integers(0, 4096, (9, 13, bands), dtype=np.uint16)
    path = tmp_path / "x.tif"
    data = values if layout == "contig" else np.moveaxis(values, -1, 0)
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig=layout)
    assert image_bands(path) == bands
    out = read_bands(path, bands)
    assert out.dtype == np.float32 and out.shape == (9, 13, bands)
    np.testing.assert_array_equal(out, _unit(values))  # not stretched by the image's maximum
    tensor = read_image(path, bands)
    assert tensor.shape == (bands, 9, 13)
    np.testing.assert_array_equal(tensor.numpy(), np.moveaxis(_unit(values), -1, 0))


def test_eight_bit_multiband_stays_uint8_and_a_page_stack_is_bands(tmp_path) -> None:
    values = np.random.default_rng(0).integers(0, 256, (7, 5, 4), dtype=np.uint8)
    contig = tmp_path / "rgbn.tif"
    tifffile.imwrite(contig, values, photometric="rgb", extrasamples=["unspecified"])
    np.testing.assert_array_equal(read_bands(contig, 4), values)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.moveaxis(values, -1, 0), photometric="minisblack")  # 4 pages of (7, 5)
    assert image_bands(stack) == 4
    np.testing.assert_array_equal(read_bands(stack, 4), values)
    # A (H, W, B) array written by tifffile without photometric/planarconfig is H pages of W x B: named, not misread.
    swapped = tmp_path / "swapped.tif"
    tifffile.imwrite(swapped, np.zeros((40, 30, 5), np.float32))
    for read in (image_bands, lambda path: read_bands(path, 3)):
        with pytest.raises(
            DataError, match=r"swapped\.tif: 40 pages of 5x30 \(WxH\) pixels: likely an image of 5 bands"
        ):
            read(swapped)


def test_grey_pngs_8_and_16_bit_for_one_band_and_for_rgb_models(tmp_path) -> None:
    rng = np.random.default_rng(1)
    grey8 = rng.integers(0, 256, (11, 17), dtype=np.uint8)
    grey16 = rng.integers(0, 4096, (11, 17), dtype=np.uint16)  # 12-bit data
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert image_bands(tmp_path / "g8.png") == image_bands(tmp_path / "g16.png") == 1

    one8, one16 = read_bands(tmp_path / "g8.png", 1), read_bands(tmp_path / "g16.png", 1)
    assert one8.dtype == np.uint8 and one16.dtype == np.float32
    np.testing.assert_array_equal(one8, grey8[..., None])
    np.testing.assert_array_equal(one16, _unit(grey16)[..., None])

    # RGB models: as every earlier version read them, the grey replica; 16-bit scaled by 255 / max(max, 255).
    np.testing.assert_array_equal(read_bands(tmp_path / "g8.png", 3), np.repeat(grey8[..., None], 3, -1))
    scaled = np.rint(grey16.astype(np.float64) * 255 / max(int(grey16.max()), 255)).astype(np.uint8)
    np.testing.assert_array_equal(read_bands(tmp_path / "g16.png", 3), np.repeat(scaled[..., None], 3, -1))


def test_rgb_file_is_grey_for_one_band_only_when_its_channels_are_equal(tmp_path) -> None:
    grey = np.random.default_rng(2).integers(0, 256, (6, 8), dtype=np.uint8)
    Image.fromarray(np.repeat(grey[..., None], 3, -1)).save(tmp_path / "grey_as_rgb.png")
    np.testing.assert_array_equal(read_bands(tmp_path / "grey_as_rgb.png", 1), grey[..., None])
    colour = np.repeat(grey[..., None], 3, -1)
    colour[0, 0] = (10, 20, 30)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(DataError) as err:
        read_bands(tmp_path / "colour.png", 1)
    assert str(err.value) == f"{tmp_path / 'colour.png'}: 3 bands (RGB whose channels differ, so not grey), but the " \
        "model takes 1"  # fmt: skip


def test_band_count_mismatch_is_one_line_naming_file_and_counts(tmp_path) -> None:
    tifffile.imwrite(
        tmp_path / "x.tif", np.zeros((4, 5, 4), np.uint16), photometric="minisblack", planarconfig="contig"
    )
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "y.png")
    with pytest.raises(DataError) as err:  # a 4-band tile given to an RGB model (Pillow would read it as RGBA)
        read_bands(tmp_path / "x.tif", 3, "its checkpoint was trained on RGB images")
    assert str(err.value) == f"{tmp_path / 'x.tif'}: 4 bands, but the model takes 3 (its checkpoint was trained on " \
        "RGB images)"  # fmt: skip
    with pytest.raises(DataError) as err:
        read_bands(tmp_path / "y.png", 4, "its checkpoint was trained on 4-band images")
    message = str(err.value)
    assert "\n" not in message
    assert message == f"{tmp_path / 'y.png'}: 3 bands, but the model takes 4 (its checkpoint was trained on 4-band " \
        "images)"  # fmt: skip


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on the damaged tags it skips
def test_damaged_multiband_tiffs_give_one_line_naming_the_file(tmp_path) -> None:
    """Truncated and corrupted 4-band TIFFs (contig, and separate planes compressed): decoded, or one DataError line."""
    values = np.random.default_rng(5).integers(0, 4096, (12, 16, 4), dtype=np.uint16)
    sources = []
    for layout, compression in (("contig", None), ("separate", "zlib")):
        data = values if layout == "contig" else np.moveaxis(values, -1, 0)
        path = tmp_path / f"{layout}.tif"
        tifffile.imwrite(path, data, photometric="minisblack", planarconfig=layout, compression=compression)
        sources.append(path.read_bytes())
    rng = np.random.default_rng(6)
    damaged = tmp_path / "damaged.tif"
    for i in range(120):
        data = bytearray(sources[i % 2])
        if i % 3:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for at in rng.integers(0, min(len(data), 300), int(rng.integers(1, 8))):
                data[at] = int(rng.integers(0, 256))
        damaged.write_bytes(bytes(data))
        for bands in (1, 3, 4):
            try:
                read_bands(damaged, bands)
            except DataError as err:
                assert str(err).startswith(f"{damaged}: ") and "\n" not in str(err)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_read_by_tifffile_as_pillow_reads_it(tmp_path, orientation: int) -> None:
    rgb = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    tag = [(274, "H", 1, orientation, True)]
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb", extratags=tag)  # read by Pillow
    values = np.concatenate([rgb, rgb[..., :1]], axis=-1).astype(np.uint16) * 257  # 16-bit: read by tifffile
    tifffile.imwrite(tmp_path / "rgbn.tif", values, photometric="minisblack", planarconfig="contig", extratags=tag)
    upright = read_bands(tmp_path / "rgb.tif", 3)  # Pillow's exif_transpose
    np.testing.assert_array_equal(read_bands(tmp_path / "rgbn.tif", 4)[..., :3], _unit(upright.astype(np.uint16) * 257))


def test_dataset_band_count_from_the_headers(tmp_path) -> None:
    grey, rgb = tmp_path / "grey.png", tmp_path / "rgb.jpg"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(grey)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    four, thirteen = tmp_path / "four.tif", tmp_path / "thirteen.tif"
    tifffile.imwrite(four, np.zeros((4, 4, 4), np.uint16), photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(thirteen, np.zeros((13, 4, 4), np.uint16), photometric="minisblack", planarconfig="separate")
    assert infer_bands([grey]) == 1
    assert infer_bands([grey, rgb]) == 3  # grey images among RGB ones are read as RGB, as always
    assert infer_bands([four, four]) == 4
    with pytest.raises(DataError, match=r"4 bands \(e\.g\. four\.tif\), 13 bands \(e\.g\. thirteen\.tif\)"):
        infer_bands([four, thirteen])


def test_display_rgb_shows_first_three_bands_stretched() -> None:
    values = _unit(np.random.default_rng(3).integers(0, 4096, (6, 5, 4), dtype=np.uint16))
    expected = np.rint(values[..., :3] * (255.0 / values[..., :3].max())).astype(np.uint8)
    np.testing.assert_array_equal(display_rgb(values), expected)
    grey = np.arange(30, dtype=np.uint8).reshape(5, 6, 1)
    np.testing.assert_array_equal(display_rgb(grey), np.repeat(grey, 3, -1))


# --- datasets, statistics, transforms ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multiband(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("multiband") / "tiles"
    return root, write_multiband(root)


def _reference_statistics(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.concatenate([_unit(a).reshape(-1, a.shape[-1]).astype(np.float64) for a in arrays])
    return pixels.mean(0), pixels.std(0)


def test_folder_dataset_reads_bands_and_per_band_statistics(multiband) -> None:
    root, written = multiband
    dataset = folder_dataset(root, classes=root / "classes.txt")
    assert dataset.bands == 4
    image, _ = dataset.load(dataset.files.index((root / "images" / "b.tif", root / "masks" / "b.png")))
    assert image.dtype == torch.float32 and image.shape == (4, 56, 40)
    np.testing.assert_array_equal(image.numpy(), np.moveaxis(_unit(written["b"]), -1, 0))
    mean, std = band_statistics(dataset)
    ref_mean, ref_std = _reference_statistics(list(written.values()))
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-9)
    np.testing.assert_allclose(std, ref_std, rtol=1e-9)
    assert folder_dataset(root, classes=root / "classes.txt", bands=4).bands == 4
    with pytest.raises(DataError, match=r"a\.tif: 4 bands, but the model takes 1"):
        folder_dataset(root, classes=root / "classes.txt", bands=1).load(0)


def test_transforms_and_normalisation_on_float_bands() -> None:
    image = tv_tensors.Image(torch.rand(4, 40, 56))
    mask = tv_tensors.Mask(torch.randint(0, 3, (40, 56)))
    mean, std = (0.1, 0.2, 0.3, 0.4), (0.5, 0.25, 0.2, 0.1)
    raw = {"mean": (0.0,) * 4, "std": (1.0,) * 4}
    out, out_mask = train_transforms((64, 64), scale_range=None, hflip=False, **raw)(image, mask)
    assert out.shape == (4, 64, 64) and out.dtype == torch.float32
    kept = out_mask != 255  # the image is padded (0) where the mask is padded (void)
    assert int(kept.sum()) == 40 * 56 and bool((out[:, ~kept] == 0).all())
    assert torch.equal(torch.sort(out[:, kept].flatten()).values, torch.sort(image.flatten()).values)
    scaled, _ = train_transforms((32, 32), scale_range=(0.5, 2.0), mean=mean, std=std)(image, mask)
    assert scaled.shape == (4, 32, 32) and bool(torch.isfinite(scaled).all())
    normalised, _ = eval_transforms(mean, std)(image, mask)
    assert torch.equal(normalised, normalize_image(image.as_subclass(torch.Tensor), mean, std))  # bit for bit
    uint8 = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)
    assert torch.equal(normalize_image(uint8, (0.4,), (0.2,)), normalize_uint8(uint8, (0.4,), (0.2,)))
    with pytest.raises(ValueError, match="--jitter"):
        train_transforms((32, 32), jitter=True, mean=mean, std=std)


# --- the adapted first convolution -------------------------------------------------------------------------------

GREY_MEAN, GREY_STD = 0.45, 0.226  # a normalisation equal over R, G and B


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def _adapted_pair(name: str, bands: int, **options) -> tuple[nn.Module, nn.Module]:
    """An RGB model with a random head and a ``bands`` model built the same way, sharing every other parameter."""
    torch.manual_seed(0)
    rgb = create_model(name, num_classes=3, **options).eval()
    with torch.no_grad():
        for p in rgb.head.parameters():  # the score layers start at zero: give the logits something to show
            p.normal_(0, 0.05)
    torch.manual_seed(0)  # the same random backbone, whose first convolution is then adapted
    adapted = create_model(name, num_classes=3, in_channels=bands, **options).eval()
    first = _first_conv(adapted)
    state = {k: v for k, v in rgb.state_dict().items() if v is not _first_conv(rgb).weight}
    state = {k: v for k, v in state.items() if v.shape == adapted.state_dict()[k].shape}
    adapted.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(first.weight.shape, (_first_conv(rgb).out_channels, bands, *first.kernel_size))
    return rgb, adapted


@pytest.mark.parametrize("name", ["fcn8s_squeezenet1_1", "fcn8s_resnet18", "fcn32s_vgg11", "fcn8s_mobilenet_v2"])
def test_one_band_model_gives_the_logits_of_the_rgb_replica(name: str) -> None:
    rgb, grey = _adapted_pair(name, 1)
    torch.testing.assert_close(_first_conv(grey).weight, _first_conv(rgb).weight.sum(1, keepdim=True))
    image = torch.rand(2, 1, 70, 90)
    x = (image - GREY_MEAN) / GREY_STD
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["fcn8s_squeezenet1_1", "fcn8s_resnet18"])
def test_more_bands_repeat_rgb_scaled_by_three_over_b(name: str) -> None:
    rgb, four = _adapted_pair(name, 4)
    w = _first_conv(rgb).weight
    torch.testing.assert_close(_first_conv(four).weight, torch.cat([w, w[:, :1]], 1) * 0.75)
    x = torch.randn(2, 4, 64, 80)
    y = torch.stack([x[:, 0] + x[:, 3], x[:, 1], x[:, 2]], 1) * 0.75  # the RGB input the 4 bands add up to
    with torch.no_grad():
        torch.testing.assert_close(four(x), rgb(y), rtol=1e-4, atol=1e-5)
    rgb, six = _adapted_pair(name, 6)  # an RGB image given twice keeps the RGB model's activations
    x3 = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(six(torch.cat([x3, x3], 1)), rgb(x3), rtol=1e-4, atol=1e-5)


def test_adapt_input_conv_closed_form() -> None:
    w = torch.randn(8, 3, 3, 3)
    torch.testing.assert_close(adapt_input_conv(w, 1), w.sum(1, keepdim=True))
    torch.testing.assert_close(adapt_input_conv(w, 2), w[:, :2] * 1.5)
    torch.testing.assert_close(adapt_input_conv(w, 7), torch.cat([w, w, w[:, :1]], 1) * (3 / 7))
    assert adapt_input_conv(w, 3) is w


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_every_backbone_takes_any_band_count(arch: str) -> None:
    """Shapes only, on the meta device (no memory, no arithmetic): every backbone and the VGG Caffe layout."""
    name = (list_models(f"fcn8s_{arch}") or list_models(f"*_{arch}"))[0]
    for options in [{}, {"layout": "caffe"}] if arch.startswith("vgg") else [{}]:
        for bands in (1, 4, 13):
            with torch.device("meta"):
                model = create_model(name, num_classes=5, in_channels=bands, **options)
                out = model(torch.empty(2, bands, 70, 90))
            assert model.in_channels == bands and out.shape == (2, 5, 70, 90)
            assert model.config["options"]["in_channels"] == bands
            with pytest.raises(ValueError, match=f"the model takes {bands}-band images"), torch.device("meta"):
                model(torch.empty(1, bands + 1, 64, 64))


def test_pretrained_weights_are_adapted_after_loading(tmp_path) -> None:
    """A local weights file in the RGB layout loads, then the first convolution is summed (1 band)."""
    import torchvision

    torch.manual_seed(3)
    classifier = torchvision.models.squeezenet1_1()
    torch.save(classifier.state_dict(), tmp_path / "squeezenet.pth")
    model = create_model("fcn8s_squeezenet1_1", num_classes=2, backbone_weights=tmp_path / "squeezenet.pth",
                         in_channels=1)  # fmt: skip
    torch.testing.assert_close(_first_conv(model).weight, classifier.features[0].weight.sum(1, keepdim=True))
    torch.testing.assert_close(_first_conv(model).bias, classifier.features[0].bias)


def test_predictor_on_a_grey_16_bit_png_equals_the_closed_form(tmp_path) -> None:
    grey16 = np.random.default_rng(4).integers(0, 4096, (37, 53), dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    torch.manual_seed(0)
    model = create_model("fcn8s_squeezenet1_1", num_classes=2, in_channels=1).eval()
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.05)
    predictor = Predictor(model, mean=(0.05,), std=(0.02,), precision="fp32")
    assert predictor.bands == 1
    logits = predictor.logits([predictor.load(tmp_path / "g16.png")])
    x = (torch.from_numpy(_unit(grey16))[None, None] - 0.05) / 0.02
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-4)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8) + np.array([1, 2, 3], np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(DataError, match=r"c\.png: 3 bands \(RGB whose channels differ, so not grey\), but the model "
                       r"takes 1 \(its checkpoint was trained on 1-band images\)$"):  # fmt: skip
        predictor.predict(tmp_path / "c.png")


# --- the walk-through: check-data -> train -> eval -> predict -> export -------------------------------------------


def _data(root: Path) -> list[str]:
    return ["--dataset", "folder", "--data-root", str(root), "--classes", str(root / "classes.txt")]


def _train(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "fcn8s_squeezenet1_1", *_data(root), "--out", str(out), "--iters", "3",
            "--batch-size", "2", "--crop-size", str(CROP), str(CROP), "--val-fraction", "0.4", "--val-every", "3",
            "--log-every", "1", "--workers", "0", "--device", "cpu", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def run(multiband, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _ = multiband
    out = tmp_path_factory.mktemp("multiband_run") / "run"
    assert main(_train(root, out)) == 0
    return out


def test_check_data_prints_bands_and_per_band_statistics(multiband, capsys) -> None:
    root, written = multiband
    assert main(["check-data", *_data(root)]) == 0
    out = capsys.readouterr().out
    mean, std = _reference_statistics(list(written.values()))
    assert f"images: 4 bands; per-band normalisation of the {len(TILES)} images read" in out
    assert "  mean [" + ", ".join(f"{v:.4f}" for v in mean) + "]" in out
    assert "  std  [" + ", ".join(f"{v:.4f}" for v in std) + "]" in out


def test_train_stores_bands_and_training_statistics(multiband, run, tmp_path, capsys) -> None:
    root, written = multiband
    ckpt = torch.load(run / "best.pt", weights_only=False)
    assert ckpt["model"]["options"]["in_channels"] == 4
    train_stems = (run / "splits" / "train.txt").read_text().split()
    mean, std = _reference_statistics([written[s] for s in train_stems])
    np.testing.assert_allclose(ckpt["normalization"]["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(ckpt["normalization"]["std"], std, rtol=1e-9)
    assert model_from_checkpoint(ckpt).in_channels == 4
    capsys.readouterr()
    assert main(_train(root, tmp_path / "jitter", "--jitter")) == 2
    assert "--jitter (colour jitter" in capsys.readouterr().err


def test_eval_scores_the_four_band_model(multiband, run, tmp_path, capsys) -> None:
    root, _ = multiband
    report = tmp_path / "eval"
    args = ["eval", str(run / "best.pt"), *_data(root), "--split", str(run / "splits" / "val.txt"), "--out",
            str(report), "--workers", "0", "--device", "cpu", "--backend", "torch", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "mean IoU" in capsys.readouterr().out
    metrics = json.loads((report / "metrics.json").read_text())
    assert 0.0 <= metrics["pixel_acc"] <= 1.0


def test_predict_tiled_and_band_count_errors(multiband, run, tmp_path, capsys) -> None:
    root, _ = multiband
    out = tmp_path / "pred"
    inputs = [str(root / "images" / "big.tif"), str(root / "images" / "b.tif")]
    args = ["predict", str(run / "best.pt"), *inputs, "--out", str(out), "--tile-size", "64", "64", "--device",
            "cpu", "--backend", "torch", "--precision", "fp32"]  # fmt: skip
    assert main(args) == 0
    predictor = Predictor.from_checkpoint(run / "best.pt", backend="torch", precision="fp32", tile_size=(64, 64))
    for stem in ("big", "b"):
        with Image.open(out / f"{stem}.png") as mask:
            np.testing.assert_array_equal(np.asarray(mask), predictor.predict(root / "images" / f"{stem}.tif"))
        with Image.open(out / f"{stem}_overlay.jpg") as overlay:
            assert overlay.size == mask.size and np.asarray(overlay).mean() > 10  # 12-bit data stretched to show
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "photo.png")
    capsys.readouterr()
    assert main(["predict", str(run / "best.pt"), str(tmp_path / "photo.png"), "--out", str(out), "--backend",
                 "torch"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fcnseg predict: error: {tmp_path / 'photo.png'}: 3 bands, but the model takes 4 (its "
                          "checkpoint was trained on 4-band images)")  # fmt: skip


@pytest.mark.export
def test_export_onnx_and_openvino_carry_bands_and_give_the_checkpoints_masks(multiband, run, tmp_path, caplog) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    root, written = multiband
    with caplog.at_level(logging.WARNING):
        assert main(["export", str(run / "best.pt"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
        assert main(["export", str(run / "best.pt"), "--format", "openvino", "--out", str(tmp_path / "m.xml")]) == 0
    ckpt = torch.load(run / "best.pt", weights_only=False)
    reference = Predictor.from_checkpoint(run / "best.pt", backend="torch", precision="fp32")
    exported = [
        Predictor.from_checkpoint(tmp_path / "m.onnx", backend="onnxruntime"),
        Predictor.from_checkpoint(tmp_path / "m.xml", backend="openvino", precision="fp32"),
    ]
    images = sorted((root / "images").glob("*.tif"))
    for predictor in exported:
        assert predictor.bands == 4
        assert predictor.model.metadata["normalization"]["mean"] == pytest.approx(ckpt["normalization"]["mean"])
        same = total = 0
        for path in images:
            a, b = reference.predict(path), predictor.predict(path)
            same, total = same + int((a == b).sum()), total + a.size
        # Logits agree within 1e-3 (the export check); a pixel may flip only where two logits tie that closely.
        assert same / total >= 0.999, (predictor.backend, same / total)
    calibration = calibration_arrays([images[0]], bands=4)[0]  # int8 calibration reads the model's bands
    np.testing.assert_array_equal(calibration[0], np.moveaxis(_unit(written[images[0].stem]), -1, 0))
