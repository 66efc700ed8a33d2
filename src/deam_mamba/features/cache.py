"""Feature cache: decode + featurise every song once (in worker processes), then read fast.

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
every song whose audio fingerprint and array checksum still match and processes only the rest.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from deam_mamba.config import FeatureConfig
from deam_mamba.core.errors import CacheError, DeamError, LabelError, OutputExistsError, UnknownSongError
from deam_mamba.core.io import atomic_path, atomic_write_json, atomic_write_text
from deam_mamba.core.runtime import release_free_memory
from deam_mamba.core.scales import STATIC, LabelKind, Scale, parse_scale, quadrant_of
from deam_mamba.data.audio import load_audio
from deam_mamba.data.registry import open_dataset
from deam_mamba.features.logmel import LogMel, NormStats, compute_norm_stats, mel_filters

log = logging.getLogger(__name__)

CACHE_VERSION = 1
MARKER = "deam_mamba_cache.json"
INDEX = "index.json"
SAVE_EVERY_S = 5.0
_HASH_EDGE = 1 << 16  # fingerprint hashes the first and last 64 KiB of each audio file


def audio_fingerprint(path: str | Path) -> dict[str, Any]:
    """``{size, mtime_ns, edge_sha1}``: changes when the file is replaced, touched or rewritten."""
    path = Path(path)
    st = path.stat()
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        h.update(fh.read(_HASH_EDGE))
        if st.st_size > _HASH_EDGE:
            fh.seek(max(_HASH_EDGE, st.st_size - _HASH_EDGE))
            h.update(fh.read(_HASH_EDGE))
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns), "edge_sha1": h.hexdigest()}


def file_sha1(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- worker side ------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(cfg_dict: dict[str, Any], threads: int = 1) -> None:
    """Per worker process: one torch thread (workers are the parallelism), one LogMel module."""
    torch.set_num_threads(threads)
    cfg = FeatureConfig.from_dict(cfg_dict)
    _WORKER["cfg"] = cfg
    _WORKER["logmel"] = LogMel(cfg)


def _featurise_job(job: tuple[int, str, str]) -> dict[str, Any]:
    """Decode ``audio`` and write ``[n_mels, frames]`` float16 to ``out`` (atomically).

    Returns ``{song_id, frames, sha1, bytes, duration_s}`` or ``{song_id, error}`` for audio
    that cannot be decoded / is too short. Any other exception propagates (a bug, not bad data).
    """
    song_id, audio, out = job
    cfg: FeatureConfig = _WORKER["cfg"]
    try:
        wave = load_audio(audio, target_sr=cfg.sample_rate, mono=True)  # [1, T]
        with torch.inference_mode():
            db = _WORKER["logmel"](torch.from_numpy(wave[0])).numpy()  # [n_mels, frames]
    except DeamError as exc:
        return {"song_id": song_id, "error": str(exc)}
    except ValueError as exc:  # e.g. shorter than one FFT window
        return {"song_id": song_id, "error": f"cannot featurise {audio}: {exc}"}
    arr = np.ascontiguousarray(db, dtype=np.float16)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    data = buf.getvalue()
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    return {"song_id": song_id, "frames": int(arr.shape[1]), "sha1": hashlib.sha1(data).hexdigest(),
            "bytes": len(data), "duration_s": wave.shape[-1] / cfg.sample_rate}


# --- build ------------------------------------------------------------------------------------


def _prepare_dir(cache_dir: Path, force: bool) -> None:
    marker = cache_dir / MARKER
    if cache_dir.exists() and any(cache_dir.iterdir()) and not marker.exists() and not force:
        raise OutputExistsError(
            f"{cache_dir} exists, is not empty and is not a deam-mamba feature cache (no {MARKER}); "
            "choose another --cache folder, or pass --force to use it anyway"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        atomic_write_json(marker, {"deam_mamba_cache": CACHE_VERSION})


def _load_index(key_dir: Path) -> dict[str, Any]:
    path = key_dir / INDEX
    if not path.exists():
        return {}
    try:
        index = json.loads(path.read_text())
        if index.get("version") != CACHE_VERSION:
            log.warning("%s has cache version %s (want %s): rebuilding", path, index.get("version"), CACHE_VERSION)
            return {}
        return index
    except (OSError, ValueError) as exc:
        log.warning("cache index %s is unreadable (%s): rebuilding every song", path, exc)
        return {}


def _entry_ok(key_dir: Path, entry: dict[str, Any], fp: dict[str, Any], verify: bool) -> str | None:
    """None if ``entry`` can be reused, else why not ('changed' or 'corrupt')."""
    if entry.get("fingerprint") != fp:
        return "changed"
    path = key_dir / entry["file"]
    try:
        if path.stat().st_size != entry["bytes"]:
            return "corrupt"
    except OSError:
        return "corrupt"
    if verify and file_sha1(path) != entry["sha1"]:
        return "corrupt"
    return None


def _labels(handler: Any, sid: int) -> dict[str, Any]:
    """A song's labels as the cache stores them: static values on the dataset's own scale (None for a
    quadrant-only dataset), the quadrant 1..4, dynamic values on [-1, 1]."""
    times, val, aro = handler.dynamic_labels(sid)

    def r(x: Any) -> list[float]:  # float32 labels as short decimals (6 places: exact to < 1e-6)
        return np.round(np.asarray(x, np.float64), 6).tolist()

    static = None
    if handler.label_kind == LabelKind.STATIC:
        static = {k: float(v) for k, v in handler.static_labels(sid).items()}
    return {"static": static, "quadrant": int(handler.quadrant(sid)),
            "dynamic": {"times_s": r(times), "valence": r(val), "arousal": r(aro)}}


def build_cache(
    data_root_or_handler: Any,
    cache_dir: str | Path,
    cfg: FeatureConfig | None = None,
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
    verify: bool = True,
    mp_context: str | None = None,
) -> dict[str, Any]:
    """Featurise every song of a dataset (a root any reader detects, or an opened dataset) into
    ``cache_dir/<cfg.key()>``.

    ``workers``: worker processes (None: CPU count; 0: in this process). ``verify``: check the
    sha1 of every reused array (else only its size). ``force``: recompute every song (and allow
    a non-empty folder that is not a cache). Returns a summary dict (counts, skipped songs with
    reasons, seconds, songs/s). Raises :class:`CacheError` if a worker process dies; everything
    finished before that is kept.
    """
    cfg = cfg or FeatureConfig()
    handler = data_root_or_handler
    if not hasattr(handler, "audio_path"):
        handler = open_dataset(data_root_or_handler)
    cache_dir = Path(cache_dir).expanduser().absolute()
    _prepare_dir(cache_dir, force)
    key_dir = cache_dir / cfg.key()
    (key_dir / "features").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    old = {} if force else _load_index(key_dir)
    old_songs: dict[str, Any] = old.get("songs", {})
    old_skipped = {int(s["song_id"]): s for s in old.get("skipped", [])}

    songs: dict[str, Any] = {}
    skipped: list[dict[str, Any]] = []
    jobs: list[tuple[int, str, str]] = []
    fps: dict[int, dict[str, Any]] = {}
    counts = {"reused": 0, "new": 0, "changed": 0, "corrupt": 0}
    for sid in handler.ids:
        audio = Path(handler.audio_path(sid))
        try:
            fps[sid] = fp = audio_fingerprint(audio)
        except OSError as exc:
            skipped.append({"song_id": sid, "file": str(audio), "reason": f"cannot read audio file: {exc}"})
            continue
        prev = old_songs.get(str(sid))
        why = "new" if prev is None else _entry_ok(key_dir, prev, fp, verify)
        if why is None:
            songs[str(sid)] = {**prev, **_labels(handler, sid)}
            counts["reused"] += 1
        elif why == "new" and sid in old_skipped and old_skipped[sid].get("fingerprint") == fp:
            skipped.append(old_skipped[sid])  # same undecodable file as last time: not retried
        else:
            counts[why] += 1
            if why == "corrupt":
                log.warning("cached features of song %d are corrupt or truncated: rebuilding", sid)
            jobs.append((sid, str(audio), str(key_dir / "features" / f"{sid}.npy")))

    index = {"version": CACHE_VERSION, "key": cfg.key(), "feature_config": cfg.to_dict(),
             "data_root": str(handler.root), "dataset_kind": handler.kind, "label_kind": str(handler.label_kind),
             "label_scale": handler.scale.name if handler.scale is not None else None,
             "songs": songs, "skipped": skipped}
    last_save = [time.perf_counter()]

    def save(final: bool = False) -> None:
        index["songs"] = dict(sorted(songs.items(), key=lambda kv: int(kv[0])))
        index["skipped"] = sorted(skipped, key=lambda s: s["song_id"])
        atomic_write_json(key_dir / INDEX, index)
        if final:
            _write_skipped(key_dir, index["skipped"])
        last_save[0] = time.perf_counter()

    def collect(res: dict[str, Any]) -> None:
        sid = int(res["song_id"])
        if "error" in res:
            skipped.append({"song_id": sid, "file": str(handler.audio_path(sid)), "reason": res["error"],
                            "fingerprint": fps[sid]})
            log.warning("skipping song %d: %s", sid, res["error"])
        else:
            songs[str(sid)] = {"file": f"features/{sid}.npy", "frames": res["frames"], "n_mels": cfg.n_mels,
                               "sha1": res["sha1"], "bytes": res["bytes"], "duration_s": res["duration_s"],
                               "audio": str(handler.audio_path(sid)), "fingerprint": fps[sid],
                               **_labels(handler, sid)}
        if time.perf_counter() - last_save[0] > SAVE_EVERY_S:
            save()

    n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
    mel_filters(cfg)  # import librosa's filters once here, not once per forked worker
    save()

    bar = tqdm(total=len(jobs), desc=f"prepare {cfg.key()}", unit="song", disable=not progress)
    try:
        if jobs and n_workers <= 0:
            _init_worker(cfg.to_dict(), threads=_torch_threads())
            for job in jobs:
                collect(_featurise_job(job))
                bar.update()
        elif jobs:
            ctx = mp.get_context(mp_context or ("fork" if sys.platform.startswith("linux") else "spawn"))
            release_free_memory()  # a smaller heap to fork (see deam_mamba.core.runtime)
            pool = ProcessPoolExecutor(max_workers=min(n_workers, len(jobs)), mp_context=ctx,
                                       initializer=_init_worker, initargs=(cfg.to_dict(),))
            try:
                futures = [pool.submit(_featurise_job, job) for job in jobs]
                for fut in as_completed(futures):
                    collect(fut.result())
                    bar.update()
            except BrokenProcessPool as exc:
                raise CacheError(
                    f"a prepare worker process died ({exc}); the {len(songs)} songs finished so far are "
                    f"kept in {key_dir}; run prepare again to finish the rest"
                ) from None
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
        save(final=True)
    if n_workers <= 0 and _WORKER:
        _WORKER.clear()
    removed = _remove_orphans(key_dir, songs)
    seconds = time.perf_counter() - t0
    done = len(jobs) - sum(1 for s in skipped if s["song_id"] in {j[0] for j in jobs})
    summary = {
        "cache_dir": str(key_dir), "key": cfg.key(), "songs": len(songs), "processed": done,
        "reused": counts["reused"], "new": counts["new"], "changed": counts["changed"],
        "rebuilt_corrupt": counts["corrupt"], "removed": removed, "n_skipped": len(skipped), "skipped": skipped,
        "dataset_problems": len(getattr(handler, "problems", [])), "workers": n_workers,
        "seconds": round(seconds, 3), "songs_per_s": round(len(jobs) / seconds, 3) if seconds > 0 else None,
    }
    log.info("cache %s: %d songs (%d processed, %d reused, %d skipped) in %.1f s", key_dir, len(songs), done,
             counts["reused"], len(skipped), seconds)
    return summary


def _torch_threads() -> int:
    return torch.get_num_threads()


def _write_skipped(key_dir: Path, skipped: list[dict[str, Any]]) -> None:
    rows = [{"song_id": s["song_id"], "file": s["file"], "reason": s["reason"]} for s in skipped]
    atomic_write_json(key_dir / "skipped.json", rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["song_id", "file", "reason"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(key_dir / "skipped.csv", out.getvalue())


def _remove_orphans(key_dir: Path, songs: dict[str, Any]) -> int:
    """Delete arrays (and stale temp files) of songs no longer in the index; returns the count."""
    keep = {entry["file"].split("/")[-1] for entry in songs.values()}
    removed = 0
    for path in (key_dir / "features").iterdir():
        if path.name not in keep:
            path.unlink(missing_ok=True)
            removed += path.suffix == ".npy"
    return removed


# --- read -------------------------------------------------------------------------------------


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
