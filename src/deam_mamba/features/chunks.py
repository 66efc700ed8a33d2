"""Fixed-length log-mel chunks from the feature cache, with static and 2 Hz dynamic labels.

A song's cached log-mel ``[n_mels, F]`` (100 frames/s by default) is cut into chunks of
``chunk_seconds`` every ``hop_seconds``, plus one final chunk flush with the song's end (its start
rounded down to the 0.5 s annotation grid) so the tail is not lost. A song shorter than one chunk
gives one chunk, padded on the right (``valid_frames`` and ``y_dyn_mask`` say where). Chunk slot
``k`` of the dynamic labels is the time ``start_s + k / 2`` s (``K = 2 * chunk_seconds`` slots),
the convention :mod:`deam_mamba.inference.predictor` uses to put predictions back on the song's timeline.

Items (dicts, default ``collate`` stacks them):
  ``x``: ``[1, n_mels, chunk_frames]`` float32 (dB, or normalised when ``norm`` is given);
  ``y``: ``[2]`` float32 static (valence_mean, arousal_mean) on the dataset's label scale (1-9 for DEAM;
  zeros for a quadrant-only dataset);
  ``y_quad``: int64 Russell quadrant 1..4 of the song;
  ``y_dyn``: ``[K, 2]`` float32 (valence, arousal) on **[-1, 1]** at the slot times (0 where masked);
  ``y_dyn_mask``: ``[K]`` bool, False where there is no annotation (first 15 s, past the end);
  ``song_id``: int; ``start_s``: float seconds; ``valid_frames``: int frames of real audio.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from deam_mamba.core.errors import ConfigError, UnknownSongError
from deam_mamba.core.scales import LabelKind
from deam_mamba.features.logmel import NormStats

ANNOTATION_HZ = 2.0  # DEAM's dynamic annotations: one value every 0.5 s


def chunk_starts(n_frames: int, chunk_frames: int, hop_frames: int, align_frames: int = 1) -> list[int]:
    """Start frames: every ``hop_frames`` while a full chunk fits, then one chunk flush with the end
    (start rounded down to a multiple of ``align_frames``) if the tail is not yet covered.
    A song of at most one chunk gives ``[0]``."""
    if n_frames <= chunk_frames:
        return [0]
    starts = list(range(0, n_frames - chunk_frames + 1, hop_frames))
    last = (n_frames - chunk_frames) // align_frames * align_frames
    if last > starts[-1]:
        starts.append(last)
    return starts


def make_chunks(feats: torch.Tensor, chunk_frames: int, hop_frames: int, pad_value: float = 0.0,
                align_frames: int = 1) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Cut ``feats [n_mels, F]`` into ``[N, 1, n_mels, chunk_frames]``.

    Returns ``(chunks, start_frames [N], valid_frames [N])``; a song shorter than one chunk is padded
    on the right with ``pad_value`` (0 = the training mean once normalised).
    """
    starts, valid = chunk_layout(int(feats.shape[-1]), chunk_frames, hop_frames, align_frames)
    return slice_chunks(feats, starts, chunk_frames, pad_value), starts, valid


def chunk_layout(n_frames: int, chunk_frames: int, hop_frames: int, align_frames: int = 1
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(start_frames [N], valid_frames [N])`` of the chunks of a song of ``n_frames`` frames."""
    if chunk_frames <= 0 or hop_frames <= 0 or align_frames <= 0:
        raise ValueError(f"chunk_frames ({chunk_frames}), hop_frames ({hop_frames}) and align_frames "
                         f"({align_frames}) must be > 0")
    starts = np.asarray(chunk_starts(n_frames, chunk_frames, hop_frames, align_frames), dtype=np.int64)
    return starts, np.minimum(n_frames - starts, chunk_frames)


def slice_chunks(feats: torch.Tensor, starts: np.ndarray, chunk_frames: int, pad_value: float = 0.0
                 ) -> torch.Tensor:
    """``feats [n_mels, F]`` -> ``[len(starts), 1, n_mels, chunk_frames]`` (right-padded if F is short)."""
    n_mels, n_frames = feats.shape
    if n_frames < chunk_frames:
        padded = feats.new_full((n_mels, chunk_frames), pad_value)
        padded[:, :n_frames] = feats
        feats = padded
    idx = torch.as_tensor(np.asarray(starts, dtype=np.int64))[:, None] + torch.arange(chunk_frames)[None, :]
    return feats[:, idx].permute(1, 0, 2).unsqueeze(1).contiguous()



@dataclass
class Augment:
    """Training augmentations on a log-mel chunk, applied only when a dataset is given one.

    ``gain_db``: add U(-gain_db, gain_db) dB to the whole chunk (a loudness change; before
    normalisation). ``time_masks`` x up to ``time_mask_frames`` frames and ``freq_masks`` x up to
    ``freq_mask_bins`` bands are set to the fill value (0 = the training mean after normalisation,
    else the chunk's mean), SpecAugment-style. ``p``: probability each kind is applied.
    """

    gain_db: float = 6.0
    time_masks: int = 2
    time_mask_frames: int = 40
    freq_masks: int = 2
    freq_mask_bins: int = 16
    p: float = 0.8

    def __post_init__(self) -> None:
        if self.gain_db < 0 or self.time_masks < 0 or self.freq_masks < 0 or not 0 <= self.p <= 1:
            raise ConfigError(f"invalid Augment settings: {self}")
        if self.time_mask_frames < 0 or self.freq_mask_bins < 0:
            raise ConfigError(f"invalid Augment mask sizes: {self}")

    def gain(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``x [n_mels, frames]`` dB -> shifted by one random gain (in place)."""
        if self.gain_db > 0 and rng.random() < self.p:
            x += np.float32(rng.uniform(-self.gain_db, self.gain_db))
        return x

    def mask(self, x: np.ndarray, rng: np.random.Generator, fill: float, valid_frames: int) -> np.ndarray:
        """Time and frequency masks on ``x [n_mels, frames]`` (in place), times within ``valid_frames``."""
        n_mels, _ = x.shape
        if self.time_masks and self.time_mask_frames and rng.random() < self.p:
            for _ in range(self.time_masks):
                w = int(rng.integers(0, min(self.time_mask_frames, valid_frames) + 1))
                t0 = int(rng.integers(0, max(valid_frames - w, 0) + 1))
                x[:, t0 : t0 + w] = fill
        if self.freq_masks and self.freq_mask_bins and rng.random() < self.p:
            for _ in range(self.freq_masks):
                w = int(rng.integers(0, min(self.freq_mask_bins, n_mels) + 1))
                f0 = int(rng.integers(0, n_mels - w + 1))
                x[f0 : f0 + w, :] = fill
        return x


class ChunkDataset(Dataset):
    """Chunks of cached songs (see the module docstring for the item layout).

    ``cache``: a :class:`~deam_mamba.features.cache.FeatureCache` (or anything with ``features``,
    ``static_label``, ``dynamic_labels``, ``frames_per_second``). ``chunk_seconds``: 3..10, a multiple
    of 0.5. ``hop_seconds``: None = ``chunk_seconds``. ``norm``: training statistics applied to ``x``.
    ``augment``: an :class:`Augment`, or None. ``random_offset``: shift each chunk by a random
    multiple of 0.5 s in ``[0, hop)`` (kept inside the song), new every epoch (:meth:`set_epoch`).
    Randomness is seeded by ``(seed, epoch, index)``, so it does not depend on DataLoader workers.
    """

    def __init__(self, cache: Any, ids: Sequence[int], chunk_seconds: float = 5.0, hop_seconds: float | None = None,
                 norm: NormStats | None = None, augment: Augment | None = None, random_offset: bool = False,
                 seed: int = 0):
        chunk_seconds = float(chunk_seconds)
        if not 3.0 <= chunk_seconds <= 10.0 or not float(chunk_seconds * ANNOTATION_HZ).is_integer():
            raise ConfigError(f"chunk_seconds must be within 3..10 s and a multiple of 0.5 s, got {chunk_seconds}")
        hop = chunk_seconds if hop_seconds is None else float(hop_seconds)
        if not hop > 0:
            raise ConfigError(f"hop_seconds must be > 0 (or None = chunk_seconds), got {hop_seconds}")
        missing = [int(i) for i in ids if int(i) not in cache]
        if missing:
            raise UnknownSongError(f"{len(missing)} song id(s) are not in the feature cache: {missing[:10]}"
                                   f"{' ...' if len(missing) > 10 else ''}")
        self.cache, self.norm, self.augment = cache, norm, augment
        self.random_offset, self.seed, self.epoch = bool(random_offset), int(seed), 0
        self.fps = float(cache.frames_per_second)
        self.chunk_seconds, self.hop_seconds = chunk_seconds, hop
        self.chunk_frames = int(round(chunk_seconds * self.fps))
        self.hop_frames = max(1, int(round(hop * self.fps)))
        self.grid_frames = self.fps / ANNOTATION_HZ  # frames per 0.5 s (50.0 at 100 frames/s)
        self.align_frames = max(1, int(round(self.grid_frames)))
        self.k = int(chunk_seconds * ANNOTATION_HZ)
        self.ids = [int(i) for i in ids]
        self._n_frames: dict[int, int] = {}
        self._static: dict[int, np.ndarray] = {}
        self._quadrant: dict[int, int] = {}
        self._dyn: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._items: list[tuple[int, int]] = []  # (song_id, start_frame)
        self.song_index: dict[int, list[int]] = {}
        for sid in self.ids:
            n = int(cache.n_frames(sid) if hasattr(cache, "n_frames") else cache.features(sid).shape[1])
            self._n_frames[sid] = n
            if cache.label_kind == LabelKind.STATIC:
                lab = cache.static_label(sid)
                self._static[sid] = np.array([lab["valence_mean"], lab["arousal_mean"]], dtype=np.float32)
            else:  # quadrant-only labels: no values to regress (mode=quadrant trains on y_quad)
                self._static[sid] = np.zeros(2, dtype=np.float32)
            self._quadrant[sid] = int(cache.quadrant(sid))
            times, val, aro = cache.dynamic_labels(sid)
            self._dyn[sid] = (np.asarray(times, np.float64), np.stack([val, aro], axis=1).astype(np.float32))
            first = len(self._items)
            self._items += [(sid, s) for s in chunk_starts(n, self.chunk_frames, self.hop_frames, self.align_frames)]
            self.song_index[sid] = list(range(first, len(self._items)))

    def __len__(self) -> int:
        return len(self._items)

    def set_epoch(self, epoch: int) -> None:
        """Call once per epoch (before iterating) to draw new random offsets/augmentations."""
        self.epoch = int(epoch)

    def song_chunks(self, song_id: int) -> list[int]:
        """Indices of one song's chunks (in time order), for song-level pooling."""
        try:
            return self.song_index[int(song_id)]
        except KeyError:
            raise UnknownSongError(f"song {song_id} is not in this chunk dataset") from None

    def chunk_info(self, index: int) -> tuple[int, float]:
        """``(song_id, start_s)`` of chunk ``index`` without loading it (no random offset)."""
        sid, start = self._items[index]
        return sid, start / self.fps

    def dynamic_targets(self, song_id: int, start_s: float) -> tuple[np.ndarray, np.ndarray]:
        """``(y_dyn [K, 2] float32 on [-1, 1], mask [K] bool)`` at the slot times ``start_s + k/2``.

        Values are the annotations at those times (interpolated between neighbours if a start is off
        the 0.5 s grid); a slot before the first or after the last annotation is masked.
        """
        times, va = self._dyn[int(song_id)]
        slot_t = start_s + np.arange(self.k) / ANNOTATION_HZ
        y = np.zeros((self.k, 2), np.float32)
        if times.size == 0:
            return y, np.zeros(self.k, bool)
        mask = (slot_t >= times[0] - 1e-6) & (slot_t <= times[-1] + 1e-6)
        if mask.any():
            for d in range(2):
                y[mask, d] = np.interp(slot_t[mask], times, va[:, d])
        return y, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        sid, start = self._items[index]
        n = self._n_frames[sid]
        rng = np.random.default_rng((self.seed, self.epoch, index)) if (self.augment or self.random_offset) else None
        if self.random_offset and rng is not None and n > self.chunk_frames:
            steps = int(rng.integers(0, max(1, math.ceil(self.hop_frames / self.align_frames))))
            last = (n - self.chunk_frames) // self.align_frames * self.align_frames
            start = max(start, min(start + steps * self.align_frames, last))
        feats = self.cache.features(sid)
        seg = np.array(feats[:, start : start + self.chunk_frames], dtype=np.float32)  # [n_mels, <=chunk]
        valid = seg.shape[1]
        if self.augment is not None:
            self.augment.gain(seg, rng)
        if self.norm is not None:
            seg = self.norm.apply(seg)
            fill = 0.0
        else:
            fill = float(seg.mean()) if valid else 0.0
        if valid < self.chunk_frames:  # short song: pad with the fill value (0 = training mean)
            padded = np.full((seg.shape[0], self.chunk_frames), fill, np.float32)
            padded[:, :valid] = seg
            seg = padded
        if self.augment is not None:
            self.augment.mask(seg, rng, fill, valid)
        start_s = start / self.fps
        y_dyn, mask = self.dynamic_targets(sid, start_s)
        return {"x": torch.from_numpy(np.ascontiguousarray(seg))[None], "y": torch.from_numpy(self._static[sid]),
                "y_quad": torch.tensor(self._quadrant[sid], dtype=torch.int64),
                "y_dyn": torch.from_numpy(y_dyn), "y_dyn_mask": torch.from_numpy(mask), "song_id": sid,
                "start_s": float(start_s), "valid_frames": int(valid)}


class SongBatchSampler(Sampler[list[int]]):
    """Batches of chunk indices, one song per batch (its chunks in time order), for pooled evaluation:
    ``DataLoader(ds, batch_sampler=SongBatchSampler(ds))`` yields every chunk of a song together."""

    def __init__(self, dataset: ChunkDataset, songs: Sequence[int] | None = None):
        self.dataset = dataset
        self.songs = list(dataset.song_index) if songs is None else [int(s) for s in songs]

    def __len__(self) -> int:
        return len(self.songs)

    def __iter__(self) -> Iterator[list[int]]:
        for sid in self.songs:
            yield self.dataset.song_chunks(sid)
