"""Decode any mp3/wav/flac/ogg to float32 ``[C, T]`` at a target rate: one function, one place.

soundfile (libsndfile) decodes, soxr resamples (HQ, as ``librosa.load`` does), so the
samples equal ``librosa.load(path, sr=target_sr, mono=True)``. Safe to call from worker
processes (no global state). Every failure is an :class:`~deam_mamba.errors.AudioDecodeError`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..errors import AudioDecodeError

AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif")


def _read_with_fallback(path: Path) -> tuple[np.ndarray, int]:
    """Return ``([T, C] float32, sr)``; librosa/audioread only where libsndfile cannot read it."""
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return data, int(sr)
    except sf.LibsndfileError as exc:
        sf_error = str(exc)
    except RuntimeError as exc:  # older soundfile raises RuntimeError
        sf_error = str(exc)
    try:  # a format libsndfile does not know (e.g. m4a); librosa falls back to audioread
        import warnings

        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, sr = librosa.load(str(path), sr=None, mono=False)
        y = np.atleast_2d(y).astype(np.float32, copy=False).T
        return y, int(sr)
    except Exception as exc:  # noqa: BLE001 - reported, with both causes, to the user
        raise AudioDecodeError(path, f"{sf_error}; fallback decoder: {exc}") from None


def load_audio(path: str | Path, target_sr: int | None = 16_000, mono: bool = True) -> np.ndarray:
    """Decode ``path`` to ``[C, T]`` float32 in [-1, 1] at ``target_sr`` Hz (``None``: native rate).

    ``mono=True`` averages the channels (C = 1). Raises :class:`AudioDecodeError` naming
    the file for a missing, empty, truncated or corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(path, "file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(path, "file is empty (0 bytes); re-download or remove it")
    data, sr = _read_with_fallback(path)
    if data.size == 0 or data.shape[0] == 0:
        raise AudioDecodeError(path, "no audio frames could be decoded (truncated or corrupt file)")
    if not np.all(np.isfinite(data)):
        raise AudioDecodeError(path, "decoded samples contain NaN or Inf (corrupt file)")
    if mono and data.shape[1] > 1:
        data = data.mean(axis=1, keepdims=True)
    if target_sr is not None and sr != target_sr:
        data = soxr.resample(data, sr, target_sr, quality="HQ")
    wave = np.ascontiguousarray(data.T, dtype=np.float32)
    np.clip(wave, -1.0, 1.0, out=wave)
    return wave


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the header (no full decode)."""
    path = Path(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # noqa: BLE001
        raise AudioDecodeError(path, f"cannot read header: {exc}") from None
    return float(info.frames) / float(info.samplerate)
