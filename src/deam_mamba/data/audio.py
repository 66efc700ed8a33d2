"""Decode any mp3/wav/flac/ogg to float32 ``[C, T]`` at a target rate: one function, one place.

soundfile (libsndfile) decodes, soxr resamples (HQ, as ``librosa.load`` does), so the
samples equal ``librosa.load(path, sr=target_sr, mono=True)`` (measured: bench/bench_audio.py,
tests/test_audio.py). Safe to call from worker processes and threads (what C decoders print to stderr is
captured under a lock, see :func:`_decoder_stderr`). Every failure —
missing, empty, truncated or corrupt file — is an :class:`~deam_mamba.core.errors.AudioDecodeError`.

Range: samples are nominally in [-1, 1] but are NOT clipped by default: loud MP3s decode (and
resampling rings) slightly past ±1, and ``librosa.load`` keeps those values too; clipping would
distort them and break equality with librosa (``clip=True`` clips anyway).

Estimated header lengths: many real MP3s (no Xing/Info frame, MPEG-2 rates) promise slightly more
frames than they hold; such files decode to what the stream holds (see ``HEADER_ESTIMATE_TOLERANCE``),
and only a large shortfall is called truncation.

Known libsndfile limit: a VBR MP3 *without* a Xing/Info header decodes only up to a length
estimated from its first frame (librosa has the same problem). ``load_audio`` does not pay to
check every call; :func:`mp3_length_problem` (used by ``deam-mamba info --check-audio``) finds such files.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from deam_mamba.core.errors import AudioDecodeError, DeamError

# .opus: Ogg Opus (libsndfile >= 1.0.29; warzone2100-music ships its soundtrack so)
AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif")
RESAMPLE_QUALITY = "HQ"  # librosa.load's default res_type "soxr_hq"
_SF_EXTENSIONS = {"." + f.lower() for f in sf.available_formats()} | {".mp3", ".oga", ".opus", ".aif"}
_WAV_SHORT = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)

log = logging.getLogger(__name__)
_STDERR_LOCK = threading.Lock()  # fd 2 is one per process: one redirection at a time


@contextmanager
def _decoder_stderr(path: Path) -> Iterator[list[str]]:
    """Capture what C libraries (mpg123 inside libsndfile: "Note: Illegal Audio-MPEG-Header ...") print to
    file descriptor 2 while decoding ``path``, so it never reaches the user's terminal.

    Yields a list that receives the captured lines; they are logged at debug level naming the file. fd 2
    is restored whatever happens. Decodes in threads of one process take turns (a lock); processes
    each have their own fd 2."""
    lines: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError):  # stderr closed or replaced by an object without flush
            pass
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(65536).decode("utf-8", "replace")
            lines.extend(ln.strip() for ln in text.splitlines() if ln.strip())
            if lines:
                log.debug("%s: the decoder reported %d message(s): %s", path, len(lines), " | ".join(lines[:20]))


def _decoder_summary(lines: list[str]) -> str:
    """A short summary of captured decoder messages for an error reason ("" when none)."""
    if not lines:
        return ""
    return f" (the decoder reported {len(lines)} damaged or unreadable spot(s); -v shows its messages)"


def _sf_reason(exc: Exception) -> str:
    """libsndfile's message, minus its misleading 'does not exist ... pipe?' for unparseable data."""
    msg = str(exc)
    if "possibly a pipe" in msg or "unimplemented format" in msg or "unknown format" in msg.lower():
        return "not a readable audio stream (corrupt, truncated or not audio at all); re-download the file"
    msg = msg.split(": ", 1)[-1] if msg.startswith("Error opening") else msg
    return f"{msg.strip()} (truncated or corrupt file?)"


# A header's length may be an estimate: an MP3 without a Xing/Info frame (every MPEG-2 22.05 kHz clip of
# the 4Q set, LAME streams written without a tag, Debian's asc-music soundtracks) promises 0.09-0.47 % more
# frames than its stream holds (measured: all 726 MP3s under ../shared/real/4q fall short by 0.468-0.469 %;
# asc-music 6 412 934 promised, 6 407 424 decoded = 0.086 %). A file really cut short (an interrupted
# download) misses a large share. So a shortfall up to 2 % of the promise plus 2 MP3 frames (encoder
# delay/padding) is an estimated header, and anything more is truncation. Ogg streams get the same slack:
# libsndfile takes their length from the last page's granule position, which can overstate the decodable
# samples (measured: Debian wesnoth-1.16-music northerners.ogg promises 9 135 516 frames and decodes 9 129 710,
# 0.064 %, with a proper end-of-stream page), while a cut Ogg file is caught by its missing end-of-stream flag
# below. WAV/FLAC/AIFF headers state exact lengths and get no slack.
HEADER_ESTIMATE_TOLERANCE = 0.02
HEADER_ESTIMATE_SLACK_FRAMES = 2 * 1152


def _check_truncated(fmt: str, frames: int, extra_info: str, decoded: int, wanted: int, samplerate: int,
                     path: Path) -> None:
    """Raise if the header promised clearly more audio than the file holds (interrupted download/unpack).

    A small shortfall (see :data:`HEADER_ESTIMATE_TOLERANCE`) is an estimated header length, not damage:
    the file decodes to what its stream holds.
    """
    promised = min(wanted, frames)
    # MP3 and Ogg lengths are estimates; any shortfall of WAV/FLAC/AIFF is damage
    slack = HEADER_ESTIMATE_TOLERANCE * promised + HEADER_ESTIMATE_SLACK_FRAMES if fmt in ("MP3", "OGG") else 0
    if promised - decoded > slack:
        raise AudioDecodeError(path, f"truncated: header promises {promised} frames, only {decoded} decoded "
                                     f"({decoded / max(samplerate, 1):.2f} s); re-download the file")
    log_text = extra_info or ""
    m = _WAV_SHORT.search(log_text)
    if m and int(m.group(1)) > int(m.group(2)):
        raise AudioDecodeError(path, f"truncated: data chunk promises {m.group(1)} bytes, file holds {m.group(2)}")
    if "lacks an end-of-stream" in log_text:
        raise AudioDecodeError(path, "truncated: the last Ogg page lacks its end-of-stream flag")


def _read_soundfile(path: Path, duration: float | None = None) -> tuple[np.ndarray, int]:
    """``([T, C] float32, sr)`` via libsndfile (the first ``duration`` s if given), with truncation checks."""
    noise: list[str] = []
    try:
        with _decoder_stderr(path) as noise, sf.SoundFile(str(path)) as f:
            wanted = f.frames if duration is None else min(f.frames, int(np.ceil(duration * f.samplerate)))
            data = f.read(frames=wanted, dtype="float32", always_2d=True)
            decoded, rate = data.shape[0], int(f.samplerate)
            fmt, frames, extra = f.format, f.frames, f.extra_info
        _check_truncated(fmt, frames, extra, decoded, wanted, rate, path)
        return data, rate
    except AudioDecodeError as exc:
        raise AudioDecodeError(path, exc.reason + _decoder_summary(noise)) from None
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise AudioDecodeError(path, _sf_reason(exc) + _decoder_summary(noise)) from None


def _read_fallback(path: Path, duration: float | None = None) -> tuple[np.ndarray, int]:
    """Formats libsndfile cannot read (e.g. m4a): librosa's audioread path, if a backend exists."""
    try:
        import librosa  # lazy: heavy, and only the rare fallback decoder needs it

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, sr = librosa.load(str(path), sr=None, mono=False, duration=duration)
    except Exception as exc:  # noqa: BLE001 - reported, with its cause, to the user
        raise AudioDecodeError(path, f"format {path.suffix!r} is not supported by libsndfile and the "
                                     f"fallback decoder failed: {type(exc).__name__}: {exc or 'no backend'}") from None
    return np.atleast_2d(y).astype(np.float32, copy=False).T, int(sr)


def _channel_mean(data: np.ndarray) -> np.ndarray:
    """``[T, C] -> [T, 1]``: the mean of the channels, the same float32 values as
    ``data.mean(axis=1)`` (a left-to-right sum, then one division) but ~10x faster: numpy's reduction
    over a short inner axis of an interleaved array cost ~25 ms per 45 s stereo song, a third of
    ``prepare``'s CPU time."""
    out = data[:, 0].copy()
    for c in range(1, data.shape[1]):
        out += data[:, c]
    out /= data.shape[1]
    return out[:, None]


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
        data = _channel_mean(data)
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
        with _decoder_stderr(path):
            info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise AudioDecodeError(path, f"cannot read header: {_sf_reason(exc)}") from None
    if info.samplerate <= 0 or info.frames <= 0:
        raise AudioDecodeError(path, "header reports no audio frames (truncated or corrupt file)")
    return float(info.frames) / float(info.samplerate), int(info.samplerate), int(info.channels)


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the header (no full decode)."""
    return audio_info(path)[0]


_MP3_KBPS = {1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),   # MPEG-1 layer III
             2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}      # MPEG-2/2.5 layer III
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_stream_samples(path: str | Path) -> int | None:
    """Samples per channel that the MPEG layer III frames of ``path`` hold, by walking frame headers.

    No decoding (~ms). ``None`` if the file is not a layer III stream. Used to catch what the
    header-based length misses: libsndfile (and so ``librosa.load``) stops at an *estimated*
    length for a VBR MP3 without a Xing/Info header, silently dropping the rest of the song.
    """
    data = Path(path).read_bytes()
    pos = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # ID3v2 tag: syncsafe size (+ footer)
        pos = 10 + ((data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F))
        pos += 10 if data[5] & 0x10 else 0
    samples, first = 0, True
    while pos + 4 <= len(data):
        b1, b2 = data[pos + 1], data[pos + 2]
        version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3
        if data[pos] != 0xFF or b1 & 0xE0 != 0xE0 or version == 1 or layer != 1 or b2 >> 4 in (0, 15) \
                or (b2 >> 2) & 3 == 3:
            if first and samples == 0 and pos < 8192:  # junk before the first frame: resync
                pos += 1
                continue
            break  # ID3v1 "TAG", APE tag, trailing junk or a cut frame: the stream ends here
        mpeg1 = version == 3
        kbps = _MP3_KBPS[1 if mpeg1 else 2][b2 >> 4]
        rate = _MP3_RATES[version][(b2 >> 2) & 3]
        length = (144 if mpeg1 else 72) * kbps * 1000 // rate + ((b2 >> 1) & 1)
        if pos + length > len(data):
            break  # a cut last frame holds no decodable audio
        frame = data[pos:pos + length]
        if not (first and (b"Xing" in frame or b"Info" in frame or b"VBRI" in frame)):
            samples += 1152 if mpeg1 else 576
        first = False
        pos += length
    return samples or None


def mp3_length_problem(path: str | Path, header_frames: int) -> str | None:
    """Why an MP3's header length (what libsndfile decodes) disagrees with its frames, or ``None``.

    A header that promises more than the frames hold is damage only beyond the estimated-header slack
    that :func:`load_audio` accepts (:data:`HEADER_ESTIMATE_TOLERANCE` of the promised frames +
    :data:`HEADER_ESTIMATE_SLACK_FRAMES`: one rule for both). Frames beyond the header's length (a VBR
    MP3 without a Xing/Info header, which libsndfile cuts short) are flagged past
    :data:`HEADER_ESTIMATE_SLACK_FRAMES` + 0.5 %.
    """
    stream = mp3_stream_samples(path)
    if stream is None:
        return None
    tol = HEADER_ESTIMATE_SLACK_FRAMES + stream // 200
    if header_frames > stream + HEADER_ESTIMATE_SLACK_FRAMES + HEADER_ESTIMATE_TOLERANCE * header_frames:
        return f"truncated: header promises {header_frames} frames, the MP3 frames hold {stream}"
    if header_frames < stream - tol:
        return (f"libsndfile (and librosa) would decode only {header_frames} of the {stream} frames "
                f"(a VBR MP3 without a Xing/Info header); re-encode the file to read all of it")
    return None


def wave_from_array(audio, sr: int | None, target_sr: int, mono: bool = True) -> np.ndarray:
    """An in-memory signal -> ``[C, T]`` float32 at ``target_sr`` Hz (the rate and resampler of :func:`load_audio`).

    ``audio``: ``[T]`` (mono) or ``[C, T]`` float samples in [-1, 1] at ``sr`` Hz (a numpy array or a tensor);
    ``sr`` is required (an array carries no rate). ``mono=True`` averages the channels (C = 1). Raises
    :class:`DeamError` for a missing rate, a wrong shape, an empty signal or NaN/Inf samples.
    """
    if sr is None:
        raise DeamError("an audio array needs its sample rate: pass sr=<Hz> (e.g. sr=44100)")
    if not (isinstance(sr, (int, np.integer, float)) and sr > 0 and float(sr) == int(sr)):
        raise DeamError(f"sample rate must be a positive whole number of Hz, got {sr!r}")
    if hasattr(audio, "detach"):  # a torch tensor (torch is not imported here)
        audio = audio.detach().cpu().numpy()
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2:
        raise DeamError(f"audio array must be [T] or [C, T], got shape {tuple(data.shape)}")
    if data.shape[0] > 16 and data.shape[1] <= 16:
        raise DeamError(f"audio array of shape {tuple(data.shape)} looks like [T, C]; pass it as [C, T] (array.T)")
    if data.shape[1] == 0:
        raise DeamError("audio array is empty (0 samples)")
    if not np.isfinite(data).all():
        raise DeamError("audio array contains NaN or Inf samples")
    if mono and data.shape[0] > 1:
        data = _channel_mean(np.ascontiguousarray(data.T)).T  # as load_audio averages a file's channels
    if int(sr) != int(target_sr):
        data = soxr.resample(np.ascontiguousarray(data.T), int(sr), int(target_sr), quality=RESAMPLE_QUALITY).T
    return np.ascontiguousarray(data, dtype=np.float32)
