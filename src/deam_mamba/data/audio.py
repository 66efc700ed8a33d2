"""Decode any mp3/wav/flac/ogg to float32 ``[C, T]`` at a target rate: one function, one place.

soundfile (libsndfile) decodes, soxr resamples (HQ, as ``librosa.load`` does), so the
samples equal ``librosa.load(path, sr=target_sr, mono=True)`` (measured: bench/bench_audio.py,
tests/test_audio.py). Safe to call from worker processes (no global state). Every failure —
missing, empty, truncated or corrupt file — is an :class:`~deam_mamba.errors.AudioDecodeError`.

Range: samples are nominally in [-1, 1] but are NOT clipped by default: loud MP3s decode (and
resampling rings) slightly past ±1, and ``librosa.load`` keeps those values too; clipping would
distort them and break equality with librosa (``clip=True`` clips anyway).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..errors import AudioDecodeError

AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif")
RESAMPLE_QUALITY = "HQ"  # librosa.load's default res_type "soxr_hq"
_SF_EXTENSIONS = {"." + f.lower() for f in sf.available_formats()} | {".mp3", ".oga", ".aif"}
_WAV_SHORT = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _sf_reason(exc: Exception) -> str:
    """libsndfile's message, minus its misleading 'does not exist ... pipe?' for unparseable data."""
    msg = str(exc)
    if "possibly a pipe" in msg or "unimplemented format" in msg or "unknown format" in msg.lower():
        return "not a readable audio stream (corrupt, truncated or not audio at all); re-download the file"
    msg = msg.split(": ", 1)[-1] if msg.startswith("Error opening") else msg
    return f"{msg.strip()} (truncated or corrupt file?)"


def _check_truncated(f: sf.SoundFile, decoded: int, wanted: int, path: Path) -> None:
    """Raise if the header promised more audio than the file holds (interrupted download/unpack)."""
    if decoded < min(wanted, f.frames):  # MP3 (Xing header), AIFF...: soundfile returns fewer frames silently
        raise AudioDecodeError(path, f"truncated: header promises {f.frames} frames, only {decoded} decoded")
    log = f.extra_info or ""
    m = _WAV_SHORT.search(log)
    if m and int(m.group(1)) > int(m.group(2)):
        raise AudioDecodeError(path, f"truncated: data chunk promises {m.group(1)} bytes, file holds {m.group(2)}")
    if "lacks an end-of-stream" in log:
        raise AudioDecodeError(path, "truncated: the last Ogg page lacks its end-of-stream flag")


def _read_soundfile(path: Path, duration: float | None = None) -> tuple[np.ndarray, int]:
    """``([T, C] float32, sr)`` via libsndfile (the first ``duration`` s if given), with truncation checks."""
    try:
        with sf.SoundFile(str(path)) as f:
            wanted = f.frames if duration is None else min(f.frames, int(np.ceil(duration * f.samplerate)))
            data = f.read(frames=wanted, dtype="float32", always_2d=True)
            _check_truncated(f, data.shape[0], wanted, path)
            return data, int(f.samplerate)
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise AudioDecodeError(path, _sf_reason(exc)) from None


def _read_fallback(path: Path, duration: float | None = None) -> tuple[np.ndarray, int]:
    """Formats libsndfile cannot read (e.g. m4a): librosa's audioread path, if a backend exists."""
    try:
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, sr = librosa.load(str(path), sr=None, mono=False, duration=duration)
    except Exception as exc:  # noqa: BLE001 - reported, with its cause, to the user
        raise AudioDecodeError(path, f"format {path.suffix!r} is not supported by libsndfile and the "
                                     f"fallback decoder failed: {type(exc).__name__}: {exc or 'no backend'}") from None
    return np.atleast_2d(y).astype(np.float32, copy=False).T, int(sr)


def load_audio(path: str | Path, target_sr: int | None = 16_000, mono: bool = True,
               clip: bool = False, duration: float | None = None) -> np.ndarray:
    """Decode ``path`` to ``[C, T]`` float32 at ``target_sr`` Hz (``None``: native rate).

    ``mono=True`` averages the channels (C = 1). Equals ``librosa.load(path, sr=target_sr,
    mono=True, duration=duration)`` (see module doc about values past ±1; ``clip=True`` clips to
    [-1, 1]). ``duration``: decode only the first ``duration`` seconds (faster for long songs).
    Raises :class:`AudioDecodeError` naming the file for a missing, empty, truncated or corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(path, "file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(path, "file is empty (0 bytes); re-download or remove it")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be > 0 seconds or None, got {duration}")
    if path.suffix.lower() in _SF_EXTENSIONS:
        data, sr = _read_soundfile(path, duration)
    else:
        data, sr = _read_fallback(path, duration)
    if data.size == 0 or data.shape[0] == 0:
        raise AudioDecodeError(path, "no audio frames could be decoded (truncated or corrupt file)")
    if mono and data.shape[1] > 1:
        data = data.mean(axis=1, keepdims=True)
    if target_sr is not None and sr != target_sr:
        data = soxr.resample(data, sr, int(target_sr), quality=RESAMPLE_QUALITY)
    wave = np.ascontiguousarray(data.T, dtype=np.float32)
    if not np.isfinite(wave).all():
        raise AudioDecodeError(path, "decoded samples contain NaN or Inf (corrupt file)")
    if clip:
        np.clip(wave, -1.0, 1.0, out=wave)
    return wave


def audio_info(path: str | Path) -> tuple[float, int, int]:
    """``(duration_s, sample_rate, channels)`` from the header (no full decode)."""
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(path, "file not found")
    if path.stat().st_size == 0:
        raise AudioDecodeError(path, "file is empty (0 bytes); re-download or remove it")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise AudioDecodeError(path, f"cannot read header: {_sf_reason(exc)}") from None
    if info.samplerate <= 0 or info.frames <= 0:
        raise AudioDecodeError(path, "header reports no audio frames (truncated or corrupt file)")
    return float(info.frames) / float(info.samplerate), int(info.samplerate), int(info.channels)


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the header (no full decode)."""
    return audio_info(path)[0]
