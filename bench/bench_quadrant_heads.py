"""Two binary axes or four classes? The two quadrant heads of ``loss.quadrant`` compared as linear heads on frozen
features, on the 4Q artist-disjoint folds.

``loss.quadrant=axes`` puts two sigmoid outputs (valence positive, arousal high; binary cross-entropy) on the
backbone's pooled features, ``classes`` one softmax over Q1..Q4 (cross-entropy). On fixed features those heads are
exactly two binary logistic regressions and one multinomial logistic regression. This benchmark fits both on the
same standardised features of every clip (the feature sets ``bench_real_4q.py`` caches in ``--work``: handcrafted
librosa descriptors, log-mel statistics, MusiCNN embeddings; computed there if missing), same folds, same C grid
chosen by artist-grouped inner folds on quadrant macro-F1, and reports macro-F1 and per-axis ROC AUC per head.
It isolates the head: the fine-tuned network also shapes its features through the head, which only a crossval
with ``loss.quadrant=classes`` measures (about 70 CPU minutes).

    .venv/bin/python bench/bench_quadrant_heads.py [--features handcrafted,logmel_stats,musicnn_msd]

Results: ``bench/results/quadrant_heads.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import bench_real_4q as b4  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.model_selection import StratifiedGroupKFold  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from deam_mamba.core.io import atomic_write_json  # noqa: E402
from deam_mamba.evaluation.quadrants import axis_scores  # noqa: E402

C_GRID = [0.001, 0.01, 0.1, 1.0, 10.0]
HEADS = ("axes", "classes")


def _lr(C: float) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=5000))


def fit_head(head: str, C: float, X: np.ndarray, q: np.ndarray) -> list[Pipeline]:
    """``axes``: [valence-positive LR, arousal-high LR]; ``classes``: [4-class LR]. ``q [N]`` quadrants 1..4."""
    if head == "classes":
        return [_lr(C).fit(X, q)]
    return [_lr(C).fit(X, np.isin(q, (1, 4))), _lr(C).fit(X, np.isin(q, (1, 2)))]


def predict_head(head: str, models: list[Pipeline], X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(quadrant [M], valence score [M], arousal score [M])`` of a fitted head."""
    if head == "classes":
        m = models[0]
        v, a = axis_scores(m.predict_proba(X), m.classes_)
        return m.predict(X).astype(np.int64), v, a
    pv, pa = (m.predict_proba(X)[:, 1] for m in models)
    return b4.quadrant_from_axes(pv, pa), pv, pa


def head_model(head: str, key: str) -> b4.Model:
    """A ``bench_real_4q`` model: the ``head`` on features ``key``, C by artist-grouped inner folds (macro-F1)."""

    def run(d: b4.FoldData) -> b4.FoldOutput:
        X, q = d.features[key], d.quadrants
        Xtr, qtr = X[d.train_idx], q[d.train_idx]
        inner = list(StratifiedGroupKFold(b4.INNER_FOLDS, shuffle=True, random_state=d.seed)
                     .split(Xtr, qtr, d.inner_groups))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            scores = {C: np.mean([f1_score(qtr[te], predict_head(head, fit_head(head, C, Xtr[tr], qtr[tr]),
                                                                 Xtr[te])[0], average="macro")
                                  for tr, te in inner]) for C in C_GRID}
            best = max(C_GRID, key=lambda C: (scores[C], -C))  # ties: the stronger regularisation
            pred, v, a = predict_head(head, fit_head(head, best, Xtr, qtr), X[d.test_idx])
        return b4.FoldOutput(pred, v, a, {"C": best})

    return b4.Model((key,), run, f"{head} head: logistic regression on {key}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=b4.DEFAULT_ROOT, help="4Q dataset folder")
    ap.add_argument("--features", default="handcrafted,logmel_stats,musicnn_msd",
                    help=f"comma list of {', '.join(b4.FEATURE_SETS)}")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "_work", help="bench_real_4q's feature caches")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="smoke run: only the first N clips of each quadrant")
    ap.add_argument("--workers", type=int, default=2, help="feature-extraction processes (features not cached)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quadrant_heads.json")
    args = ap.parse_args()
    names = [f.strip() for f in args.features.split(",") if f.strip()]
    if unknown := [f for f in names if f not in b4.FEATURE_SETS]:
        ap.error(f"unknown feature set(s) {unknown}; known: {', '.join(b4.FEATURE_SETS)}")
    if not args.root.is_dir():
        print(f"4Q dataset not found at {args.root}: nothing to benchmark (see --root)")
        return 0
    load = os.getloadavg()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    songs = b4.load_songs(args.root.resolve(), args.limit)
    proto = b4.make_protocol(songs, "artist", args.folds, args.seed)
    results: dict[str, Any] = {}
    for name in names:
        feats = b4.load_features(name, songs, args.work.resolve(), args.workers)
        X = feats["X"]
        keep = ~np.isnan(X).any(axis=1)
        for head in HEADS:
            r = b4.run_protocol(head_model(head, name), proto, songs, {name: X}, keep, args.seed, args.work,
                                f"{name}/{head}")
            results.setdefault(name, {})[head] = {"summary": r["summary"], "per_fold": r["per_fold"],
                                                  "pooled_out_of_fold": r["pooled_out_of_fold"]}
        print(f"{name}: " + "; ".join(f"{h} macro-F1 {results[name][h]['summary']['macro_f1']['mean']:.3f}"
                                      for h in HEADS), flush=True)
    out = {"benchmark": "quadrant heads (two binary axes vs four classes) as linear heads on frozen features",
           "protocol": f"artist-disjoint {args.folds} folds of bench_real_4q (sha1 {proto.sha1()})",
           "head": f"StandardScaler + LogisticRegression(class_weight=balanced), C in {C_GRID} by "
                   f"{b4.INNER_FOLDS} artist-grouped inner folds (quadrant macro-F1)",
           "clips": int(songs.ids.size), "results": results,
           "run": {"date": started, "load_average_start": list(load), "load_average_end": list(os.getloadavg()),
                   "command": " ".join(sys.argv)}}
    atomic_write_json(args.out, out)
    print(b4.write_score_table(args.out.with_suffix(".md"), ["features", "head"],
                               [([name, head], r["summary"]) for name, by_head in results.items()
                                for head, r in by_head.items()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
