"""A synthetic corpus with DEAM's exact Kaggle layout and labels learnable from the audio.

``synthesize(out_dir, songs=200, ...)`` writes (see ``shared/deam/LAYOUT.md``)::

    DEAM_Annotations/annotations/annotations averaged per song/song_level/
        static_annotations_averaged_songs_1_2000.csv      (CRLF, "song_id, valence_mean, ...")
        static_annotations_averaged_songs_2000_2058.csv   (13 columns, "valence_ max_mean" typo)
    DEAM_Annotations/annotations/annotations averaged per song/dynamic (per second annotations)/
        arousal.csv  valence.csv                           (2 Hz from 15 s, empty NaN tails)
    DEAM_Annotations/annotations/annotations per each rater/   (empty)
    DEAM_audio/MEMD_audio/<id>.mp3                         (44.1 kHz stereo MP3)
    features/features/                                     (empty)
    synth_info.json                                        (generator parameters; not part of DEAM)

``songs`` excerpts get ids in DEAM's ranges (2..1000 with gaps such as 23, 26-28, and
1001..2000) and last ``seconds`` (-0.4..+0.6) s; ``full_songs`` full-length songs get ids
2001.. and last 60..120 s (scaled down when ``seconds`` < 45). Each song has a hidden
valence/arousal trajectory (:mod:`deam_mamba.synth.music`) that its music follows; dynamic
labels are that trajectory on [-1, 1] plus annotator noise, static labels separate whole-song
ratings on 1..9. Per-song randomness comes from ``SeedSequence([seed, song_id])``, so the
output does not depend on the number of workers.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from deam_mamba.core.errors import ConfigError, OutputExistsError
from deam_mamba.core.io import to_json
from deam_mamba.core.runtime import tune_malloc
from deam_mamba.synth.mp3 import write_mp3
from deam_mamba.synth.music import hidden_trajectory, render_song

log = logging.getLogger(__name__)

SYNTH_VERSION = 2  # 2: LAME (lameenc) CBR 128 kbit/s MP3s with a LAME tag, float32 reverb/noise
ANNOT_DIR = Path("DEAM_Annotations/annotations/annotations averaged per song")
STATIC_DIR = ANNOT_DIR / "song_level"
DYNAMIC_DIR = ANNOT_DIR / "dynamic (per second annotations)"
AUDIO_DIR = Path("DEAM_audio/MEMD_audio")
STATIC_CLIPS = STATIC_DIR / "static_annotations_averaged_songs_1_2000.csv"
STATIC_FULL = STATIC_DIR / "static_annotations_averaged_songs_2000_2058.csv"
DYN_START_S = 15.0
DYN_STEP_S = 0.5
MAX_FULL_SONGS = 58

_STATIC_CLIPS_HEADER = ["song_id", "valence_mean", "valence_std", "arousal_mean", "arousal_std"]
_STATIC_FULL_HEADER = [
    "song_id", "valence_mean", "valence_std", "valence_ max_mean", "valence_max_std",
    "valence_min_mean", "valence_min_std", "arousal_mean", "arousal_std", "arousal_max_mean",
    "arousal_max_std", "arousal_min_mean", "arousal_min_std",
]  # fmt: skip


def clip_id_candidates() -> list[int]:
    """All excerpt ids the generator may use: 2..1000 with DEAM-like gaps, then 1001..2000."""
    gaps = {23, 26, 27, 28}
    ids_2013 = [i for i in range(2, 1001) if i not in gaps and (i * 37) % 100 >= 25][:744]
    return ids_2013 + list(range(1001, 2001))  # 744 + 1000 = DEAM's 1 744 excerpts


def song_ids(songs: int, full_songs: int) -> list[int]:
    """Ids for ``songs`` excerpts (2013 and 2014 ranges in DEAM's 744:1000 ratio) + full songs."""
    cand = clip_id_candidates()
    n_2013_all = sum(1 for i in cand if i <= 1000)
    n13 = min(n_2013_all, int(round(songs * 744 / 1744)))
    n14 = songs - n13
    ids = cand[:n13] + list(range(1001, 1001 + n14)) + list(range(2001, 2001 + full_songs))
    return ids


@dataclass(frozen=True)
class SongResult:
    """Labels of one rendered song (dynamic values at 2 Hz from 15 s, on [-1, 1])."""

    song_id: int
    duration_s: float
    static: dict[str, float]
    dyn_valence: np.ndarray
    dyn_arousal: np.ndarray
    cpu_s: float = 0.0  # CPU seconds the worker spent on this song (render, encode, labels)


def _song_rng(seed: int, song_id: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(song_id)]))


def _ndtr(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(float(z) / math.sqrt(2.0)))


def _centres(rng: np.random.Generator) -> tuple[float, float]:
    """Song-centre (valence, arousal) on 1.6..8.4, mildly correlated (r ~ 0.3) as in DEAM."""
    z1, z2 = rng.standard_normal(2)
    z2 = 0.3 * z1 + math.sqrt(1 - 0.09) * z2
    return 1.6 + 6.8 * _ndtr(z1), 1.6 + 6.8 * _ndtr(z2)


def _annotator_noise(rng: np.random.Generator, k: int) -> np.ndarray:
    """Smooth rater disagreement plus jitter, [-1, 1] scale."""
    if k == 0:
        return np.zeros(0)
    walk = np.cumsum(rng.normal(0.0, 0.015, k))
    return walk - walk.mean() + rng.normal(0.0, 0.02, k) + rng.normal(0.0, 0.04)


def _render_one(job: tuple[int, int, float, str]) -> SongResult:
    """Worker: render song ``song_id`` to ``<audio_dir>/<id>.mp3`` and return its labels."""
    seed, song_id, duration_s, audio_dir = job
    cpu0 = time.process_time()
    rng = _song_rng(seed, song_id)
    v0, a0 = _centres(rng)
    traj = hidden_trajectory(rng, duration_s, v0, a0)
    audio = render_song(rng, traj, duration_s)
    write_mp3(Path(audio_dir) / f"{song_id}.mp3", audio)

    lab = np.random.default_rng(np.random.SeedSequence([int(seed), int(song_id), 1]))
    k = max(0, int(math.floor((duration_s - DYN_STEP_S - DYN_START_S) / DYN_STEP_S + 1e-9)) + 1)
    times = DYN_START_S + DYN_STEP_S * np.arange(k)
    v_t, a_t = traj.at(times)
    dyn_v = np.clip((v_t - 5.0) / 4.0 + _annotator_noise(lab, k), -1.0, 1.0)
    dyn_a = np.clip((a_t - 5.0) / 4.0 + _annotator_noise(lab, k), -1.0, 1.0)
    static: dict[str, float] = {}
    for name, curve in (("valence", traj.valence), ("arousal", traj.arousal)):
        mean = float(np.clip(curve.mean() + lab.normal(0.0, 0.22), 1.2, 8.8))
        std = float(np.clip(lab.normal(1.15, 0.3) + 0.5 * curve.std(), 0.3, 2.9))
        static[f"{name}_mean"], static[f"{name}_std"] = mean, std
        static[f"{name}_max_mean"] = float(np.clip(curve.max() + abs(lab.normal(0.3, 0.2)), mean, 9.0))
        static[f"{name}_max_std"] = float(np.clip(std + lab.normal(0.1, 0.15), 0.3, 2.9))
        static[f"{name}_min_mean"] = float(np.clip(curve.min() - abs(lab.normal(0.3, 0.2)), 1.0, mean))
        static[f"{name}_min_std"] = float(np.clip(std + lab.normal(0.1, 0.15), 0.3, 2.9))
    return SongResult(song_id, duration_s, static, dyn_v, dyn_a, time.process_time() - cpu0)


def _worker_init() -> None:
    """Worker start-up: one BLAS/OpenMP thread per process (the processes are the parallelism);
    glibc keeps freed memory (``deam_mamba.core.runtime``: every song allocates tens of MB of audio)."""
    tune_malloc()
    try:
        from threadpoolctl import threadpool_limits  # optional: present with scikit-learn
    except ImportError:  # numpy's BLAS is barely used here; without threadpoolctl leave it be
        return
    threadpool_limits(1)


def _mp_context() -> multiprocessing.context.BaseContext:
    """Fork server with this module preloaded where available, else spawn.

    Workers then start as forks of one clean, single-threaded server process that has already
    imported numpy/scipy/soxr/lameenc: measured 0.1 s wall and ~0 CPU s per 2-worker pool
    after the first, against 1.7 s wall and 0.9 CPU s for ``spawn`` (which starts and imports
    a fresh interpreter per worker, every time). Plain ``fork`` would copy the caller's threads.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # takes effect when the server starts (once per process)
    return ctx


def _run_jobs(jobs: list[tuple[int, int, float, str]], n_workers: int, bar: tqdm) -> list[SongResult]:
    """Render ``jobs`` on ``n_workers`` processes, longest songs first (no straggler at the end)."""
    order = sorted(jobs, key=lambda j: -j[2])
    if n_workers == 1:
        results = []
        for job in order:
            results.append(_render_one(job))
            bar.update()
        return results
    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=_mp_context(), initializer=_worker_init)
    try:
        futures = [pool.submit(_render_one, job) for job in order]
        results = []
        for fut in as_completed(futures):
            results.append(fut.result())
            bar.update()
        return results
    finally:  # on Ctrl-C/error: drop queued songs, wait only for the ones being written
        pool.shutdown(wait=True, cancel_futures=True)


def fmt_number(x: float, decimals: int) -> str:
    """Minimal DEAM-style number: ``3``, ``3.1``, ``4.82``, ``-0.105`` (never ``-0``)."""
    s = f"{round(float(x), decimals):.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _static_csv(results: list[SongResult], header: list[str]) -> bytes:
    lines = [", ".join(header)]
    keys = [h.replace(" ", "") for h in header[1:]]
    for r in results:
        lines.append(",".join([str(r.song_id)] + [fmt_number(r.static[k], 2) for k in keys]))
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _dynamic_csv(results: list[SongResult], attr: str) -> bytes:
    width = max((getattr(r, attr).size for r in results), default=0)
    cols = [f"sample_{int(round((DYN_START_S + DYN_STEP_S * i) * 1000))}ms" for i in range(width)]
    lines = [",".join(["song_id"] + cols)]
    for r in results:
        vals = [fmt_number(x, 3) for x in getattr(r, attr)]
        lines.append(",".join([str(r.song_id)] + vals + [""] * (width - len(vals))))
    return ("\n".join(lines) + "\n").encode("ascii")


def _durations(seed: int, ids: list[int], seconds: float) -> dict[int, float]:
    """Excerpts: ``seconds`` -0.4..+0.6 s; full songs: 60..120 s scaled by min(1, seconds/45)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    scale = min(1.0, seconds / 45.0)
    out = {}
    for sid in ids:
        if sid <= 2000:
            out[sid] = round(max(1.0, seconds + rng.uniform(-0.4, 0.6)), 3)
        else:
            out[sid] = round(max(seconds + 2.0, rng.uniform(60.0, 120.0) * scale), 3)
    return out


def _prepare_out(out_dir: Path, force: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise OutputExistsError(f"{out_dir} exists and is not a folder; choose another --out")
        if any(out_dir.iterdir()) and not force:
            raise OutputExistsError(
                f"{out_dir} exists and is not empty; pass --force (force=True) to replace it, "
                "or choose another --out"
            )


def synthesize(
    out_dir: str | Path,
    songs: int = 200,
    seconds: float = 45.0,
    full_songs: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    stats: dict | None = None,
) -> Path:
    """Write a synthetic DEAM-shaped corpus to ``out_dir`` and return its root.

    ``songs`` excerpts (ids <= 2000) of ``seconds`` s plus ``full_songs`` full-length songs
    (ids 2001..; default 5% of ``songs``, at least 1, at most 58). ``workers`` processes
    render in parallel (default: CPU count). The tree is built in a hidden sibling folder and
    renamed onto ``out_dir`` at the end; an existing non-empty ``out_dir`` is replaced only with
    ``force=True`` (else :class:`OutputExistsError`). If ``stats`` is a dict, it receives
    ``wall_s``, ``cpu_s`` (this process + the per-song CPU time of the workers; the once-per-process
    fork-server start, ~0.3 CPU s, is not counted), ``worker_cpu_s``, ``workers`` and ``songs``.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    if full_songs is None:
        full_songs = min(MAX_FULL_SONGS, max(1, int(round(songs * 0.05))))
    if not 0 <= int(songs) <= len(clip_id_candidates()):
        raise ConfigError(f"songs must be in 0..{len(clip_id_candidates())} (DEAM's excerpt id range), got {songs}")
    if not 0 <= int(full_songs) <= MAX_FULL_SONGS:
        raise ConfigError(f"full_songs must be in 0..{MAX_FULL_SONGS} (ids 2001..2058), got {full_songs}")
    if songs + full_songs == 0:
        raise ConfigError("nothing to generate: songs and full_songs are both 0")
    if not (math.isfinite(seconds) and 1.0 <= seconds <= 600.0):
        raise ConfigError(f"seconds must be within 1..600, got {seconds}")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    _prepare_out(out_dir, force)
    wall0, cpu0 = time.perf_counter(), time.process_time()

    ids = song_ids(int(songs), int(full_songs))
    durations = _durations(seed, ids, float(seconds))
    n_workers = min(workers or os.cpu_count() or 1, len(ids))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        for d in (AUDIO_DIR, STATIC_DIR, DYNAMIC_DIR, Path("DEAM_Annotations/annotations/annotations per each rater"),
                  Path("features/features")):  # fmt: skip
            (tmp / d).mkdir(parents=True, exist_ok=True)
        jobs = [(int(seed), sid, durations[sid], str(tmp / AUDIO_DIR)) for sid in ids]
        log.info("synthesizing %d songs (%d excerpts, %d full) with %d worker(s) into %s",
                 len(ids), songs, full_songs, n_workers, out_dir)  # fmt: skip
        bar = tqdm(total=len(jobs), desc="synth", unit="song", disable=not progress)
        results = _run_jobs(jobs, n_workers, bar)
        bar.close()
        results.sort(key=lambda r: r.song_id)
        _write_labels(tmp, results)
        info = {"generator": "deam_mamba.synth.corpus", "version": SYNTH_VERSION, "seed": int(seed),
                "songs": int(songs), "full_songs": int(full_songs), "seconds": float(seconds),
                "song_ids": ids, "durations_s": {str(k): v for k, v in durations.items()}}  # fmt: skip
        (tmp / "synth_info.json").write_text(to_json(info, indent=1) + "\n")
        _prepare_out(out_dir, force)  # again: something may have appeared there meanwhile
        _install(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    worker_cpu = sum(r.cpu_s for r in results) if n_workers > 1 else 0.0  # 1 worker: counted in-process
    run = {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0 + worker_cpu,
           "worker_cpu_s": worker_cpu, "workers": n_workers, "songs": len(ids)}  # fmt: skip
    if stats is not None:
        stats.update(run)
    log.info("wrote %s: %d songs in %.1f s wall, %.1f CPU s", out_dir, len(ids), run["wall_s"], run["cpu_s"])
    return out_dir


def _write_labels(root: Path, results: list[SongResult]) -> None:
    clips = [r for r in results if r.song_id <= 2000]
    full = [r for r in results if r.song_id > 2000]
    (root / STATIC_CLIPS).write_bytes(_static_csv(clips, _STATIC_CLIPS_HEADER))
    (root / STATIC_FULL).write_bytes(_static_csv(full, _STATIC_FULL_HEADER))
    (root / DYNAMIC_DIR / "arousal.csv").write_bytes(_dynamic_csv(results, "dyn_arousal"))
    (root / DYNAMIC_DIR / "valence.csv").write_bytes(_dynamic_csv(results, "dyn_valence"))


def _install(tmp: Path, out_dir: Path) -> None:
    """Move the finished tree onto ``out_dir`` (replacing an existing one only after it is complete)."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
