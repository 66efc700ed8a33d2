"""Log-mel spectrograms (torch, batched, CPU or GPU) and per-band normalisation statistics.

``LogMel`` computes exactly what ``librosa.feature.melspectrogram`` followed by
``librosa.power_to_db(ref=1.0, amin=1e-10, top_db=...)`` computes (Hann window, centred
frames, Slaney mel filters equal to ``librosa.filters.mel``'s), to within ~1e-4 dB.

Speed on CPU: a whole-clip ``torch.stft`` writes a ~18 MB complex spectrogram per 45 s clip and
is memory-bound (and a batch of clips at once is worse). ``LogMel`` instead walks each clip in
blocks of ``block_frames`` frames: frame view -> window -> ``rfft`` -> square (in place) -> one
matmul with the mel filters duplicated over the real/imaginary halves (power and mel projection
fused), so every intermediate stays in cache; the blocks are shared among threads (see
``LogMel._logmel_blocked``). On other devices (CUDA) the whole batch goes through ``torch.stft`` at once.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from deam_mamba.config.schema import FeatureConfig
from deam_mamba.core.errors import ConfigError

_SLANEY_HZ_PER_MEL = 200.0 / 3.0  # the Slaney (Auditory Toolbox) mel scale: linear below 1 kHz ...
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_LOG_STEP = math.log(6.4) / 27.0  # ... logarithmic above it (27 mels per factor 6.4)


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Frequencies in Hz -> Slaney mels (librosa's default ``htk=False`` scale), float64."""
    f = np.asarray(f, dtype=np.float64)
    brk = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
    return np.where(f >= _SLANEY_BREAK_HZ,
                    brk + np.log(np.maximum(f, _SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP,
                    f / _SLANEY_HZ_PER_MEL)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    brk = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
    return np.where(m >= brk, _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (m - brk)), m * _SLANEY_HZ_PER_MEL)


@functools.lru_cache(maxsize=16)
def mel_filters(cfg: FeatureConfig) -> np.ndarray:
    """Slaney mel filterbank ``[n_mels, n_fft // 2 + 1]`` float32 (read-only): triangles between ``n_mels + 2``
    points equally spaced in mels from ``fmin`` to ``fmax`` (default ``sr / 2``), each scaled by
    ``2 / (upper - lower edge in Hz)`` (equal area). The numbers of ``librosa.filters.mel`` (defaults), built in
    numpy here because importing librosa's filters (and scipy.signal through them) cost seconds of every
    cold ``predict``; ``tests/test_layers.py`` checks them against librosa's."""
    fmax = float(cfg.fmax) if cfg.fmax is not None else cfg.sample_rate / 2.0
    bins = np.linspace(0.0, cfg.sample_rate / 2.0, 1 + cfg.n_fft // 2)  # FFT bin centre frequencies
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(fmax), cfg.n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    fb = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    fb = fb.astype(np.float32)
    fb.flags.writeable = False
    return fb


class LogMel(nn.Module):
    """Wave -> log-mel power in dB (ref 1.0), the same numbers as librosa.

    Shapes: ``[B, C, T] -> [B, C, n_mels, frames]``; ``[C, T] -> [C, n_mels, frames]``;
    ``[T] -> [n_mels, frames]`` (leading dimensions are kept), ``frames = 1 + T // hop_length``.
    Input: float waves in [-1, 1] at ``cfg.sample_rate`` Hz, on any device (the filters follow
    the input). ``top_db`` is applied per clip, over all of its channels, bands and frames (as
    ``librosa.power_to_db`` does for one multichannel array). The output is float32 and carries
    no gradient (features are constants of the data). ``block_frames``: frames per CPU work unit.
    """

    def __init__(self, cfg: FeatureConfig | None = None, block_frames: int = 512):
        super().__init__()
        self.cfg = cfg or FeatureConfig()
        if int(block_frames) < 1:
            raise ConfigError(f"block_frames must be positive, got {block_frames}")
        self.block_frames = int(block_frames)
        fb = mel_filters(self.cfg)  # [M, F]
        self.register_buffer("mel_fb", torch.tensor(fb), persistent=False)
        self.register_buffer("window", torch.hann_window(self.cfg.n_fft, periodic=True), persistent=False)
        # CPU-path constants (plain attributes: they stay on the CPU whatever .to() does)
        self._window_cpu = torch.hann_window(self.cfg.n_fft, periodic=True)
        self._bands = _band_groups(fb)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"sr={c.sample_rate}, n_fft={c.n_fft}, hop={c.hop_length}, n_mels={c.n_mels}, top_db={c.top_db}"

    @torch.no_grad()
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() not in (1, 2, 3):
            raise ValueError(f"LogMel expects [T], [C, T] or [B, C, T], got shape {tuple(wave.shape)}")
        lead = wave.shape[:-1]
        n_samples = wave.shape[-1]
        if n_samples <= self.cfg.n_fft // 2:
            raise ValueError(
                f"wave has {n_samples} samples; need more than n_fft/2 = {self.cfg.n_fft // 2} "
                f"({self.cfg.n_fft / 2 / self.cfg.sample_rate * 1000:.0f} ms)"
            )
        flat = wave.reshape(-1, n_samples).to(torch.float32)
        if flat.device.type != "cpu":
            db = self._power_to_db(self._mel_power_vectorised(flat))
            self._apply_top_db(db, db.reshape(db.shape[0], -1).amax(dim=1), _items_in(wave))
        else:
            with _torch_single_threaded() as threads:
                db = self._logmel_blocked(flat, _items_in(wave), threads)
        return db.reshape(*lead, self.cfg.n_mels, db.shape[-1])

    # -- internals ------------------------------------------------------------------------

    def _logmel_blocked(self, flat: torch.Tensor, per_item: int, threads: int = 1) -> torch.Tensor:
        """CPU: ``[N, T] -> [N, n_mels, frames]`` dB, in (row, ``block_frames``) work units.

        Per unit, in per-thread buffers that are reused (no multi-MB temporaries, no page faults):
        window the frame views -> ``rfft`` -> ``|X|^2`` (square in place, add real and imaginary
        halves) -> one small matmul per group of neighbouring mel bands over the FFT bins where
        they are nonzero (Slaney filters are ~2 bins wide per bin: a dense matmul would multiply
        ~60x more zeros) written straight into the output -> dB in place -> the unit's maximum.
        ``threads`` Python threads share the units, torch running single-threaded in each (it
        releases the GIL); on a busy machine an OpenMP loop over such small ops was ~10x slower.
        """
        cfg, step, window, bands = self.cfg, self.block_frames, self._window_cpu, self._bands
        n_rows, n_frames = flat.shape[0], cfg.n_frames(flat.shape[-1])
        padded = self._pad(flat)
        frames = [padded[n].unfold(0, cfg.n_fft, cfg.hop_length) for n in range(n_rows)]  # views
        out = torch.empty(n_rows, cfg.n_mels, n_frames, dtype=torch.float32)
        starts = range(0, n_frames, step)
        peaks = torch.empty(n_rows, len(starts), dtype=torch.float32)
        inference, amin = torch.is_inference_mode_enabled(), float(cfg.amin)

        def work(unit: tuple[int, int]) -> None:
            n, j = unit
            i = starts[j]
            k = min(step, n_frames - i)
            with torch.inference_mode(inference), torch.no_grad():  # both modes are per thread
                wbuf, pbuf = _workspace(step, cfg.n_fft)
                w, p = wbuf[:k], pbuf[:k]
                torch.mul(frames[n][i : i + k], window, out=w)
                ri = torch.view_as_real(torch.fft.rfft(w)).square_()  # (rfft's out= only adds a copy)
                torch.add(ri[..., 0], ri[..., 1], out=p)  # [k, F] power
                dst = out[n, :, i : i + k]
                for m0, m1, f0, f1, weights in bands:
                    torch.mm(weights, p[:, f0:f1].T, out=dst[m0:m1])
                dst.clamp_(min=amin).log10_().mul_(10.0)
                torch.amax(dst, dim=(0, 1), out=peaks[n, j])

        units = [(n, j) for n in range(n_rows) for j in range(len(starts))]
        if threads <= 1 or len(units) == 1:
            for unit in units:
                work(unit)
        else:
            list(_thread_pool(threads).map(work, units))
        self._apply_top_db(out, peaks.amax(dim=1), per_item)
        return out

    def _pad(self, flat: torch.Tensor) -> torch.Tensor:
        """``[N, T] -> [N, T + n_fft]``: ``n_fft // 2`` samples each side, reflected or zero (as
        ``np.pad``/``torch.stft`` do; written directly: torch's reflection_pad1d kernel is slow)."""
        half, n = self.cfg.n_fft // 2, flat.shape[-1]
        padded = flat.new_empty(flat.shape[0], n + 2 * half)
        padded[:, half : half + n] = flat
        if self.cfg.pad_mode == "reflect":
            padded[:, :half] = flat[:, 1 : half + 1].flip(-1)
            padded[:, half + n :] = flat[:, n - half - 1 : n - 1].flip(-1)
        else:
            padded[:, :half] = 0.0
            padded[:, half + n :] = 0.0
        return padded

    def _mel_power_vectorised(self, flat: torch.Tensor) -> torch.Tensor:
        """``[N, T] -> [N, n_mels, frames]`` mel power with one ``torch.stft`` call (GPU path)."""
        fb, window = self.mel_fb, self.window
        if window.device != flat.device:  # device follows the input
            fb, window = fb.to(flat.device), window.to(flat.device)
        spec = torch.stft(
            flat, self.cfg.n_fft, self.cfg.hop_length, window=window, center=True,
            pad_mode=self.cfg.pad_mode, return_complex=True,
        )  # [N, F, frames]
        return torch.matmul(fb, torch.view_as_real(spec).square().sum(dim=-1))

    def _power_to_db(self, power: torch.Tensor) -> torch.Tensor:
        """``10 log10(max(power, amin))`` in place."""
        return power.clamp_(min=self.cfg.amin).log10_().mul_(10.0)

    def _apply_top_db(self, db: torch.Tensor, row_peaks: torch.Tensor, per_item: int) -> None:
        """Floor ``db: [N, M, frames]`` at ``max - top_db`` per item of ``per_item`` rows, in place."""
        if self.cfg.top_db is None:
            return
        floor = row_peaks.reshape(-1, per_item).amax(dim=1) - float(self.cfg.top_db)  # [items]
        grouped = db.reshape(floor.shape[0], -1)
        torch.maximum(grouped, floor[:, None], out=grouped)


def _band_groups(fb: np.ndarray, group: int = 16) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """Cut ``fb: [M, F]`` into runs of ``group`` bands: ``(m0, m1, f0, f1, fb[m0:m1, f0:f1])``.

    ``f0:f1`` is the smallest FFT-bin range holding every nonzero weight of the run (an all-zero
    run keeps one zero column), so ``fb @ p == concat(w @ p[f0:f1])`` with the zeros skipped.
    """
    out = []
    for m0 in range(0, fb.shape[0], group):
        m1 = min(m0 + group, fb.shape[0])
        cols = np.flatnonzero(np.any(fb[m0:m1] != 0, axis=0))
        f0, f1 = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 1)
        out.append((m0, m1, f0, f1, torch.from_numpy(np.ascontiguousarray(fb[m0:m1, f0:f1]))))
    return out


_TLS = threading.local()


def _workspace(rows: int, n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This thread's reusable CPU buffers, kept between calls: windowed frames ``[rows, n_fft]``
    and power ``[rows, n_fft // 2 + 1]``, float32."""
    ws = getattr(_TLS, "ws", None)
    if ws is None or ws[0] != (rows, n_fft):
        with torch.inference_mode(False):  # normal tensors: usable in and out of inference mode
            ws = ((rows, n_fft), torch.empty(rows, n_fft), torch.empty(rows, n_fft // 2 + 1))
        _TLS.ws = ws
    return ws[1], ws[2]


_POOL_LOCK = threading.Lock()
_POOL: dict[str, Any] = {}


def _thread_pool(n: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``n`` threads for LogMel (re-made after a fork or a new size)."""
    if _POOL.get("key") != (os.getpid(), n):
        _POOL["key"], _POOL["pool"] = (os.getpid(), n), ThreadPoolExecutor(n, thread_name_prefix="logmel")
    return _POOL["pool"]


@contextlib.contextmanager
def _torch_single_threaded() -> Iterator[int]:
    """Run torch on one thread inside (restored after); yields the thread count to use instead."""
    threads = torch.get_num_threads()
    if threads <= 1:
        yield 1
        return
    with _POOL_LOCK:
        torch.set_num_threads(1)
        try:
            yield threads
        finally:
            torch.set_num_threads(threads)


def _items_in(wave: torch.Tensor) -> int:
    """Rows (channels) that form one clip for ``top_db``: C for [B, C, T] and [C, T], 1 for [T]."""
    return 1 if wave.dim() == 1 else wave.shape[-2]


# --- normalisation ---------------------------------------------------------------------------


@dataclass
class NormStats:
    """Per-band mean/std of log-mel features (dB), computed on the training split only.

    ``mean``/``std``: ``[n_mels]`` float32; ``count``: frames they were computed from.
    """

    mean: np.ndarray
    std: np.ndarray
    count: int = 0

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float32).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise ConfigError(f"NormStats mean {self.mean.shape} and std {self.std.shape} differ in shape")
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.std)) and np.all(self.std > 0)):
            raise ConfigError("NormStats must have finite mean and positive finite std")

    @property
    def n_mels(self) -> int:
        return int(self.mean.shape[0])

    def apply(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """``(x - mean) / std`` per band for ``x: [..., n_mels, frames]`` (numpy or torch, any device)."""
        if x.shape[-2] != self.n_mels:
            raise ValueError(f"expected [..., {self.n_mels}, frames], got shape {tuple(x.shape)}")
        if isinstance(x, torch.Tensor):
            mean = torch.as_tensor(self.mean, device=x.device, dtype=x.dtype)[:, None]
            std = torch.as_tensor(self.std, device=x.device, dtype=x.dtype)[:, None]
            return (x - mean) / std
        x = np.asarray(x, dtype=np.float32)
        return (x - self.mean[:, None]) / self.std[:, None]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "count": int(self.count)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NormStats:
        try:
            return cls(mean=np.asarray(d["mean"]), std=np.asarray(d["std"]), count=int(d.get("count", 0)))
        except KeyError as exc:
            raise ConfigError(f"normalisation statistics lack {exc}; expected keys mean, std, count") from None


def compute_norm_stats(arrays: Iterable[np.ndarray], min_std: float = 1e-3) -> NormStats:
    """Streaming per-band mean/std over ``[n_mels, frames]`` arrays (e.g. cache memmaps).

    One array is in memory at a time (as float64); per-array moments are merged with Chan's
    parallel formula, so the result equals the statistics of all frames concatenated.
    """
    count = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    for arr in arrays:
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] == 0:
            if a.ndim == 2:
                continue
            raise ValueError(f"expected [n_mels, frames] arrays, got shape {a.shape}")
        n_b = a.shape[1]
        mean_b = a.mean(axis=1)
        m2_b = ((a - mean_b[:, None]) ** 2).sum(axis=1)
        if mean is None:
            count, mean, m2 = n_b, mean_b, m2_b
            continue
        if mean_b.shape != mean.shape:
            raise ValueError(f"arrays disagree on n_mels: {mean.shape[0]} vs {mean_b.shape[0]}")
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta**2 * (count * n_b / total)
        count = total
    if mean is None or m2 is None or count == 0:
        raise ValueError("no frames to compute normalisation statistics from (empty training set?)")
    std = np.sqrt(m2 / count)
    return NormStats(mean=mean, std=np.maximum(std, min_std), count=count)


def frames_to_seconds(frames: float, cfg: FeatureConfig) -> float:
    """Start time in seconds of frame index ``frames`` (centred frames: frame i is at i*hop/sr)."""
    return float(frames) * cfg.hop_length / cfg.sample_rate


def seconds_to_frames(seconds: float, cfg: FeatureConfig) -> int:
    """Nearest frame index for ``seconds``."""
    return int(math.floor(seconds * cfg.frames_per_second + 0.5))
