"""The new-user walk-through of docs/data.md, end to end on a dataset like a user's own (``user_dataset.py``): JPEG
tiles of three sizes with a big one, palette and RGB masks mixed, two void colours, a few pixels of an unknown colour,
the class file in the root and no split lists; ``check-data``, then ``train``, ``eval`` and ``predict``, each as a
user sees it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from user_dataset import CLASSES, TILES, write_user_dataset

from fcnseg.cli.main import main


@pytest.fixture(scope="module")
def aerial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("walk") / "aerial"
    return root, write_user_dataset(root)


def _data(root: Path, *extra: str) -> list[str]:
    return ["--dataset", "folder", "--data-root", str(root), "--classes", str(root / "classes.txt"), *extra]


def test_check_data_finds_the_unknown_colour_and_counts_every_class(aerial, capsys) -> None:
    root, expected = aerial
    colour, pixels, stem = expected["unknown"]
    assert main(["check-data", *_data(root)]) == 1
    out = capsys.readouterr().out
    assert f"all: {expected['images']} items, {expected['images'] - 1} read without problems" in out
    assert "min 240x320, max 1500x2000" in out and "(3 distinct)" in out
    assert "classes:" not in out  # the class file in the root is not a split
    assert f"rgb {colour[0]:>3} {colour[1]:>3} {colour[2]:>3}: {pixels:>12d} px in 1 file(s)" in out
    problem = f"{root / 'masks' / stem}.png: colours {colour} x {pixels} px are neither"
    assert f"1 problem(s):\n  [all] {problem}" in out and "--unknown-colors void" in out

    assert main(["check-data", *_data(root, "--unknown-colors", "void")]) == 0  # every pair read; counts exact
    out = capsys.readouterr().out
    for (name, _), count in zip(CLASSES, expected["pixels"], strict=True):
        assert f"{name:<20} {count:>12d}" in out, name
    assert f"(void)               {expected['void']:>12d}" in out and "no problems found" in out


def _train(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "fcn8s_squeezenet1_1", *_data(root), "--out", str(out), "--iters", "4",
            "--batch-size", "4", "--crop-size", "96", "96", "--val-every", "4", "--log-every", "2",
            "--workers", "0", *extra]  # fmt: skip


def test_train_asks_for_a_split_then_names_the_unknown_colour(aerial, tmp_path, capsys) -> None:
    root, expected = aerial
    colour, pixels, stem = expected["unknown"]
    assert main(_train(root, tmp_path / "a")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no split list train.txt, val.txt" in err and "--val-fraction" in err

    assert main(_train(root, tmp_path / "b", "--val-fraction", "0.2")) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"fcnseg train: error: {root / 'masks' / stem}.png: colours {colour} x {pixels} px")
    assert "fcnseg check-data --dataset folder" in line and "--skip-bad-samples" in line


STEMS_PREDICTED = ("scene_big", "tile_00", "tile_01")


def test_train_eval_predict_with_unknown_colours_as_void(aerial, tmp_path, capsys, caplog) -> None:
    root, expected = aerial
    colour, pixels, stem = expected["unknown"]
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert main(_train(root, run, "--val-fraction", "0.2", "--unknown-colors", "void")) == 0
    train = (run / "splits" / "train.txt").read_text().split()
    val = (run / "splits" / "val.txt").read_text().split()
    assert (len(train), len(val)) == (8, 2) and sorted(train + val) == sorted(t[0] for t in TILES)
    assert f"{stem}.png: {pixels} px of colour {colour}, neither a class nor void, decoded as void" in caplog.text
    assert "split 10 images of 'all' into 8 train / 2 val (seed 0)" in caplog.text
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 4 and 0 <= summary["best_val_mean_iou"] <= 1

    report = tmp_path / "eval"
    args = ["eval", str(run / "best.pt"), *_data(root, "--unknown-colors", "void"), "--split",
            str(run / "splits" / "val.txt"), "--out", str(report), "--workers", "0"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "mean IoU" in captured.out and "\r" not in captured.err  # progress as log lines, not redraws
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["mean_iou"] == pytest.approx(summary["final"]["mean_iou"])
    assert [c["name"] for c in metrics["per_class"]] == [name for name, _ in CLASSES]

    predictions = tmp_path / "predictions"
    inputs = [str(root / "images" / "scene_big.jpg"), str(root / "images" / "tile_0[01].jpg")]  # a file and a glob
    assert main(["predict", str(run / "best.pt"), *inputs, "--out", str(predictions)]) == 0
    assert "\r" not in capsys.readouterr().err
    with Image.open(predictions / "scene_big.png") as mask:  # the big tile, at its own size
        assert mask.size == (2000, 1500) and int(np.asarray(mask).max()) < len(CLASSES)
    assert sorted(p.stem for p in predictions.glob("*_overlay.jpg")) == [f"{s}_overlay" for s in STEMS_PREDICTED]
