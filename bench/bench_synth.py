"""Benchmark of the synthetic corpus: generation speed and learnability (ridge on librosa features).

    .venv/bin/python bench/bench_synth.py            # synthesize(out, songs=200, seconds=45, full_songs=0, workers=2)
    .venv/bin/python bench/bench_synth.py --quick    # 40 x 20 s, for a smoke run

Writes ``bench/results/synth.json`` (``synth_quick.json`` with --quick) with pass/fail per goal:
``generation`` (wall < 180 s for 200 x 45 s on 2 workers; also CPU s per audio minute, which does
not depend on the load, and the wall time it projects on 2 idle cores), ``workers_ratio`` (1 vs 2
workers on the same songs, side by side, order alternated), ``encoder`` (LAME via lameenc vs
libsndfile's MP3 writer on the same rendered songs, CPU time side by side) and ``learnability``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deam_mamba.core.io import atomic_write_json
from deam_mamba.core.runtime import tune_malloc
from deam_mamba.synth import mp3
from deam_mamba.synth.check import corpus_features, learnability
from deam_mamba.synth.corpus import _centres, _song_rng, synthesize
from deam_mamba.synth.music import hidden_trajectory, render_song

MALLOC_TUNED = tune_malloc()  # before any tensor work: glibc keeps freed memory (DEAM_MAMBA_MALLOC_TUNE=0: off)

GOAL_WALL_S = 180.0
GOAL_SPEEDUP = 1.6  # 2 workers over 1 on 2 idle cores


def _encoder_ratio(n_songs: int, seconds: float, seed: int, work: Path) -> dict:
    """CPU seconds to render, to encode with lameenc and with libsndfile, per song (same audio)."""
    import soundfile as sf

    cpu = {"render": 0.0, "lameenc": 0.0, "libsndfile": 0.0}
    for sid in range(2, 2 + n_songs):
        rng = _song_rng(seed, sid)
        v0, a0 = _centres(rng)
        t0 = time.process_time()
        audio = render_song(rng, hidden_trajectory(rng, seconds, v0, a0), seconds)
        t1 = time.process_time()
        mp3.write_mp3(work / "a.mp3", audio)
        t2 = time.process_time()
        sf.write(str(work / "b.mp3"), audio, mp3.SAMPLE_RATE, format="MP3")
        t3 = time.process_time()
        for k, dt in zip(cpu, (t1 - t0, t2 - t1, t3 - t2)):
            cpu[k] += dt
    per = {k: v / n_songs for k, v in cpu.items()}
    return {"songs": n_songs, "seconds": seconds, "lame_quality": mp3.LAME_QUALITY, "bitrate_kbps": mp3.BITRATE_KBPS,
            "cpu_s_per_song": per, "libsndfile_over_lameenc": per["libsndfile"] / per["lameenc"],
            "song_cpu_old_over_new": (per["render"] + per["libsndfile"]) / (per["render"] + per["lameenc"])}


def _timed_synth(out: Path, **kw) -> tuple[float, float]:
    """Wall seconds around ``synthesize`` and the CPU seconds it reports (workers included)."""
    stats: dict = {}
    t0 = time.perf_counter()
    synthesize(out, progress=False, force=True, stats=stats, **kw)
    return time.perf_counter() - t0, stats["cpu_s"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--songs", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--full-songs", type=int, default=0, help="full-length songs besides the excerpts")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ratio-songs", type=int, default=None, help="songs for the 1-vs-2 worker comparison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="keep the big corpus here (else a temp dir)")
    a = ap.parse_args()
    songs = a.songs or (40 if a.quick else 200)
    seconds = a.seconds or (20.0 if a.quick else 45.0)
    ratio_songs = a.ratio_songs or (4 if a.quick else 12)
    work = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    res: dict = {"command": " ".join([Path(sys.executable).name] + sys.argv), "quick": a.quick,
                 "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "loadavg_start": list(os.getloadavg())}}  # fmt: skip
    try:
        # 1) speed-up of 2 workers over 1, side by side on the same songs (order alternated)
        walls: dict[int, list[float]] = {1: [], 2: []}
        for order in ((1, 2), (2, 1)):
            for w in order:
                wall, _ = _timed_synth(work / f"ratio{w}", songs=ratio_songs, seconds=seconds, full_songs=0,
                                       seed=a.seed, workers=w)  # fmt: skip
                walls[w].append(wall)
        res["workers_ratio"] = {
            "songs": ratio_songs, "seconds": seconds, "wall_s_1_worker": walls[1], "wall_s_2_workers": walls[2],
            "speedup_2_over_1": float(sum(walls[1]) / sum(walls[2])), "goal_speedup": GOAL_SPEEDUP,
            "passed": bool(sum(walls[1]) / sum(walls[2]) > GOAL_SPEEDUP),
        }  # fmt: skip
        res["encoder"] = _encoder_ratio(2 if a.quick else 4, seconds, a.seed, work)
        # 2) the full corpus on --workers workers
        out = a.keep or work / "corpus"
        wall, cpu = _timed_synth(out, songs=songs, seconds=seconds, full_songs=a.full_songs, seed=a.seed,
                                 workers=a.workers)  # fmt: skip
        info = json.loads((out / "synth_info.json").read_text())
        n = len(info["song_ids"])
        audio_s = float(sum(info["durations_s"].values()))
        res["generation"] = {
            "excerpts": songs, "full_songs": info["full_songs"], "songs_total": n, "seconds": seconds,
            "audio_minutes": audio_s / 60, "workers": a.workers, "wall_s": wall, "cpu_s": cpu,
            "wall_s_per_song": wall / n, "cpu_s_per_song": cpu / n, "cpu_s_per_audio_minute": cpu / (audio_s / 60),
            "projected_wall_s_200x45s_on_2_idle_cores": cpu / (audio_s / 60) * (200 * 45 / 60) / 2,
            "goal_wall_s": GOAL_WALL_S, "loadavg_end": list(os.getloadavg()),
            "goal": "wall_s < 180 for 200 x 45 s excerpts (full_songs=0) on 2 workers",
            "passed": bool(wall < GOAL_WALL_S) if (songs, seconds, a.full_songs) == (200, 45.0, 0) else None,
        }  # fmt: skip
        # 3) learnability: ridge on librosa features, held-out songs (5-fold out-of-fold)
        t0 = time.perf_counter()
        ids, x, y = corpus_features(out, workers=a.workers)
        lr = learnability(x, y, folds=5, seed=a.seed)
        lr["feature_extraction_s"] = time.perf_counter() - t0
        lr["goal"] = "ridge_r2 > 0.5 for both labels and max_abs_feature_r < 0.9"
        lr["passed"] = bool(min(lr["ridge_r2"].values()) > 0.5 and lr["max_abs_feature_r"] < 0.9)
        lr["label_stats"] = {
            name: {"mean": float(y[:, j].mean()), "std": float(y[:, j].std()), "min": float(y[:, j].min()),
                   "max": float(y[:, j].max())}
            for j, name in enumerate(("valence_mean", "arousal_mean"))
        }  # fmt: skip
        lr["valence_arousal_r"] = float(np.corrcoef(y[:, 0], y[:, 1])[0, 1])
        res["learnability"] = lr
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dest = Path(__file__).parent / "results" / ("synth_quick.json" if a.quick else "synth.json")
    res["malloc_tuned"] = MALLOC_TUNED
    atomic_write_json(dest, res)
    g, r = res["generation"], res["learnability"]
    print(f"generation: {g['songs_total']} songs in {g['wall_s']:.1f} s wall ({g['wall_s_per_song']:.2f} s/song, "
          f"{g['cpu_s_per_song']:.2f} CPU s/song); "
          f"2-vs-1 worker speed-up {res['workers_ratio']['speedup_2_over_1']:.2f}")
    print(f"ridge R2 valence {r['ridge_r2']['valence']:.3f} arousal {r['ridge_r2']['arousal']:.3f}; "
          f"max |r| of one feature {r['max_abs_feature_r']:.3f}; passed={r['passed']}")
    e = res["encoder"]
    print(f"encoder: libsndfile/lameenc CPU {e['libsndfile_over_lameenc']:.2f}x; per song "
          + ", ".join(f"{k} {v:.3f} s" for k, v in e["cpu_s_per_song"].items()))
    print(f"CPU s per audio minute {g['cpu_s_per_audio_minute']:.3f}; projected 200x45 s on 2 idle cores "
          f"{g['projected_wall_s_200x45s_on_2_idle_cores']:.0f} s; passed: generation={g['passed']} "
          f"workers={res['workers_ratio']['passed']} learnability={r['passed']}")
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
