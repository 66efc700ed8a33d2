"""Building the feature cache (``deam-mamba prepare``): decode and featurise every song once, in worker processes.

Incremental: a song whose audio fingerprint and features are unchanged is reused; new or changed songs
are (re)computed, corrupt arrays rebuilt, undecodable songs listed in ``skipped.json``/``.csv`` (never
dropped silently). The index is saved every few seconds, so an interrupted ``prepare`` keeps its work.
The cache layout and the reader are in :mod:`deam_mamba.features.cache`.
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
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from deam_mamba.config import FeatureConfig
from deam_mamba.core.errors import CacheError, DeamError, OutputExistsError
from deam_mamba.core.io import atomic_path, atomic_write_json, atomic_write_text
from deam_mamba.core.runtime import release_free_memory
from deam_mamba.core.scales import LabelKind
from deam_mamba.data.audio import load_audio
from deam_mamba.data.registry import open_dataset
from deam_mamba.features.cache import (
    CACHE_VERSION,
    INDEX,
    MARKER,
    SAVE_EVERY_S,
    file_sha1,
)
from deam_mamba.features.logmel import LogMel, mel_filters

log = logging.getLogger(__name__)

_WORKER: dict[str, Any] = {}
_HASH_EDGE = 1 << 16  # fingerprint hashes the first and last 64 KiB of each audio file
_CHEAP = ("size", "mtime_ns", "edge_sha1")  # the fingerprint without a whole-file read


def audio_fingerprint(path: str | Path, content: bool = False) -> dict[str, Any]:
    """``{size, mtime_ns, edge_sha1}``: changes when the file is replaced, touched or rewritten. ``content``: add
    ``sha1``, the hash of the whole file, which :func:`same_audio` uses to recognise a copy with new timestamps."""
    path = Path(path)
    st = path.stat()
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        h.update(fh.read(_HASH_EDGE))
        if st.st_size > _HASH_EDGE:
            fh.seek(max(_HASH_EDGE, st.st_size - _HASH_EDGE))
            h.update(fh.read(_HASH_EDGE))
    fp = {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns), "edge_sha1": h.hexdigest()}
    if content:
        fp["sha1"] = file_sha1(path)
    return fp


def same_audio(stored: dict[str, Any] | None, path: str | Path, fp: dict[str, Any]) -> dict[str, Any] | None:
    """The fingerprint to keep if ``stored`` (from a cache index) still describes the file at ``path``, whose cheap
    fingerprint (:func:`audio_fingerprint`) is ``fp``; None if the file changed.

    Size, mtime and edge hash equal: unchanged, nothing more is read. Only the mtime differs and ``stored`` holds
    the whole-file ``sha1``: the file is hashed, and the same bytes count as unchanged (a dataset copied, restored
    or checked out again keeps its cache; the returned fingerprint carries the new mtime). Anything else: changed.
    """
    if not stored:
        return None
    if all(stored.get(k) == fp[k] for k in _CHEAP):
        return stored
    if "sha1" not in stored or not _same_edges(stored, fp):
        return None
    return {**fp, "sha1": stored["sha1"]} if file_sha1(path) == stored["sha1"] else None


def _same_edges(stored: dict[str, Any], fp: dict[str, Any]) -> bool:
    """Same size and same first/last 64 KiB: only the mtime (or bytes in between) can differ."""
    return stored.get("size") == fp["size"] and stored.get("edge_sha1") == fp["edge_sha1"]


def audio_drift(cache: Any, audio_path: Callable[[int], str | Path], ids: Iterable[int]) -> dict[str, list[int]]:
    """Which of ``ids`` (songs or skips of ``cache``, a :class:`~deam_mamba.features.cache.FeatureCache`) no longer
    match their audio file (``audio_path(id)``): ``{"changed": [...], "touched": [...], "unknown": [...]}``.

    ``changed``: edited, replaced or unreadable since the cache was built (their features are stale); ``touched``:
    the same bytes under new timestamps (features still good; the index should learn the new mtimes so later
    runs need not hash them); ``unknown``: new timestamps, same size and edges, in an entry written before
    fingerprints held the whole-file hash (recomputed to be safe). Songs the cache does not hold at all are not
    listed. Cost: a stat and two 64 KiB reads per file, plus a whole-file hash for each touched one.
    """
    entries = {str(s["song_id"]): s for s in cache.skipped}
    entries.update(cache.index.get("songs", {}))
    drift: dict[str, list[int]] = {"changed": [], "touched": [], "unknown": []}
    for sid in ids:
        entry = entries.get(str(int(sid)))
        if entry is None:
            continue
        stored, path = entry.get("fingerprint"), audio_path(sid)
        try:
            fp = audio_fingerprint(path)
        except OSError:  # gone or unreadable: stale, unless it was already unreadable when skipped
            if stored is not None:
                drift["changed"].append(int(sid))
            continue
        kept = same_audio(stored, path, fp)
        if kept is None:
            legacy = stored and "sha1" not in stored and _same_edges(stored, fp)
            drift["unknown" if legacy else "changed"].append(int(sid))
        elif kept is not stored:
            drift["touched"].append(int(sid))
    return drift


def drift_reason(drift: dict[str, list[int]]) -> str | None:
    """A log phrase for :func:`audio_drift`'s answer, or None when every file matches its cache entry."""
    parts = []
    if drift["changed"]:
        parts.append(f"{len(drift['changed'])} audio files changed since it was built (e.g. song "
                     f"{drift['changed'][0]})")
    if drift["unknown"]:
        parts.append(f"{len(drift['unknown'])} audio files have new timestamps and entries too old (no whole-file "
                     "hash) to tell whether they changed")
    if drift["touched"]:
        parts.append(f"{len(drift['touched'])} audio files have new timestamps but the same bytes")
    return "; ".join(parts) or None


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
    if cache_dir.exists() and not cache_dir.is_dir():
        raise CacheError(f"--cache {cache_dir} is a file, not a folder: choose a folder for the feature cache")
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


def _entry_ok(key_dir: Path, entry: dict[str, Any], verify: bool) -> str | None:
    """None if the arrays of ``entry`` (whose audio is unchanged) can be reused, else 'corrupt'."""
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
    quadrant-only dataset), the quadrant 1..4, dynamic values on [-1, 1]; all None for label-free audio."""
    if handler.label_kind == LabelKind.NONE:
        return {"static": None, "quadrant": None, "dynamic": None}
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
        kept = same_audio(prev.get("fingerprint") if prev else None, audio, fp)
        why = "new" if prev is None else "changed" if kept is None else _entry_ok(key_dir, prev, verify)
        if why is None:
            songs[str(sid)] = {**prev, "fingerprint": kept, **_labels(handler, sid)}
            counts["reused"] += 1
        elif why == "new" and sid in old_skipped and (
                kept_skip := same_audio(old_skipped[sid].get("fingerprint"), audio, fp)) is not None:
            skipped.append({**old_skipped[sid], "fingerprint": kept_skip})  # same undecodable file: not retried
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
        try:  # with the whole-file hash, a copy of this file with new timestamps reuses the entry
            fps[sid] = audio_fingerprint(handler.audio_path(sid), content=True)
        except OSError:
            pass
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
    mel_filters(cfg)  # the filters once here (cached), not once per forked worker
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


def write_skipped_csv(path: Path, skipped: list[dict[str, Any]]) -> None:
    """``song_id,file,reason`` rows of the songs a cache left out, written atomically (feature and teacher caches)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["song_id", "file", "reason"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(skipped)
    atomic_write_text(path, out.getvalue())


def _write_skipped(key_dir: Path, skipped: list[dict[str, Any]]) -> None:
    rows = [{"song_id": s["song_id"], "file": s["file"], "reason": s["reason"]} for s in skipped]
    atomic_write_json(key_dir / "skipped.json", rows)
    write_skipped_csv(key_dir / "skipped.csv", rows)


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
