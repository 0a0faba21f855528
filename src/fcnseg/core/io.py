"""Atomic file output: a reader never sees a half-written checkpoint, mask or report."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

_TEMP_ATTEMPTS = 100


def _create_temp(path: Path) -> Path:
    """Create an empty, uniquely named file beside ``path`` with the permissions ``open(path, "w")`` would give.

    A new file gets ``0o666`` less the umask (``os.open`` applies it, as ``open`` does; ``tempfile.mkstemp`` would
    give ``0o600``); when ``path`` exists, its permissions are kept. The name keeps ``path``'s suffix, so that
    writers which infer the format from the name (PIL, matplotlib, NumPy) still work.
    """
    for _ in range(_TEMP_ATTEMPTS):
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}{path.suffix}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        return tmp
    raise FileExistsError(f"could not create a temporary file beside '{path}' after {_TEMP_ATTEMPTS} attempts")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The file ends with the permissions a plain ``open(path, "w")`` gives it (see :func:`_create_temp`). On error
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temp(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
