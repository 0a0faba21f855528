"""ONNX Runtime and OpenVINO backends: the same masks as PyTorch through the Predictor, tiling and batching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_inference_predictor import COLORS, MEAN, NAMES, STD, make_model, smooth_image, write_checkpoint

from fcnseg.cli.main import main
from fcnseg.inference import Predictor, runtimes
from fcnseg.inference import export as export_module
from fcnseg.inference.export import NormalizedModel, export_model

pytestmark = pytest.mark.export

CLASSES = {"names": NAMES, "colors": COLORS}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return make_model()


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((90, 133, 3)) * 255).astype(np.uint8) for _ in range(3)]


def torch_masks(model: torch.nn.Module, images: list[np.ndarray], **kwargs) -> list[np.ndarray]:
    return Predictor(model, mean=MEAN, std=STD, precision="fp32", **kwargs).predict_batch(images)


def agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([(x == y).mean() for x, y in zip(a, b, strict=True)]))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backend_masks_equal_torch_whole_tiled_and_batched(model, images, backend: str) -> None:
    pytest.importorskip(backend)
    predictor = Predictor(model, mean=MEAN, std=STD, precision="fp32", backend=backend)  # exports once
    assert predictor.backend == backend and predictor.computes_in == "fp32"
    for tile in (None, (64, 64)):
        reference = torch_masks(model, images, tile_size=tile)
        predictor.tile_size = tile
        batched = predictor.predict_batch(images, batch_size=3)
        single = [predictor.predict(im) for im in images]
        assert agreement(batched, single) == 1.0  # a batch gives each image's own mask
        assert agreement(batched, reference) >= 0.999  # fp32 in another runtime: ties may break differently


class TiedLogits(torch.nn.Module):
    """Integer logits, the floor of a 1x1 convolution: most pixels tie between several classes."""

    def __init__(self, k: int = 6) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, k, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(self.conv(x))


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_openvino_labels_are_the_argmax_of_its_logits_taken_in_graph(model, images, monkeypatch, precision) -> None:
    """OpenVINO's labels graph is the argmax of its logits graph, ties to the lowest class, at any input size."""
    pytest.importorskip("openvino")
    torch.manual_seed(0)
    for net in (model, TiedLogits()):
        predictor = Predictor(net, mean=MEAN, std=STD, precision=precision, backend="openvino")
        logits = [predictor.logits([Image.fromarray(im)])[0].numpy() for im in images]  # (K, H, W) each
        with monkeypatch.context() as patch:
            patch.setattr(runtimes, "STATIC_PIXELS", 0)  # graphs compiled for each input's shape, as for large ones
            static_logits = [predictor.logits([Image.fromarray(im)])[0].numpy() for im in images]
            patch.setattr(predictor.model, "_run", None)  # no logits may leave the graph
            masks_static = [predictor.model.labels(predictor._prepare([im]))[0].numpy() for im in images]
            patch.setattr(runtimes, "STATIC_PIXELS", 2**22)
            masks = list(predictor.model.labels(predictor._prepare(images)).numpy())
        for mask, scores, static, static_scores in zip(masks, logits, masks_static, static_logits, strict=True):
            assert mask.dtype == np.uint8 and np.array_equal(mask, np.argmax(scores, axis=0))  # first maximum
            assert static.dtype == np.uint8 and np.array_equal(static, np.argmax(static_scores, axis=0))
            # A graph compiled for one shape may round its last layers differently in bf16, not otherwise.
            tolerance = (1e-4 if predictor.computes_in == "fp32" else 2e-2) * np.abs(scores).max()
            np.testing.assert_allclose(static_scores, scores, rtol=0, atol=tolerance)
        if isinstance(net, TiedLogits):
            top = np.sort(logits[0], axis=0)
            assert (top[-1] == top[-2]).mean() > 0.1  # the ties the check is about do occur
        assert len(predictor.classes.names) == scores.shape[0]  # read from the graph


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_openvino_masks_come_from_uint8_images_normalised_in_its_graph(model, images, monkeypatch, precision) -> None:
    """Masks alone of uint8 images: nothing prepared outside OpenVINO, the same masks as the normalised input gives."""
    pytest.importorskip("openvino")
    predictor = Predictor(model, mean=MEAN, std=STD, precision=precision, backend="openvino")
    reference = [predictor.model.labels(predictor._prepare([im]))[0].numpy() for im in images]
    with monkeypatch.context() as patch:
        patch.setattr(predictor, "_prepare", None)  # no float copy of the images is made
        patch.setattr(predictor.model, "_run", None)  # no logits leave the graph
        for batch_size in (1, 2):
            masks = predictor.predict_batch(images, batch_size=batch_size)
            assert all(m.dtype == np.uint8 and m.shape == im.shape[:2] for m, im in zip(masks, images, strict=True))
            # The graph may fold the normalisation into the first convolution: rounding, not the masks, may move.
            assert agreement(masks, reference) >= (0.999 if precision == "fp32" else 0.99)
            patch.setattr(runtimes, "STATIC_PIXELS", 0)  # the graph compiled for each input's shape
    assert agreement([predictor.predict(Image.fromarray(im)) for im in images], reference) >= 0.99
    masks, probs = predictor.predict(images[0], return_probs=True)  # probabilities: the logits' path
    assert probs.shape[1:] == images[0].shape[:2] and np.array_equal(masks, probs.argmax(0))


def test_openvino_export_round_trip_and_metadata(model, images, tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    path = tmp_path / "model.xml"
    diff = export_model(model, path, "openvino", classes=CLASSES, mean=MEAN, std=STD)
    assert diff <= 1e-3 and path.with_suffix(".bin").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.xml"]
    info = json.loads(ov.Core().read_model(str(path)).get_rt_info(["fcnseg"]).astype(str))
    assert info["classes"] == CLASSES and info["normalization"] == {"mean": MEAN, "std": STD}
    x = torch.rand(1, 3, 41, 129)  # a size the check never saw
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    with torch.inference_mode():
        expected = NormalizedModel(model, MEAN, STD).eval()(x).numpy()
    np.testing.assert_allclose(compiled(x.numpy())[0], expected, atol=1e-3, rtol=0)
    predictor = Predictor.from_checkpoint(path, precision="fp32", tile_size="auto", memory_budget=2**20)
    assert predictor.backend == "openvino" and predictor.classes.names == tuple(NAMES)
    assert predictor.tile_size_for(90, 133) is not None  # the stored memory model makes "auto" tile
    assert agreement(predictor.predict_batch(images), torch_masks(model, images, tile_size=(64, 64))) >= 0.999


def test_export_openvino_needs_xml_suffix(model, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    with pytest.raises(ValueError, match=r"FILE\.xml"):
        export_model(model, tmp_path / "model.ir", "openvino", classes=CLASSES, mean=MEAN, std=STD)


@pytest.mark.slow
def test_checkpoint_auto_backend_converts_once_and_caches(tmp_path: Path, monkeypatch, images) -> None:
    pytest.importorskip("openvino")
    monkeypatch.setenv("FCNSEG_CACHE", str(tmp_path / "cache"))
    model = write_checkpoint(tmp_path / "ckpt.pt")
    first = Predictor.from_checkpoint(tmp_path / "ckpt.pt", precision="fp32")  # the default is "auto"
    cached = sorted(p.name for p in (tmp_path / "cache" / "openvino").iterdir())
    assert first.backend == "openvino" and len(cached) == 2  # model.xml and model.bin
    again = Predictor.from_checkpoint(tmp_path / "ckpt.pt", backend="auto", precision="fp32")
    assert sorted(p.name for p in (tmp_path / "cache" / "openvino").iterdir()) == cached
    assert agreement(again.predict_batch(images), torch_masks(model, images)) >= 0.999
    # Other model code (an upgrade that changes the graph) converts again instead of reusing the old conversion.
    real = export_module._network_code()
    monkeypatch.setattr(export_module, "_network_code", lambda: real + b"# changed")
    _, was_cached = export_module.cached_openvino(tmp_path / "ckpt.pt")
    assert not was_cached and len(list((tmp_path / "cache" / "openvino").iterdir())) == 4


@pytest.mark.slow
def test_export_cli_openvino(tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("openvino")
    write_checkpoint(tmp_path / "ckpt.pt")
    out = tmp_path / "exported.xml"
    assert main(["export", str(tmp_path / "ckpt.pt"), "--format", "openvino", "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert "max |logit difference|" in capsys.readouterr().out


@pytest.mark.slow
def test_quantize_cli_int8_model_predicts_tiled(tmp_path: Path, monkeypatch, capsys, images) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    model = write_checkpoint(tmp_path / "ckpt.pt")
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / f"calib{i}.png")
    out = tmp_path / "int8.xml"
    argv = ["quantize", str(tmp_path / "ckpt.pt"), "--calib-data", str(tmp_path), "--num-calib", "2", "--out", str(out)]
    assert main(argv) == 0
    assert "int8, calibrated on 2 images" in capsys.readouterr().out
    predictor = Predictor.from_checkpoint(out, tile_size=(64, 64))
    assert predictor.backend == "openvino" and predictor.computes_in == "int8"
    masks = predictor.predict_batch(images)
    assert agreement(masks, torch_masks(model, images, tile_size=(64, 64))) >= 0.9  # int8 of random weights
    assert agreement(masks, [predictor.predict(im) for im in images]) == 1.0
    data = labelled_folder(tmp_path / "data", images, masks)  # int8's own masks as the ground truth
    report = eval_report(out, data, tmp_path / "int8.json")
    assert report["pixel_acc"] == 1.0 and report["backend"] == "openvino int8"  # eval scores what predict produces


def labelled_folder(root: Path, images: list[np.ndarray], masks: list[np.ndarray]) -> Path:
    """A folder dataset (``images/``, ``masks/``) of ``images`` labelled with ``masks``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8), mode="L").save(root / "masks" / f"{i}.png")
    return root


def eval_report(model: Path, data: Path, report: Path, *extra: str) -> dict:
    """``fcnseg eval MODEL`` (fp32) on the folder dataset ``data``; returns the JSON report it writes."""
    argv = ["eval", str(model), "--dataset", "folder", "--data-root", str(data), "--split", "all", "--workers", "0"]
    assert main([*argv, "--precision", "fp32", "--no-progress", "--json", str(report), *extra]) == 0
    return json.loads(report.read_text())


@pytest.mark.slow
def test_eval_scores_an_exported_model_as_predict_runs_it(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    model = write_checkpoint(tmp_path / "ckpt.pt")
    images = [smooth_image(72, 96, seed=i) for i in range(3)]
    data = labelled_folder(tmp_path / "data", images, torch_masks(model, images))  # fp32 PyTorch as ground truth
    xml = tmp_path / "model.xml"
    assert main(["export", str(tmp_path / "ckpt.pt"), "--format", "openvino", "--out", str(xml)]) == 0
    assert eval_report(tmp_path / "ckpt.pt", data, tmp_path / "torch.json")["pixel_acc"] == 1.0
    report = eval_report(xml, data, tmp_path / "xml.json")
    assert report["pixel_acc"] >= 0.999 and report["backend"] == "openvino fp32"  # ties may break differently
    assert main(["eval", str(xml), "--dataset", "folder", "--data-root", str(data), "--backend", "torch"]) == 2
