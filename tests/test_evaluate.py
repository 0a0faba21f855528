"""The evaluation loop, the report files and the plots, with a stub model whose prediction is known."""

from __future__ import annotations

import json
from fractions import Fraction as F

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fcnseg.evaluation import (
    ConfusionMatrix,
    class_names_colors,
    colorize,
    evaluate,
    format_table,
    model_state_kept,
    plot_confusion,
    plot_curves,
    plot_samples,
    write_report,
)
from fcnseg.inference.predictor import Predictor

NAMES = ("road", "car", "sky")
CLASSES = {"names": list(NAMES), "colors": [[128, 64, 128], [0, 0, 142], [70, 130, 180]]}


class ChannelZeroIsPrediction(nn.Module):
    """Stub FCN: predicts, at every pixel, the class index stored in channel 0 of the image.

    Logits ``(N, K, H, W)`` are 10 * one-hot of ``round(x[:, 0])``; being per pixel, the prediction is the same under
    whole, tiled and flipped inference.
    """

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        pred = x[:, 0].round().long().clamp(0, self.num_classes - 1)  # (N, H, W)
        return 10.0 * nn.functional.one_hot(pred, self.num_classes).permute(0, 3, 1, 2).float()


def _item(pred: list[list[int]], target: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """An (image (3, H, W) float, mask (H, W) int64) pair whose stub prediction is ``pred``."""
    p = torch.tensor(pred, dtype=torch.float32)
    image = torch.stack([p, torch.full_like(p, -1.0), torch.full_like(p, 2.0)])
    return image, torch.tensor(target, dtype=torch.int64)


# Split over two 2x2 images; together they give the matrix of test_metrics' first case:
#   [[2, 1, 0], [0, 1, 1], [0, 0, 1]], pixel acc 2/3, mean acc 13/18, mean IoU 1/2, fw IoU 19/36.
DATASET = [
    _item(pred=[[0, 0], [1, 1]], target=[[0, 0], [0, 1]]),
    _item(pred=[[2, 2], [0, 2]], target=[[1, 2], [255, 255]]),
]
EXPECTED = {"pixel_acc": F(2, 3), "mean_acc": F(13, 18), "mean_iou": F(1, 2), "fw_iou": F(19, 36)}


def _check_expected(metrics: dict) -> None:
    for key, value in EXPECTED.items():
        assert metrics[key] == pytest.approx(float(value), abs=1e-12), key
    assert metrics["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def _predictor(model: nn.Module | None = None, **options) -> Predictor:
    return Predictor(model or ChannelZeroIsPrediction(), classes=CLASSES, precision="fp32", **options)


@pytest.mark.parametrize(
    ("options", "batch_size", "forward_calls"),
    [
        ({}, 1, 2),
        ({}, 2, 1),
        ({"tile_size": (1, 1), "overlap": 0.0}, 1, 8),  # four 1x1 windows per 2x2 image
        ({"flip": True}, 1, 4),
    ],
    ids=["whole", "batched", "slide", "flip"],
)
def test_evaluate_gives_metrics_of_the_hand_known_matrix(options, batch_size, forward_calls):
    model = ChannelZeroIsPrediction()
    model.train()
    with model_state_kept(model):
        result = evaluate(_predictor(model, **options), DATASET, batch_size=batch_size, progress=False)
    _check_expected(result.metrics)
    assert result.matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert result.num_images == 2
    assert model.calls == forward_calls
    assert [c["name"] for c in result.metrics["per_class"]] == list(NAMES)
    assert model.training  # the caller's mode is restored
    assert result.samples == []


def test_batch_of_mixed_sizes_and_sample_capture():
    # A third, 1x3 image: target [2, 2, 0], prediction [2, 0, 0] adds gt2->2, gt2->0, gt0->0.
    data = [*DATASET, _item(pred=[[2, 0, 0]], target=[[2, 2, 0]])]
    predictor = _predictor(mean=[0.5] * 3, std=[0.25] * 3)
    result = evaluate(predictor, data, batch_size=2, num_samples=3, progress=False)
    assert result.matrix.tolist() == [[3, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert len(result.samples) == 3
    last = result.samples[2]
    assert last.image.shape == (1, 3, 3) and last.image.dtype == np.uint8
    # channel 1 is -1 everywhere: (-1 * 0.25 + 0.5) * 255 = 63.75 -> 64
    assert (last.image[..., 1] == 64).all()
    assert last.gt.tolist() == [[2, 2, 0]]
    assert last.pred.tolist() == [[2, 0, 0]]
    assert result.samples[1].gt.tolist() == [[1, 2], [255, 255]]


def test_num_samples_caps_the_kept_samples():
    result = evaluate(_predictor(), DATASET, classes=list(NAMES), num_samples=1, progress=False)
    assert len(result.samples) == 1
    assert result.samples[0].pred.tolist() == [[0, 0], [1, 1]]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tile_size": "tiles"}, "tile_size"),
        ({"tile_size": (0, 64)}, "tile_size"),
        ({"overlap": 1.0}, "overlap"),
        ({"scales": (1.0, 0.0)}, "scales"),
    ],
)
def test_the_predictor_rejects_bad_settings_once_for_eval_and_predict(options, message):
    with pytest.raises(ValueError, match=message):
        _predictor(**options)


def test_evaluate_rejects_classes_the_model_does_not_predict():
    with pytest.raises(ValueError, match="classes"):
        evaluate(_predictor(), DATASET, classes=["a", "b"], progress=False)


def test_write_report_writes_json_and_pngs(tmp_path):
    result = evaluate(_predictor(), DATASET, num_samples=2, progress=False)
    written = write_report(result, CLASSES, tmp_path / "report", extra={"split": "val"})
    assert set(written) == {"json", "confusion", "samples"}
    text = written["json"].read_text()
    report = json.loads(text)
    assert report["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert "    [2, 1, 0],\n" in text  # one line per matrix row
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"):
        assert 0.0 <= report[key] <= 1.0
        assert report[key] == pytest.approx(float(EXPECTED[key]), abs=1e-12)
    assert report["per_class"][0] == {"name": "road", "iou": pytest.approx(2 / 3), "acc": pytest.approx(2 / 3)}
    assert all(set(c) == {"name", "iou", "acc"} for c in report["per_class"])
    assert report["num_images"] == 2 and report["split"] == "val"
    for kind in ("confusion", "samples"):
        assert written[kind].stat().st_size > 0
        with Image.open(written[kind]) as im:
            assert im.format == "PNG" and im.width > 0 and im.height > 0


def test_write_report_explicit_paths_only(tmp_path):
    result = evaluate(_predictor(), DATASET, progress=False)
    written = write_report(result, json_path=tmp_path / "m.json")
    assert written == {"json": tmp_path / "m.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]  # no temporary file left behind
    with pytest.raises(ValueError, match="num_samples"):
        write_report(result, samples_path=tmp_path / "s.png")


def test_format_table_shows_percentages_and_undefined_values():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]))  # class 2 absent: IoU and acc undefined
    table = format_table(cm.compute(["road", "car", "sky"]))
    lines = table.splitlines()
    # road: IoU 2 / (3 + 2 - 2) = 66.67 %, acc 2/3; car: IoU 1 / (1 + 2 - 1) = 50 %, acc 100 %
    assert lines[2].split() == ["road", "66.67", "66.67"]
    assert lines[3].split() == ["car", "50.00", "100.00"]
    assert lines[4].split() == ["sky", "-", "-"]
    assert "mean IoU" in table and "58.33" in table  # (2/3 + 1/2) / 2
    assert "pixel accuracy" in table and "75.00" in table


def test_class_names_colors_accepts_the_three_forms():
    class Info:
        names = ("a", "b")
        colors = ((1, 2, 3), (4, 5, 6))

    for classes in (Info(), {"names": ["a", "b"], "colors": [[1, 2, 3], [4, 5, 6]]}):
        names, colors = class_names_colors(classes)
        assert names == ["a", "b"] and colors.tolist() == [[1, 2, 3], [4, 5, 6]]
    names, colors = class_names_colors(["a", "b", "c"])
    assert colors.dtype == np.uint8 and colors.tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]  # VOC palette


def test_colorize_paints_classes_and_blacks_out_void():
    mask = np.array([[0, 1], [255, 7]])
    out = colorize(mask, [[10, 20, 30], [40, 50, 60]])
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out.tolist() == [[[10, 20, 30], [40, 50, 60]], [[0, 0, 0], [0, 0, 0]]]


def _png_size(path) -> tuple[int, int]:
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


@pytest.mark.parametrize("normalize", ["true", "pred", "all", None])
def test_plot_confusion_writes_png(tmp_path, normalize):
    matrix = np.array([[5, 1, 0], [0, 0, 0], [2, 0, 9]])  # an empty row must not divide by zero
    path = plot_confusion(matrix, NAMES, tmp_path / "c.png", normalize=normalize)
    assert min(_png_size(path)) > 100


def test_plot_confusion_21_classes_and_bad_input(tmp_path):
    matrix = torch.eye(21, dtype=torch.int64) * 50 + 1
    plot_confusion(matrix, [f"class {i}" for i in range(21)], tmp_path / "c21.png")
    assert min(_png_size(tmp_path / "c21.png")) > 500
    with pytest.raises(ValueError, match="K names"):
        plot_confusion(matrix, ["a"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="normalize"):
        plot_confusion(matrix[:3, :3], NAMES, tmp_path / "bad.png", normalize="rows")


def test_plot_samples_accepts_chw_tensors_and_hwc_arrays(tmp_path):
    images = [torch.zeros(3, 8, 12, dtype=torch.uint8), np.full((8, 12, 3), 200, dtype=np.uint8)]
    gts = [torch.zeros(8, 12, dtype=torch.long), np.full((8, 12), 255)]
    preds = [np.ones((8, 12), dtype=np.int64), torch.full((8, 12), 2)]
    path = plot_samples(images, gts, preds, CLASSES["colors"], tmp_path / "s.png", names=NAMES)
    _png_size(path)
    with pytest.raises(ValueError, match="uint8"):
        plot_samples([np.zeros((8, 12, 3))], gts[:1], preds[:1], CLASSES["colors"], tmp_path / "bad.png")


@pytest.mark.parametrize(
    "rows",
    [
        [
            {"step": 10, "epoch": 0, "loss": 2.0, "lr": 1e-4},
            {"step": 20, "epoch": 0, "loss": 1.5, "lr": 9e-5},
            {"step": 20, "epoch": 0, "val_mean_iou": 0.3, "val_pixel_acc": 0.7},
        ],
        [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": None}, {"epoch": 3, "loss": float("nan")}],
        [{"lr": 0.1}],
        [{"note": "nothing to plot"}],
        [],
    ],
    ids=["full", "epoch-only-with-gaps", "no-x-key", "no-known-key", "empty"],
)
def test_plot_curves_tolerates_missing_keys(tmp_path, rows):
    _png_size(plot_curves(rows, tmp_path / "curves.png"))


# --- fcnseg eval, end to end on a tiny folder dataset ------------------------------------------------------------


@pytest.fixture
def folder_split(tmp_path):
    """One 2x3 image whose red channel is the stub's prediction, and its index mask (255 = void)."""
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    red = np.array([[0, 1, 2], [0, 0, 1]], dtype=np.uint8)
    Image.fromarray(np.stack([red, red, red], axis=-1)).save(tmp_path / "data" / "images" / "a.png")
    mask = np.array([[0, 1, 2], [1, 255, 1]], dtype=np.uint8)
    Image.fromarray(mask, mode="L").save(tmp_path / "data" / "masks" / "a.png")
    return tmp_path / "data"


@pytest.fixture
def fake_checkpoint(tmp_path, monkeypatch):
    """A checkpoint file, with ``load_checkpoint`` and ``model_from_checkpoint`` replaced to rebuild the stub model."""
    import fcnseg.inference.predictor
    import fcnseg.models

    path = tmp_path / "model.pt"
    torch.save({"format": "fcnseg-checkpoint"}, path)
    ckpt = {
        "classes": CLASSES,
        # mean 0, std 1/255 undo ToDtype's scaling: the normalised red channel is the stored byte, i.e. the class
        "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1 / 255] * 3},
    }
    monkeypatch.setattr(fcnseg.inference.predictor, "load_checkpoint", lambda p: ckpt)
    monkeypatch.setattr(
        fcnseg.models, "model_from_checkpoint", lambda c: ChannelZeroIsPrediction(len(c["classes"]["names"])).eval()
    )
    return path


def test_cli_eval_prints_table_and_writes_report(folder_split, fake_checkpoint, tmp_path, capsys):
    from fcnseg.cli.main import main

    out = tmp_path / "report"
    argv = ["eval", str(fake_checkpoint), "--dataset", "folder", "--data-root", str(folder_split), "--split", "all"]
    argv += ["--backend", "torch"]  # the stub checkpoint has no real model to convert to OpenVINO
    rc = main([*argv, "--out", str(out), "--device", "cpu", "--workers", "0", "--precision", "fp32"])
    assert rc == 0
    # pairs (gt, pred): (0,0) (1,1) (2,2) (1,0) (void) (1,1) -> [[1, 0, 0], [1, 2, 0], [0, 0, 1]]
    # pixel acc 4/5; acc 1, 2/3, 1 -> mean 8/9; IoU 1/2, 2/3, 1 -> mean 13/18; fw 1/5*1/2 + 3/5*2/3 + 1/5*1 = 7/10
    report = json.loads((out / "metrics.json").read_text())
    assert report["confusion"] == [[1, 0, 0], [1, 2, 0], [0, 0, 1]]
    expected = {"pixel_acc": F(4, 5), "mean_acc": F(8, 9), "mean_iou": F(13, 18), "fw_iou": F(7, 10)}
    for key, value in expected.items():
        assert report[key] == pytest.approx(float(value), abs=1e-9), key
    assert [c["name"] for c in report["per_class"]] == list(NAMES)
    assert report["split"] == "all" and report["dataset"] == "folder"
    for name in ("confusion.png", "samples.png"):
        _png_size(out / name)
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and "72.22" in printed  # 13/18


def test_cli_eval_user_errors(folder_split, fake_checkpoint, tmp_path, capsys):
    from fcnseg.cli.main import main

    base = ["--dataset", "folder", "--data-root", str(folder_split), "--split", "all", "--device", "cpu"]
    base += ["--backend", "torch"]  # the stub checkpoint has no real model to convert to OpenVINO
    assert main(["eval", str(tmp_path / "missing.pt"), *base]) == 2
    assert "missing.pt not found" in capsys.readouterr().err

    class_file = tmp_path / "two.txt"
    class_file.write_text("road 128 64 128\ncar 0 0 142\n")
    assert main(["eval", str(fake_checkpoint), *base, "--classes", str(class_file)]) == 2
    assert "has 2 classes but checkpoint" in capsys.readouterr().err

    assert main(["eval", str(fake_checkpoint), *base, "--tile-size", "0", "64"]) == 2
    assert "tile_size must be None, 'auto' or a positive (height, width)" in capsys.readouterr().err
