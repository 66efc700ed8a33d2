"""Benchmark of the synthetic corpus: generation speed and learnability (ridge on librosa features).

    .venv/bin/python bench/bench_synth.py            # 200 x 45 s excerpts (+10 full songs), 2 workers
    .venv/bin/python bench/bench_synth.py --quick    # 40 x 20 s, for a smoke run

Writes ``bench/results/synth.json`` (``synth_quick.json`` with --quick). The machine is shared,
so the 1-vs-2-worker speed-up is measured side by side on the same small song set, and CPU time
per song is reported besides wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deam_mamba.data.synth import synthesize
from deam_mamba.data.synth_check import corpus_features, learnability
from deam_mamba.io import atomic_write_json


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (worker processes included)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _timed_synth(out: Path, **kw) -> tuple[float, float]:
    cpu0, t0 = _cpu_s(), time.perf_counter()
    synthesize(out, progress=False, force=True, **kw)
    return time.perf_counter() - t0, _cpu_s() - cpu0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--songs", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ratio-songs", type=int, default=None, help="songs for the 1-vs-2 worker comparison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="keep the big corpus here (else a temp dir)")
    a = ap.parse_args()
    songs = a.songs or (40 if a.quick else 200)
    seconds = a.seconds or (20.0 if a.quick else 45.0)
    ratio_songs = a.ratio_songs or (4 if a.quick else 10)
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
            "speedup_2_over_1": float(sum(walls[1]) / sum(walls[2])),
        }  # fmt: skip
        # 2) the full corpus on --workers workers
        out = a.keep or work / "corpus"
        wall, cpu = _timed_synth(out, songs=songs, seconds=seconds, seed=a.seed, workers=a.workers)
        info = json.loads((out / "synth_info.json").read_text())
        n = len(info["song_ids"])
        audio_s = float(sum(info["durations_s"].values()))
        res["generation"] = {
            "excerpts": songs, "full_songs": info["full_songs"], "songs_total": n, "seconds": seconds,
            "audio_minutes": audio_s / 60, "workers": a.workers, "wall_s": wall, "cpu_s": cpu,
            "wall_s_per_song": wall / n, "cpu_s_per_song": cpu / n, "cpu_s_per_audio_minute": cpu / (audio_s / 60),
            "projected_wall_s_200x45s_on_2_idle_cores": cpu / (audio_s / 60) * (200 * 45 / 60) / 2,
            "goal_wall_s": 180.0, "loadavg_end": list(os.getloadavg()),
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
    atomic_write_json(dest, res)
    g, r = res["generation"], res["learnability"]
    print(f"generation: {g['songs_total']} songs in {g['wall_s']:.1f} s wall ({g['wall_s_per_song']:.2f} s/song, "
          f"{g['cpu_s_per_song']:.2f} CPU s/song); 2-vs-1 worker speed-up {res['workers_ratio']['speedup_2_over_1']:.2f}")
    print(f"ridge R2 valence {r['ridge_r2']['valence']:.3f} arousal {r['ridge_r2']['arousal']:.3f}; "
          f"max |r| of one feature {r['max_abs_feature_r']:.3f}; passed={r['passed']}")
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
