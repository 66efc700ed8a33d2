"""Real-music benchmark: Russell-quadrant classification on the 4Q (TAFFC) clips, artist-disjoint folds.

Data: ``../shared/real/4q`` relative to the repository root (``--root``): ``MER_audio_taffc_dataset/Q1..Q4/
<Song>.mp3`` plus ``panda_dataset_taffc_annotations.csv`` (Song, Quadrant) and ``..._metadata.csv`` (Song,
Artist, ...). Never copied or committed; if it is missing the script says so and exits 0.

Protocols:
  artist_<k>fold   stratified k-fold (default 5) with no artist in both train and test (StratifiedGroupKFold);
                   models choose hyperparameters on artist-grouped inner folds. The honest number.
  random_10fold    (--random-10fold) stratified random 10-fold, artists leak across the split: the protocol
                   of the published 4Q results (Panda et al. 2018: F1 76.4 % on 900 clips), for comparison.

Models (``MODELS``: name -> Model(needs, run); add deep models there, ``run(FoldData) -> FoldOutput``):
  svm    152 handcrafted librosa features -> StandardScaler -> RBF SVC (class_weight balanced), C and gamma
         by grid search on inner folds (macro-F1); axis scores from its one-vs-one margins.
  ridge  per-clip log-mel statistics (128-band log-mel at 22.05 kHz, n_fft 2048, hop 512: mean and std per
         band over time + 8 global descriptors, ``deam_mamba.baselines.mel_statistics``, 264 values) ->
         StandardScaler -> RidgeClassifierCV (alpha by inner folds, macro-F1, class_weight balanced);
         axis scores from its per-class decision values.

Per model and protocol: per-fold macro-F1, accuracy, valence/arousal axis accuracy and ROC AUC, fit seconds;
mean +- std over folds (ddof=1); pooled out-of-fold metrics with bootstrap 95 % CIs over songs (pooled AUCs
mix the score scales of the k fold models). Features are cached as .npz in ``--work`` (git-ignored).
``--out`` is merged: entries of models not run now are kept. Machine info and load average are recorded.

    PYTHONPATH=src .venv/bin/python bench/bench_real_4q.py [--models svm,ridge] [--folds 5] [--random-10fold]
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import librosa  # noqa: E402
import sklearn  # noqa: E402
from scipy.linalg import LinAlgWarning  # noqa: E402
from sklearn.linear_model import RidgeClassifierCV  # noqa: E402
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from deam_mamba.core.errors import DatasetLayoutError  # noqa: E402
from deam_mamba.core.io import atomic_write_json  # noqa: E402
from deam_mamba.core.scales import parse_quadrant  # noqa: E402
from deam_mamba.data.folds import artist_disjoint_folds, fold_summary, random_stratified_folds  # noqa: E402
from deam_mamba.evaluation.baselines import DEFAULT_ALPHAS, mel_statistics  # noqa: E402
from deam_mamba.evaluation.handcrafted import extract_many, fit_predict_svm, handcrafted_features  # noqa: E402
from deam_mamba.evaluation.quadrants import axis_scores, format_quadrant_metrics, quadrant_metrics  # noqa: E402

DEFAULT_ROOT = ROOT.parent / "shared" / "real" / "4q"
SR = 22050
INNER_FOLDS = 5
UNKNOWN_ARTIST = "<unknown artist>"
FOLD_KEYS = ("macro_f1", "accuracy", "valence_accuracy", "arousal_accuracy", "valence_auc", "arousal_auc")


# --- data ------------------------------------------------------------------------------------------


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DatasetLayoutError(f"missing {path}")
    for enc in ("utf-8-sig", "cp1252"):
        try:
            with open(path, newline="", encoding=enc) as fh:
                return list(csv.DictReader(fh))
        except UnicodeDecodeError:
            continue
    raise DatasetLayoutError(f"{path} is neither UTF-8 nor cp1252 text")


def _load_4q(root: Path) -> tuple[list[Path], np.ndarray, np.ndarray, list[str]]:
    """``(paths [N], quadrants [N] int 1..4, artists [N] str, songs [N])``, sorted by song id.

    Artists are grouped case-insensitively (stripped, casefolded). Songs with an empty Artist field (3 in the
    development portion) form one group :data:`UNKNOWN_ARTIST`: if they share an artist, it cannot leak (if not,
    the folds are only a little stricter than needed). Raises :class:`DatasetLayoutError` if a song has no
    metadata row or audio file, or its quadrant disagrees between the annotations and the metadata.
    """
    base = root / "MER_audio_taffc_dataset"
    ann = _read_csv(base / "panda_dataset_taffc_annotations.csv")
    meta = {r["Song"].strip(): r for r in _read_csv(base / "panda_dataset_taffc_metadata.csv")}
    paths, quads, artists, songs, problems = [], [], [], [], []
    for row in sorted(ann, key=lambda r: r["Song"]):
        song = row["Song"].strip()
        q = parse_quadrant(row["Quadrant"])
        m = meta.get(song)
        path = base / f"Q{q}" / f"{song}.mp3"
        if m is None:
            problems.append(f"{song}: no row in the metadata")
        elif parse_quadrant(m["Quadrant"]) != q:
            problems.append(f"{song}: quadrant {row['Quadrant']} in the annotations, {m['Quadrant']} in the metadata")
        elif not path.is_file():
            problems.append(f"{song}: missing audio {path}")
        else:
            paths.append(path)
            quads.append(q)
            artists.append(m.get("Artist", "").strip().casefold() or UNKNOWN_ARTIST)
            songs.append(song)
    if problems:
        raise DatasetLayoutError(f"{len(problems)} problem(s) in {root}: " + "; ".join(problems[:5]))
    return paths, np.array(quads, dtype=np.int64), np.array(artists), songs


# --- features (cached) -----------------------------------------------------------------------------


def logmel_stats(wave: np.ndarray, sr: int) -> np.ndarray:
    """Mono clip ``[T]`` -> ``[264]``: 128-band log-mel (dB, ref 1, top_db 80) statistics (baselines.mel_statistics)."""
    mel = librosa.feature.melspectrogram(y=wave, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
    return mel_statistics(librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)).astype(np.float32)


@dataclass(frozen=True)
class FeatureSet:
    fn: Callable[[np.ndarray, int], np.ndarray]
    version: int  # bump when fn changes: invalidates the cache
    description: str


FEATURE_SETS: dict[str, FeatureSet] = {
    "handcrafted": FeatureSet(handcrafted_features, 1, "152 librosa descriptors (deam_mamba.evaluation.handcrafted)"),
    "logmel_stats": FeatureSet(logmel_stats, 1, "128-band log-mel mean/std per band + 8 globals (264)"),
}


def load_features(name: str, paths: list[Path], songs: list[str], work: Path, workers: int) -> dict[str, Any]:
    """``{"X" [N, D] (NaN rows for failures), "failures" {song: reason}, "seconds", "cached"}``; cached if it fits."""
    fs = FEATURE_SETS[name]
    cache = work / f"{name}_v{fs.version}_sr{SR}.npz"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        have = {s: i for i, s in enumerate(z["songs"].tolist())}
        if all(s in have for s in songs):
            idx = [have[s] for s in songs]
            reasons = dict(zip(z["fail_songs"].tolist(), z["fail_reasons"].tolist(), strict=True))
            return {"X": z["X"][idx], "failures": {s: reasons[s] for s in songs if s in reasons},
                    "seconds": float(z["seconds"]), "cached": True}
    print(f"extracting {name} features of {len(paths)} clips on {workers} worker(s) ...", flush=True)
    t0 = time.perf_counter()
    X, fails = extract_many(paths, sr=SR, workers=workers, progress=True, features=fs.fn)
    seconds = time.perf_counter() - t0
    by_path = {str(p): s for p, s in zip(paths, songs, strict=True)}
    failures = {by_path[p]: reason for p, reason in fails}
    work.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, X=X, songs=np.array(songs), seconds=seconds, fail_songs=np.array(list(failures), dtype=str),
             fail_reasons=np.array(list(failures.values()), dtype=str))
    os.replace(tmp, cache)
    print(f"  {name}: {X.shape[1]} features, {seconds:.0f} s, {len(failures)} failure(s) -> {cache}", flush=True)
    return {"X": X, "failures": failures, "seconds": seconds, "cached": False}


# --- models ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoldData:
    """Everything a model sees for one fold. Arrays cover all N songs; index them with train_idx/test_idx."""

    features: dict[str, np.ndarray]  # feature-set name -> [N, D], for the sets the model needs
    quadrants: np.ndarray            # [N] int 1..4
    artists: np.ndarray              # [N] str
    paths: list[Path]                # [N] audio files (for models that read audio themselves)
    train_idx: np.ndarray
    test_idx: np.ndarray
    inner_groups: np.ndarray | None  # artists of the training rows for artist-grouped inner CV, None = ungrouped
    seed: int
    work: Path


@dataclass
class FoldOutput:
    pred: np.ndarray           # [M] quadrant 1..4 of the test rows
    valence_score: np.ndarray  # [M] higher = more positive valence
    arousal_score: np.ndarray  # [M] higher = higher arousal
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Model:
    needs: tuple[str, ...]
    run: Callable[[FoldData], FoldOutput]
    description: str


def run_svm(d: FoldData) -> FoldOutput:
    X = d.features["handcrafted"]
    r = fit_predict_svm(X[d.train_idx], d.quadrants[d.train_idx], d.inner_groups, X[d.test_idx], seed=d.seed,
                        inner_folds=INNER_FOLDS)
    return FoldOutput(r.pred, r.valence_score, r.arousal_score, {"best_params": r.best_params})


def run_ridge(d: FoldData) -> FoldOutput:
    X = d.features["logmel_stats"]
    Xtr, ytr = X[d.train_idx], d.quadrants[d.train_idx]
    if d.inner_groups is None:
        inner = StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=d.seed).split(Xtr, ytr)
    else:
        inner = StratifiedGroupKFold(INNER_FOLDS, shuffle=True, random_state=d.seed).split(Xtr, ytr, d.inner_groups)
    ridge = RidgeClassifierCV(alphas=DEFAULT_ALPHAS, class_weight="balanced", scoring="f1_macro", cv=list(inner))
    with warnings.catch_warnings():  # the smallest alphas (0.01) on 264 correlated features: ill-conditioned, harmless
        warnings.simplefilter("ignore", LinAlgWarning)
        model = Pipeline([("scale", StandardScaler()), ("ridge", ridge)]).fit(Xtr, ytr)
    dec = model.decision_function(X[d.test_idx])
    v, a = axis_scores(dec, model.classes_)
    return FoldOutput(model.predict(X[d.test_idx]).astype(np.int64), v, a,
                      {"best_params": {"alpha": float(model.named_steps["ridge"].alpha_)}})


MODELS: dict[str, Model] = {
    "svm": Model(("handcrafted",), run_svm, "handcrafted librosa features (152) -> RBF SVM, C/gamma grid on inner "
                 "folds (macro-F1); axis scores = one-vs-one SVM margins across each axis"),
    "ridge": Model(("logmel_stats",), run_ridge, "log-mel statistics (264) -> RidgeClassifierCV (alpha on inner "
                   "folds, macro-F1, balanced); axis scores = per-class decision values summed per side"),
}


# --- protocol --------------------------------------------------------------------------------------


def _f3(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def run_protocol(model: Model, folds: list[tuple[np.ndarray, np.ndarray]], grouped: bool, data: dict[str, Any],
                 seed: int, work: Path, label: str) -> dict[str, Any]:
    """Run ``model`` on every fold; per-fold metrics, their summary and pooled out-of-fold metrics."""
    q, artists = data["quadrants"], data["artists"]
    n = q.shape[0]
    pred, vs, as_ = np.zeros(n, np.int64), np.zeros(n), np.zeros(n)
    per_fold = []
    for i, (tr, te) in enumerate(folds):
        fd = FoldData({k: data["features"][k] for k in model.needs}, q, artists, data["paths"], tr, te,
                      artists[tr] if grouped else None, seed, work)
        t0 = time.perf_counter()
        out = model.run(fd)
        fit_s = time.perf_counter() - t0
        pred[te], vs[te], as_[te] = out.pred, out.valence_score, out.arousal_score
        m = quadrant_metrics(q[te], out.pred, out.valence_score, out.arousal_score, bootstrap=0)
        row = {"fold": i, "n_train": int(tr.size), "n_test": int(te.size),
               **{k: m[k]["value"] for k in FOLD_KEYS}, "fit_s": fit_s, **out.info}
        per_fold.append(row)
        print(f"  [{label}] fold {i + 1}/{len(folds)}: macro-F1 {row['macro_f1']:.3f}  acc {row['accuracy']:.3f}  "
              f"AUC v {_f3(row['valence_auc'])} a {_f3(row['arousal_auc'])}  {fit_s:.1f} s  {out.info}", flush=True)
    pooled = quadrant_metrics(q, pred, vs, as_, bootstrap=1000, seed=seed)
    return {"per_fold": per_fold, "summary": fold_summary(per_fold), "pooled_out_of_fold": pooled,
            "fit_s_total": float(sum(r["fit_s"] for r in per_fold))}


def machine_info(workers: int) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "workers": workers,
        "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
        "sklearn": sklearn.__version__, "librosa": librosa.__version__,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="4Q dataset folder (default ../shared/real/4q)")
    ap.add_argument("--folds", type=int, default=5, help="artist-disjoint folds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default="svm,ridge", help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "_work", help="feature cache folder (git-ignored)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "real_4q.json")
    ap.add_argument("--workers", type=int, default=2, help="feature-extraction processes")
    ap.add_argument("--random-10fold", action="store_true", help="also run random stratified 10-fold (artists leak)")
    ap.add_argument("--limit", type=int, default=0, help="smoke run: only the first N clips of each quadrant")
    args = ap.parse_args()

    if not (args.root / "MER_audio_taffc_dataset").is_dir():
        print(f"4Q dataset not found at {args.root}: nothing to benchmark (see --root)")
        return 0
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    load_start = os.getloadavg()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    paths, quads, artists, songs = _load_4q(args.root)
    if args.limit > 0:
        sel = np.concatenate([np.flatnonzero(quads == q)[: args.limit] for q in (1, 2, 3, 4)])
        sel.sort()
        paths, quads, artists, songs = [paths[i] for i in sel], quads[sel], artists[sel], [songs[i] for i in sel]
    print(f"4Q: {len(songs)} clips, {len(set(artists.tolist()))} artists, per quadrant "
          f"{np.bincount(quads, minlength=5)[1:].tolist()}", flush=True)
    needed = sorted({f for m in names for f in MODELS[m].needs})
    feats = {f: load_features(f, paths, songs, args.work, args.workers) for f in needed}
    dropped = {s: f"{f}: {r}" for f in needed for s, r in feats[f]["failures"].items()}
    if dropped:
        print(f"WARNING: dropping {len(dropped)} clip(s) whose features failed: {list(dropped.items())[:5]}",
              flush=True)
    keep = np.array([s not in dropped for s in songs])
    data = {"quadrants": quads[keep], "artists": artists[keep], "paths": [p for p, k in zip(paths, keep, strict=True)
                                                                          if k],
            "features": {f: feats[f]["X"][keep] for f in needed}}

    protocols = {f"artist_{args.folds}fold": (artist_disjoint_folds(data["quadrants"], data["artists"], args.folds,
                                                                    args.seed), True)}
    if args.random_10fold:
        protocols["random_10fold"] = (random_stratified_folds(data["quadrants"], 10, args.seed), False)

    results: dict[str, Any] = {}
    for name in names:
        model = MODELS[name]
        entry: dict[str, Any] = {"description": model.description, "features": {
            f: {"description": FEATURE_SETS[f].description, "dim": int(feats[f]["X"].shape[1]),
                "extract_s": feats[f]["seconds"], "from_cache": feats[f]["cached"]} for f in model.needs}}
        for proto, (folds, grouped) in protocols.items():
            print(f"{name} / {proto}:", flush=True)
            r = run_protocol(model, folds, grouped, data, args.seed, args.work, f"{name} {proto}")
            r["artist_leaking"] = not grouped
            r["protocol"] = (f"artist-disjoint stratified {args.folds}-fold (StratifiedGroupKFold, seed {args.seed}); "
                             "artist-grouped inner folds" if grouped else
                             f"random stratified 10-fold (StratifiedKFold, seed {args.seed}): ARTISTS LEAK across "
                             "train/test (literature protocol); ungrouped inner folds")
            entry[proto] = r
            s = r["summary"]
            print(f"  {name} {proto}: macro-F1 {s['macro_f1']['mean']:.3f} +- {s['macro_f1']['std']:.3f} over "
                  f"{len(folds)} folds; pooled out-of-fold:", flush=True)
            print("\n".join("    " + line for line in format_quadrant_metrics(r["pooled_out_of_fold"])), flush=True)
        entry["date"] = started
        results[name] = entry

    load_end = os.getloadavg()
    machine = {**machine_info(args.workers), "load_average_start": list(load_start), "load_average_end": list(load_end),
               "date": started, "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    for entry in results.values():
        entry["machine"] = machine
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    merged = {
        "benchmark": "4Q (TAFFC) Russell-quadrant classification on real music, development portion",
        "dataset": {"root": os.path.relpath(args.root, ROOT), "n_clips": int(keep.sum()),
                    "n_artists": len(set(data["artists"].tolist())),
                    "n_unknown_artist": int((data["artists"] == UNKNOWN_ARTIST).sum()),
                    "per_quadrant": np.bincount(data["quadrants"], minlength=5)[1:].tolist(),
                    "dropped": dropped, "sample_rate": SR, "seed": args.seed, "limit_per_quadrant": args.limit or None},
        "notes": "macro-F1 = scikit-learn f1_score(average='macro') over Q1..Q4; summary = mean and sample std "
                 "(ddof=1) over folds; pooled_out_of_fold = metrics of all out-of-fold predictions with "
                 "bootstrap 95 % CIs over songs (pooled AUCs mix the score scales of the fold models). "
                 "Published 4Q numbers (900 clips, random folds) are not directly comparable: 720 clips here.",
        "models": {**old.get("models", {}), **results},
        "last_run": {"models": names, "machine": machine},
    }
    atomic_write_json(args.out, merged)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
