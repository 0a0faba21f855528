"""Colour-coded masks of a folder dataset: palette, RGB, RGBA and grayscale masks mixed, several void colours,
unknown colours (error or void, counted), near colours within a tolerance, and the class file never a split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli.main import main
from fcnseg.data import DataError, build_dataset, check_dataset, dataset_splits

SKY, ROAD, CAR = (128, 128, 128), (128, 64, 128), (64, 0, 128)
GREY, BLACK = (200, 200, 200), (0, 0, 0)  # the two void colours
CLASS_FILE = "sky 128 128 128\nroad 128 64 128\ncar 64 0 128\nvoid 200 200 200\nvoid 0 0 0\n"
LABELS = np.array([[0, 1, 2], [255, 255, 1]])  # expected labels of every mask below
COLORS = np.array([[SKY, ROAD, CAR], [GREY, BLACK, ROAD]], dtype=np.uint8)


def _palette_mask(path: Path) -> None:
    """The colours of COLORS through a palette in another order than the class file's (index 0 is car)."""
    palette = [CAR, BLACK, ROAD, GREY, SKY]
    index = {c: i for i, c in enumerate(palette)}
    indices = np.array([[index[tuple(int(v) for v in px)] for px in row] for row in COLORS], dtype=np.uint8)
    img = Image.fromarray(indices, mode="P")
    img.putpalette([v for c in palette for v in c])
    img.save(path)


def make_mixed(root: Path) -> Path:
    """Four pairs whose masks hold the same labels as palette, RGB, RGBA and grayscale-index PNGs."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text(CLASS_FILE)
    for stem in ("pal", "rgb", "rgba", "gray"):
        Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(root / "images" / f"{stem}.jpg")
    _palette_mask(root / "masks" / "pal.png")
    Image.fromarray(COLORS).save(root / "masks" / "rgb.png")
    alpha = np.full((2, 3, 1), 255, np.uint8)
    Image.fromarray(np.concatenate([COLORS, alpha], axis=2), mode="RGBA").save(root / "masks" / "rgba.png")
    Image.fromarray(LABELS.astype(np.uint8), mode="L").save(root / "masks" / "gray.png")
    return root


def test_mixed_mask_modes_decode_to_the_same_labels(tmp_path: Path) -> None:
    root = make_mixed(tmp_path)
    dataset = build_dataset("folder", root, "all", classes=root / "classes.txt")
    assert [m.stem for _, m in dataset.files] == ["gray", "pal", "rgb", "rgba"]
    for index in range(len(dataset)):
        np.testing.assert_array_equal(dataset[index][1].numpy(), LABELS, err_msg=str(dataset.files[index][1]))


def test_palette_masks_without_class_file_are_indices(tmp_path: Path) -> None:
    root = make_mixed(tmp_path)
    dataset = build_dataset("folder", root, "all", num_classes=5)
    pal = [m.stem for _, m in dataset.files].index("pal")
    np.testing.assert_array_equal(dataset[pal][1].numpy(), [[4, 2, 0], [3, 1, 2]])  # palette positions


def test_class_file_in_the_root_is_not_a_split(tmp_path: Path) -> None:
    root = make_mixed(tmp_path)
    (root / "val.txt").write_text("rgb\n")
    assert dataset_splits("folder", root) == ("all", "val")
    report = check_dataset("folder", root, progress=False, classes=root / "classes.txt")
    assert report.ok and set(report.splits) == {"all", "val"}
    with pytest.raises(DataError, match="not a split list"):
        build_dataset("folder", root, "classes", classes=root / "classes.txt")


def test_split_may_be_a_list_file_anywhere(tmp_path: Path) -> None:
    root = make_mixed(tmp_path / "data")
    (tmp_path / "mine.txt").write_text("pal\nrgba\n")
    dataset = build_dataset("folder", root, str(tmp_path / "mine.txt"), classes=root / "classes.txt")
    assert [m.stem for _, m in dataset.files] == ["pal", "rgba"]
    (tmp_path / "colours.txt").write_text(CLASS_FILE)  # a class file elsewhere is not a split either
    with pytest.raises(DataError, match=r"colours\.txt is not a split list"):
        build_dataset("folder", root, str(tmp_path / "colours.txt"), classes=root / "classes.txt")


def _with_odd_colours(root: Path) -> Path:
    odd = COLORS.copy()
    odd[0, 0] = (10, 20, 30)  # unknown
    odd[1, 2] = (1, 2, 3)  # unknown
    Image.fromarray(odd).save(root / "masks" / "rgb.png")
    near = COLORS.copy()
    near[0, 1] = (130, 62, 127)  # ROAD within 2
    Image.fromarray(near).save(root / "masks" / "rgba.png")
    return root


def test_unknown_colours_error_or_void_and_counted(tmp_path: Path) -> None:
    root = _with_odd_colours(make_mixed(tmp_path))
    classes = root / "classes.txt"
    with pytest.raises(DataError, match=r"rgb\.png: colours \(1, 2, 3\) x 1 px, \(10, 20, 30\) x 1 px"):
        build_dataset("folder", root, "all", classes=classes)[2]

    report = check_dataset("folder", root, ["all"], progress=False, classes=classes)
    assert sorted(p.file.rsplit("/", 1)[-1] for p in report.problems) == ["rgb.png", "rgba.png"]
    assert report.unknown_pixels == {(10, 20, 30): 1, (1, 2, 3): 1, (130, 62, 127): 1}

    dataset = build_dataset("folder", root, "all", classes=classes, unknown_colors="void", color_tolerance=2)
    np.testing.assert_array_equal(dataset[2][1].numpy(), [[255, 1, 2], [255, 255, 255]])
    np.testing.assert_array_equal(dataset[3][1].numpy(), LABELS)  # the near road colour is road
    report = check_dataset("folder", root, ["all"], progress=False, classes=classes, unknown_colors="void")
    assert report.ok and report.unknown_pixels == {(10, 20, 30): 1, (1, 2, 3): 1, (130, 62, 127): 1}
    report = check_dataset("folder", root, ["all"], progress=False, classes=classes, color_tolerance=2)
    assert report.near_colors == {((130, 62, 127), ROAD): 1}
    assert [Path(p.file).name for p in report.problems] == ["rgb.png"]


def test_ambiguous_tolerance_is_refused(tmp_path: Path) -> None:
    root = make_mixed(tmp_path)
    with pytest.raises(DataError, match=r"ambiguous.*below 32"):  # the closest pair (sky, road) is 64 apart
        build_dataset("folder", root, "all", classes=root / "classes.txt", color_tolerance=40)


def test_check_data_prints_unknown_colour_pixel_counts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _with_odd_colours(make_mixed(tmp_path))
    Image.fromarray(np.array([[(10, 20, 30)] * 3] * 2, dtype=np.uint8)).save(root / "masks" / "gray.png")
    code = main(["check-data", "--dataset", "folder", "--data-root", str(root), "--classes", str(root / "classes.txt"),
                 "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert "rgb  10  20  30:            7 px in 2 file(s)" in out
    assert "rgb   1   2   3:            1 px in 1 file(s)" in out
    assert out.index("10  20  30") < out.index("1   2   3")  # most frequent first
    assert "gray.png: colours (10, 20, 30) x 6 px" in out  # the per-file listing stays
