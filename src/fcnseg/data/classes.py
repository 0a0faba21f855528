"""Class names and display colours of each dataset, and the user's class file for the folder dataset.

Every dataset carries a :class:`ClassInfo`; class ``k`` of a mask is ``names[k]`` drawn in ``colors[k]``.
Void pixels carry :data:`IGNORE_INDEX` (255) everywhere in fcnseg and have no entry in the table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcnseg.data.errors import DataError

IGNORE_INDEX = 255
"""Label of void pixels in every mask; the loss, the metrics and the transforms ignore it."""

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ClassInfo:
    """Names and RGB display colours of the ``K`` classes of a dataset, indexed by class id ``0..K-1``."""

    names: tuple[str, ...]
    colors: tuple[RGB, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise ValueError(f"ClassInfo has {len(self.names)} names but {len(self.colors)} colours")
        if not 0 < len(self.names) <= IGNORE_INDEX:
            raise ValueError(f"ClassInfo needs 1..{IGNORE_INDEX} classes, got {len(self.names)}")
        for color in self.colors:
            if len(color) != 3 or not all(0 <= int(c) <= 255 for c in color):
                raise ValueError(f"ClassInfo colour {color!r} is not an (r, g, b) triple of 0..255")

    @property
    def num_classes(self) -> int:
        """Number of classes ``K`` (void excluded)."""
        return len(self.names)

    def as_dict(self) -> dict[str, list]:
        """``{"names": [...], "colors": [[r, g, b], ...]}``, the form stored in checkpoints."""
        return {"names": list(self.names), "colors": [list(c) for c in self.colors]}

    @classmethod
    def from_dict(cls, data: dict[str, list]) -> ClassInfo:
        """Inverse of :meth:`as_dict`."""
        return as_class_info(data)


def bitget_colormap(n: int) -> tuple[RGB, ...]:
    """The PASCAL VOC colour map (VOCdevkit ``labelcolormap.m``): the bits of ``k`` spread over r, g and b.

    Args:
        n: number of colours.

    Returns:
        ``n`` RGB triples; entry ``k`` is the colour of index ``k`` (0 is black).
    """
    colors = []
    for k in range(n):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)


def as_class_info(classes: Any) -> ClassInfo:
    """A :class:`ClassInfo` from one, from a checkpoint's ``{"names", "colors"}`` dict, from anything with ``names``
    and ``colors``, or from a sequence of names (then coloured with the VOC map, :func:`bitget_colormap`).

    Raises:
        ValueError: the names and colours differ in number, or a colour is not an RGB triple.
    """
    if isinstance(classes, ClassInfo):
        return classes
    if isinstance(classes, Mapping):
        names, colors = classes["names"], classes.get("colors")
    elif hasattr(classes, "names"):
        names, colors = classes.names, getattr(classes, "colors", None)
    else:
        names, colors = classes, None
    names = tuple(str(n) for n in names)
    if colors is None:
        return ClassInfo(names, bitget_colormap(len(names)))
    return ClassInfo(names, tuple(tuple(int(v) for v in rgb) for rgb in colors))


_VOC_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
VOC_CLASSES = ClassInfo(names=_VOC_NAMES, colors=bitget_colormap(len(_VOC_NAMES)))
"""PASCAL VOC 2012 (and SBD): 20 object classes plus background; colours are the palette of the label PNGs."""

_CAMVID_NAMES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)  # fmt: skip
_CAMVID_COLORS = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
CAMVID_CLASSES = ClassInfo(names=_CAMVID_NAMES, colors=_CAMVID_COLORS)
"""CamVid in the SegNet 11-class relabelling (label 11, Unlabelled, is void); colours from the SegNet README."""

# Official Cityscapes table (cityscapesScripts labels.py): (label id, name, train-id colour), in train-id order.
_CITYSCAPES = (
    (7, "road", (128, 64, 128)),
    (8, "sidewalk", (244, 35, 232)),
    (11, "building", (70, 70, 70)),
    (12, "wall", (102, 102, 156)),
    (13, "fence", (190, 153, 153)),
    (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)),
    (20, "traffic sign", (220, 220, 0)),
    (21, "vegetation", (107, 142, 35)),
    (22, "terrain", (152, 251, 152)),
    (23, "sky", (70, 130, 180)),
    (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)),
    (26, "car", (0, 0, 142)),
    (27, "truck", (0, 0, 70)),
    (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)),
    (32, "motorcycle", (0, 0, 230)),
    (33, "bicycle", (119, 11, 32)),
)
CITYSCAPES_LABEL_IDS = tuple(label_id for label_id, _, _ in _CITYSCAPES)
"""``CITYSCAPES_LABEL_IDS[train_id]`` is the ``*_labelIds.png`` value of a train id; other ids 0..33 are void."""
CITYSCAPES_NUM_LABEL_IDS = 34  # label ids 0..33 (unlabeled .. bicycle); license plate (-1) is not stored in PNGs
CITYSCAPES_CLASSES = ClassInfo(names=tuple(n for _, n, _ in _CITYSCAPES), colors=tuple(c for _, _, c in _CITYSCAPES))
"""Cityscapes: the 19 train ids of the benchmark, with the official colours."""

_ADE20K_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
ADE20K_CLASSES = ClassInfo(names=_ADE20K_NAMES, colors=bitget_colormap(len(_ADE20K_NAMES) + 1)[1:])
"""ADE20K SceneParsing (MIT scene parsing benchmark): the first name of each of the 150 classes of
``objectInfo150``; colours are the VOC bit-spread map shifted by one so that no class is black."""

VOID_NAMES = frozenset({"void", "ignore", "unlabelled", "unlabeled"})
"""Names that mark the void colour in a class file."""


def _parse_class_line(line: str, path: Path, lineno: int) -> tuple[str, RGB] | None:
    tokens = line.replace(",", " ").split()
    try:
        rgb = tuple(int(t) for t in tokens[-3:])
    except ValueError:
        return None
    if len(tokens) < 4 or not all(0 <= c <= 255 for c in rgb):
        raise DataError(f"{path}:{lineno}: expected 'name r g b' with r, g, b in 0..255, got {line.strip()!r}")
    return " ".join(tokens[:-3]), rgb  # type: ignore[return-value]


def load_class_file(path: str | os.PathLike) -> tuple[ClassInfo, tuple[RGB, ...]]:
    """Read a class file for the folder dataset.

    Format: one class per line, ``name r g b`` (separated by spaces or commas; the name may contain spaces),
    in class-index order. Blank lines and lines starting with ``#`` are skipped, and so is a header line whose
    last three fields are not numbers (so a CSV ``name,r,g,b`` works). A line named ``void`` (or ``ignore``,
    ``unlabelled``) gives a void colour instead of a class; there may be several. Example::

        # name  r   g   b
        sky     128 128 128
        road    128 64  128
        void    0   0   0
        void    64  64  64

    Args:
        path: the class file.

    Returns:
        The classes, and the void colours (empty when the file names none).

    Raises:
        DataError: the file is missing, a line is malformed, or a colour is used twice.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    except OSError as err:
        raise DataError(f"cannot read class file {path}: {err.strerror or err}") from err
    names: list[str] = []
    colors: list[RGB] = []
    voids: list[RGB] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parsed = _parse_class_line(line, path, lineno)
        if parsed is None:
            if names or voids:
                raise DataError(f"{path}:{lineno}: expected 'name r g b', got {line.strip()!r}")
            continue  # header line
        name, rgb = parsed
        if rgb in colors or rgb in voids:
            raise DataError(f"{path}:{lineno}: colour {rgb} of {name!r} is used twice")
        (voids if name.lower() in VOID_NAMES else colors).append(rgb)
        if name.lower() not in VOID_NAMES:
            names.append(name)
    if not names:
        raise DataError(f"class file {path} lists no classes; expected lines 'name r g b'")
    return ClassInfo(tuple(names), tuple(colors)), tuple(voids)


def looks_like_class_file(path: str | os.PathLike) -> bool:
    """True when ``path`` holds ``name r g b`` lines (a class file), so that it is never taken for a split list."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig", errors="replace").splitlines()[:200]
    except OSError:
        return False
    data = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    rows = [line.replace(",", " ").split() for line in data]
    return any(len(t) >= 4 and all(v.isdigit() for v in t[-3:]) for t in rows)
