"""A procedural dataset for the demo and for tests: shapes whose class depends on form and context, not colour.

Classes: background, circle, square, triangle, and "framed square" (a square inside a circle). Every object and
the background get random colours from one distribution, so colour alone tells nothing; a square is a "square" or a
"framed square" only by what surrounds it. A one-pixel band along object boundaries is void (255), as in VOC.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.data.classes import IGNORE_INDEX, ClassInfo

SHAPES_CLASSES = ClassInfo(
    names=("background", "circle", "square", "triangle", "framed square"),
    colors=((0, 0, 0), (220, 60, 60), (60, 160, 220), (240, 200, 40), (150, 80, 200)),
)
BACKGROUND, CIRCLE, SQUARE, TRIANGLE, FRAMED = range(5)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth two-colour gradient with noise: ``(h, w, 3)`` float in [0, 255]."""
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = ((xx * np.cos(angle) + yy * np.sin(angle)) / max(h, w) + 1) / 2
    image = a * (1 - t[..., None]) + b * t[..., None]
    return image + rng.normal(0, 12, (h, w, 3))


def _shape_mask(kind: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    """Boolean mask of a circle, a rotated square or a rotated triangle of 'radius' ``r`` centred at (cy, cx)."""
    dy, dx = yy - cy, xx - cx
    if kind == CIRCLE:
        return dy**2 + dx**2 <= r**2
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if kind == SQUARE:
        half = r / np.sqrt(2)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    # Triangle: intersection of three half-planes whose normals are 120 degrees apart.
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        a = 2 * np.pi * k / 3
        inside &= u * np.cos(a) + v * np.sin(a) <= r / 2
    return inside


def _color(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """A random colour at least 80 away (Euclidean) from ``avoid``, so that every object is visible."""
    while True:
        color = rng.uniform(0, 255, 3)
        if np.linalg.norm(color - avoid) > 80:
            return color


def make_scene(rng: np.random.Generator, size: tuple[int, int] = (128, 160)) -> tuple[np.ndarray, np.ndarray]:
    """One scene: image ``(H, W, 3)`` uint8 and mask ``(H, W)`` uint8 (classes 0-4, void 255).

    Objects lie wholly inside the image and do not touch each other, so that every object shows its whole form and
    its class can be read from the image (a square cut by the border or hidden behind a circle could be anything).
    """
    h, w = size
    image = _background(rng, h, w)
    labels = np.full((h, w), BACKGROUND, dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = min(h, w)
    placed: list[tuple[float, float, float]] = []  # (cy, cx, r) of the objects so far
    for _ in range(rng.integers(2, 6)):
        kind = int(rng.choice([CIRCLE, SQUARE, TRIANGLE, FRAMED]))
        r = rng.uniform(0.1, 0.2) * scale * (1.4 if kind == FRAMED else 1)
        for _attempt in range(20):
            cy, cx = rng.uniform(r + 2, h - r - 2), rng.uniform(r + 2, w - r - 2)
            if all(np.hypot(cy - y, cx - x) > r + q + 3 for y, x, q in placed):
                break
        else:
            continue  # no room left for this object
        placed.append((cy, cx, r))
        angle = rng.uniform(0, 2 * np.pi)
        shape = CIRCLE if kind == FRAMED else kind
        mask = _shape_mask(shape, yy, xx, cy, cx, r, angle)
        color = _color(rng, image[mask].mean(0))
        image[mask], labels[mask] = color, shape
        if kind == FRAMED:  # a square inside the circle, in another colour
            inner = _shape_mask(SQUARE, yy, xx, cy, cx, r * rng.uniform(0.55, 0.8), rng.uniform(0, 2 * np.pi))
            image[inner], labels[inner] = _color(rng, color), FRAMED
    edges = np.zeros_like(labels, dtype=bool)
    edges[1:] |= labels[1:] != labels[:-1]
    edges[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    labels[edges] = IGNORE_INDEX
    return np.clip(image, 0, 255).astype(np.uint8), labels


def write_shapes_dataset(
    root: str | Path, *, num_train: int = 400, num_val: int = 100, size: tuple[int, int] = (128, 160), seed: int = 0
) -> Path:
    """Write a folder dataset (``images/``, ``masks/``, ``classes.txt``, ``train.txt``, ``val.txt``) under ``root``.

    Reuses what is there when the same parameters were used before (``classes.txt`` is written last).
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(
            f"the shapes dataset needs at least one training and one validation scene, got "
            f"--num-train {num_train}, --num-val {num_val}"
        )
    root = Path(root)
    stamp = f"# shapes dataset v2: train={num_train} val={num_val} size={size[0]}x{size[1]} seed={seed}\n"
    class_file = root / "classes.txt"
    if class_file.exists() and class_file.read_text().startswith(stamp):
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stems = {"train": [], "val": []}
    for i in range(num_train + num_val):
        split = "train" if i < num_train else "val"
        stem = f"{split}_{i:04d}"
        image, mask = make_scene(rng, size)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
        stems[split].append(stem)
    for split, names in stems.items():
        (root / f"{split}.txt").write_text("\n".join(names) + "\n")
    lines = [f"{name} {r} {g} {b}" for name, (r, g, b) in zip(SHAPES_CLASSES.names, SHAPES_CLASSES.colors, strict=True)]
    class_file.write_text(stamp + "\n".join(lines) + "\n")
    return root
