"""A folder dataset that looks like a user's own: the new-user walk-through of docs/data.md runs on it.

What it holds, and what a user's data often holds:

- ``images/``: JPEG tiles of three sizes, one of them big (1500x2000), as aerial-imagery datasets ship them;
- ``masks/``: colour-coded PNGs, some RGB and some palette PNGs whose palette lists the same class colours in another
  order than the class file (as annotation tools write them);
- two void colours, grey (unlabelled) and black (along the tile borders);
- a few pixels of a colour that is neither a class nor void (an annotation slip);
- ``classes.txt`` in the dataset root, and no split lists.

``python tests/user_dataset.py DIR`` writes it into ``DIR``; ``write_user_dataset`` returns what a check must find.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = (  # ISPRS-style aerial classes
    ("impervious", (255, 255, 255)),
    ("building", (0, 0, 255)),
    ("low vegetation", (0, 255, 255)),
    ("tree", (0, 255, 0)),
    ("car", (255, 255, 0)),
)
GREY, BLACK = (128, 128, 128), (0, 0, 0)  # void: unlabelled areas, and the tile borders
UNKNOWN = (255, 0, 255)  # a colour in no class file line: a slip of the annotation tool
CLASS_FILE = (
    "# name r g b\n"
    + "".join(f"{n} {r} {g} {b}\n" for n, (r, g, b) in CLASSES)
    + (f"void {GREY[0]} {GREY[1]} {GREY[2]}\nvoid {BLACK[0]} {BLACK[1]} {BLACK[2]}\n")
)
# (stem, (H, W), mask kind): 7 tiles of 240x320, 2 of 300x400, one big one.
TILES = (
    *[(f"tile_{i:02d}", (240, 320), "palette" if i % 2 else "rgb") for i in range(7)],
    ("tile_07", (300, 400), "palette"),
    ("tile_08", (300, 400), "rgb"),
    ("scene_big", (1500, 2000), "rgb"),
)
UNKNOWN_IN = "tile_03"  # the mask with the slip
UNKNOWN_PIXELS = 12
BORDER = 4  # black void band along the top and left edges of every mask


def _labels(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``(H, W)`` labels: impervious ground, a building, vegetation and trees, a car, grey void patches."""
    h, w = shape
    labels = np.zeros(shape, np.uint8)
    labels[h // 6 : h // 2, w // 8 : w // 2] = 1  # building
    labels[h // 2 :, : w // 3] = 2  # low vegetation
    y, x = np.ogrid[:h, :w]
    cy, cx, r = int(rng.integers(h // 3, 2 * h // 3)), int(rng.integers(w // 2, 7 * w // 8)), min(h, w) // 6
    labels[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = 3  # a tree
    labels[h - h // 6 : h - h // 12, w // 2 : w // 2 + w // 10] = 4  # a car
    labels[h // 12 : h // 6, w - w // 5 :] = 5  # grey void
    labels[:BORDER, :] = 6  # black border
    labels[:, :BORDER] = 6
    return labels


def _colors(labels: np.ndarray) -> np.ndarray:
    lut = np.array([c for _, c in CLASSES] + [GREY, BLACK], dtype=np.uint8)
    return lut[labels]


def _image(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A photo-like tile: each class a muted colour of its own, plus noise."""
    tint = np.array([(150, 150, 140), (170, 90, 80), (110, 160, 90), (40, 110, 40), (60, 60, 200), (120, 120, 120),
                     (20, 20, 20)], dtype=np.int16)  # fmt: skip
    noise = rng.integers(-25, 26, (*labels.shape, 3), dtype=np.int16)
    return np.clip(tint[labels] + noise, 0, 255).astype(np.uint8)


def _save_palette(path: Path, colors: np.ndarray) -> None:
    """A palette PNG of ``colors`` whose palette lists them in another order than the class file (car first)."""
    palette = [CLASSES[4][1], BLACK, CLASSES[3][1], GREY, CLASSES[1][1], CLASSES[0][1], CLASSES[2][1], UNKNOWN]
    keys = (colors[..., 0].astype(np.int64) << 16) | (colors[..., 1].astype(np.int64) << 8) | colors[..., 2]
    index = np.zeros(keys.shape, np.uint8)
    for i, (r, g, b) in enumerate(palette):
        index[keys == (r << 16) | (g << 8) | b] = i
    img = Image.frombytes("P", index.shape[::-1], index.tobytes())
    img.putpalette([v for color in palette for v in color])
    img.save(path)


def write_user_dataset(root: Path) -> dict:
    """Write the dataset under ``root``; return what a check must find.

    Returns:
        ``{"images": n, "unknown": (colour, pixels, file stem), "sizes": {(H, W): n}, "pixels": (K,) pixels per
        class, "void": void pixels}`` (the unknown colour counted as void).
    """
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text(CLASS_FILE)
    sizes: dict[tuple[int, int], int] = {}
    counts = np.zeros(len(CLASSES) + 2, np.int64)
    for i, (stem, shape, kind) in enumerate(TILES):
        rng = np.random.default_rng(i)
        labels = _labels(shape, rng)
        Image.fromarray(_image(labels, rng)).save(root / "images" / f"{stem}.jpg", quality=90)
        colors = _colors(labels)
        if stem == UNKNOWN_IN:
            colors[100:103, 200:204] = UNKNOWN  # 3 x 4 = UNKNOWN_PIXELS
            labels[100:103, 200:204] = len(CLASSES)  # counted as void
        if kind == "palette":
            _save_palette(root / "masks" / f"{stem}.png", colors)
        else:
            Image.fromarray(colors).save(root / "masks" / f"{stem}.png")
        sizes[shape] = sizes.get(shape, 0) + 1
        counts += np.bincount(labels.ravel(), minlength=len(counts))
    return {
        "images": len(TILES),
        "unknown": (UNKNOWN, UNKNOWN_PIXELS, UNKNOWN_IN),
        "sizes": sizes,
        "pixels": counts[: len(CLASSES)],
        "void": int(counts[len(CLASSES) :].sum()),
    }


# A binary set as most tutorials and public cell, medical and industrial sets ship it: grey slices in `image/`, masks
# in `label/` holding 0 and 255 (8-bit grey PNGs, a few saved as 1-bit PNGs), no class file and no split lists; two
# slices exported at 16 bits, one mask stored at half the scale of its image, the junk that copying data from a
# Mac or a Windows share leaves behind, and a README.txt beside the folders (no split list).
BINARY_SLICES = 12
BINARY_SIZE = (96, 128)
BINARY_SMALL_MASK = "slice_05"  # stored at 48x64 for a 96x128 image
BINARY_ONE_BIT = ("slice_02", "slice_07")
BINARY_16_BIT = ("slice_03", "slice_09")
JUNK = (".DS_Store", "._slice_00.png", "Thumbs.db", ".hidden.png", "desktop.ini")
README = "Serial section EM, 12 slices.\nLabels: 255 = cell, 0 = membrane.\nLicence: CC BY 4.0\n"


def binary_labels(index: int) -> np.ndarray:
    """``(H, W)`` bool: cells (discs) on membrane of slice ``index``."""
    rng = np.random.default_rng(100 + index)
    yy, xx = np.mgrid[: BINARY_SIZE[0], : BINARY_SIZE[1]]
    cells = np.zeros(BINARY_SIZE, bool)
    for _ in range(6):
        cy, cx, r = rng.integers(10, BINARY_SIZE[0] - 10), rng.integers(10, BINARY_SIZE[1] - 10), rng.integers(6, 14)
        cells |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    return cells


def write_binary_dataset(root: Path) -> dict:
    """Write the binary set under ``root``; return ``{"cell": pixels, "membrane": pixels, "slices": n}`` as decoded
    at the images' scale (the small mask resized by nearest neighbour)."""
    (root / "image").mkdir(parents=True)
    (root / "label").mkdir()
    counts = np.zeros(2, np.int64)
    for i in range(BINARY_SLICES):
        stem = f"slice_{i:02d}"
        cells = binary_labels(i)
        rng = np.random.default_rng(i)
        grey = np.where(cells, 170, 70) + rng.normal(0, 20, BINARY_SIZE)
        if stem in BINARY_16_BIT:
            Image.fromarray((grey.clip(0, 255) * 257).astype(np.uint16)).save(root / "image" / f"{stem}.png")
        else:
            Image.fromarray(grey.clip(0, 255).astype(np.uint8), mode="L").save(root / "image" / f"{stem}.png")
        mask = cells
        if stem == BINARY_SMALL_MASK:
            mask = cells[::2, ::2]  # what nearest-neighbour resizing brings back, pixel centres aligned
            cells = np.repeat(np.repeat(mask, 2, 0), 2, 1)
        if stem in BINARY_ONE_BIT:
            Image.fromarray(mask).convert("1").save(root / "label" / f"{stem}.png")
        else:
            Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(root / "label" / f"{stem}.png")
        counts += np.bincount(cells.ravel().astype(np.int64), minlength=2)
    (root / "README.txt").write_text(README)
    for folder in ("image", "label"):
        for name in JUNK:
            (root / folder / name).write_bytes(b"\x00\x05\x16\x07 not an image")
    return {"membrane": int(counts[0]), "cell": int(counts[1]), "slices": BINARY_SLICES}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/user_dataset.py DIR")
    found = write_user_dataset(Path(sys.argv[1]))
    colour, pixels, stem = found["unknown"]
    print(f"wrote {found['images']} pairs to {sys.argv[1]}; {pixels} px of the unknown colour {colour} in {stem}.png")
