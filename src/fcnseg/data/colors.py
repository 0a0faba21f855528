"""Colour-coded masks: RGB pixels -> class indices through the class colours, void colours and a tolerance.

A pixel whose colour is a class colour gets that class; a void colour gets :data:`IGNORE_INDEX`. Any other colour
is *unknown*: an error naming the file (``unknown="error"``), or void (``unknown="void"``). With ``tolerance N``,
an unknown colour within ``N`` of a class or void colour in every channel (lossy saving, e.g. JPEG masks) takes
that colour's label. The table counts, per process, the pixels it mapped by tolerance and the unknown ones, so that
``check_dataset`` can report them over a dataset, and warns of the first unknown colours it decodes as void (a
training run says what it did without a scan of its own).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fcnseg.data.classes import IGNORE_INDEX, RGB
from fcnseg.data.errors import DataError

logger = logging.getLogger(__name__)

UNKNOWN_COLOR_POLICIES = ("error", "void")
LOG_UNKNOWN_COLORS = 5
"""Unknown colours decoded as void that each process names in a warning (with the first file), before one last line."""


def pack(color: Sequence[int]) -> int:
    """``(r, g, b) -> 0xRRGGBB``."""
    return (int(color[0]) << 16) | (int(color[1]) << 8) | int(color[2])


def unpack(key: int) -> RGB:
    """``0xRRGGBB -> (r, g, b)``."""
    return (int(key) >> 16) & 255, (int(key) >> 8) & 255, int(key) & 255


def _pack_array(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class ColorTable:
    """Decodes ``(H, W, 3)`` uint8 colour masks into ``(H, W)`` labels.

    Args:
        colors: colour of each class, in class order.
        void_colors: colours of void pixels.
        unknown: ``error`` or ``void``: what a colour that is neither a class nor void becomes.
        tolerance: largest per-channel difference at which an unknown colour still matches a known one (0: exact).

    Raises:
        ValueError: an unknown policy, a negative tolerance, or two known colours within ``2 * tolerance`` of each
            other (a near colour would be ambiguous).

    Attributes:
        near: ``(seen colour, matched colour) -> pixels`` decoded through the tolerance.
        unknown_pixels: ``colour -> pixels`` of unknown colours (decoded as void, or in files that raised).
        unknown_files: ``colour -> number of files`` in which it occurs.
    """

    def __init__(
        self, colors: Sequence[RGB], void_colors: Sequence[RGB] = (), unknown: str = "error", tolerance: int = 0
    ) -> None:
        if unknown not in UNKNOWN_COLOR_POLICIES:
            raise ValueError(f"--unknown-colors must be one of {list(UNKNOWN_COLOR_POLICIES)}, not {unknown!r}")
        if tolerance < 0:
            raise ValueError(f"--color-tolerance must be 0 or more, got {tolerance}")
        self.unknown, self.tolerance = unknown, int(tolerance)
        known = [*colors, *void_colors]
        self.rgb = np.asarray(known, dtype=np.int64).reshape(-1, 3)  # (M, 3) known colours
        self.labels = np.asarray([*range(len(colors)), *[IGNORE_INDEX] * len(void_colors)], dtype=np.int64)
        if self.tolerance:
            gap = np.abs(self.rgb[:, None] - self.rgb[None]).max(-1) + np.eye(len(known), dtype=np.int64) * 999
            i, j = np.unravel_index(np.argmin(gap), gap.shape)
            if gap[i, j] <= 2 * self.tolerance:
                raise ValueError(
                    f"--color-tolerance {tolerance} is ambiguous: colours {tuple(known[i])} and {tuple(known[j])} "
                    f"differ by only {gap[i, j]}; use a tolerance below {(gap[i, j] + 1) // 2}"
                )
        keys = np.asarray([pack(c) for c in known], dtype=np.int64)
        order = np.argsort(keys)
        self.keys, self.values = keys[order], self.labels[order]
        self.near: Counter[tuple[RGB, RGB]] = Counter()
        self.unknown_pixels: Counter[RGB] = Counter()
        self.unknown_files: Counter[RGB] = Counter()
        self._logged: set[int] = set()  # unknown colours already warned of (decoded as void)

    def __call__(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        """``(H, W, 3)`` uint8 colours of ``path`` -> ``(H, W)`` uint8 labels.

        Raises:
            DataError: with ``unknown="error"``, a colour that is neither a class, void, nor within the tolerance.
        """
        keys = _pack_array(rgb)
        pos = np.searchsorted(self.keys, keys).clip(0, len(self.keys) - 1)
        exact = self.keys[pos] == keys
        labels = self.values[pos]
        if exact.all():
            return labels.astype(np.uint8)
        odd, inverse, counts = np.unique(keys[~exact], return_inverse=True, return_counts=True)
        odd_labels = np.full(len(odd), -1, dtype=np.int64)
        for n, (key, count) in enumerate(zip(odd.tolist(), counts.tolist(), strict=True)):
            color = unpack(key)
            match = self._nearest(color)
            if match is None:
                self.unknown_pixels[color] += count
                self.unknown_files[color] += 1
            else:
                odd_labels[n] = self.labels[match]
                self.near[(color, tuple(int(v) for v in self.rgb[match]))] += count
        unknown = odd_labels < 0
        if unknown.any() and self.unknown == "error":
            shown = ", ".join(
                f"{unpack(k)} x {c} px" for k, c in zip(odd[unknown][:5], counts[unknown][:5], strict=True)
            )
            more = f" and {int(unknown.sum()) - 5} more" if unknown.sum() > 5 else ""
            raise DataError(
                f"{path}: colours {shown}{more} are neither a class colour of the class file nor a void colour; "
                "add them to the class file, or pass --unknown-colors void (or --color-tolerance N for near colours)"
            )
        if unknown.any():
            self._log_unknown(path, odd[unknown], counts[unknown])
        odd_labels[unknown] = IGNORE_INDEX
        labels[~exact] = odd_labels[inverse.ravel()]
        return labels.astype(np.uint8)

    def _log_unknown(self, path: Path, keys: np.ndarray, counts: np.ndarray) -> None:
        """Warn once of each of the first unknown colours this process decodes as void, naming its first file."""
        for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
            if key in self._logged or len(self._logged) > LOG_UNKNOWN_COLORS:
                continue
            self._logged.add(key)
            if len(self._logged) <= LOG_UNKNOWN_COLORS:
                logger.warning("%s: %d px of colour %s, neither a class nor void, decoded as void "
                               "(--unknown-colors void); fcnseg check-data counts it over the dataset",
                               path, count, unpack(key))  # fmt: skip
            else:
                logger.warning("more unknown colours are decoded as void; fcnseg check-data lists and counts them all")

    def _nearest(self, color: RGB) -> int | None:
        """Index of the known colour within the tolerance of ``color`` (at most one exists), or ``None``."""
        if not self.tolerance:
            return None
        distance = np.abs(self.rgb - np.asarray(color)).max(-1)
        best = int(np.argmin(distance))
        return best if distance[best] <= self.tolerance else None

    def reset_counts(self) -> None:
        """Forget the near and unknown colours counted so far."""
        self.near.clear()
        self.unknown_pixels.clear()
        self.unknown_files.clear()
