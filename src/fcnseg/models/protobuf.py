"""A reader of the protobuf wire format: enough to walk Caffe's ``NetParameter`` without protobuf code generation.

Every field of a message is a varint key ``(field_number << 3) | wire_type`` followed by its value
(https://protobuf.dev/programming-guides/encoding/): wire type 0 is a varint, 1 eight bytes, 2 a varint length and
that many bytes (strings, sub-messages, packed repeated numbers), 5 four bytes. Types 3 and 4 (groups) are
deprecated and do not occur in caffe.proto. Values of wire type 2 are returned as ``memoryview`` slices of the
buffer, so that a 500 MB weights file mapped into memory is never copied whole.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

VARINT, I64, LEN, I32 = 0, 1, 2, 5

Value = int | bytes | memoryview


class WireError(ValueError):
    """The bytes are not a protobuf message (a truncated or foreign file)."""


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``buf[pos]`` and the position after it (little-endian groups of 7 bits)."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise WireError("the file ends inside a number")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise WireError("a number runs over 10 bytes")


def fields(buf: memoryview) -> Iterator[tuple[int, int, Value]]:
    """``(field number, wire type, value)`` for each field of the message in ``buf``, in file order.

    Values: ``int`` for varints, ``bytes`` (8 or 4 bytes) for fixed-width numbers, a ``memoryview`` for wire type 2.
    """
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {pos}: not a protobuf message")
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
            yield number, wire, value
            continue
        size = {I64: 8, I32: 4}.get(wire)
        if wire == LEN:
            size, pos = read_varint(buf, pos)
        elif size is None:
            raise WireError(f"wire type {wire} (field {number}) at byte {pos}: not a protobuf message of caffe.proto")
        if pos + size > end:
            raise WireError(f"field {number} runs {pos + size - end} bytes past the end of its message")
        chunk = buf[pos : pos + size]
        yield number, wire, (bytes(chunk) if wire != LEN else chunk)
        pos += size


def string(value: Value) -> str:
    """A ``string`` field."""
    return bytes(value).decode("utf-8", errors="replace") if not isinstance(value, int) else str(value)


def floats(wire: int, value: Value, dtype: str = "<f4") -> np.ndarray:
    """The numbers of a repeated ``float`` (``"<f4"``) or ``double`` (``"<f8"``) field: packed or a single one."""
    if wire == LEN:
        if len(value) % np.dtype(dtype).itemsize:
            raise WireError(f"packed {dtype} data of {len(value)} bytes")
        return np.frombuffer(value, dtype=dtype)
    if wire in (I32, I64) and isinstance(value, bytes):
        return np.frombuffer(value, dtype=dtype)
    raise WireError(f"wire type {wire} cannot hold floating-point numbers")


def ints(wire: int, value: Value) -> list[int]:
    """The numbers of a repeated integer field: packed varints, or a single one."""
    if wire == VARINT and isinstance(value, int):
        return [value]
    if wire == LEN and isinstance(value, memoryview):
        out, pos = [], 0
        while pos < len(value):
            number, pos = read_varint(value, pos)
            out.append(number)
        return out
    raise WireError(f"wire type {wire} cannot hold integers")
