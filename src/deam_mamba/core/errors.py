"""Every error the package raises on purpose: one place, messages a user can act on."""
from __future__ import annotations

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
