"""Image loading (formats, modes, EXIF, arrays, tensors), palette mask files and their permissions, colour masks,
overlays, legend."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg import evaluation
from fcnseg.core.io import atomic_path
from fcnseg.inference.images import ImageReadError, load_image, save_mask_png, to_uint8
from fcnseg.inference.visualize import colorize, legend_image, overlay, palette

COLORS = [(128, 0, 0), (0, 128, 0), (0, 0, 128)]


def gradient(h: int = 21, w: int = 34) -> np.ndarray:
    """(H, W, 3) uint8 with distinct values per pixel position."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 7 % 256, y * 11 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".webp", ".jpg"])
def test_formats_round_trip(tmp_path: Path, suffix: str) -> None:
    array = gradient()
    path = tmp_path / f"img{suffix}"
    Image.fromarray(array).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (34, 21)
    tolerance = 40 if suffix == ".jpg" else 0
    assert np.abs(np.asarray(image).astype(int) - array).max() <= tolerance
    assert load_image(str(path)).size == (34, 21)


def test_grayscale_and_palette(tmp_path: Path) -> None:
    gray = np.arange(21 * 34, dtype=np.uint8).reshape(21, 34)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    rgb = np.asarray(load_image(tmp_path / "g.png"))
    assert rgb.shape == (21, 34, 3) and (rgb == gray[..., None]).all()
    pal = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8), mode="P")
    pal.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    pal.save(tmp_path / "p.png")
    assert np.asarray(load_image(tmp_path / "p.png"))[1, 0].tolist() == [70, 80, 90]


def test_rgba_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[0, :, 3] = 255  # opaque row
    rgba[1, :, 3] = 0  # transparent row
    rgba[2:, :, 3] = 128
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    for source in (tmp_path / "a.png", rgba):
        out = np.asarray(load_image(source))
        assert out.shape == (4, 5, 3)
        assert (out[0] == 200).all() and (out[1] == 0).all() and (out[2] == 100).all()


def test_sixteen_bit_is_scaled_by_its_maximum(tmp_path: Path) -> None:
    twelve_bit = (np.arange(20 * 30).reshape(20, 30) * 4095 // (20 * 30 - 1)).astype(np.uint16)
    Image.fromarray(twelve_bit).save(tmp_path / "deep.png")  # I;16
    for source in (tmp_path / "deep.png", twelve_bit):
        out = np.asarray(load_image(source))
        assert out.shape == (20, 30, 3)
        assert out.max() == 255 and out[0, 0, 0] == 0  # full 8-bit range, not 4095 / 65535 * 255 = 16
    low = np.array([[0, 100], [200, 255]], dtype=np.uint16)
    assert to_uint8(low).tolist() == [[0, 100], [200, 255]]  # data within 0..255 is left as it is


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.fromarray(gradient(20, 40))
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)  # (width, height) as displayed


def test_arrays_and_tensors() -> None:
    array = gradient()
    assert np.array_equal(np.asarray(load_image(array)), array)
    assert np.array_equal(np.asarray(load_image(array.astype(np.float32) / 255)), array)
    chw = torch.from_numpy(array).permute(2, 0, 1)
    assert np.array_equal(np.asarray(load_image(chw)), array)
    assert np.array_equal(np.asarray(load_image(chw.float() / 255)), array)
    gray = torch.rand(9, 11)
    assert load_image(gray).size == (11, 9)
    assert load_image(Image.fromarray(array).convert("L")).mode == "RGB"
    with pytest.raises(ValueError, match="shape"):
        load_image(np.zeros((4, 5, 2), dtype=np.uint8))
    with pytest.raises(TypeError, match="path"):
        load_image(42)


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"missing\.jpg: cannot read image \(no such file\)"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match=r"bad\.png: cannot read image \(not an image"):
        load_image(tmp_path / "bad.png")
    Image.fromarray(gradient(64, 64)).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        load_image(tmp_path / "cut.png")


def test_save_mask_png_is_a_palette_png(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2], [255, 2, 0]], dtype=np.int64)
    save_mask_png(mask, COLORS, tmp_path / "out" / "m.png")
    with Image.open(tmp_path / "out" / "m.png") as written:
        assert written.mode == "P" and written.size == (3, 2)
        assert np.array_equal(np.asarray(written), mask)
        pal = np.asarray(written.getpalette()).reshape(-1, 3)
    assert pal[:3].tolist() == [list(c) for c in COLORS] and pal[255].tolist() == [0, 0, 0]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["m.png"]  # no temporary file left
    with pytest.raises(ValueError, match=r"0\.\.254"):
        save_mask_png(np.array([[300]]), COLORS, tmp_path / "x.png")


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_honour_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        save_mask_png(np.zeros((2, 3), dtype=np.uint8), COLORS, tmp_path / "new.png")
        with atomic_path(tmp_path / "new.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(previous)
    for name in ("new.png", "new.txt"):  # what open(path, "w") gives a new file, not mkstemp's 0o600
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    (tmp_path / "new.txt").chmod(0o640)
    with atomic_path(tmp_path / "new.txt") as tmp:
        tmp.write_text("y")
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640  # an existing file keeps its mode
    assert (tmp_path / "new.txt").read_text() == "y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.png", "new.txt"]  # no temporary file left


def test_colorize_blacks_out_void_negative_and_unknown_indices() -> None:
    mask = np.array([[0, 1, 2], [-1, 3, 255], [-300, 1000, 2]])
    colored = colorize(mask, COLORS)
    black = (colored == 0).all(-1)
    assert black.tolist() == [[False, False, False], [True, True, True], [True, True, False]]
    assert colored[0].tolist() == [list(c) for c in COLORS]
    blended = np.asarray(overlay(Image.new("RGB", (3, 3), (100, 100, 100)), mask, COLORS))
    assert (blended[black] == 100).all() and (blended[~black] != 100).any(-1).all()  # only classes are tinted
    assert evaluation.colorize is colorize  # one implementation for predict outputs and evaluation plots


def test_colorize_overlay_legend() -> None:
    mask = torch.tensor([[0, 1], [2, 255]])
    colored = colorize(mask, COLORS)
    assert colored.dtype == np.uint8 and colored.tolist() == [[[128, 0, 0], [0, 128, 0]], [[0, 0, 128], [0, 0, 0]]]
    assert palette(COLORS).shape == (256, 3)
    image = Image.new("RGB", (2, 2), (100, 100, 100))
    blended = np.asarray(overlay(image, mask, COLORS, alpha=0.5))
    assert blended[0, 0].tolist() == [114, 50, 50] and blended[1, 1].tolist() == [100, 100, 100]  # void untinted
    with pytest.raises(ValueError, match="mask"):
        overlay(image, np.zeros((3, 3), dtype=np.int64), COLORS)
    legend = legend_image(["sky", "a much longer class name", "car"], COLORS)
    assert legend.mode == "RGB" and legend.height >= 3 * 20 and legend.width > 100
    pixels = np.asarray(legend)
    for color in COLORS:
        assert (pixels == color).all(axis=-1).sum() >= 15 * 15  # every swatch is drawn
    assert (pixels.sum(-1) < 200).sum() > 50  # dark text pixels
