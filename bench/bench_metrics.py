"""Bootstrap CIs of ``regression_metrics``: vectorised resampling vs a per-resample loop, side by side.

Workload: 1000 song resamples x 6 metrics (MSE, RMSE, MAE, Pearson r, CCC, R²) x 2 dimensions,
for 60 songs (a DEAM-sized test split of the synthetic demo) and 360 songs (~a fifth of DEAM).
  vectorised  ``regression_metrics(..., bootstrap=1000)`` (all resamples as one [B, N, 2] array)
  loop        the same resamples, one ``(y[idx], p[idx])`` at a time through the six public
              metric functions (what a straightforward implementation does)
Rounds interleave the two cases so load from other processes hits both alike; medians over
rounds are reported, and ratios are of those medians. The two must give identical intervals.

    .venv/bin/python bench/bench_metrics.py [--quick] [--out bench/results/metrics.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from deam_mamba.core.runtime import tune_malloc
from deam_mamba.evaluation import metrics as M

MALLOC_TUNED = tune_malloc()  # before any tensor work: glibc keeps freed memory (DEAM_MAMBA_MALLOC_TUNE=0: off)

FUNCS = {"mse": M.mse, "rmse": M.rmse, "mae": M.mae, "pearson_r": M.pearson_r, "ccc": M.ccc, "r2": M.r2}


def loop_ci(y: np.ndarray, p: np.ndarray, n: int, seed: int, alpha: float = 0.05) -> dict:
    """Per-resample reference: same indices as ``regression_metrics`` (rng.integers(0, N, (n, N)))."""
    idx = np.random.default_rng(seed).integers(0, y.shape[0], size=(n, y.shape[0]))
    vals = {k: np.array([f(y[i], p[i]) for i in idx]) for k, f in FUNCS.items()}
    return {k: np.nanquantile(v, [alpha / 2, 1 - alpha / 2], axis=0) for k, v in vals.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "metrics.json"))
    args = ap.parse_args()
    rounds = 3 if args.quick else 7
    n_boot = 1000
    rng = np.random.default_rng(0)
    results = {}
    for n_songs in (60, 360):
        y = rng.uniform(1, 9, size=(n_songs, 2))
        p = np.clip(y + rng.normal(0, 1, size=y.shape), 1, 9)
        m = M.regression_metrics(y, p, bootstrap=n_boot, seed=0)  # warm-up + correctness check
        ref = loop_ci(y, p, n_boot, 0)
        max_diff = max(abs(m[d][k][c] - ref[k][j, di]) for k in FUNCS for di, d in enumerate(("valence", "arousal"))
                       for j, c in enumerate(("ci_low", "ci_high")))
        t_vec, t_loop = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            M.regression_metrics(y, p, bootstrap=n_boot, seed=0)
            t_vec.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            loop_ci(y, p, n_boot, 0)
            t_loop.append(time.perf_counter() - t0)
        vec, loop = statistics.median(t_vec), statistics.median(t_loop)
        results[f"songs_{n_songs}"] = {
            "n_songs": n_songs, "n_boot": n_boot, "metrics": len(FUNCS), "dims": 2,
            "vectorised_s": round(vec, 4), "loop_s": round(loop, 4),
            "speedup_vectorised_over_loop": round(loop / vec, 1),
            "max_abs_ci_difference": float(max_diff),
        }
        print(f"{n_songs:4d} songs: vectorised {vec * 1e3:7.1f} ms, loop {loop * 1e3:7.1f} ms, "
              f"x{loop / vec:.1f}, max |CI diff| {max_diff:.2e}")
    out = {"benchmark": "bootstrap CIs of regression_metrics", "rounds": rounds, "quick": args.quick,
           "machine": {"platform": platform.platform(), "python": platform.python_version(),
                       "numpy": np.__version__},
           "note": "medians over interleaved rounds on a shared 2-core machine; compare ratios, not seconds",
           "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out["malloc_tuned"] = MALLOC_TUNED
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
