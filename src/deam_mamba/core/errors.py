"""Every error the package raises on purpose: one place, messages a user can act on."""
from __future__ import annotations

import errno
from pathlib import Path


class DeamError(Exception):
    """Base class of all deam-mamba errors (the CLI prints these without a traceback)."""


class DatasetNotFoundError(DeamError):
    """The DEAM root could not be found or downloaded."""


class DatasetLayoutError(DeamError):
    """The root exists but the audio folder or annotation CSVs are missing or malformed."""


class UnknownSongError(DeamError, KeyError):
    """A song id that the dataset does not have."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class AudioDecodeError(DeamError):
    """An audio file is missing, empty, truncated or corrupt."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot decode audio file {self.path}: {reason}")


class LabelError(DeamError):
    """Labels are NaN, out of range or of the wrong shape."""


class ConfigError(DeamError):
    """A config file or command-line override is invalid."""


class CacheError(DeamError):
    """The feature cache is missing, stale or corrupt."""


class CheckpointError(DeamError):
    """A checkpoint file is missing, corrupt or not compatible with the model."""


class OutputExistsError(DeamError):
    """Refusing to overwrite something the user made (pass --force to allow it)."""


_OS_HINTS = {
    errno.ENOENT: "check the path: it (or a folder on it) does not exist",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder: give a file name",
    errno.EACCES: "you may not read or write there: choose another location or fix its permissions",
    errno.EPERM: "you may not read or write there: choose another location or fix its permissions",
    errno.EROFS: "the file system is read-only: choose another location",
    errno.ENOSPC: "the disk is full: free some space or choose another location",
    errno.EDQUOT: "the disk quota is exhausted: free some space or choose another location",
    errno.EEXIST: "it exists already: choose another name",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system error: ``<file>: <strerror> — <what to do>`` (the CLI prints it)."""
    files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or str(exc)
    hint = _OS_HINTS.get(exc.errno, "check the path and its permissions")
    if exc.errno == errno.EEXIST and exc.filename is not None and Path(exc.filename).is_file():
        reason, hint = "is a file", _OS_HINTS[errno.ENOTDIR]  # mkdir(exist_ok=True) on a file
    return f"{files + ': ' if files else ''}{reason} — {hint}"
