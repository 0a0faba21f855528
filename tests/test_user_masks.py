"""Users' own masks: grey-level and binary masks are read as the user means, never voided in silence; one set of
dataset flags for every command; labels that would make a mean IoU mislead are reported; masks stored at another
scale; junk files beside the data. Each decoding rule is checked against a plain NumPy reference."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from user_dataset import BINARY_SLICES, BINARY_SMALL_MASK, write_binary_dataset

from fcnseg.cli.main import build_parser, main
from fcnseg.core import progress
from fcnseg.data import DataError, build_dataset, check_dataset
from fcnseg.data.options import DATA_FIELDS
from fcnseg.evaluation import format_table, metrics_from_matrix


def _write_pair(root: Path, stem: str, mask: np.ndarray, *, image_dir: str = "images", mask_dir: str = "masks") -> None:
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    (root / mask_dir).mkdir(parents=True, exist_ok=True)
    image = np.full((*mask.shape[:2], 3), 90, np.uint8)
    Image.fromarray(image).save(root / image_dir / f"{stem}.png")
    Image.fromarray(mask).save(root / mask_dir / f"{stem}.png")


def _reference(stored: np.ndarray, values: list[int]) -> np.ndarray:
    """Class ``k`` where the stored value is ``values[k]``, 255 elsewhere: the NumPy reading of ``--mask-values``."""
    out = np.full(stored.shape, 255, np.uint8)
    for k, v in enumerate(values):
        out[stored == v] = k
    return out


@pytest.mark.parametrize("values", [[0, 255], [0, 1, 2], [0, 128, 255]])
def test_mask_values_decode_grey_masks_as_numpy_does(tmp_path: Path, values: list[int]) -> None:
    rng = np.random.default_rng(len(values))
    stored = np.asarray(values, np.uint8)[rng.integers(0, len(values), (20, 30))]
    _write_pair(tmp_path, "a", stored)
    dataset = build_dataset("folder", tmp_path, "all", mask_values=values)
    _, mask = dataset[0]
    np.testing.assert_array_equal(mask.numpy(), _reference(stored, values))
    assert dataset.classes.num_classes == len(values)
    assert [c[0] for c in dataset.classes.colors] == [min(255, v * 255 // max(255, max(values))) for v in values]


def test_grey_class_file_reads_a_single_channel_mask_as_grey_levels(tmp_path: Path) -> None:
    stored = np.array([[0, 255, 255], [0, 0, 128]], np.uint8)
    _write_pair(tmp_path, "a", stored)
    (tmp_path / "classes.txt").write_text("membrane 0 0 0\ncell 255 255 255\nvoid 128 128 128\n")
    _, mask = build_dataset("folder", tmp_path, "all", classes=tmp_path / "classes.txt")[0]
    np.testing.assert_array_equal(mask.numpy(), [[0, 1, 1], [0, 0, 255]])
    # A class file with a colour that is not grey keeps single-channel masks as class indices.
    (tmp_path / "classes.txt").write_text("membrane 0 0 0\ncell 255 0 0\n")
    with pytest.raises(DataError, match=r"label values \[128\] are neither a class \(0\.\.1\) nor void"):
        build_dataset("folder", tmp_path, "all", classes=tmp_path / "classes.txt")[0]


def test_16_bit_and_1_bit_masks_through_mask_values(tmp_path: Path) -> None:
    wide = np.array([[0, 65535], [65535, 0]], np.uint16)
    _write_pair(tmp_path, "a", wide)
    _, mask = build_dataset("folder", tmp_path, "all", mask_values=[0, 65535])[0]
    np.testing.assert_array_equal(mask.numpy(), [[0, 1], [1, 0]])
    bits = np.array([[False, True, True], [True, False, False]])
    (tmp_path / "images" / "a.png").unlink()
    _write_pair(tmp_path, "b", bits)
    (tmp_path / "masks" / "a.png").unlink()
    Image.fromarray(bits).convert("1").save(tmp_path / "masks" / "b.png")
    _, as_grey = build_dataset("folder", tmp_path, "all", mask_values=[0, 255])[0]
    _, as_index = build_dataset("folder", tmp_path, "all", num_classes=2)[0]
    np.testing.assert_array_equal(as_grey.numpy(), bits.astype(np.uint8))  # white is 255, class 1
    np.testing.assert_array_equal(as_index.numpy(), bits.astype(np.uint8))  # white is index 1


def test_a_value_the_options_do_not_describe_is_an_error_naming_it(tmp_path: Path) -> None:
    _write_pair(tmp_path, "a", np.array([[0, 255, 7]], np.uint8))
    with pytest.raises(DataError, match=r"a\.png: label values \[7\] are neither a class \(0, 255\) nor void"):
        build_dataset("folder", tmp_path, "all", mask_values=[0, 255])[0]


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("em") / "EM stack (export 2)"
    return root, write_binary_dataset(root)


def _data(root: Path, *extra: str) -> list[str]:
    return ["--dataset", "folder", "--data-root", str(root), "--image-dir", "image", "--mask-dir", "label", *extra]


def test_check_data_tells_a_user_without_a_class_file_what_to_do(cells, capsys) -> None:
    root, _ = cells
    assert main(["check-data", *_data(root)]) == 1
    out = capsys.readouterr().out
    assert f"masks in {root / 'label'} hold the values 0, 255 (single-channel, in 12 of 12 files read)" in out
    assert "--mask-values V0 V1" in out and "--num-classes N" in out and "--classes FILE" in out


def test_binary_masks_read_as_indices_are_never_voided_in_silence(cells, tmp_path, capsys) -> None:
    root, _ = cells
    assert main(["check-data", *_data(root, "--num-classes", "2", "--resize-masks")]) == 1
    out = capsys.readouterr().out
    assert "masks of all: 12 single-channel mask(s) as class indices 0..1" in out
    line = "masks hold only the values 0 and 255, read as class indices 0..1: 255 would be void"
    assert f"10 of the 12 {line}" in out and "--mask-values 0 255" in out

    run = tmp_path / "run"
    train = ["train", "--model", "fcn8s_squeezenet1_1", *_data(root, "--num-classes", "2", "--resize-masks"),
             "--val-fraction", "0.25", "--iters", "2", "--out", str(run), "--device", "cpu"]  # fmt: skip
    assert main(train) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"7 of the 9 {line}" in err and "--mask-values 0 255" in err  # the 9 training masks
    assert not list(run.glob("*.pt"))  # stopped before its first step


def test_check_data_groups_masks_at_another_scale_and_resizes_them(cells, capsys) -> None:
    root, expected = cells
    assert main(["check-data", *_data(root, "--mask-values", "0", "255")]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s):" in out
    assert f"1 mask(s) stored at another scale than their images, with the same aspect ratio; e.g. [all] {root}" in out
    assert f"{BINARY_SMALL_MASK}.png: mask is 64x48 (WxH)" in out and "--resize-masks" in out

    assert main(["check-data", *_data(root, "--mask-values", "0", "255", "--resize-masks")]) == 0
    out = capsys.readouterr().out
    assert f"all: {BINARY_SLICES} items, {BINARY_SLICES} read without problems" in out  # junk files are no items
    assert f"{'value0':<20} {expected['membrane']:>12d}" in out
    assert f"{'value255':<20} {expected['cell']:>12d}" in out
    assert "masks of all: 12 single-channel mask(s) as --mask-values 0 255" in out and "no problems found" in out


def test_a_readme_beside_the_folders_is_no_split_unless_asked_for(cells, capsys) -> None:
    """check-data scans every .txt list file of a folder dataset; one that names none of the images (the set's
    README.txt) is skipped, and asking for it by name says why it is no split list."""
    root, _ = cells
    assert main(["check-data", *_data(root, "--mask-values", "0", "255", "--resize-masks", "--split", "README")]) == 1
    out = capsys.readouterr().out
    assert f"{root / 'README.txt'}: none of its 3 line(s) names one of the 12 images in {root / 'image'}" in out


def test_masks_named_image_stem_plus_a_suffix_pair_in_two_folders_or_one(tmp_path: Path, caplog) -> None:
    """Carvana's layout (``train/car_000.jpg``, ``train_masks/car_000_mask.gif``, GIF masks holding 0/1) and the
    one-folder layout of many medical sets (``scan 1.png`` beside ``scan 1_mask.png``) pair each mask with its image."""
    layouts = [(tmp_path / "carvana", "train", "train_masks", ".gif"), (tmp_path / "one", "slices", "slices", ".png")]
    rng = np.random.default_rng(0)
    labels = {stem: (rng.random((24, 32)) < 0.3).astype(np.uint8) for stem in ("car 002 (1)", "car_000", "car_001")}
    for root, image_dir, mask_dir, suffix in layouts:
        for folder in (image_dir, mask_dir):
            (root / folder).mkdir(parents=True, exist_ok=True)
        for k, (stem, label) in enumerate(labels.items()):
            Image.fromarray(np.full((24, 32, 3), 40 * k, np.uint8)).save(root / image_dir / f"{stem}.png")
            Image.fromarray(label, mode="L").convert("P").save(root / mask_dir / f"{stem}_mask{suffix}")
    (tmp_path / "carvana" / "train_masks" / "car_009_mask.gif").write_bytes(b"")  # a mask of no image

    for root, image_dir, mask_dir, suffix in layouts:
        with caplog.at_level(logging.INFO, logger="fcnseg"):
            dataset = build_dataset("folder", root, "all", num_classes=2, image_dir=image_dir, mask_dir=mask_dir)
        assert [(i.name, m.name) for i, m in dataset.files] == [(f"{s}.png", f"{s}_mask{suffix}") for s in labels]
        for k, label in enumerate(labels.values()):
            assert np.array_equal(dataset[k][1].numpy(), label)
        assert "masks pair with images by the image's stem + '_mask'" in caplog.text
    assert "1 mask(s) in" in caplog.text and "car_009_mask.gif" in caplog.text  # the orphan is named
    with pytest.raises(DataError, match=r"images and masks share a folder .* name the mask folder with --mask-dir"):
        build_dataset("folder", tmp_path / "carvana", "all", num_classes=2, image_dir="train", mask_dir="train")


def test_grey_masks_saved_as_jpeg_read_with_a_tolerance(tmp_path: Path) -> None:
    """JPEG turns the levels 0/128/255 into neighbours (1, 127, 252...): an error that names --color-tolerance, which
    then maps each stored level to the nearest class level within N (NumPy reference), and refuses an ambiguous N."""
    labels = np.zeros((40, 48), np.uint8)
    labels[5:25, 10:40], labels[28:38, 4:20] = 2, 1
    _write_pair(tmp_path, "a", np.array([0, 128, 255], np.uint8)[labels])
    (tmp_path / "masks" / "a.png").rename(tmp_path / "masks" / "a.jpg")
    Image.open(tmp_path / "masks" / "a.jpg").save(tmp_path / "masks" / "a.jpg", format="JPEG", quality=80)
    stored = np.asarray(Image.open(tmp_path / "masks" / "a.jpg")).astype(int)
    assert not np.isin(stored, [0, 128, 255]).all()  # the file really holds other levels

    with pytest.raises(DataError, match="--color-tolerance N accepts levels within N"):
        build_dataset("folder", tmp_path, "all", mask_values=[0, 128, 255])[0]
    expected = np.abs(stored[..., None] - np.array([0, 128, 255])).argmin(-1)
    expected[np.abs(stored[..., None] - np.array([0, 128, 255])).min(-1) > 40] = 255
    mask = build_dataset("folder", tmp_path, "all", mask_values=[0, 128, 255], color_tolerance=40)[0][1].numpy()
    assert np.array_equal(mask, expected) and (mask == labels).mean() > 0.97
    with pytest.raises(DataError, match="--color-tolerance 64 is ambiguous: the levels 0 and 128"):
        build_dataset("folder", tmp_path, "all", mask_values=[0, 128, 255], color_tolerance=64)


def test_split_lists_and_class_files_saved_by_windows_tools_read_the_same(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark (Notepad, Excel's "CSV UTF-8") and CRLF line ends change no stem and no class name."""
    for stem in ("a", "b"):
        _write_pair(tmp_path, stem, np.array([[0, 255]], np.uint8))
    (tmp_path / "val.txt").write_bytes(b"\xef\xbb\xbfb\r\n")
    (tmp_path / "classes.csv").write_bytes(b"\xef\xbb\xbfname,r,g,b\r\nsoil,0,0,0\r\nroot,255,255,255\r\n")
    dataset = build_dataset("folder", tmp_path, "val", classes=tmp_path / "classes.csv")
    assert [m.name for _, m in dataset.files] == ["b.png"] and dataset.classes.names == ("soil", "root")
    assert dataset[0][1].tolist() == [[0, 1]]


def test_oxford_pet_layout_trimaps_and_split_lists_with_columns(tmp_path: Path) -> None:
    """Oxford-IIIT Pet as downloaded: trimaps 1 (pet), 2 (background), 3 (border) in annotations/trimaps beside macOS
    junk, and split lists of "name class species breed" lines (which also look like class-file lines) after '#'
    comments."""
    names = ["Abyssinian_1", "Abyssinian_2", "american_bulldog_10"]
    trimap = np.full((6, 8), 2, np.uint8)
    trimap[1:5, 2:6], trimap[1, 2:6] = 1, 3
    for name in names:
        _write_pair(tmp_path, name, trimap, mask_dir="annotations/trimaps")
        (tmp_path / "annotations" / "trimaps" / f"._{name}.png").write_bytes(b"\x00\x05\x16\x07")
    lists = tmp_path / "annotations" / "trainval.txt"
    lists.write_text("#Image CLASS-ID SPECIES BREED ID\n" + "".join(f"{n} 1 1 {k}\n" for k, n in enumerate(names[1:])))
    dataset = build_dataset("folder", tmp_path, str(lists), mask_dir="annotations/trimaps", mask_values=[2, 1],
                            void_index=3)  # fmt: skip
    assert [i.stem for i, _ in dataset.files] == names[1:]
    assert np.array_equal(dataset[0][1].numpy(), _reference(trimap, [2, 1]))


def test_masks_named_after_no_image_and_stacks_of_masks_say_what_to_do(tmp_path: Path) -> None:
    """DRIVE's `21_training.tif` beside `21_manual1.gif` pairs nothing: one error, not a missing mask per image. A
    multi-page TIFF of masks (ISBI's train-labels.tif) is no mask; a reduced-resolution overview page is fine."""
    import tifffile

    _write_pair(tmp_path, "21_training", np.zeros((4, 6), np.uint8))
    (tmp_path / "masks" / "21_training.png").rename(tmp_path / "masks" / "21_manual1.png")
    with pytest.raises(DataError, match=r"no mask in .* is named after an image .* \(e\.g\. 21_manual1\.png, 21_tr"):
        build_dataset("folder", tmp_path, "all", num_classes=2)

    (tmp_path / "masks" / "21_manual1.png").unlink()
    tifffile.imwrite(tmp_path / "masks" / "21_training.tif", np.zeros((3, 4, 6), np.uint8), photometric="minisblack")
    with pytest.raises(DataError, match=r"21_training\.tif: holds 3 images \(pages or frames\), a stack of masks"):
        build_dataset("folder", tmp_path, "all", num_classes=2)[0]
    with tifffile.TiffWriter(tmp_path / "masks" / "21_training.tif") as tif:
        tif.write(np.eye(4, 6, dtype=np.uint8))
        tif.write(np.zeros((2, 3), np.uint8), subfiletype=1)  # an overview, as GIS tools add
    assert np.array_equal(build_dataset("folder", tmp_path, "all", num_classes=2)[0][1].numpy(), np.eye(4, 6))


def test_unknown_values_become_void_with_unknown_colors_void(tmp_path: Path, caplog) -> None:
    """Cityscapes-style label ids with three classes kept: the other ids are an error naming --unknown-colors, which
    makes them void (warned of once per value), as it does for colours."""
    ids = np.array([[7, 8, 26, 3], [3, 7, 0, 26]], np.uint8)
    _write_pair(tmp_path, "a", ids)
    _write_pair(tmp_path, "b", ids)
    with pytest.raises(DataError, match=r"label values \[0, 3\] are neither .* --unknown-colors void makes them void"):
        build_dataset("folder", tmp_path, "all", mask_values=[7, 8, 26])[0]
    dataset = build_dataset("folder", tmp_path, "all", mask_values=[7, 8, 26], unknown_colors="void")
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        masks = [dataset[k][1].numpy() for k in range(2)]
    assert all(np.array_equal(m, _reference(ids, [7, 8, 26])) for m in masks)
    assert caplog.text.count("label values [0, 3], neither a class nor void, decoded as void") == 1


def test_another_size_of_another_shape_stays_an_error(tmp_path: Path) -> None:
    _write_pair(tmp_path, "a", np.zeros((4, 6), np.uint8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks" / "a.png")
    dataset = build_dataset("folder", tmp_path, "all", num_classes=2, resize_masks=True)
    with pytest.raises(DataError, match=r"mask is 4x4 \(WxH\) but its image .* is 6x4; image and mask must have"):
        dataset[0]


def test_the_binary_set_trains_evaluates_predicts_and_exports(cells, tmp_path, capsys, caplog) -> None:
    root, _ = cells
    run = tmp_path / "run"
    options = _data(root, "--mask-values", "0", "255", "--resize-masks")
    train = ["train", "--model", "fcn8s_squeezenet1_1", *options, "--val-fraction", "0.25", "--iters", "3",
             "--batch-size", "2", "--crop-size", "64", "64", "--val-every", "3", "--workers", "0", "--device", "cpu",
             "--out", str(run)]  # fmt: skip
    assert main(train) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["mask_values"] == [0, 255] and config["image_dir"] == "image" and config["resize_masks"] is True
    val = (run / "splits" / "val.txt").read_text().split()
    assert len(val) == 3 and all(s.startswith("slice_") for s in val)  # the seeded split lists image/, not images/
    capsys.readouterr()

    # The run recorded its dataset options: eval needs only the split, and finds the run's seeded val list.
    report = tmp_path / "val.json"
    assert main(["eval", str(run / "best.pt"), "--split", "val", "--backend", "torch", "--json", str(report)]) == 0
    scored = json.loads(report.read_text())
    assert [c["name"] for c in scored["per_class"]] == ["value0", "value255"]
    assert sum(map(sum, scored["confusion"])) == 3 * 96 * 128

    out = tmp_path / "masks"
    assert main(["predict", str(run / "best.pt"), str(root / "image"), "--out", str(out), "--backend", "torch"]) == 0
    assert sorted(p.name for p in out.glob("slice_*.png")) == [f"slice_{i:02d}.png" for i in range(BINARY_SLICES)]
    assert main(["export", str(run / "best.pt"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0


def test_every_command_takes_the_same_dataset_flags() -> None:
    def dataset_flags(command: str) -> set[str]:
        parser = build_parser(command)
        sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
        return {o for a in sub.choices[command]._actions for o in a.option_strings if a.dest in DATA_FIELDS}

    flags = dataset_flags("check-data")
    assert {"--mask-values", "--image-dir", "--mask-dir", "--resize-masks", "--num-classes", "--bands"} <= flags
    assert dataset_flags("train") == flags == dataset_flags("eval")


def test_label_findings_single_class_absent_class_and_void_majority(tmp_path: Path) -> None:
    mask = np.zeros((10, 10), np.uint8)
    _write_pair(tmp_path, "a", mask)
    report = check_dataset("folder", tmp_path, progress=False, num_classes=3)
    assert not report.ok and any("single class, class0" in p.message for p in report.problems)
    mask[:2] = 1
    _write_pair(tmp_path, "a", mask)
    report = check_dataset("folder", tmp_path, progress=False, num_classes=3)
    assert [p.message for p in report.problems] == ["classes never seen: class2"] and not report.ok
    mask[:] = 255
    mask[0, :3] = (0, 1, 2)
    _write_pair(tmp_path, "a", mask)
    report = check_dataset("folder", tmp_path, progress=False, num_classes=3)
    assert report.ok and [(p.kind, p.message) for p in report.problems] == [
        ("warning", "void covers 97 % of the pixels")
    ]


def test_the_mean_iou_says_over_how_many_classes_it_was_taken() -> None:
    # ground truth holds only class 0 (rows), the model predicts class 0 everywhere: IoU 1 over 1 of 2 classes
    metrics = metrics_from_matrix(np.array([[10, 0], [0, 0]]), ["membrane", "cell"])
    assert metrics["mean_iou"] == 1.0 and metrics["iou_classes"] == 1 and metrics["absent_classes"] == ["cell"]
    assert "mean IoU                 100.00 (over 1 of 2 classes; not in the ground truth: cell)" in format_table(
        metrics
    )
    full = metrics_from_matrix(np.array([[3, 1], [1, 3]]), ["a", "b"])
    assert full["absent_classes"] == [] and "over" not in format_table(full)


def test_short_loops_log_no_progress_lines(monkeypatch, caplog) -> None:
    clock = iter(np.arange(0.0, 100.0, 0.1))  # each step 0.1 s: 30 steps in 3 s
    monkeypatch.setattr(progress.time, "monotonic", lambda: float(next(clock)))
    with caplog.at_level(logging.INFO, logger="fcnseg.progress"):
        bar = progress.LogProgress(total=30, desc="check")
        for _ in range(30):
            bar.update()
    assert caplog.records == []
    with caplog.at_level(logging.INFO, logger="fcnseg.progress"):
        bar = progress.LogProgress(total=300, desc="check")  # 30 s: lines after the quiet start, every 15 steps
        for _ in range(300):
            bar.update()
    assert 10 <= len(caplog.records) <= 20 and caplog.records[-1].getMessage().startswith("check: 300/300")
