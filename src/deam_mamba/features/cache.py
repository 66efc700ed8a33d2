"""Feature cache: its layout, and :class:`FeatureCache`, the fast read-only view training and evaluation use.

It is built by :func:`deam_mamba.features.prepare.build_cache` (``deam-mamba prepare``).

Layout (``cache_dir`` may hold several settings side by side)::

    cache_dir/
      deam_mamba_cache.json          marker: this folder is a deam-mamba feature cache
      <cfg.key()>/                   one folder per FeatureConfig (changed settings -> new folder)
        index.json                   settings, and per song: array file, frames, sha1 of the array,
                                     audio fingerprint, static labels (1-9), dynamic labels ([-1, 1])
        features/<song_id>.npy       float16 [n_mels, frames] log-mel dB, memory-mapped on read
        skipped.json, skipped.csv    songs that could not be decoded, with the reason
        norm/<hash>.json             NormStats per training-id set (see FeatureCache.norm_stats)

Every file is written atomically (array first, index after), and the index is saved every few
seconds and on any exit, so an interrupted ``prepare`` leaves a usable cache; a re-run reuses
every song whose audio fingerprint and array checksum still match and processes only the rest. The audio
fingerprint is size, mtime and a hash of the first and last 64 KiB, plus the whole file's sha1: a file with new
timestamps but the same bytes (a dataset copied or restored without them) is reused, not recomputed.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from deam_mamba.config import FeatureConfig
from deam_mamba.core.errors import CacheError, DeamError, LabelError, UnknownSongError
from deam_mamba.core.io import atomic_write_json
from deam_mamba.core.scales import STATIC, LabelKind, Scale, parse_scale, quadrant_of
from deam_mamba.features.logmel import NormStats, compute_norm_stats

log = logging.getLogger(__name__)

CACHE_VERSION = 1
MARKER = "deam_mamba_cache.json"
INDEX = "index.json"
SAVE_EVERY_S = 5.0


def file_sha1(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()



def resolve_key_dir(cache_dir: str | Path, cfg: FeatureConfig | None = None) -> Path:
    """The folder holding ``index.json``: ``cache_dir`` itself, ``cache_dir/<cfg.key()>``, or the only key."""
    cache_dir = Path(cache_dir).expanduser()
    if (cache_dir / INDEX).exists():
        return cache_dir
    if not cache_dir.is_dir():
        raise CacheError(f"no feature cache at {cache_dir}; build it with `deam-mamba prepare --cache {cache_dir}`")
    keys = sorted(p.name for p in cache_dir.iterdir() if (p / INDEX).exists())
    if cfg is not None:
        if cfg.key() not in keys:
            raise CacheError(f"{cache_dir} has no features for these settings (key {cfg.key()}; it has {keys}); "
                             "run `deam-mamba prepare` with the same feature settings")
        return cache_dir / cfg.key()
    if len(keys) == 1:
        return cache_dir / keys[0]
    if not keys:
        raise CacheError(f"{cache_dir} holds no built features; run `deam-mamba prepare --cache {cache_dir}`")
    raise CacheError(f"{cache_dir} holds features for several settings {keys}: pass the FeatureConfig "
                     "(or the key folder) to choose one")


class FeatureCache:
    """Read-only view of one built cache key: features (memmaps) and labels, no audio needed.

    ``ids``: sorted song ids with features. ``features(id)``: ``[n_mels, frames]`` float16 memmap.
    Truncated arrays are detected on load (size check), any corruption by :meth:`verify`.
    """

    def __init__(self, cache_dir: str | Path, cfg: FeatureConfig | None = None, max_open: int = 256):
        self.root = resolve_key_dir(cache_dir, cfg)
        try:
            self.index = json.loads((self.root / INDEX).read_text())
        except (OSError, ValueError) as exc:
            raise CacheError(f"cannot read {self.root / INDEX} ({exc}); run `deam-mamba prepare` again") from None
        self.feature_config = FeatureConfig.from_dict(self.index["feature_config"])
        self.key: str = self.index["key"]
        self._songs: dict[int, dict[str, Any]] = {int(k): v for k, v in self.index["songs"].items()}
        self.ids: list[int] = sorted(self._songs)
        self.skipped: list[dict[str, Any]] = self.index.get("skipped", [])
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        self._max_open = int(max_open)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, song_id: object) -> bool:
        return isinstance(song_id, (int, np.integer)) and int(song_id) in self._songs

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r}, songs={len(self.ids)}, skipped={len(self.skipped)})"

    @property
    def frames_per_second(self) -> float:
        return self.feature_config.frames_per_second

    def _entry(self, song_id: int) -> dict[str, Any]:
        try:
            return self._songs[int(song_id)]
        except KeyError:
            why = [s["reason"] for s in self.skipped if int(s["song_id"]) == int(song_id)]
            extra = f" (skipped at prepare: {why[0]})" if why else ""
            raise UnknownSongError(f"song {song_id} is not in the feature cache {self.root}{extra}") from None

    def n_frames(self, song_id: int) -> int:
        return int(self._entry(song_id)["frames"])

    def duration_s(self, song_id: int) -> float:
        return float(self._entry(song_id)["duration_s"])

    def features(self, song_id: int, verify: bool = False) -> np.ndarray:
        """``[n_mels, frames]`` float16 log-mel dB (read-only memmap); ``verify`` checks the sha1."""
        sid = int(song_id)
        if sid in self._open and not verify:
            self._open.move_to_end(sid)
            return self._open[sid]
        entry = self._entry(sid)
        path = self.root / entry["file"]
        fix = "run `deam-mamba prepare` again to rebuild it"
        try:
            size = path.stat().st_size
        except OSError:
            raise CacheError(f"cached features {path} are missing; {fix}") from None
        if size != entry["bytes"] or (verify and file_sha1(path) != entry["sha1"]):
            raise CacheError(f"cached features {path} are corrupt or truncated (checksum mismatch); {fix}")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CacheError(f"cached features {path} cannot be read ({exc}); {fix}") from None
        if arr.shape != (entry["n_mels"], entry["frames"]):
            raise CacheError(f"cached features {path} have shape {arr.shape}, index says "
                             f"{(entry['n_mels'], entry['frames'])}; {fix}")
        self._open[sid] = arr
        if len(self._open) > self._max_open:
            self._open.popitem(last=False)
        return arr

    @property
    def label_kind(self) -> LabelKind:
        """``static`` (continuous valence/arousal per song) or ``quadrant`` (one quadrant per song)."""
        return LabelKind(self.index.get("label_kind", "static"))

    @property
    def label_scale(self) -> Scale | None:
        """The scale of the static labels (None for quadrant-only datasets; caches before it was recorded
        hold DEAM, 1-9)."""
        name = self.index.get("label_scale", STATIC.name)
        return parse_scale(name) if name is not None else None

    def static_label(self, song_id: int) -> dict[str, float]:
        """``{valence_mean, arousal_mean, ...}`` on :attr:`label_scale`; :class:`LabelError` for a song of a
        quadrant-only dataset."""
        static = self._entry(song_id)["static"]
        if static is None:
            raise LabelError(f"song {song_id} of {self.root} has a quadrant label only (no valence/arousal "
                             "values): train it with mode=quadrant")
        return dict(static)

    def quadrant(self, song_id: int) -> int:
        """The song's Russell quadrant 1..4 (stored; for caches before it was, from the static labels)."""
        entry = self._entry(song_id)
        if entry.get("quadrant") is not None:
            return int(entry["quadrant"])
        lab = self.static_label(song_id)
        return int(quadrant_of(lab["valence_mean"], lab["arousal_mean"], self.label_scale))

    def dynamic_labels(self, song_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(times_s [K] float64, valence [K] float32, arousal [K] float32)`` on [-1, 1] (K may be 0)."""
        d = self._entry(song_id)["dynamic"]
        return (np.asarray(d["times_s"], np.float64), np.asarray(d["valence"], np.float32),
                np.asarray(d["arousal"], np.float32))

    def verify(self, ids: Iterable[int] | None = None) -> list[int]:
        """Ids whose arrays are missing, truncated or fail their sha1 (empty list: all good)."""
        bad = []
        for sid in self.ids if ids is None else ids:
            try:
                self.features(sid, verify=True)
            except CacheError:
                bad.append(int(sid))
        return bad

    def norm_stats(self, train_ids: Iterable[int], progress: bool = False) -> NormStats:
        """Per-band mean/std over the given (training) songs, streamed one song at a time.

        Stored in ``norm/<hash>.json``, keyed by the id set and the arrays' checksums, so a second
        call (or another run) reads them instead of recomputing.
        """
        ids = sorted({int(i) for i in train_ids})
        if not ids:
            raise ValueError("norm_stats needs at least one training song id")
        h = hashlib.sha1(json.dumps([[i, self._entry(i)["sha1"]] for i in ids]).encode()).hexdigest()[:16]
        path = self.root / "norm" / f"{h}.json"
        if path.exists():
            try:
                return NormStats.from_dict(json.loads(path.read_text())["stats"])
            except (OSError, ValueError, KeyError, DeamError) as exc:
                log.warning("ignoring unreadable %s (%s): recomputing", path, exc)

        stats = compute_norm_stats(self.features(i) for i in tqdm(ids, desc="norm stats", disable=not progress))
        try:
            atomic_write_json(path, {"ids": ids, "stats": stats.to_dict()})
        except OSError as exc:  # a read-only cache still works, it just recomputes next time
            log.warning("could not store normalisation statistics in %s: %s", path, exc)
        return stats
