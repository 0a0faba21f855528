"""Property-based fuzzing (hypothesis) of the image, mask and class-file readers, against a plain NumPy reference.

- Masks of every mode a user's data mixes (RGB, RGBA, palette with a shuffled palette, 8-bit grayscale index,
  16-bit index), with random class files (several void lines, extreme and near-duplicate colours, commas, comments,
  headers): every pixel gets the class of its colour (or of its index), void colours 255; unknown colours are an
  error naming the file (default) or void and counted over the dataset (``unknown_colors="void"``); near colours
  match within the tolerance and are counted.
- Random, truncated and corrupted bytes under image suffixes: the readers either decode (a truncated lossless file
  then decodes to the original pixels) or raise the library's one-line error naming the file, never PIL's own.

Bounded time: 60 small examples per property (``FCNSEG_FUZZ_EXAMPLES=N`` for a longer search), no deadline.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from fcnseg.data import DataError, build_dataset, check_dataset
from fcnseg.data.classes import load_class_file, looks_like_class_file
from fcnseg.data.decode import IMAGE_SUFFIXES, read_image, read_label_png
from fcnseg.inference.images import ImageReadError, load_image

# The default suite runs a fixed sequence of examples (a failure reproduces); FCNSEG_FUZZ_EXAMPLES=N searches afresh.
FUZZ = settings(
    max_examples=int(os.environ.get("FCNSEG_FUZZ_EXAMPLES", "60")),
    derandomize="FCNSEG_FUZZ_EXAMPLES" not in os.environ,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
VOID = 255
# Channel values where mistakes hide (0, 255, off-by-one neighbours), and any value.
CHANNEL = st.one_of(st.sampled_from([0, 1, 2, 127, 128, 129, 253, 254, 255]), st.integers(0, 255))
COLOR = st.tuples(CHANNEL, CHANNEL, CHANNEL)
VOID_NAMES = ("void", "VOID", "ignore", "Unlabelled", "unlabeled")


# --- the reference ----------------------------------------------------------------------------------------------


def reference_decode(
    rgb: np.ndarray, classes: list, voids: list, tolerance: int
) -> tuple[np.ndarray, Counter, Counter]:
    """``(H, W, 3)`` colours -> labels (-1 for unknown), unknown colour counts, ``(seen, matched)`` near counts.

    Pixel by pixel: the class whose colour it is, 255 for a void colour, else the known colour within
    ``tolerance`` in every channel (the tests keep known colours more than ``2 * tolerance`` apart), else unknown.
    """
    known = [(c, k) for k, c in enumerate(classes)] + [(v, VOID) for v in voids]
    labels = np.full(rgb.shape[:2], -1, dtype=np.int64)
    unknown, near = Counter(), Counter()
    for y in range(rgb.shape[0]):
        for x in range(rgb.shape[1]):
            pixel = tuple(int(v) for v in rgb[y, x])
            exact = [label for color, label in known if color == pixel]
            close = [
                (color, label)
                for color, label in known
                if max(abs(a - b) for a, b in zip(color, pixel, strict=True)) <= tolerance
            ]
            if exact:
                labels[y, x] = exact[0]
            elif close:
                labels[y, x] = close[0][1]
                near[(pixel, close[0][0])] += 1
            else:
                unknown[pixel] += 1
    return labels, unknown, near


def min_gap(colors: list) -> int:
    """Smallest per-channel maximum difference between two of ``colors`` (Chebyshev distance)."""
    return min(
        (max(abs(a - b) for a, b in zip(p, q, strict=True)) for i, p in enumerate(colors) for q in colors[i + 1 :]),
        default=999,
    )


# --- generated datasets -----------------------------------------------------------------------------------------


@st.composite
def class_files(draw) -> tuple[str, list[str], list, list]:
    """A class file's text in a random but valid spelling, and the names, class colours and void colours it gives."""
    colors = draw(st.lists(COLOR, min_size=2, max_size=8, unique=True))
    num_void = draw(st.integers(0, min(3, len(colors) - 1)))
    classes, voids = colors[num_void:], colors[:num_void]
    names = [draw(st.sampled_from(["c{}", "class {}", "Road-{}", "x {} y"])).format(k) for k in range(len(classes))]
    rows = [(n, c) for n, c in zip(names, classes, strict=True)] + [
        (draw(st.sampled_from(VOID_NAMES)), v) for v in voids
    ]
    order = draw(st.permutations(range(len(rows))))  # void lines anywhere; classes keep their relative order
    class_rows = iter(r for r in rows if r[1] in classes)
    void_rows = iter(r for r in rows if r[1] in voids)
    lines = ["name,r,g,b"] if draw(st.booleans()) else []
    for i in order:
        name, (r, g, b) = next(class_rows) if i < len(classes) else next(void_rows)
        sep = draw(st.sampled_from([" ", ", ", ",", "\t", "  "]))
        lines.append(sep.join([name, str(r), str(g), str(b)]))
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "# a comment", "   "])))
    return "\n".join(lines) + "\n", names, classes, voids


def _nudge(color_and_offsets: tuple) -> tuple[int, int, int]:
    color, *offsets = color_and_offsets
    return tuple(min(255, max(0, c + d)) for c, d in zip(color, offsets, strict=True))


MODES = ("RGB", "RGBA", "P", "L", "I;16")


@st.composite
def mask_cases(draw) -> dict:
    """A class file, a mask mode, the mask's stored content and the tolerance to decode it with."""
    text, names, classes, voids = draw(class_files())
    mode = draw(st.sampled_from(MODES))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    case = dict(text=text, names=names, classes=classes, voids=voids, mode=mode, shape=(h, w))
    if mode in ("L", "I;16"):
        high = 255 if mode == "L" else 65535
        values = st.one_of(st.integers(0, len(classes) - 1), st.just(VOID), st.integers(0, high))
        case["values"] = np.array(draw(st.lists(values, min_size=h * w, max_size=h * w))).reshape(h, w)
        case["tolerance"] = 0
        return case
    known = classes + voids
    # Mostly a tolerance the class colours allow; now and then any (an ambiguous one must be refused).
    fits = min(3, (min_gap(known) - 1) // 2)
    tolerance = draw(st.integers(0, 3) if draw(st.integers(0, 5)) == 0 else st.integers(min(1, fits), fits))
    # Near a known colour (lossy saving), often exactly at or just past the tolerance.
    edge = st.sampled_from([-tolerance - 1, -tolerance, tolerance, tolerance + 1])
    offset = st.one_of(edge, st.integers(-tolerance - 1, tolerance + 1))
    nudged = st.tuples(st.sampled_from(known), offset, offset, offset).map(_nudge)
    odd = draw(st.lists(st.one_of(nudged, COLOR).filter(lambda c: c not in known), max_size=3, unique=True))
    palette = known + odd
    # Every colour of the palette occurs (in a random place), the other pixels are any of them.
    h = -(-max(h * w, len(palette)) // w)
    extra = draw(
        st.lists(st.integers(0, len(palette) - 1), min_size=h * w - len(palette), max_size=h * w - len(palette))
    )
    index = draw(st.permutations([*range(len(palette)), *extra]))
    case["shape"] = (h, w)
    case["rgb"] = np.array(palette, dtype=np.uint8)[np.array(index)].reshape(h, w, 3)
    case["tolerance"] = tolerance
    case["alpha"] = draw(st.integers(0, 255))
    case["palette_order"] = draw(st.permutations(range(len(palette))))
    case["palette"] = palette
    case["suffix"] = draw(st.sampled_from([".png", ".tif"] + ([".bmp"] if mode != "RGBA" else [])))
    return case


def write_mask(case: dict, path: Path) -> None:
    """Save the case's mask in its mode: colours as RGB(A), through a shuffled palette, or stored index values."""
    mode = case["mode"]
    if mode == "L":
        Image.fromarray(case["values"].astype(np.uint8)).save(path)
    elif mode == "I;16":
        Image.fromarray(case["values"].astype(np.uint16)).save(path)
    elif mode == "RGB":
        Image.fromarray(case["rgb"]).save(path)
    elif mode == "RGBA":
        alpha = np.full((*case["shape"], 1), case["alpha"], np.uint8)
        Image.fromarray(np.concatenate([case["rgb"], alpha], axis=2)).save(path)
    else:  # palette: the colours listed in another order than the class file's
        shuffled = [case["palette"][i] for i in case["palette_order"]]
        position = {color: i for i, color in enumerate(shuffled)}
        indices = np.array([[position[tuple(int(v) for v in px)] for px in row] for row in case["rgb"]], np.uint8)
        img = Image.frombytes("P", indices.shape[::-1], indices.tobytes())
        img.putpalette([v for color in shuffled for v in color])
        img.save(path)


def write_folder(case: dict, root: Path) -> Path:
    """A one-pair folder dataset: ``images/a.png``, ``masks/a<suffix>``, ``classes.txt``; returns the mask path."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text(case["text"])
    Image.fromarray(np.zeros((*case["shape"], 3), np.uint8)).save(root / "images" / "a.png")
    mask = root / "masks" / f"a{case.get('suffix', '.png')}"
    write_mask(case, mask)
    return mask


# --- properties -------------------------------------------------------------------------------------------------


@FUZZ
@given(class_files())
def test_class_files_read_as_written(generated) -> None:
    text, names, classes, voids = generated
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "classes.txt"
        path.write_text(text)
        info, void_colors = load_class_file(path)
        assert list(info.names) == names and list(info.colors) == classes and sorted(void_colors) == sorted(voids)
        assert looks_like_class_file(path)  # never taken for a split list


@FUZZ
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_any_class_file_text_reads_or_fails_in_one_line(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "classes.txt"
        path.write_text(text)
        try:
            info, _ = load_class_file(path)
        except DataError as err:
            assert str(path) in str(err) and "\n" not in str(err)
        else:
            assert info.num_classes >= 1
        looks_like_class_file(path)  # never raises


@FUZZ
@given(mask_cases(), st.sampled_from(["error", "void"]))
def test_masks_decode_as_the_reference(case: dict, unknown: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mask_path = write_folder(case, root)
        options = dict(classes=root / "classes.txt", unknown_colors=unknown, color_tolerance=case["tolerance"])
        if case["mode"] in ("L", "I;16"):
            _check_index_mask(case, root, mask_path, options)
            return
        known = case["classes"] + case["voids"]
        if case["tolerance"] and min_gap(known) <= 2 * case["tolerance"]:
            with pytest.raises(DataError, match="ambiguous"):
                build_dataset("folder", root, "all", **options)
            return
        expected, unknown_px, near = reference_decode(case["rgb"], case["classes"], case["voids"], case["tolerance"])
        dataset = build_dataset("folder", root, "all", **options)
        if unknown_px and unknown == "error":
            with pytest.raises(DataError) as info:
                dataset.load(0)
            message = str(info.value)
            assert message.startswith(f"{mask_path}: colours ") and "\n" not in message
            assert all(f"{color} x {count} px" in message for color, count in unknown_px.items())  # at most 3
        else:
            labels = dataset.load(0)[1].numpy()
            np.testing.assert_array_equal(labels, np.where(expected < 0, VOID, expected))
        report = check_dataset("folder", root, ["all"], progress=False, **options)
        assert report.unknown_pixels == unknown_px and report.near_colors == near
        assert report.ok == (not unknown_px or unknown == "void")
        if not report.ok:
            assert [p.file for p in report.problems] == [str(mask_path)]


def _check_index_mask(case: dict, root: Path, mask_path: Path, options: dict) -> None:
    """Grayscale masks are class indices even with a class file: ``0..K-1`` and 255, any other value an error (void
    with ``--unknown-colors void``)."""
    values, num_classes = case["values"], len(case["classes"])
    bad = sorted({int(v) for v in values.ravel() if not (v < num_classes or v == VOID)})
    dataset = build_dataset("folder", root, "all", **options)
    if bad and options["unknown_colors"] == "error":
        with pytest.raises(DataError) as info:
            dataset.load(0)
        message = str(info.value)
        assert message.startswith(f"{mask_path}: label values {bad[:10]}") and "\n" not in message
    else:
        np.testing.assert_array_equal(dataset.load(0)[1].numpy(), np.where(np.isin(values, bad), VOID, values))


# --- bytes ------------------------------------------------------------------------------------------------------


KINDS = {"png": "PNG", "png-gray": "PNG", "png-16": "PNG", "jpeg": "JPEG", "bmp": "BMP", "tiff": "TIFF"}
LOSSLESS = ("png", "png-gray", "png-16", "bmp", "tiff")


def _encoded(kind: str, seed: int) -> tuple[bytes, np.ndarray]:
    """A small valid file of ``kind`` and the values ``read_label_png`` gives for it (RGB or stored indices)."""
    rng = np.random.default_rng(seed)
    if kind in ("png-gray", "png-16"):
        pixels = rng.integers(0, 3, (5, 7)).astype(np.uint8 if kind == "png-gray" else np.uint16)
    else:
        pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=KINDS[kind])
    return buffer.getvalue(), pixels


@st.composite
def damaged_files(draw) -> tuple[bytes, str, np.ndarray | None]:
    """Bytes to store under an image suffix, and the values a successful decode must give (None: not checked)."""
    suffix = draw(st.sampled_from((*IMAGE_SUFFIXES, ".PNG", ".JPG")))
    how = draw(st.sampled_from(["random", "truncated", "corrupted", "header"]))
    if how == "random":
        return draw(st.binary(max_size=300)), suffix, None
    kind = draw(st.sampled_from(sorted(KINDS)))
    data, pixels = _encoded(kind, draw(st.integers(0, 3)))
    if how == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))], suffix, pixels if kind in LOSSLESS else None
    if how == "header":  # a real signature and header start, then noise
        return data[: draw(st.integers(2, 40))] + draw(st.binary(max_size=200)), suffix, None
    damaged = bytearray(data)
    for at, xor in draw(
        st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)), min_size=1, max_size=4)
    ):
        damaged[at] ^= xor
    return bytes(damaged), suffix, None


def _patched(kind: str, at: int, new: bytes) -> bytes:
    data = bytearray(_encoded(kind, 0)[0])
    data[at : at + len(new)] = new
    return bytes(data)


@FUZZ
@given(damaged_files())
# Each kind of error PIL raises, whether or not the search meets it: a broken PNG chunk length (SyntaxError), a BMP
# header claiming 50 million columns (DecompressionBombError, not an OSError), an empty file, a GIF signature.
@example((_patched("png", 36, b"\x2c"), ".png", None))
@example((_patched("bmp", 18, struct.pack("<i", 50_000_000)), ".jpg", None))
@example((b"", ".jpeg", None))
@example((b"GIF89a", ".tif", None))
def test_damaged_bytes_give_one_line_naming_the_file(damaged) -> None:
    data, suffix, pixels = damaged
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"sample{suffix}"
        path.write_bytes(data)
        readers = {
            "read_image": (read_image, DataError),
            "read_label_png": (lambda p: read_label_png(p, palette_as_rgb=True), DataError),
            "load_image": (load_image, ImageReadError),
        }
        for name, (reader, error) in readers.items():
            try:
                out = reader(path)
            except error as err:
                message = str(err)
                assert str(path) in message and "\n" not in message, (name, message)
                continue
            if pixels is not None and name == "read_label_png":  # a cut that kept every pixel: nothing invented
                np.testing.assert_array_equal(out, pixels)
