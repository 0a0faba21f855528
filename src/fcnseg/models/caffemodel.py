"""The authors' Caffe nets without Caffe: the layers of a ``.caffemodel`` (binary) or ``.prototxt`` (text) file.

A ``.caffemodel`` is a serialised ``NetParameter`` of Caffe's ``caffe.proto``; it is read here with the wire-format
reader of :mod:`.protobuf`, so neither pycaffe nor protobuf code generation is needed. Only these fields are read
(numbers from ``src/caffe/proto/caffe.proto`` of github.com/BVLC/caffe; every other field is skipped):

- ``NetParameter``: ``layers = 2`` (``V1LayerParameter``, nets saved before 2015), ``layer = 100``
  (``LayerParameter``);
- ``LayerParameter``: ``name = 1``, ``type = 2`` (a string), ``blobs = 7``, ``convolution_param = 106``,
  ``crop_param = 144``;
- ``V1LayerParameter``: ``name = 4``, ``type = 5`` (enum ``LayerType``), ``blobs = 6``, ``convolution_param = 10``;
- ``BlobProto``: ``shape = 7``, ``data = 5`` (packed float), ``double_data = 8``, and the legacy 4-D shape
  ``num = 1``, ``channels = 2``, ``height = 3``, ``width = 4``;
- ``BlobShape``: ``dim = 1`` (packed int64);
- ``ConvolutionParameter``: ``pad = 3``, ``pad_h = 9``, ``pad_w = 10``;
- ``CropParameter``: ``offset = 2``.

A ``.prototxt`` is the same ``NetParameter`` in protobuf's text format; :func:`read_prototxt` parses that format
(``key: value``, ``key { ... }``, ``#`` comments) and returns the same layers, without blobs.
"""

from __future__ import annotations

import mmap
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .protobuf import LEN, VARINT, WireError, fields, floats, ints, string

# NetParameter
NET_LAYERS_V1, NET_LAYER = 2, 100
# LayerParameter / V1LayerParameter: (name, type, blobs, convolution_param, crop_param)
LAYER_FIELDS = {NET_LAYER: (1, 2, 7, 106, 144), NET_LAYERS_V1: (4, 5, 6, 10, None)}
# BlobProto
BLOB_LEGACY_DIMS, BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = (1, 2, 3, 4), 5, 7, 8
SHAPE_DIM = 1  # BlobShape
CONV_PAD, CONV_PAD_H, CONV_PAD_W = 3, 9, 10  # ConvolutionParameter
CROP_OFFSET = 2  # CropParameter
# V1LayerParameter.LayerType values of the layers an FCN has (enum names as the text format writes them).
V1_TYPES = {
    4: "Convolution",
    39: "Deconvolution",
    14: "InnerProduct",
    17: "Pooling",
    18: "ReLU",
    6: "Dropout",
    25: "Eltwise",
    21: "SoftmaxWithLoss",
    5: "Data",
    22: "Split",
}
V1_TYPE_NAMES = {name.upper(): name for name in V1_TYPES.values()} | {"SOFTMAX_LOSS": "SoftmaxWithLoss"}


@dataclass
class CaffeLayer:
    """One layer of a Caffe net: its name and type, its parameter blobs (binary files only) and its geometry."""

    name: str
    type: str = ""
    blobs: list[np.ndarray] = field(default_factory=list)
    pad: tuple[int, ...] = ()  # convolution_param pad (or pad_h, pad_w), where the file gives one
    crop_offset: tuple[int, ...] = ()  # crop_param offset, where the file gives one


def read_caffemodel(path: str | os.PathLike) -> list[CaffeLayer]:
    """The layers of a ``.caffemodel`` file, in net order, with their blobs as float32 arrays of their Caffe shapes.

    The file is mapped into memory and only the blobs are copied out of it.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a Caffe ``NetParameter`` (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Caffe weights '{path}' do not exist")
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ValueError(f"'{path}' is empty, not a Caffe .caffemodel")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                layers = _net_layers(view)
            except WireError as err:
                raise ValueError(f"'{path}' is not a Caffe .caffemodel (a NetParameter message): {err}") from None
            finally:
                view.release()
    if not layers:
        raise ValueError(f"'{path}' holds no Caffe layers: is it a .caffemodel?")
    return layers


def _net_layers(net: memoryview) -> list[CaffeLayer]:
    layers = []
    for number, wire, value in fields(net):
        if number in LAYER_FIELDS and wire == LEN:
            layers.append(_layer(value, LAYER_FIELDS[number]))  # type: ignore[arg-type]
    return layers


def _layer(message: memoryview, numbers: tuple[int, int, int, int, int | None]) -> CaffeLayer:
    name_field, type_field, blobs_field, conv_field, crop_field = numbers
    layer = CaffeLayer(name="")
    for number, wire, value in fields(message):
        if number == name_field:
            layer.name = string(value)
        elif number == type_field:
            layer.type = V1_TYPES.get(value, f"V1 type {value}") if wire == VARINT else string(value)
        elif number == blobs_field:
            layer.blobs.append(_blob(value))  # type: ignore[arg-type]
        elif number == conv_field:
            layer.pad = _pad(value)  # type: ignore[arg-type]
        elif number == crop_field:
            layer.crop_offset = tuple(n for k, w, v in fields(value) if k == CROP_OFFSET for n in ints(w, v))  # type: ignore[arg-type]
    return layer


def _pad(message: memoryview) -> tuple[int, ...]:
    pad, pad_hw = [], {}
    for number, wire, value in fields(message):
        if number == CONV_PAD:
            pad += ints(wire, value)
        elif number in (CONV_PAD_H, CONV_PAD_W):
            pad_hw[number] = ints(wire, value)[0]
    return tuple(pad) or ((pad_hw.get(CONV_PAD_H, 0), pad_hw.get(CONV_PAD_W, 0)) if pad_hw else ())


def _blob(message: memoryview) -> np.ndarray:
    shape: list[int] | None = None
    legacy = dict.fromkeys(BLOB_LEGACY_DIMS, 0)
    chunks: list[np.ndarray] = []
    for number, wire, value in fields(message):
        if number == BLOB_SHAPE:
            shape = [n for k, w, v in fields(value) if k == SHAPE_DIM for n in ints(w, v)]  # type: ignore[arg-type]
        elif number == BLOB_DATA:
            chunks.append(floats(wire, value, "<f4"))
        elif number == BLOB_DOUBLE_DATA:
            chunks.append(floats(wire, value, "<f8"))
        elif number in legacy and wire == VARINT:
            legacy[number] = int(value)  # type: ignore[arg-type]
    dims = shape if shape is not None else [legacy[k] for k in BLOB_LEGACY_DIMS]
    data = np.concatenate(chunks) if len(chunks) != 1 else chunks[0]
    if data.size != int(np.prod(dims)):
        raise WireError(f"a blob of shape {tuple(dims)} holds {data.size} numbers")
    return data.astype(np.float32).reshape(dims)  # a copy: writable, aligned, independent of the mapped file


# --- the text format ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s+ | \#[^\n]*  # blanks and comments, skipped
    | ("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')  # a quoted string
    | ([{}:\[\],;<>])  # punctuation
    | ([^\s{}:\[\],;<>\#"']+)  # a name or a number""",
    re.VERBOSE,
)


def read_prototxt(path: str | os.PathLike) -> list[CaffeLayer]:
    """The layers of a net definition in protobuf text format (a ``deploy.prototxt``), in net order, without blobs.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the text is not a net definition (one line naming the file and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"net definition '{path}' does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        net = parse_text_message(text)
    except ValueError as err:
        raise ValueError(f"'{path}' is not a Caffe .prototxt: {err}") from None
    layers = []
    for entry in net.get("layer", []) + net.get("layers", []):
        if not isinstance(entry, dict):
            continue
        kind = str(_first(entry, "type", ""))
        conv = _first(entry, "convolution_param", {})
        crop = _first(entry, "crop_param", {})
        pad = tuple(int(p) for p in conv.get("pad", [])) if isinstance(conv, dict) else ()
        if isinstance(conv, dict) and not pad and ("pad_h" in conv or "pad_w" in conv):
            pad = (int(_first(conv, "pad_h", 0)), int(_first(conv, "pad_w", 0)))
        offset = tuple(int(o) for o in crop.get("offset", [])) if isinstance(crop, dict) else ()
        layers.append(CaffeLayer(str(_first(entry, "name", "")), V1_TYPE_NAMES.get(kind, kind), [], pad, offset))
    if not layers:
        raise ValueError(f"'{path}' defines no layers: is it a Caffe net definition (.prototxt)?")
    return layers


def _first(message: dict[str, list[Any]], key: str, default: Any) -> Any:
    values = message.get(key)
    return values[0] if values else default


def parse_text_message(text: str) -> dict[str, list[Any]]:
    """Protobuf text format -> ``{field name: [values]}``; sub-messages are dicts, scalars str/int/float."""
    tokens = [m.group(m.lastindex or 0) for m in _TOKEN.finditer(text) if m.lastindex]
    message, _ = _parse_fields(tokens, 0, top=True)
    return message


def _parse_fields(tokens: list[str], pos: int, *, top: bool) -> tuple[dict[str, list[Any]], int]:
    message: dict[str, list[Any]] = {}
    while pos < len(tokens):
        key = tokens[pos]
        if key == "}":
            if top:
                raise ValueError("a '}' closes no block")
            return message, pos + 1
        pos += 1
        if pos < len(tokens) and tokens[pos] == ":":
            pos += 1
        if pos >= len(tokens):
            raise ValueError(f"'{key}' has no value")
        if tokens[pos] == "{":
            value, pos = _parse_fields(tokens, pos + 1, top=False)
        else:
            value, pos = _scalar(tokens[pos]), pos + 1
        message.setdefault(key, []).append(value)
        if pos < len(tokens) and tokens[pos] in (",", ";"):
            pos += 1
    if not top:
        raise ValueError("a '{' block is not closed")
    return message, pos


def _scalar(token: str) -> str | int | float:
    if token[0] in "\"'":
        return bytes(token[1:-1], "utf-8").decode("unicode_escape")
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            continue
    return token  # an enum value or true/false
