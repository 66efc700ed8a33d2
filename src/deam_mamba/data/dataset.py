"""``WaveDataset``: decoded waveforms + static (valence, arousal) labels on the 1–9 scale.

Lengths: by default every item is cropped/zero-padded to ``max_seconds=45.0`` (DEAM excerpts
last 44.6–45.6 s), so the default collate of ``DataLoader(ds, batch_size=4)`` works — this is
what the quick-start uses. With ``max_seconds=None`` items keep their full length; batch them
with ``collate_fn=pad_collate`` (pads to the longest, optionally returns lengths).
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from deam_mamba.core.errors import ConfigError, UnknownSongError
from deam_mamba.data.deam import DEAMHandler

log = logging.getLogger(__name__)

Offset = Literal["start", "center", "random"]
DEFAULT_MAX_SECONDS = 45.0
PREFIX_MARGIN_S = 0.25  # decoded past a "start" crop so resampling sees the same neighbourhood


class WaveDataset(Dataset):
    """Items ``(wave [C, T] float32, tensor([valence_mean, arousal_mean]) float32)``, labels on 1–9.

    ``ids`` unknown to the handler (DEAM has gaps such as 23, 26, 27) are dropped with a
    ``UserWarning`` that names them; ``strict=True`` raises :class:`UnknownSongError` instead.
    ``max_seconds``: crop/pad to ``round(max_seconds * target_sr)`` samples (``None``: full
    length). ``offset``: where the crop starts ("start", "center", or "random" via torch's RNG,
    so ``seed_everything`` and DataLoader worker seeding apply).
    """

    def __init__(self, handler: DEAMHandler, ids: Iterable[int] | None = None, target_sr: int = 16_000,
                 mono: bool = True, max_seconds: float | None = DEFAULT_MAX_SECONDS,
                 offset: Offset = "start", strict: bool = False):
        if offset not in ("start", "center", "random"):
            raise ConfigError(f"offset must be 'start', 'center' or 'random', got {offset!r}")
        if max_seconds is not None and not max_seconds > 0:
            raise ConfigError(f"max_seconds must be > 0 or None, got {max_seconds}")
        if target_sr is None or int(target_sr) <= 0:
            raise ConfigError(f"target_sr must be a positive sample rate in Hz, got {target_sr}")
        self.handler = handler
        self.target_sr = int(target_sr)
        self.mono = mono
        self.max_seconds = max_seconds
        self.offset = offset
        requested = list(handler.ids) if ids is None else song_ids(ids)
        known = set(handler.ids)
        unknown = [int(i) for i in requested if int(i) not in known]
        if unknown:
            if strict:
                handler.static_labels(unknown[0])  # raises UnknownSongError with the reason
            warnings.warn(f"WaveDataset: skipping {len(unknown)} song id(s) not in this DEAM copy: {unknown} "
                          f"(DEAM ids have gaps; pass strict=True to raise instead)", UserWarning, stacklevel=2)
        self.ids: list[int] = [int(i) for i in requested if int(i) in known]
        if not self.ids:
            raise UnknownSongError(f"WaveDataset: none of the {len(requested)} requested song ids exist in "
                                   f"DEAM at {handler.root} (requested {requested[:10]}"
                                   f"{'...' if len(requested) > 10 else ''}; available e.g. {handler.ids[:5]})")
        labels = [handler.static_labels(i) for i in self.ids]
        self._labels = torch.tensor([[lab["valence_mean"], lab["arousal_mean"]] for lab in labels],
                                    dtype=torch.float32)  # [N, 2] on the static 1-9 scale

    @property
    def num_samples(self) -> int | None:
        """Samples per item when ``max_seconds`` is set, else ``None``."""
        return None if self.max_seconds is None else int(round(self.max_seconds * self.target_sr))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # "start" crops need only the first max_seconds (+ a margin for the resampling filter):
        # long 2015 songs then decode in a fraction of the time, with the same samples.
        duration = self.max_seconds + PREFIX_MARGIN_S if self.offset == "start" and self.max_seconds else None
        wave = self.handler.load_wave(self.ids[index], target_sr=self.target_sr, mono=self.mono, duration=duration)
        if self.num_samples is not None:
            wave = fit_length(wave, self.num_samples, self.offset)
        return torch.from_numpy(wave), self._labels[index].clone()


def song_ids(ids: Iterable[int]) -> list[int]:
    """``ids`` as a list of Python ints; :class:`ConfigError` naming the first value that is not an integer
    (``4.7``, ``None``, ``"12"``, ``True``). Python and NumPy integers (and integer 0-d arrays/tensors) are fine."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise ConfigError(f"WaveDataset: ids must be a list of integer song ids (or None for all), got {ids!r}")
    out = []
    for pos, i in enumerate(ids):
        if isinstance(i, torch.Tensor) and i.ndim == 0 and not (i.dtype.is_floating_point or i.dtype.is_complex):
            i = i.item()
        elif isinstance(i, np.ndarray) and i.ndim == 0:
            i = i[()]
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise ConfigError(f"WaveDataset: song id {i!r} (position {pos}, type {type(i).__name__}) is not an "
                              "integer; pass integer DEAM song ids such as 2, 3, 2001")
        out.append(int(i))
    return out


def fit_length(wave: np.ndarray, n: int, offset: Offset = "start") -> np.ndarray:
    """Crop (at ``offset``) or zero-pad at the end ``wave [C, T]`` to ``[C, n]``."""
    c, t = wave.shape
    if t >= n:
        if offset == "start" or t == n:
            start = 0
        elif offset == "center":
            start = (t - n) // 2
        else:
            start = int(torch.randint(0, t - n + 1, (1,)).item())
        return np.ascontiguousarray(wave[:, start:start + n])
    out = np.zeros((c, n), dtype=wave.dtype)
    out[:, :t] = wave
    return out


def pad_collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor]], return_lengths: bool = False):
    """Zero-pad waves to the longest: ``(waves [B, C, T_max], y [B, 2])`` (+ ``lengths [B]`` int64 if asked).

    Use ``functools.partial(pad_collate, return_lengths=True)`` to get the lengths from a DataLoader.
    """
    waves, ys = zip(*batch)
    lengths = torch.tensor([w.shape[-1] for w in waves], dtype=torch.int64)
    out = torch.zeros((len(waves), waves[0].shape[0], int(lengths.max())), dtype=waves[0].dtype)
    for i, w in enumerate(waves):
        out[i, :, : w.shape[-1]] = w
    y = torch.stack(list(ys))
    return (out, y, lengths) if return_lengths else (out, y)
