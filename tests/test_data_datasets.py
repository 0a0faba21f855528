"""Dataset layouts on tiny synthetic trees: decoded masks, void = 255, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from fcnseg.data import (
    ADE20K_CLASSES,
    CAMVID_CLASSES,
    CITYSCAPES_CLASSES,
    VOC_CLASSES,
    ClassInfo,
    DataError,
    build_dataset,
    load_class_file,
)


def write_image(path: Path, height: int, width: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def write_mask(path: Path, values: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(values, dtype=np.uint8), mode="L")
    if palette:
        img = img.convert("P")  # keeps the indices; attach the VOC palette as the real files do
        flat = [c for rgb in VOC_CLASSES.colors for c in rgb]
        img.putpalette(flat + [224, 224, 192] * (256 - len(VOC_CLASSES.colors)))
    img.save(path)


def assert_item(dataset, index: int, expected: np.ndarray) -> None:
    image, mask = dataset[index]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64
    assert image.shape == (3, *expected.shape)
    np.testing.assert_array_equal(mask.numpy(), expected)


VOC_MASK = np.array([[0, 0, 15, 255], [20, 255, 15, 15], [1, 1, 0, 0]])


def make_voc(root: Path, ids: dict[str, list[str]]) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    all_ids = sorted({i for split in ids.values() for i in split})
    for n, image_id in enumerate(all_ids):
        write_image(voc / "JPEGImages" / f"{image_id}.jpg", 3, 4, seed=n)
        write_mask(voc / "SegmentationClass" / f"{image_id}.png", VOC_MASK, palette=True)
    for split, split_ids in ids.items():
        (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(split_ids) + "\n")
    return voc


def make_sbd(root: Path, train: list[str], val: list[str]) -> Path:
    from scipy.io import savemat

    sbd = root / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    for n, image_id in enumerate(train + val):
        write_image(sbd / "img" / f"{image_id}.jpg", 2, 3, seed=n)
        seg = np.array([[0, 3, 3], [12, 12, 0]], dtype=np.uint8)
        savemat(sbd / "cls" / f"{image_id}.mat", {"GTcls": {"Segmentation": seg, "CategoriesPresent": [3, 12]}})
    (sbd / "train.txt").write_text("\n".join(train) + "\n")
    (sbd / "val.txt").write_text("\n".join(val) + "\n")
    return sbd


def test_voc_palette_masks_decode_to_indices(tmp_path: Path) -> None:
    make_voc(tmp_path, {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"]})
    dataset = build_dataset("voc", tmp_path / "VOCdevkit", "train")  # a folder above VOC2012 is accepted
    assert len(dataset) == 2 and dataset.classes == VOC_CLASSES
    assert dataset.files[0][1].name == "2007_000001.png"
    assert_item(dataset, 0, VOC_MASK)
    assert VOC_CLASSES.colors[15] == (192, 128, 128)  # person in the VOCdevkit colour map


def test_sbd_mat_and_aug_and_seg11valid(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"train": ["a", "b"], "val": ["c", "d"]})
    sbd = make_sbd(tmp_path, train=["a", "c", "e"], val=["f", "d"])
    dataset = build_dataset("sbd", sbd, "train")
    assert [p.stem for p, _ in dataset.files] == ["a", "c", "e"]
    assert_item(dataset, 2, np.array([[0, 3, 3], [12, 12, 0]]))

    # aug = SBD train + val + VOC train - VOC val; VOC's own PNG is used where VOC annotates the image
    aug = build_dataset("sbd", sbd, "aug", voc_root=voc)
    assert [m.name for _, m in aug.files] == ["a.png", "b.png", "e.mat", "f.mat"]
    assert [m.name for _, m in build_dataset("voc", voc, "aug", sbd_root=sbd).files] == [m.name for _, m in aug.files]
    assert_item(aug, 0, VOC_MASK)

    # seg11valid = VOC val - SBD train
    valid = build_dataset("voc", voc, "seg11valid", sbd_root=sbd)
    assert [p.stem for p, _ in valid.files] == ["d"]
    with pytest.raises(DataError, match="split_file"):
        build_dataset("voc", voc, "seg11valid")
    (tmp_path / "seg11valid.txt").write_text("c\nd\n")
    assert len(build_dataset("voc", voc, "seg11valid", split_file=tmp_path / "seg11valid.txt")) == 2
    with pytest.raises(DataError, match="voc_root"):
        build_dataset("sbd", sbd, "aug")


def test_camvid_list_prefix_and_void(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "x.png", 2, 3)
    write_mask(tmp_path / "trainannot" / "x.png", np.array([[0, 11, 10], [3, 3, 11]]))
    (tmp_path / "train.txt").write_text("/SegNet/CamVid/train/x.png /SegNet/CamVid/trainannot/x.png\n")
    dataset = build_dataset("camvid", tmp_path, "train")
    assert dataset.files == [(tmp_path / "train" / "x.png", tmp_path / "trainannot" / "x.png")]
    assert dataset.classes == CAMVID_CLASSES
    assert_item(dataset, 0, np.array([[0, 255, 10], [3, 3, 255]]))


def test_cityscapes_label_ids_to_train_ids(tmp_path: Path) -> None:
    write_image(tmp_path / "leftImg8bit" / "val" / "ulm" / "ulm_000000_000019_leftImg8bit.png", 2, 4)
    write_mask(
        tmp_path / "gtFine" / "val" / "ulm" / "ulm_000000_000019_gtFine_labelIds.png",
        np.array([[7, 8, 0, 26], [33, 1, 24, 6]]),
    )
    dataset = build_dataset("cityscapes", tmp_path, "val")
    assert dataset.classes == CITYSCAPES_CLASSES and dataset.classes.num_classes == 19
    assert_item(dataset, 0, np.array([[0, 1, 255, 13], [18, 255, 11, 255]]))


def test_ade20k_zero_is_void_and_shift(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "training" / "ADE_train_00000001.jpg", 2, 2)
    write_mask(tmp_path / "annotations" / "training" / "ADE_train_00000001.png", np.array([[0, 1], [150, 2]]))
    dataset = build_dataset("ade20k", tmp_path, "train")
    assert dataset.classes == ADE20K_CLASSES and len(ADE20K_CLASSES.names) == 150
    assert len(set(ADE20K_CLASSES.colors)) == 150
    assert_item(dataset, 0, np.array([[255, 0], [149, 1]]))


def test_folder_index_masks_with_void_index(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "b.jpg", 2, 2)
    write_image(tmp_path / "images" / "a.png", 2, 3)
    write_mask(tmp_path / "masks" / "a.png", np.array([[0, 1, 2], [3, 2, 255]]))
    write_mask(tmp_path / "masks" / "b.png", np.array([[0, 0], [1, 1]]))
    (tmp_path / "val.txt").write_text("b\n")
    dataset = build_dataset("folder", tmp_path, "all", num_classes=3, void_index=3)
    assert [p.name for p, _ in dataset.files] == ["a.png", "b.jpg"]
    assert dataset.classes.names == ("class0", "class1", "class2")
    assert_item(dataset, 0, np.array([[0, 1, 2], [255, 2, 255]]))
    assert [p.name for p, _ in build_dataset("folder", tmp_path, "val", num_classes=3).files] == ["b.jpg"]
    with pytest.raises(DataError, match="valid splits: all, val"):
        build_dataset("folder", tmp_path, "test", num_classes=3)


def test_folder_rgb_masks_with_class_file(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("# name r g b\nsky 128 128 128\nroad surface 128 64 128\nvoid 0 0 0\n")
    (tmp_path / "classes.csv").write_text("name,r,g,b\nsky,128,128,128\nroad surface,128,64,128\nvoid,0,0,0\n")
    sky, road, void = (128, 128, 128), (128, 64, 128), (0, 0, 0)
    rgb = np.array([[sky, road, void], [road, road, sky]], dtype=np.uint8)
    write_image(tmp_path / "images" / "x.jpg", 2, 3)
    (tmp_path / "masks").mkdir()
    Image.fromarray(rgb).save(tmp_path / "masks" / "x.png")
    for class_file in ("classes.txt", "classes.csv"):
        info, void_colors = load_class_file(tmp_path / class_file)
        assert info.names == ("sky", "road surface") and info.colors == (sky, road) and void_colors == (void,)
        dataset = build_dataset("folder", tmp_path, "all", classes=tmp_path / class_file)
        assert_item(dataset, 0, np.array([[0, 1, 255], [1, 1, 0]]))

    Image.fromarray(np.array([[sky, (1, 2, 3), void]] * 2, dtype=np.uint8)).save(tmp_path / "masks" / "x.png")
    with pytest.raises(DataError, match=r"x\.png.*\(1, 2, 3\)"):
        build_dataset("folder", tmp_path, "all", classes=tmp_path / "classes.txt")[0]


def test_cache_decodes_each_file_once(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.png", 2, 2)
    write_mask(tmp_path / "masks" / "a.png", np.array([[0, 1], [1, 0]]))
    cached = build_dataset("folder", tmp_path, "all", num_classes=2, cache=True)
    plain = build_dataset("folder", tmp_path, "all", num_classes=2)
    first_image, first_mask = cached[0]
    (tmp_path / "images" / "a.png").unlink()  # a cached sample is not read again
    image, mask = cached[0]
    assert torch.equal(image, first_image) and torch.equal(mask, first_mask)
    with pytest.raises(DataError, match=r"a\.png"):
        plain[0]


def test_unknown_name_and_split_list_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="valid names: voc, sbd, camvid, cityscapes, ade20k, folder"):
        build_dataset("coco", tmp_path, "train")
    (tmp_path / "train.txt").write_text("")
    with pytest.raises(DataError, match="valid splits: train, val, test, trainval"):
        build_dataset("camvid", tmp_path, "bogus")
    with pytest.raises(DataError, match=r"does not exist.*expected"):
        build_dataset("voc", tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match=r"Segmentation[/\\]val\.txt does not exist"):
        build_dataset("voc", make_voc(tmp_path, {"train": ["a"]}), "val")


def test_missing_mask_named_at_construction(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"train": ["a", "b"]})
    (voc / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(DataError, match=r"SegmentationClass[/\\]b\.png: missing mask"):
        build_dataset("voc", voc, "train")


def test_size_mismatch_bad_value_and_unreadable_name_the_file(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "big.png", 3, 3)
    write_mask(tmp_path / "masks" / "big.png", np.zeros((2, 3)))
    write_image(tmp_path / "images" / "bad.png", 1, 2)
    write_mask(tmp_path / "masks" / "bad.png", np.array([[1, 7]]))
    write_image(tmp_path / "images" / "junk.png", 1, 2)
    (tmp_path / "masks" / "junk.png").write_bytes(b"not a png")
    dataset = build_dataset("folder", tmp_path, "all", num_classes=2)
    by_name = {p.stem: i for i, (p, _) in enumerate(dataset.files)}
    with pytest.raises(DataError, match=r"big\.png.*same size"):
        dataset[by_name["big"]]
    with pytest.raises(DataError, match=r"bad\.png: label values \[7\] are neither a class \(0\.\.1\) nor void"):
        dataset[by_name["bad"]]
    with pytest.raises(DataError, match=r"junk\.png: cannot read"):
        dataset[by_name["junk"]]
    (tmp_path / "images" / "junk.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"images[/\\]junk\.png: cannot read image"):
        dataset[by_name["junk"]]


def test_class_info_round_trip_and_validation() -> None:
    assert ClassInfo.from_dict(CAMVID_CLASSES.as_dict()) == CAMVID_CLASSES
    with pytest.raises(ValueError, match="2 names but 1 colours"):
        ClassInfo(("a", "b"), ((0, 0, 0),))


def test_one_bit_masks_are_indices(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.png", 2, 2)
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.array([[True, False], [False, True]])).save(tmp_path / "masks" / "a.png")
    assert_item(build_dataset("folder", tmp_path, "all", num_classes=2), 0, np.array([[1, 0], [0, 1]]))


def test_training_and_prediction_decode_a_file_to_the_same_pixels(tmp_path: Path) -> None:
    """One decoder: 16-bit, EXIF-rotated and transparent images give the same pixels in a dataset and in predict."""
    from fcnseg.inference.images import load_image

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    # 12-bit sensor data in a 16-bit PNG: scaled by 255 / 4095 (its maximum), not by 255 / 65535 (black).
    wide = rng.integers(0, 4096, (6, 8)).astype(np.uint16)
    wide[0, 0] = 4095
    Image.fromarray(wide).save(tmp_path / "images" / "wide.png")
    # A JPEG stored 8 wide x 6 high whose EXIF says "rotate 90 degrees clockwise to display" (orientation 6).
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(tmp_path / "images" / "turned.jpg", exif=exif)
    # RGBA: composited on black.
    rgba = rng.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "images" / "alpha.png")
    for stem, (h, w) in {"wide": (6, 8), "turned": (8, 6), "alpha": (6, 8)}.items():
        write_mask(tmp_path / "masks" / f"{stem}.png", np.zeros((h, w)))
    dataset = build_dataset("folder", tmp_path, "all", num_classes=2)
    decoded = {p.stem: dataset.load(i)[0].permute(1, 2, 0).numpy() for i, (p, _) in enumerate(dataset.files)}
    for path, _ in dataset.files:
        np.testing.assert_array_equal(decoded[path.stem], np.asarray(load_image(path)))
    # Independent references for the rules.
    np.testing.assert_array_equal(decoded["wide"][..., 0], np.rint(wide * (255 / 4095)).astype(np.uint8))
    assert decoded["turned"].shape == (8, 6, 3)  # displayed upright: 6 wide x 8 high
    expected_alpha = np.rint(rgba[..., :3] * (rgba[..., 3:] / 255.0).astype(np.float32)).astype(np.uint8)
    np.testing.assert_array_equal(decoded["alpha"], expected_alpha)


def test_a_mask_saved_unrotated_is_named_with_the_exif_reason(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "images" / "a.jpg", exif=exif)
    write_mask(tmp_path / "masks" / "a.png", np.zeros((6, 8)))  # the stored orientation, not the displayed one
    dataset = build_dataset("folder", tmp_path, "all", num_classes=2)
    with pytest.raises(DataError, match=r"a\.png: mask is 8x6 .*EXIF orientation"):
        dataset.load(0)
