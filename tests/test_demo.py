"""``fcnseg demo``: its scenes show every object whole, and a short run learns and writes everything it promises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli.main import main
from fcnseg.data.synthetic import BACKGROUND, FRAMED, SHAPES_CLASSES, make_scene, write_shapes_dataset


def test_scenes_hold_whole_objects_of_every_class_away_from_the_border() -> None:
    rng = np.random.default_rng(3)
    seen: set[int] = set()
    for _ in range(40):
        image, labels = make_scene(rng, (96, 120))
        assert image.shape == (96, 120, 3) and image.dtype == np.uint8 and labels.shape == (96, 120)
        seen.update(int(v) for v in np.unique(labels))
        border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        assert set(border.tolist()) <= {BACKGROUND}, "an object touches the image border"
    assert seen == {*range(len(SHAPES_CLASSES.names)), 255}
    assert FRAMED in seen


def test_dataset_is_reused_only_with_the_same_parameters(tmp_path: Path) -> None:
    root = write_shapes_dataset(tmp_path, num_train=3, num_val=2, size=(48, 64))
    first = (root / "images" / "train_0000.png").stat().st_mtime_ns
    write_shapes_dataset(tmp_path, num_train=3, num_val=2, size=(48, 64))
    assert (root / "images" / "train_0000.png").stat().st_mtime_ns == first
    write_shapes_dataset(tmp_path, num_train=4, num_val=2, size=(48, 64))
    assert (root / "train.txt").read_text().split() == [f"train_{i:04d}" for i in range(4)]


@pytest.mark.slow
def test_short_demo_learns_and_writes_its_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--iters", "300", "--num-train", "200", "--num-val", "40"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[: printed.rindex("}") + 1])

    # Predicting background everywhere scores IoU = background share for one class of five, 0 for the others.
    labels = np.stack([np.asarray(Image.open(p)) for p in (out / "data" / "masks").glob("val_*")])
    trivial = (labels == BACKGROUND).sum() / (labels != 255).sum() / len(SHAPES_CLASSES.names)
    assert report["val"]["mean_iou"] > max(2 * trivial, 0.3), (report, trivial)

    written = ("best.pt", "last.pt", "curves.png", "metrics.jsonl", "config.json", "eval/metrics.json")
    for name in (*written, "eval/confusion.png", "eval/samples.png", "predictions/legend.png"):
        assert (out / name).is_file(), name
    assert len(list((out / "predictions").glob("*_overlay.png"))) == 12


def test_bad_settings_fail_before_anything_is_generated(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--out", str(tmp_path / "a"), "--iters", "0"]) == 2
    assert "--iters must be at least 1" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main(["demo", "--out", str(tmp_path / "b"), "--num-val", "0"]) == 2
    assert "--num-val 0" in capsys.readouterr().err and not (tmp_path / "b" / "data" / "images").exists()
