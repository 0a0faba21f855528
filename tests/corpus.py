"""A generated folder dataset of good pairs and one pair for every kind of bad file a user's data holds.

``write_corpus(root)`` writes it and returns ``{stem: expected problem}`` for the bad pairs (``None`` for the good
ones), so that tests check each problem is found, named and, with ``--skip-bad-samples``, left out.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = "background 0 0 0\nred 255 0 0\ngreen 0 255 0\nvoid 255 255 255\nvoid 128 128 128\n"
SIZE = (32, 40)  # (H, W)
RED, GREEN = (255, 0, 0), (0, 255, 0)


def _labels(seed: int) -> np.ndarray:
    """``(H, W)`` labels 0..2 with a void band: left half background, a red square, a green bar."""
    labels = np.zeros(SIZE, np.uint8)
    r = 4 + seed % 6
    labels[r : r + 10, 4:14] = 1
    labels[20:26, 10 + seed % 8 : 30] = 2
    labels[:, -2:] = 255
    return labels


def _rgb(labels: np.ndarray) -> np.ndarray:
    lut = np.array([(0, 0, 0), RED, GREEN] + [(255, 255, 255)] * 253, dtype=np.uint8)
    return lut[labels]


def _image(labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = _rgb(labels).astype(np.int16) // 2 + rng.integers(0, 60, (*SIZE, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _bomb_png(path: Path, side: int = 30_000) -> None:
    """A tiny PNG whose header claims ``side x side`` pixels (PIL refuses more than 2 * MAX_IMAGE_PIXELS)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _save_palette(path: Path, labels: np.ndarray) -> None:
    """Palette mask whose palette lists the class colours in another order than the class file (green first)."""
    palette = [GREEN, (255, 255, 255), (0, 0, 0), RED]
    position = {0: 2, 1: 3, 2: 0, 255: 1}
    img = Image.fromarray(np.vectorize(position.get)(labels).astype(np.uint8), mode="P")
    img.putpalette([v for c in palette for v in c])
    img.save(path)


def write_corpus(root: Path, num_good: int = 6) -> dict[str, str | None]:
    """Write the corpus under ``root`` (``images/``, ``masks/``, ``classes.txt``); return stem -> expected problem."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    (root / "classes.txt").write_text(CLASSES)
    expected: dict[str, str | None] = {}

    def good_pair(stem: str, seed: int, *, mask: bool = True, image: bool = True) -> np.ndarray:
        labels = _labels(seed)
        if image:
            Image.fromarray(_image(labels, seed)).save(images / f"{stem}.jpg", quality=90)
        if mask:
            Image.fromarray(_rgb(labels)).save(masks / f"{stem}.png")
        return labels

    for i in range(num_good):
        good_pair(f"good{i}", i)
        expected[f"good{i}"] = None
    # Masks in other valid encodings: decoded to the same labels.
    _save_palette(masks / "good_palette.png", good_pair("good_palette", 11, mask=False))
    expected["good_palette"] = None
    labels = good_pair("good_gray16", 12, mask=False)
    Image.fromarray(labels.astype(np.uint16)).save(masks / "good_gray16.png")  # 16-bit index mask
    expected["good_gray16"] = None

    good_pair("empty_image", 20, image=False)
    (images / "empty_image.jpg").write_bytes(b"")
    expected["empty_image"] = "cannot read image"
    good_pair("truncated_jpeg", 21)
    data = (images / "truncated_jpeg.jpg").read_bytes()
    (images / "truncated_jpeg.jpg").write_bytes(data[: len(data) // 2])
    expected["truncated_jpeg"] = "cannot read image"
    good_pair("truncated_png", 22)
    data = (masks / "truncated_png.png").read_bytes()
    (masks / "truncated_png.png").write_bytes(data[: len(data) // 2])
    expected["truncated_png"] = "cannot read label image"
    good_pair("not_an_image", 23, mask=False)
    (masks / "not_an_image.png").write_text("this is a text file with a .png name\n")
    expected["not_an_image"] = "not an image file"
    good_pair("bomb", 24, mask=False)
    _bomb_png(masks / "bomb.png")
    expected["bomb"] = "decompression bomb"
    good_pair("size_mismatch", 25, mask=False)
    Image.fromarray(_rgb(_labels(25))[:-4]).save(masks / "size_mismatch.png")
    expected["size_mismatch"] = "same size"
    good_pair("out_of_range", 26, mask=False)
    Image.fromarray(np.full(SIZE, 7, np.uint8)).save(masks / "out_of_range.png")
    expected["out_of_range"] = "label values [7]"
    good_pair("gray16_out_of_range", 27, mask=False)
    Image.fromarray(np.full(SIZE, 300, np.uint16)).save(masks / "gray16_out_of_range.png")
    expected["gray16_out_of_range"] = "label values [300]"
    good_pair("cmyk_mask", 28, mask=False)
    Image.fromarray(_rgb(_labels(28))).convert("CMYK").save(masks / "cmyk_mask.tif")
    expected["cmyk_mask"] = "CMYK image is not a label map"
    good_pair("float_mask", 29, mask=False)
    Image.fromarray(_labels(29).astype(np.float32)).save(masks / "float_mask.tif")
    expected["float_mask"] = "F image is not a label map"
    good_pair("unknown_colour", 30, mask=False)
    odd = _rgb(_labels(30))
    odd[:3, :3] = (10, 200, 30)
    Image.fromarray(odd).save(masks / "unknown_colour.png")
    expected["unknown_colour"] = "(10, 200, 30) x 9 px"
    good_pair("missing_mask", 31, mask=False)
    expected["missing_mask"] = "missing mask"
    return expected
