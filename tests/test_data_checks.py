"""check_dataset finds every problem and counts classes; median-frequency weights; ``fcnseg check-data``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli.main import main
from fcnseg.data import ClassCounts, DataError, check_dataset, median_frequency_weights


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def make_folder(root: Path, problems: bool) -> Path:
    """Two clean pairs; with ``problems``, also a missing mask, a size mismatch, a bad value and a broken file."""
    save(root / "images" / "ok1.png", np.zeros((2, 3, 3)))
    save(root / "masks" / "ok1.png", [[0, 0, 1], [1, 255, 255]])
    save(root / "images" / "ok2.png", np.zeros((2, 2, 3)))
    save(root / "masks" / "ok2.png", [[0, 0], [0, 0]])
    if problems:
        save(root / "images" / "nomask.png", np.zeros((2, 2, 3)))
        save(root / "images" / "small.png", np.zeros((2, 2, 3)))
        save(root / "masks" / "small.png", np.zeros((3, 2)))
        save(root / "images" / "badvalue.png", np.zeros((1, 2, 3)))
        save(root / "masks" / "badvalue.png", [[1, 9]])
        save(root / "images" / "broken.png", np.zeros((1, 2, 3)))
        (root / "masks" / "broken.png").write_bytes(b"garbage")
    return root


def test_check_dataset_reports_every_problem_and_counts(tmp_path: Path) -> None:
    report = check_dataset("folder", make_folder(tmp_path, problems=True), progress=False, num_classes=2)
    assert not report.ok
    found = {Path(p.file).name: p.message for p in report.problems}
    assert set(found) == {"nomask.png", "small.png", "badvalue.png", "broken.png"}
    assert "missing mask" in found["nomask.png"]
    assert "same size" in found["small.png"]
    assert "[9]" in found["badvalue.png"]
    assert "cannot read" in found["broken.png"]
    split = report.splits["all"]
    assert (split.num_items, split.num_ok) == (6, 2)
    counts = report.class_counts()
    np.testing.assert_array_equal(counts.pixels, [2 + 4, 2])  # class 0 in ok1 and ok2, class 1 in ok1 only
    np.testing.assert_array_equal(counts.image_pixels, [6 + 4, 6])
    assert (counts.void_pixels, counts.void_image_pixels, counts.total_pixels) == (2, 6, 10)
    assert split.size_stats()["min_hw"] == (2, 2) and split.size_stats()["max_hw"] == (2, 3)


def test_check_dataset_unknown_split_lists_valid(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="valid splits: all"):
        check_dataset("folder", make_folder(tmp_path, problems=False), ["bogus"], num_classes=2, progress=False)


def test_median_frequency_weights_by_hand() -> None:
    # class 0: 60 px in images totalling 100 px -> 0.6; class 1: 10 / 100 -> 0.1; class 2: 20 / 50 -> 0.4
    counts = ClassCounts(pixels=np.array([60, 10, 20]), image_pixels=np.array([100, 100, 50]))
    np.testing.assert_allclose(median_frequency_weights(counts), [0.4 / 0.6, 0.4 / 0.1, 1.0])
    # an absent class gets weight 0 and stays out of the median
    counts = ClassCounts(pixels=np.array([60, 0, 20]), image_pixels=np.array([100, 0, 50]))
    np.testing.assert_allclose(median_frequency_weights(counts), [0.5 / 0.6, 0.0, 0.5 / 0.4])
    # void counted in the median (SegNet's convention): frequencies 0.6, 0.4 and void 5 / 50 = 0.1 -> median 0.4
    counts = ClassCounts(np.array([60, 20]), np.array([100, 50]), void_pixels=5, void_image_pixels=50)
    np.testing.assert_allclose(median_frequency_weights(counts, void_in_median=True), [0.4 / 0.6, 1.0])


def test_cli_check_data_returns_1_and_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_folder(tmp_path / "bad", problems=False)
    save(root / "masks" / "ok2.png", [[0, 7], [0, 0]])  # the one planted problem
    argv = ["check-data", "--dataset", "folder", "--data-root", str(root), "--num-classes", "2", "--no-progress"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and "ok2.png" in out and "[7]" in out
    assert "class0" in out and "class1" in out

    (tmp_path / "classes.txt").write_text("road 128 64 128\ncar 64 0 128\n")
    clean = make_folder(tmp_path / "clean", problems=False)
    argv = ["check-data", "--dataset", "folder", "--data-root", str(clean), "--classes", str(tmp_path / "classes.txt")]
    assert main([*argv, "--no-progress", "--weights"]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "road" in out and "mf-weight" in out


def test_cli_check_data_user_error_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check-data", "--dataset", "camvid", "--data-root", str(tmp_path), "--split", "bogus", "--no-progress"]
    assert main(argv) == 2
    assert "valid splits: train, val, test, trainval" in capsys.readouterr().err
