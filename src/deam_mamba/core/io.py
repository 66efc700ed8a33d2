"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one."""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from deam_mamba.core.errors import DeamError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def check_writable_location(path: str | Path, what: str) -> None:
    """Fail early (before any work) if ``path`` cannot be created: the nearest existing folder above it must be
    a folder we may write in. ``what`` names the option in the message (e.g. ``"--out"``)."""
    path = Path(path)
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DeamError(f"{what} {path}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DeamError(f"{what} {path}: permission denied writing in {parent}; choose a location you can write to")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj``: NaN and infinities become ``null`` (bare ``NaN`` is not JSON),
    numpy scalars/arrays become numbers/lists, paths become strings."""
    return json.dumps(_finite(obj), indent=indent, sort_keys=False, allow_nan=False)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write :func:`to_json` of ``obj`` atomically (with a final newline)."""
    atomic_write_text(path, to_json(obj) + "\n")


def _finite(o: Any) -> Any:
    """``o`` with every non-finite float replaced by None and numpy/path values made plain."""
    if isinstance(o, dict):
        return {(str(k) if isinstance(k, Path) else k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, Path):
        return str(o)
    if o is None or isinstance(o, str):
        return o
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
