"""Export: ONNX (onnxruntime), torch.export and TorchScript match eager at sizes never seen, metadata travels along."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_inference_predictor import COLORS, MEAN, NAMES, STD, make_model, write_checkpoint

from fcnseg.cli.main import main
from fcnseg.inference.export import FORMATS, NormalizedModel, export_model

pytestmark = pytest.mark.export

SIZES = ((64, 96), (75, 101))
CLASSES = {"names": NAMES, "colors": COLORS}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return make_model()


def eager(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return NormalizedModel(model, MEAN, STD).eval()(x).numpy()


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
    assert diff <= 1e-3
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, h, w in ((1, 64, 96), (3, 75, 101), (1, 41, 129)):  # the last size was never seen during export
        x = torch.rand(n, 3, h, w)
        out = session.run(None, {"image": x.numpy()})[0]
        assert out.shape == (n, len(NAMES), h, w)
        np.testing.assert_allclose(out, eager(model, x), atol=1e-3, rtol=0)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["classes"]) == CLASSES
    assert json.loads(meta["normalization"]) == {"mean": MEAN, "std": STD}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # what TorchScript users call
def test_torchscript_generalises_to_other_sizes(model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    diff = export_model(model, path, "torchscript", classes=CLASSES, mean=MEAN, std=STD, check_sizes=SIZES)
    assert diff <= 1e-3
    files = {"fcnseg.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=files)
    for n, h, w in ((2, 64, 96), (1, 75, 101), (1, 41, 129)):
        x = torch.rand(n, 3, h, w)
        with torch.inference_mode():
            out = loaded(x).numpy()
        assert out.shape == (n, len(NAMES), h, w)
        np.testing.assert_allclose(out, eager(model, x), atol=1e-3, rtol=0)
    assert json.loads(files["fcnseg.json"])["classes"] == CLASSES


def test_pt2_generalises_to_other_sizes_and_batches(model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    diff = export_model(model, path, "pt2", classes=CLASSES, mean=MEAN, std=STD, check_sizes=SIZES)
    assert diff <= 1e-3
    files = {"fcnseg.json": ""}
    program = torch.export.load(str(path), extra_files=files).module()
    for n, h, w in ((1, 64, 96), (3, 75, 101), (1, 41, 129)):  # batch 1 and 3 and the last size were never traced
        x = torch.rand(n, 3, h, w)
        with torch.inference_mode():
            out = program(x).numpy()
        assert out.shape == (n, len(NAMES), h, w)
        np.testing.assert_allclose(out, eager(model, x), atol=1e-3, rtol=0)
    assert json.loads(files["fcnseg.json"])["normalization"] == {"mean": MEAN, "std": STD}


@pytest.mark.parametrize(("fmt", "suffix"), [("onnx", ".onnx"), ("pt2", ".pt2"), ("torchscript", ".pt")])
def test_export_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, fmt: str, suffix: str) -> None:
    write_checkpoint(tmp_path / "ckpt.pt", monkeypatch)
    out = tmp_path / f"exported{suffix}"
    assert main(["export", str(tmp_path / "ckpt.pt"), "--format", fmt, "--out", str(out)]) == 0
    assert out.is_file() and "max |logit difference|" in capsys.readouterr().out
    assert fmt in FORMATS


def test_export_cli_reports_a_failed_check_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    write_checkpoint(tmp_path / "ckpt.pt", monkeypatch)
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
