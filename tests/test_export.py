"""Export: ONNX (onnxruntime), torch.export and TorchScript match eager at sizes never seen, metadata travels along.

Tolerances are what docs/deployment.md states: ONNX Runtime within 3e-5 of eager, ``pt2`` and TorchScript exact
(the export prints the measured maximum difference).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_inference_predictor import COLORS, MEAN, NAMES, STD, make_model, randomize_zero_layers, write_checkpoint

from fcnseg import create_model
from fcnseg.cli.main import main
from fcnseg.inference.export import NormalizedModel, export_model

pytestmark = pytest.mark.export

SIZES = ((64, 96), (75, 101))
CLASSES = {"names": NAMES, "colors": COLORS}
ONNX_ATOL = 3e-5  # docs/deployment.md: "ONNX Runtime within 3e-5, pt2 and TorchScript exact"


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return make_model()


def eager(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return NormalizedModel(model, MEAN, STD).eval()(x).numpy()


def load_exported(fmt: str, path: Path):
    """The exported file as a callable ``(N, 3, H, W)`` tensor -> numpy logits, loaded as a user of ``fmt`` would."""
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"image": x.numpy()})[0]
    loaded = torch.export.load(str(path)).module() if fmt == "pt2" else torch.jit.load(str(path))

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return loaded(x).numpy()

    return run


def assert_matches_eager(fmt: str, out: np.ndarray, expected: np.ndarray) -> None:
    if fmt == "onnx":
        np.testing.assert_allclose(out, expected, atol=ONNX_ATOL, rtol=0)
    else:
        np.testing.assert_array_equal(out, expected)


def test_normalized_model_applies_normalisation(model: torch.nn.Module) -> None:
    x = torch.rand(1, 3, 33, 45)
    with torch.inference_mode():
        expected = model((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    np.testing.assert_allclose(eager(model, x), expected.numpy(), atol=1e-6)


def test_onnx_dynamic_sizes_and_metadata(model: torch.nn.Module, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "model.onnx"
    diff = export_model(model, path, "onnx", classes=CLASSES, mean=MEAN, std=STD, check_sizes=SIZES)
    assert diff <= ONNX_ATOL
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, h, w in ((1, 64, 96), (3, 75, 101), (1, 41, 129)):  # the last size was never seen during export
        x = torch.rand(n, 3, h, w)
        out = session.run(None, {"image": x.numpy()})[0]
        assert out.shape == (n, len(NAMES), h, w)
        np.testing.assert_allclose(out, eager(model, x), atol=ONNX_ATOL, rtol=0)
    graph = onnx.load(str(path))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["classes"]) == CLASSES
    upsamplers = [n for n in graph.graph.node if n.op_type == "ConvTranspose"]  # the fixed ones, run per class
    assert upsamplers and all(next(a.i for a in n.attribute if a.name == "group") == len(NAMES) for n in upsamplers), (
        "fixed bilinear upsamplers are exported per class (groups = number of classes)"
    )
    assert json.loads(meta["normalization"]) == {"mean": MEAN, "std": STD}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # what TorchScript users call
def test_torchscript_generalises_to_other_sizes(model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    diff = export_model(model, path, "torchscript", classes=CLASSES, mean=MEAN, std=STD, check_sizes=SIZES)
    assert diff == 0
    files = {"fcnseg.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=files)
    for n, h, w in ((2, 64, 96), (1, 75, 101), (1, 41, 129)):
        x = torch.rand(n, 3, h, w)
        with torch.inference_mode():
            out = loaded(x).numpy()
        assert out.shape == (n, len(NAMES), h, w)
        np.testing.assert_array_equal(out, eager(model, x))
    assert json.loads(files["fcnseg.json"])["classes"] == CLASSES


def test_pt2_generalises_to_other_sizes_and_batches(model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    diff = export_model(model, path, "pt2", classes=CLASSES, mean=MEAN, std=STD, check_sizes=SIZES)
    assert diff == 0
    files = {"fcnseg.json": ""}
    program = torch.export.load(str(path), extra_files=files).module()
    for n, h, w in ((1, 64, 96), (3, 75, 101), (1, 41, 129)):  # batch 1 and 3 and the last size were never traced
        x = torch.rand(n, 3, h, w)
        with torch.inference_mode():
            out = program(x).numpy()
        assert out.shape == (n, len(NAMES), h, w)
        np.testing.assert_array_equal(out, eager(model, x))
    assert json.loads(files["fcnseg.json"])["normalization"] == {"mean": MEAN, "std": STD}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize(("fmt", "suffix"), [("onnx", ".onnx"), ("pt2", ".pt2"), ("torchscript", ".pt")])
def test_export_cli(tmp_path: Path, capsys, fmt: str, suffix: str) -> None:
    """The file the command writes loads as ``fmt`` and computes the checkpoint's model, normalisation included."""
    model = write_checkpoint(tmp_path / "ckpt.pt")
    out = tmp_path / f"exported{suffix}"
    assert main(["export", str(tmp_path / "ckpt.pt"), "--format", fmt, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} ({fmt}); max |logit difference| vs eager: " in printed
    x = torch.rand(2, 3, 41, 57)  # a size and batch the export never saw
    assert_matches_eager(fmt, load_exported(fmt, out)(x), eager(model, x))


@pytest.fixture(scope="module")
def caffe_model() -> torch.nn.Module:
    # FCN-8s on VGG11 in the caffe layout: the same padding and crops as the authors' VGG16 net, at less cost
    torch.manual_seed(0)
    return randomize_zero_layers(create_model("fcn8s_vgg11", num_classes=len(NAMES), layout="caffe"), std=0.05).eval()


def test_export_cli_reports_a_failed_check_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    write_checkpoint(tmp_path / "ckpt.pt")
    real_load = torch.jit.load

    def broken_load(*args, **kwargs):  # an exported graph that drifts from eager, as a bad exporter would
        loaded = real_load(*args, **kwargs)
        return lambda x: loaded(x) + 0.5

    monkeypatch.setattr(torch.jit, "load", broken_load)
    out = tmp_path / "exported.pt"
    assert main(["export", str(tmp_path / "ckpt.pt"), "--format", "torchscript", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "differ from eager by 0.5" in err and "--tolerance" in err and "Traceback" not in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # nothing left behind


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_caffe_layout_exports_match_eager(caffe_model: torch.nn.Module, tmp_path: Path, fmt: str) -> None:
    """The authors' layout (conv1_1 padded by 100, fc6 unpadded, scores cropped from the padded grid) exports too."""
    path = tmp_path / f"caffe.{fmt}"
    diff = export_model(caffe_model, path, fmt, classes=CLASSES, mean=MEAN, std=STD, check_sizes=SIZES)
    assert diff <= (ONNX_ATOL if fmt == "onnx" else 0)
    run = load_exported(fmt, path)
    for n, h, w in ((1, 64, 96), (3, 41, 57)):
        x = torch.rand(n, 3, h, w)
        out = run(x)
        assert out.shape == (n, len(NAMES), h, w)
        assert_matches_eager(fmt, out, eager(caffe_model, x))
