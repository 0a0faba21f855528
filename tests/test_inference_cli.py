"""``fcnseg predict``: files, folders and globs in; palette masks, overlays, probabilities and a legend out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_inference_predictor import COLORS, K, smooth_image, write_checkpoint

from fcnseg.cli.main import main


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    write_checkpoint(path)
    return path


def test_predict_writes_masks_overlays_probs_and_legend(tmp_path: Path, checkpoint: Path) -> None:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    Image.fromarray(smooth_image(45, 61)).save(images / "a.png")
    Image.fromarray(smooth_image(33, 50, seed=1)).convert("L").save(images / "sub" / "b.jpg")
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(images), "--out", str(out), "--probs", "--precision", "fp32"]) == 0
    assert (out / "legend.png").is_file()
    for stem, size in (("a", (61, 45)), ("sub/b", (50, 33))):
        with Image.open(out / f"{stem}.png") as mask:
            assert mask.mode == "P" and mask.size == size
            assert np.asarray(mask.getpalette()).reshape(-1, 3)[:K].tolist() == COLORS
            assert np.asarray(mask).max() < K
        with Image.open(out / f"{stem}_overlay.jpg") as over:
            assert over.size == size
        probs = np.load(out / f"{stem}_probs.npy")
        assert probs.shape == (K, size[1], size[0]) and probs.dtype == np.float32


def test_globs_tiling_and_batches(tmp_path: Path, checkpoint: Path) -> None:
    for i in range(3):
        Image.fromarray(smooth_image(70, 90, seed=i)).save(tmp_path / f"img{i}.png")
    out = tmp_path / "out"
    argv = ["predict", str(checkpoint), str(tmp_path / "img*.png"), "--out", str(out), "--batch-size", "2"]
    assert main([*argv, "--tile-size", "48", "56", "--precision", "fp32"]) == 0
    assert sorted(p.name for p in out.glob("img?.png")) == ["img0.png", "img1.png", "img2.png"]
    assert not list(out.glob("*probs*"))


def test_keep_going_processes_the_rest_and_fails(tmp_path: Path, checkpoint: Path, caplog) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(smooth_image(40, 52)).save(good)
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    status = main(["predict", str(checkpoint), str(missing), str(good), "--out", str(out), "--keep-going"])
    assert status == 1
    assert (out / "good.png").is_file() and (out / "good_overlay.jpg").is_file()
    assert "1 input(s) failed" in caplog.text and "missing.jpg" in caplog.text


def test_stops_at_first_failure_without_keep_going(tmp_path: Path, checkpoint: Path, capsys) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(smooth_image(40, 52)).save(good)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    status = main(["predict", str(checkpoint), str(tmp_path / "broken.png"), str(good), "--out", str(out)])
    assert status == 2
    assert "cannot read image" in capsys.readouterr().err
    assert not (out / "good.png").exists()
    assert main(["predict", str(tmp_path / "nope.pt"), str(good), "--out", str(out)]) == 2
