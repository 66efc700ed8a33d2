"""Real-music benchmark: Russell-quadrant classification on the 4Q (TAFFC) clips, on the folds of crossval.

Data: ``../shared/real/4q`` relative to the repository root (``--root``), read with the project's reader
(``deam_mamba.data.registry.open_dataset(root, kind="4q")``: int song ids, quadrant 1..4, artist or None). Never
copied or committed; if it is missing the script says so and exits 0.

Folds: every fold is ``dataset_split(ds, "kfold", seed, folds=k, fold=i, protocol=...)``, exactly what
``deam-mamba crossval`` trains fold ``i`` on: its ``train`` + ``val`` songs are the fold's training songs, its
``test`` songs the fold's test songs. The baselines below are fitted on train + val and scored on test, so every
row of the table is on the same test songs. The top-level ``folds`` block of the JSON lists per fold the test
songs per quadrant and ``test_ids_sha1`` = sha1 of the sorted test ids written as ``"4637,11357,..."`` (ASCII):
two results with equal hashes used the same folds.

Protocols:
  artist_<k>fold   stratified k-fold (default 5) with no artist on both sides of a split (crossval
                   ``--protocol artist``); the baselines choose hyperparameters on artist-grouped inner folds.
                   The honest number. A song without an artist is its own group.
  random_10fold    (--random-10fold) stratified random 10-fold (crossval ``--folds 10 --protocol random``):
                   artists leak across the split, the protocol of the published 4Q results (Panda et al. 2018:
                   F1 76.4 % on 900 clips), for comparison.

Systems (one row per system and protocol):
  svm, ridge       trained here (``MODELS``: name -> Model(needs, run); ``run(FoldData) -> FoldOutput``):
    svm    152 handcrafted librosa features -> StandardScaler -> RBF SVC (class_weight balanced), C and gamma by
           grid search on inner folds (macro-F1); axis scores from its one-vs-one margins.
    ridge  per-clip log-mel statistics (128-band log-mel at 22.05 kHz, n_fft 2048, hop 512: mean and std per band
           over time + 8 global descriptors, ``deam_mamba.baselines.mel_statistics``, 264 values) -> StandardScaler
           -> RidgeClassifierCV (alpha by inner folds, macro-F1, class_weight balanced); axis scores from its
           per-class decision values.
  musicnn  MusiCNN (MSD) teacher embeddings (``deam_mamba.models.musicnn``, weights from the optional ``make musicnn``,
           path ``--musicnn-weights``): the clip resampled to 16 kHz, musicnn log-mel patches of 3 s (no overlap),
           per patch the 200-d penultimate layer and the 50 tag probabilities; per clip their mean and std over
           patches (500 values) -> the svm recipe above (StandardScaler -> RBF SVC, C/gamma on inner folds).
  --crossval NAME=DIR     a finished ``deam-mamba crossval`` (``DIR/crossval.json``, ``DIR/fold<i>/eval/metrics.json``
                          and ``predictions.csv``, train seconds from ``fold<i>/train_summary.json``). Each fold's
                          test ids (``fold<i>/meta.json`` ``splits.test``) must equal the bench's, else the run is
                          refused (listed under ``refused`` with ``same_folds: false``, exit status 1). Without
                          ``crossval.json`` (still running) the finished folds are read and marked incomplete.
  --zero-shot NAME=RUN    a trained static (or quadrant) run scored on all clips with the project's evaluation
                          (``evaluate_run(RUN, split="all", data=root, kind="4q", cache=--feature-cache)``): its
                          all-clip metrics with bootstrap CIs and, from its predictions, its metrics on each fold's
                          test songs, so it lines up with the other rows. It never saw 4Q in training.
  --fuse NAME=DIR         late fusion of a finished crossval (DIR, as --crossval) with the svm: on each fold the
                          SVM's C/gamma come from the same inner grid search, then one RBF SVC with Platt
                          probabilities is fitted on the fold's training songs; its quadrant probabilities give
                          axis probabilities (P(valence+) = P(Q1) + P(Q4), P(arousal+) = P(Q1) + P(Q2)), averaged
                          with equal weights with the run's axis probabilities from ``predictions.csv``; the
                          quadrant is the side of 0.5 on each axis. No weight is tuned, nothing sees test labels.
  --train-deep a,b        trains each model through ``run_crossval(--deep-config, [data.root, data.cache,
                          model.name=X, model.kwargs={}, *--deep-overrides], out_dir=--work/cv_X, folds=--folds)``
                          (artist protocol, seed --seed), then adds it like ``--crossval X=--work/cv_X``. SLOW on CPU
                          (hours per model): meant for a GPU machine. Resumable: finished folds are reused.

Per system and protocol: per-fold macro-F1, accuracy, valence/arousal axis accuracy and ROC AUC, fit seconds;
mean +- std over folds (ddof=1); pooled out-of-fold metrics with bootstrap 95 % CIs over songs (pooled AUCs mix the
score scales of the k fold models). Features are cached as .npz in ``--work`` (git-ignored), keyed by song name.
``--out`` is merged: entries of systems not run now are kept (a row whose folds hash differs from the ``folds``
block is flagged). Machine info and load average are recorded. A markdown table is printed and written beside
``--out`` (``.md``).

    .venv/bin/python bench/bench_real_4q.py [--models svm,ridge[,musicnn]] [--folds 5] [--random-10fold] [--workers 1]
        [--musicnn-weights FILE]
        [--crossval mv=/work/runs/cv_4q_mv] [--zero-shot demo=/tmp/demo/out/run]
        [--train-deep resnet18,efficientnet_b0 --deep-overrides train.device=cuda]   # GPU machine only
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
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
from sklearn.svm import SVC  # noqa: E402

from deam_mamba.core.io import atomic_write_json, atomic_write_text  # noqa: E402
from deam_mamba.core.scales import parse_quadrant  # noqa: E402
from deam_mamba.data.folds import fold_summary  # noqa: E402
from deam_mamba.data.registry import dataset_split, open_dataset  # noqa: E402
from deam_mamba.evaluation.baselines import DEFAULT_ALPHAS, mel_statistics  # noqa: E402
from deam_mamba.evaluation.handcrafted import extract_many, fit_predict_svm, handcrafted_features  # noqa: E402
from deam_mamba.evaluation.quadrants import axis_scores, format_quadrant_metrics, quadrant_metrics  # noqa: E402

DEFAULT_ROOT = ROOT.parent / "shared" / "real" / "4q"
DEFAULT_DEEP_CONFIG = ROOT / "configs" / "real_4q.yaml"
SR = 22050
INNER_FOLDS = 5
VAL_FRACTION = 0.1  # crossval's default data.val_fraction; the test songs do not depend on it
FOLD_KEYS = ("macro_f1", "accuracy", "valence_accuracy", "arousal_accuracy", "valence_auc", "arousal_auc")
PROTOCOL_TEXT = {
    "artist": "artist-disjoint stratified {k}-fold (deam_mamba dataset_split kfold, protocol artist, seed {seed}; "
              "= deam-mamba crossval --folds {k} --protocol artist)",
    "random": "random stratified {k}-fold (deam_mamba dataset_split kfold, protocol random, seed {seed}; = "
              "deam-mamba crossval --folds {k} --protocol random): ARTISTS LEAK across train/test "
              "(literature protocol)",
}


# --- data ------------------------------------------------------------------------------------------


class SongSubset:
    """The songs ``ids`` of a dataset, for :func:`dataset_split` (``--limit`` smoke runs)."""

    def __init__(self, ds: Any, ids: Sequence[int]):
        self._ds, self.ids = ds, sorted(int(i) for i in ids)

    def quadrant(self, sid: int) -> int:
        return self._ds.quadrant(sid)

    def group(self, sid: int) -> str | None:
        return self._ds.group(sid)


@dataclass
class Songs:
    """The benchmark's songs in ``ids`` order (sorted ints); ``source`` is what :func:`dataset_split` splits."""

    source: Any
    ids: np.ndarray          # [N] int song ids, sorted
    names: list[str]         # [N] song names (MT0000004637), the feature-cache key
    paths: list[Path]        # [N] audio files
    quadrants: np.ndarray    # [N] int 1..4
    groups: np.ndarray       # [N] str: artist, or "<song ID>" for a song without one (its own group, as in splits)
    n_unknown_artist: int

    def rows(self, ids: Sequence[int]) -> np.ndarray:
        pos = {int(s): i for i, s in enumerate(self.ids.tolist())}
        return np.sort(np.array([pos[int(s)] for s in ids], dtype=np.int64))


def load_songs(root: Path, limit: int = 0) -> Songs:
    """Open 4Q with the project's reader; ``limit > 0``: only the first ``limit`` songs (by id) per quadrant."""
    ds = open_dataset(root, kind="4q")
    ids = list(ds.ids)
    source: Any = ds
    if limit > 0:
        ids = sorted(i for q in (1, 2, 3, 4) for i in [s for s in ids if ds.quadrant(s) == q][:limit])
        source = SongSubset(ds, ids)
    groups = [ds.group(i) for i in ids]
    return Songs(source, np.array(ids, dtype=np.int64), [ds.name(i) for i in ids], [Path(ds.audio_path(i))
                 for i in ids], np.array([ds.quadrant(i) for i in ids], dtype=np.int64),
                 np.array([f"<song {i}>" if g is None else str(g) for i, g in zip(ids, groups, strict=True)]),
                 sum(g is None for g in groups))


def ids_sha1(ids: Sequence[int]) -> str:
    """sha1 of the sorted ids written as ``"4637,11357,..."``: equal hashes, equal song sets."""
    return hashlib.sha1(",".join(str(int(i)) for i in sorted(ids)).encode("ascii")).hexdigest()


@dataclass
class Protocol:
    key: str                          # artist_5fold, random_10fold
    kind: str                         # artist | random
    k: int
    seed: int
    splits: list[dict[str, list[int]]]  # per fold {"train", "val", "test"} song ids (dataset_split)

    @property
    def grouped(self) -> bool:
        return self.kind == "artist"

    @property
    def text(self) -> str:
        return PROTOCOL_TEXT[self.kind].format(k=self.k, seed=self.seed)

    def test_ids(self, fold: int) -> list[int]:
        return sorted(self.splits[fold]["test"])

    def train_ids(self, fold: int) -> list[int]:
        return sorted(self.splits[fold]["train"] + self.splits[fold]["val"])

    def sha1(self) -> str:
        return hashlib.sha1(",".join(ids_sha1(s["test"]) for s in self.splits).encode("ascii")).hexdigest()

    def block(self, songs: Songs) -> dict[str, Any]:
        """The ``folds`` entry: per fold the sizes, test songs per quadrant and the sha1 of the test ids."""
        q = {int(s): int(v) for s, v in zip(songs.ids.tolist(), songs.quadrants.tolist(), strict=True)}
        per_fold = [{"fold": i, "n_train": len(s["train"]) + len(s["val"]), "n_val_of_train": len(s["val"]),
                     "n_test": len(s["test"]),
                     "test_per_quadrant": np.bincount([q[t] for t in s["test"]], minlength=5)[1:].tolist(),
                     "test_ids_sha1": ids_sha1(s["test"])} for i, s in enumerate(self.splits)]
        return {"protocol": self.kind, "k": self.k, "seed": self.seed, "val_fraction": VAL_FRACTION,
                "description": self.text, "n_songs": int(songs.ids.size), "sha1": self.sha1(), "per_fold": per_fold}


def make_protocol(songs: Songs, kind: str, k: int, seed: int) -> Protocol:
    splits = [dataset_split(songs.source, "kfold", seed=seed, folds=k, fold=i, protocol=kind,
                            val_fraction=VAL_FRACTION) for i in range(k)]
    tests = sorted(t for s in splits for t in s["test"])
    if tests != sorted(songs.ids.tolist()):
        raise RuntimeError(f"{kind} {k}-fold: the test folds do not cover every song exactly once")
    return Protocol(f"{kind}_{k}fold", kind, k, seed, splits)


# --- features (cached) -----------------------------------------------------------------------------


def logmel_stats(wave: np.ndarray, sr: int) -> np.ndarray:
    """Mono clip ``[T]`` -> ``[264]``: 128-band log-mel (dB, ref 1, top_db 80) statistics (baselines.mel_statistics)."""
    mel = librosa.feature.melspectrogram(y=wave, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
    return mel_statistics(librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)).astype(np.float32)


MUSICNN_WEIGHTS_ENV = "DEAM_MUSICNN_WEIGHTS"  # set by --musicnn-weights; read in (forked) extraction workers
_MUSICNN: dict[str, Any] = {}


def _weights_override(dataset: str | None) -> str | None:
    """``$DEAM_MUSICNN_WEIGHTS`` (``--musicnn-weights``) for the ``msd`` network, the one it replaces; else None."""
    return (os.environ.get(MUSICNN_WEIGHTS_ENV) or None) if dataset == "msd" else None


def _musicnn_model(dataset: str = "msd") -> Any:
    """The MusiCNN trained on ``dataset`` (``msd`` or ``mtt``: ``make musicnn``'s files; for ``msd`` the
    ``--musicnn-weights`` override if set), loaded once per process."""
    from deam_mamba.models.musicnn import default_weights, load_musicnn  # torch: only when extracted

    path = _weights_override(dataset) or str(default_weights(dataset))
    if _MUSICNN.get(dataset, {}).get("path") != path:
        _MUSICNN[dataset] = {"path": path, "model": load_musicnn(path)}
    return _MUSICNN[dataset]["model"]


def _weights_tag(dataset: str | None) -> str:
    """Cache-name suffix of MusiCNN features computed with overridden weights, so that features of two networks
    never share one cache file ("" for the default weights and for other feature sets)."""
    override = _weights_override(dataset)
    return "_w" + hashlib.sha1(str(Path(override).resolve()).encode()).hexdigest()[:8] if override else ""


def musicnn_stats(wave: np.ndarray, sr: int, dataset: str = "msd") -> np.ndarray:
    """Mono clip ``[T]`` at ``sr`` -> ``[500]``: mean then std over its 3 s patches of the ``dataset`` MusiCNN's
    penultimate layer (200) and tag probabilities (50), in that order (the clip resampled to 16 kHz with soxr HQ)."""
    import torch

    from deam_mamba.models.musicnn import SAMPLE_RATE, musicnn_patches

    y = librosa.resample(np.asarray(wave, dtype=np.float32), orig_sr=sr, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    model = _musicnn_model(dataset)
    with torch.inference_mode():
        per_patch = model.patch_vectors(musicnn_patches(y)).double().numpy()
    return np.concatenate([per_patch.mean(axis=0), per_patch.std(axis=0)]).astype(np.float32)


@dataclass(frozen=True)
class FeatureSet:
    fn: Callable[[np.ndarray, int], np.ndarray]
    version: int  # bump when fn changes: invalidates the cache
    description: str
    musicnn: str | None = None  # the MusiCNN network (msd / mtt) the features come from; None: no MusiCNN


def musicnn_set(dataset: str, description: str) -> FeatureSet:
    """The MusiCNN statistics of the ``dataset`` network: one name, used by the extractor and the cache key."""
    return FeatureSet(partial(musicnn_stats, dataset=dataset), 1, description, musicnn=dataset)


FEATURE_SETS: dict[str, FeatureSet] = {
    "handcrafted": FeatureSet(handcrafted_features, 1, "152 librosa descriptors (deam_mamba.evaluation.handcrafted)"),
    "logmel_stats": FeatureSet(logmel_stats, 1, "128-band log-mel mean/std per band + 8 globals (264)"),
    "musicnn_msd": musicnn_set("msd", "MusiCNN (MSD) penultimate (200) + taggram (50): mean and std over 3 s "
                                      "patches (500)"),
    "musicnn_mtt": musicnn_set("mtt", "MusiCNN (MagnaTagATune) penultimate (200) + taggram (50): mean and std over "
                                      "3 s patches (500)"),
}


def load_features(name: str, songs: Songs, work: Path, workers: int) -> dict[str, Any]:
    """``{"X" [N, D] (NaN rows for failures), "failures" {song: reason}, "seconds", "cached"}`` in ``songs`` order.

    The cache ``work/<name>_v<version>_sr<SR>.npz`` is keyed by song name (the audio file's stem): rows are looked
    up by name, so any order or subset of the songs re-uses it; it is recomputed only if a song is missing.
    """
    fs = FEATURE_SETS[name]
    musicnn = fs.musicnn
    cache = work / f"{name}_v{fs.version}_sr{SR}{_weights_tag(musicnn)}.npz"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        have = {s: i for i, s in enumerate(z["songs"].tolist())}
        if all(s in have for s in songs.names):
            idx = [have[s] for s in songs.names]
            reasons = dict(zip(z["fail_songs"].tolist(), z["fail_reasons"].tolist(), strict=True))
            return {"X": z["X"][idx], "failures": {s: reasons[s] for s in songs.names if s in reasons},
                    "seconds": float(z["seconds"]), "cached": True}
    if musicnn is not None:  # missing weights: one clear error here, not a failure per clip in the workers
        from deam_mamba.core.errors import CheckpointError

        try:
            _musicnn_model(musicnn)
        except CheckpointError as exc:
            raise SystemExit(f"error: {exc}") from None
    print(f"extracting {name} features of {len(songs.paths)} clips on {workers} worker(s) ...", flush=True)
    t0 = time.perf_counter()
    X, fails = extract_many(songs.paths, sr=SR, workers=workers, progress=True, features=fs.fn)
    seconds = time.perf_counter() - t0
    by_path = {str(p): s for p, s in zip(songs.paths, songs.names, strict=True)}
    failures = {by_path[p]: reason for p, reason in fails}
    work.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, X=X, songs=np.array(songs.names), seconds=seconds,
             fail_songs=np.array(list(failures), dtype=str), fail_reasons=np.array(list(failures.values()), dtype=str))
    os.replace(tmp, cache)
    print(f"  {name}: {X.shape[1]} features, {seconds:.0f} s, {len(failures)} failure(s) -> {cache}", flush=True)
    return {"X": X, "failures": failures, "seconds": seconds, "cached": False}


# --- models trained here ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FoldData:
    """Everything a model sees for one fold. Arrays cover all N songs; index them with train_idx/test_idx."""

    features: dict[str, np.ndarray]  # feature-set name -> [N, D], for the sets the model needs
    quadrants: np.ndarray            # [N] int 1..4
    groups: np.ndarray               # [N] str artist groups
    paths: list[Path]                # [N] audio files (for models that read audio themselves)
    train_idx: np.ndarray
    test_idx: np.ndarray
    inner_groups: np.ndarray | None  # groups of the training rows for artist-grouped inner CV, None = ungrouped
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


def run_musicnn(d: FoldData) -> FoldOutput:
    X = d.features["musicnn_msd"]
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


def quadrant_from_axes(p_valence: np.ndarray, p_arousal: np.ndarray) -> np.ndarray:
    """Axis probabilities ``[M]`` -> quadrant 1..4 (Q1 v+a+, Q2 v-a+, Q3 v-a-, Q4 v+a-), each axis split at 0.5."""
    v, a = np.asarray(p_valence) > 0.5, np.asarray(p_arousal) > 0.5
    return np.where(a, np.where(v, 1, 2), np.where(v, 4, 3)).astype(np.int64)


def fusion_model(cv_dir: Path, songs: Songs) -> Model:
    """Late fusion of a crossval run's out-of-fold axis probabilities with a Platt-scaled handcrafted SVM."""
    def run(d: FoldData) -> FoldOutput:
        X, y = d.features["handcrafted"], d.quadrants
        grid = fit_predict_svm(X[d.train_idx], y[d.train_idx], d.inner_groups, X[d.test_idx], seed=d.seed,
                               inner_folds=INNER_FOLDS)
        svc = SVC(kernel="rbf", class_weight="balanced", probability=True, random_state=d.seed,
                  C=grid.best_params["C"], gamma=grid.best_params["gamma"])
        model = Pipeline([("scale", StandardScaler()), ("svc", svc)]).fit(X[d.train_idx], y[d.train_idx])
        proba = model.predict_proba(X[d.test_idx])
        col = {int(c): j for j, c in enumerate(model.classes_)}
        pv_svm = proba[:, col[1]] + proba[:, col[4]]
        pa_svm = proba[:, col[1]] + proba[:, col[2]]
        run_preds: dict[int, tuple[int, int, float, float]] = {}
        for f in sorted(cv_dir.glob("fold*/eval/predictions.csv")):
            run_preds.update(_read_predictions(f))
        test_ids = songs.ids[d.test_idx]
        missing = [int(i) for i in test_ids if int(i) not in run_preds]
        if missing:
            raise FileNotFoundError(f"{cv_dir}: no out-of-fold prediction for {len(missing)} test song(s) "
                                    f"(e.g. {missing[:3]}): finish its crossval first")
        mv = np.array([run_preds[int(i)][2:] for i in test_ids])
        if mv.min() < 0.0 or mv.max() > 1.0:
            raise ValueError(f"{cv_dir}: its axis scores are not probabilities in [0, 1]; fusion needs a quadrant "
                             "(mode=quadrant, axes) run")
        pv, pa = 0.5 * (pv_svm + mv[:, 0]), 0.5 * (pa_svm + mv[:, 1])
        return FoldOutput(quadrant_from_axes(pv, pa), pv, pa, {"best_params": grid.best_params})
    return Model(("handcrafted",), run, f"late fusion: mean of the axis probabilities of crossval run {cv_dir} and "
                 "of a Platt-scaled handcrafted RBF SVM (C/gamma from the svm's inner grid); equal weights")


MODELS: dict[str, Model] = {
    "svm": Model(("handcrafted",), run_svm, "handcrafted librosa features (152) -> RBF SVM, C/gamma grid on inner "
                 "folds (macro-F1); axis scores = one-vs-one SVM margins across each axis"),
    "ridge": Model(("logmel_stats",), run_ridge, "log-mel statistics (264) -> RidgeClassifierCV (alpha on inner "
                   "folds, macro-F1, balanced); axis scores = per-class decision values summed per side"),
    "musicnn": Model(("musicnn_msd",), run_musicnn, "MusiCNN (MSD, musicnn 0.1.0 weights converted by make musicnn) "
                     "penultimate + taggram mean/std over 3 s patches (500) -> the svm recipe (RBF SVM, C/gamma "
                     "grid on inner folds); axis scores = one-vs-one SVM margins"),
}


def _f3(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def run_protocol(model: Model, proto: Protocol, songs: Songs, features: dict[str, np.ndarray], keep: np.ndarray,
                 seed: int, work: Path, label: str) -> dict[str, Any]:
    """Fit ``model`` on train + val of every fold, score its test songs; per-fold, summary and pooled metrics.

    ``keep [N]``: rows with features (a clip whose features failed is left out of training and testing).
    """
    q = songs.quadrants
    n = q.shape[0]
    pred, vs, as_ = np.zeros(n, np.int64), np.zeros(n), np.zeros(n)
    done = np.zeros(n, bool)
    per_fold = []
    for i in range(proto.k):
        tr = songs.rows(proto.train_ids(i))
        te = songs.rows(proto.test_ids(i))
        tr, te = tr[keep[tr]], te[keep[te]]
        fd = FoldData({k: features[k] for k in model.needs}, q, songs.groups, songs.paths, tr, te,
                      songs.groups[tr] if proto.grouped else None, seed, work)
        t0 = time.perf_counter()
        out = model.run(fd)
        fit_s = time.perf_counter() - t0
        pred[te], vs[te], as_[te], done[te] = out.pred, out.valence_score, out.arousal_score, True
        m = quadrant_metrics(q[te], out.pred, out.valence_score, out.arousal_score, bootstrap=0)
        row = {"fold": i, "n_train": int(tr.size), "n_test": int(te.size),
               **{k: m[k]["value"] for k in FOLD_KEYS}, "fit_s": fit_s, **out.info}
        per_fold.append(row)
        print(f"  [{label}] fold {i + 1}/{proto.k}: macro-F1 {row['macro_f1']:.3f}  acc {row['accuracy']:.3f}  "
              f"AUC v {_f3(row['valence_auc'])} a {_f3(row['arousal_auc'])}  {fit_s:.1f} s  {out.info}", flush=True)
    pooled = quadrant_metrics(q[done], pred[done], vs[done], as_[done], bootstrap=1000, seed=seed)
    return {"per_fold": per_fold, "summary": fold_summary(per_fold), "pooled_out_of_fold": pooled,
            "fit_s_total": float(sum(r["fit_s"] for r in per_fold)), "folds_sha1": proto.sha1(),
            "same_folds": True}


# --- systems read from finished runs ---------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_predictions(path: Path) -> dict[int, tuple[int, int, float, float]]:
    """``predictions.csv`` -> ``{song_id: (true quadrant, predicted quadrant, valence score, arousal score)}``."""
    with open(path, newline="", encoding="utf-8") as fh:
        return {int(r["song_id"]): (parse_quadrant(r["quadrant_true"]), parse_quadrant(r["quadrant_pred"]),
                                    float(r["valence_score"]), float(r["arousal_score"])) for r in csv.DictReader(fh)}


def _pooled(preds: dict[int, tuple[int, int, float, float]], seed: int) -> dict[str, Any] | None:
    if not preds:
        return None
    a = np.array(list(preds.values()), dtype=np.float64)
    return quadrant_metrics(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2], a[:, 3], bootstrap=1000,
                            seed=seed)


def read_crossval(name: str, cv_dir: Path, get_protocol: Callable[[str, int], Protocol], seed: int,
                  songs: Songs) -> tuple[str, dict[str, Any]]:
    """A ``deam-mamba crossval`` output folder -> ``(protocol key, entry)``; the entry says ``same_folds``.

    Per fold: the metrics of ``fold<i>/eval/metrics.json`` (``quadrants``), train seconds of
    ``fold<i>/train_summary.json`` and the fold's test ids (``fold<i>/meta.json`` ``splits.test``), compared with
    the bench's fold. Without ``crossval.json`` (a cross-validation still running) the folds that have an
    evaluation are read and the entry is marked ``complete: false``.
    """
    summary_path = cv_dir / "crossval.json"
    summary = _read_json(summary_path) if summary_path.is_file() else None
    fold_dirs = sorted((p for p in cv_dir.glob("fold*") if p.name[4:].isdigit()), key=lambda p: int(p.name[4:]))
    if summary is None and not fold_dirs:
        raise FileNotFoundError(f"{cv_dir}: no crossval.json and no fold<i>/ folders: not a deam-mamba crossval "
                                "output")
    cfg0 = _read_yaml_config(fold_dirs[0] / "config.yaml") if fold_dirs else {}
    kind = summary["protocol"] if summary else cfg0.get("data", {}).get("fold_protocol", "artist")
    k = int(summary["folds"]) if summary else int(cfg0.get("data", {}).get("folds", len(fold_dirs)))
    proto = get_protocol(kind, k)
    rows, mismatches, preds = [], [], {}
    for i in range(k):
        fdir = cv_dir / f"fold{i}"
        metrics_path = fdir / "eval" / "metrics.json"
        if not metrics_path.is_file():
            continue
        meta = _read_json(fdir / "meta.json")
        test = sorted(int(t) for t in meta["splits"]["test"])
        same = test == proto.test_ids(i)
        if not same:
            mismatches.append({"fold": i, "run_test_ids_sha1": ids_sha1(test), "bench_test_ids_sha1":
                               ids_sha1(proto.test_ids(i)), "n_run": len(test), "n_bench": len(proto.test_ids(i))})
        m = _read_json(metrics_path)
        qm = m.get("quadrants") or {}
        ts = fdir / "train_summary.json"
        train_s = _read_json(ts).get("seconds_this_session") if ts.is_file() else None
        rows.append({"fold": i, "n_train": len(meta["splits"].get("train", [])) + len(meta["splits"].get("val", [])),
                     "n_test": int(m.get("n_songs", len(test))),
                     **{key: qm[key]["value"] for key in FOLD_KEYS if key in qm},
                     "fit_s": float(train_s) if train_s is not None else None, "test_ids_sha1": ids_sha1(test),
                     "same_fold": same, "checkpoint_step": m.get("step")})
        pred_csv = fdir / "eval" / "predictions.csv"
        if pred_csv.is_file():
            preds.update(_read_predictions(pred_csv))
    if not rows:
        raise FileNotFoundError(f"{cv_dir}: no fold has an evaluation (fold<i>/eval/metrics.json) yet")
    complete = summary is not None and len(rows) == k
    fit = [r["fit_s"] for r in rows if r["fit_s"] is not None]
    meta0 = _read_json(cv_dir / f"fold{rows[0]['fold']}" / "meta.json")
    model_name = summary["model"] if summary else cfg0.get("model", {}).get("name")
    mode = summary["mode"] if summary else cfg0.get("mode")
    entry = {
        "description": f"deam-mamba crossval run {cv_dir} (model {model_name}, mode {mode})",
        "source": {"kind": "crossval", "dir": str(cv_dir), "config": summary.get("config") if summary else None,
                   "overrides": summary.get("overrides") if summary else None,
                   "git_commit": meta0.get("git_commit"), "versions": meta0.get("versions"),
                   "command": meta0.get("command")},
        "per_fold": rows, "summary": fold_summary([{k2: v for k2, v in r.items() if k2 not in ("fold", "same_fold",
                                                                                            "checkpoint_step")}
                                                   for r in rows]),
        "pooled_out_of_fold": _pooled(preds, seed) if complete else None,
        "fit_s_total": float(sum(fit)) if fit else None,
        "complete": complete, "n_folds_done": len(rows), "same_folds": not mismatches, "folds_sha1": proto.sha1(),
        "artist_leaking": not proto.grouped, "protocol": proto.text + "; trained by deam-mamba crossval on train "
                                                                      "(early stopping on val), scored on test",
    }
    if summary is not None:  # crossval's own mean +- std, for reference (equal to summary when complete)
        entry["crossval_mean_std"] = summary.get("mean_std")
    if mismatches:
        entry["fold_mismatches"] = mismatches
    return proto.key, entry


def _read_yaml_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def zero_shot(name: str, run_dir: Path, root: Path, cache: Path, work: Path, protocols: list[Protocol], songs: Songs,
              seed: int, force: bool) -> dict[str, Any]:
    """Score a trained run on every clip (``evaluate_run(split="all")``), then per fold on each fold's test songs.

    The evaluation goes to ``work/zeroshot_<name>``; it is reused when its ``metrics.json`` is of the same run
    and checkpoint step (``--zero-shot-force`` redoes it).
    """
    from deam_mamba.evaluation.evaluate import evaluate_run

    out = work / f"zeroshot_{name}"
    best = _read_json(run_dir / "checkpoints" / "best.json")
    old = out / "metrics.json"
    t0 = time.perf_counter()
    if (not force and old.is_file() and (out / "predictions.csv").is_file()
            and _read_json(old).get("run_dir") == str(run_dir) and _read_json(old).get("step") == best.get("step")):
        print(f"zero-shot {name}: re-using {out} (run {run_dir}, step {best.get('step')})", flush=True)
        metrics = _read_json(old)
        reused = True
    else:
        print(f"zero-shot {name}: evaluating {run_dir} on all clips of {root} (cache {cache}) ...", flush=True)
        metrics = evaluate_run(run_dir, split="all", data=root, kind="4q", cache=cache, out_dir=out, bootstrap=1000,
                               force=True, progress=False, seed=seed)
        reused = False
    eval_s = time.perf_counter() - t0
    preds = _read_predictions(out / "predictions.csv")
    run_cfg = _read_yaml_config(run_dir / "config.yaml")
    entry: dict[str, Any] = {
        "description": f"zero-shot: run {run_dir} (mode {run_cfg.get('mode')}, model "
                       f"{run_cfg.get('model', {}).get('name')}, trained on {run_cfg.get('data', {}).get('root')}), "
                       "never trained on 4Q; quadrant by the sign of its valence/arousal around the scale midpoint, "
                       "AUC from its predicted values",
        "zero_shot": True,
        "source": {"kind": "zero_shot", "run_dir": str(run_dir), "checkpoint_step": best.get("step"),
                   "trained_on": run_cfg.get("data", {}).get("root"), "eval_dir": os.path.relpath(out, ROOT),
                   "evaluation_reused": reused, "evaluate_s": round(eval_s, 1), "pooling": metrics.get("pooling")},
        "all_clips": {"n_songs": metrics.get("n_songs"), "quadrants": metrics.get("quadrants")},
    }
    missing = [int(s) for s in songs.ids.tolist() if int(s) not in preds]
    if missing:
        entry["missing_predictions"] = missing
        print(f"WARNING: zero-shot {name}: no prediction for {len(missing)} clip(s), e.g. {missing[:5]}", flush=True)
    for proto in protocols:
        rows = []
        for i in range(proto.k):
            te = [t for t in proto.test_ids(i) if t in preds]
            a = np.array([preds[t] for t in te], dtype=np.float64)
            m = quadrant_metrics(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2], a[:, 3], bootstrap=0)
            rows.append({"fold": i, "n_train": 0, "n_test": len(te), **{k: m[k]["value"] for k in FOLD_KEYS},
                         "fit_s": None})
        entry[proto.key] = {"per_fold": rows, "summary": fold_summary([{k: v for k, v in r.items() if k != "fold"}
                                                                       for r in rows]),
                            "pooled_out_of_fold": metrics.get("quadrants"), "fit_s_total": None,
                            "folds_sha1": proto.sha1(), "same_folds": True, "artist_leaking": False,
                            "protocol": proto.text + "; ZERO-SHOT: no training on 4Q, the same predictions scored on "
                                                     "each fold's test songs (pooled = all clips)"}
        s = entry[proto.key]["summary"]
        print(f"  zero-shot {name} {proto.key}: macro-F1 {_f3(s['macro_f1']['mean'])} +- {_f3(s['macro_f1']['std'])}",
              flush=True)
    return entry


def train_deep(model: str, config: Path, overrides: list[str], root: Path, cache: Path, work: Path, folds: int,
               seed: int) -> Path:
    """Cross-validate ``model`` with ``deam-mamba crossval`` (artist protocol) into ``work/cv_<model>``. Slow on CPU."""
    from deam_mamba.experiments.crossval import run_crossval

    out = work / f"cv_{model}"
    if (out / "crossval.json").is_file():
        print(f"train-deep {model}: {out}/crossval.json exists, re-using it", flush=True)
        return out
    print(f"train-deep {model}: deam-mamba crossval {config} -> {out} ({folds} folds; hours on a CPU)", flush=True)
    run_crossval(config, [f"data.root={root}", f"data.cache={cache}", f"model.name={model}", "model.kwargs={}",
                          *overrides], out_dir=out, folds=folds, protocol="artist", seed=seed)
    return out


# --- output ----------------------------------------------------------------------------------------


def machine_info(workers: int) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "workers": workers,
        "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
        "sklearn": sklearn.__version__, "librosa": librosa.__version__,
    }


def _ms(summary: dict[str, Any], key: str) -> str:
    s = summary.get(key) or {}
    if s.get("mean") is None:
        return "-"
    return f"{s['mean']:.3f} ± {s['std']:.3f}" if s.get("std") is not None else f"{s['mean']:.3f}"


def write_score_table(path: Path, columns: list[str], rows: list[tuple[list[str], dict[str, Any]]]) -> str:
    """A markdown table written atomically to ``path`` (and returned): the ``columns`` named, then macro-F1, valence
    AUC and arousal AUC (mean ± std over folds) of each row ``(cells, summary)``."""
    lines = ["| " + " | ".join([*columns, "macro-F1", "valence AUC", "arousal AUC"]) + " |",
             "|" + "---|" * len(columns) + "---:|---:|---:|"]
    for cells, s in rows:
        lines.append("| " + " | ".join([*cells, *(_ms(s, k) for k in ("macro_f1", "valence_auc", "arousal_auc"))])
                     + " |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(path, text)
    return text


def markdown_table(result: dict[str, Any]) -> str:
    """Model, protocol, macro-F1 / accuracy / valence AUC / arousal AUC (mean ± std over folds), train s/fold."""
    folds = result.get("folds", {})
    n = result.get("dataset", {}).get("n_clips")
    lines = [f"# 4Q (TAFFC) quadrant classification, {n} clips: every system on the same folds", "",
             "mean ± sample std over the test folds; folds = `deam-mamba crossval` folds (seed "
             f"{result.get('dataset', {}).get('seed')}); zero-shot rows were never trained on 4Q.", "",
             "| model | protocol | macro-F1 | accuracy | valence AUC | arousal AUC | train s/fold |",
             "|---|---|---:|---:|---:|---:|---:|"]
    notes = []
    for name, entry in result.get("models", {}).items():
        for pkey, r in entry.items():
            if not isinstance(r, dict) or "summary" not in r:
                continue
            s = r["summary"]
            label = pkey
            if entry.get("zero_shot"):
                label += " (zero-shot)"
            if r.get("complete") is False:
                label += f" ({r.get('n_folds_done')}/{len(folds.get(pkey, {}).get('per_fold', [])) or '?'} folds)"
            if pkey in folds and r.get("folds_sha1") != folds[pkey]["sha1"]:
                label += " †"
                notes.append(f"† {name} {pkey}: other folds than the `folds` block (older run); re-run it")
            fit = [f["fit_s"] for f in r.get("per_fold", []) if f.get("fit_s") is not None]
            train = "zero-shot" if entry.get("zero_shot") else (f"{np.mean(fit):.0f}" if fit else "-")
            lines.append(f"| {name} | {label} | {_ms(s, 'macro_f1')} | {_ms(s, 'accuracy')} | "
                         f"{_ms(s, 'valence_auc')} | {_ms(s, 'arousal_auc')} | {train} |")
    for name, entry in result.get("models", {}).items():
        if entry.get("zero_shot") and entry.get("all_clips", {}).get("quadrants"):
            q = entry["all_clips"]["quadrants"]
            notes.append(f"{name}, all {entry['all_clips']['n_songs']} clips at once: macro-F1 "
                         f"{_f3(q['macro_f1']['value'])}, valence AUC {_f3(q['valence_auc']['value'])}, arousal AUC "
                         f"{_f3(q['arousal_auc']['value'])}")
    for name, r in result.get("refused", {}).items():
        notes.append(f"refused {name}: same_folds false ({r.get('dir')})")
    fold_lines = [f"- {k}: sha1 {v['sha1'][:12]}, test songs per fold "
                  f"{[f['n_test'] for f in v['per_fold']]}" for k, v in folds.items()]
    return "\n".join(lines + ([""] + notes if notes else []) + ["", "Folds:"] + fold_lines) + "\n"


def _pairs(values: list[str], flag: str, ap: argparse.ArgumentParser) -> list[tuple[str, Path]]:
    out = []
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name.strip() or not path.strip():
            ap.error(f"{flag} expects NAME=DIR, got {v!r}")
        out.append((name.strip(), Path(path.strip()).expanduser().resolve()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="4Q dataset folder (default ../shared/real/4q)")
    ap.add_argument("--folds", type=int, default=5, help="artist-disjoint folds (crossval --folds)")
    ap.add_argument("--seed", type=int, default=0, help="split seed (crossval's data.split_seed) and model seed")
    ap.add_argument("--models", default="svm,ridge", help=f"comma list of {', '.join(MODELS)} ('' or none: only "
                    "systems from --crossval / --zero-shot / --train-deep)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "_work", help="feature caches and evaluations "
                    "(git-ignored)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "real_4q.json")
    ap.add_argument("--workers", type=int, default=2, help="feature-extraction processes")
    ap.add_argument("--random-10fold", action="store_true", help="also the random stratified 10-fold (artists leak)")
    ap.add_argument("--limit", type=int, default=0, help="smoke run: only the first N clips (by id) of each quadrant")
    ap.add_argument("--crossval", action="append", default=[], metavar="NAME=DIR",
                    help="add a finished deam-mamba crossval output folder as system NAME (repeatable)")
    ap.add_argument("--fuse", action="append", default=[], metavar="NAME=DIR",
                    help="late fusion of a finished quadrant crossval folder with the handcrafted SVM (repeatable)")
    ap.add_argument("--zero-shot", action="append", default=[], metavar="NAME=RUN_DIR",
                    help="score a trained run on all clips, never trained on 4Q (repeatable)")
    ap.add_argument("--zero-shot-force", action="store_true", help="re-evaluate zero-shot runs already evaluated")
    ap.add_argument("--feature-cache", type=Path, default=None,
                    help="deam-mamba feature cache of the 4Q clips for --zero-shot / --train-deep (built if missing; "
                         "default WORK/cache_4q)")
    ap.add_argument("--train-deep", default="", help="comma list of model names to cross-validate with deam-mamba "
                    "crossval into WORK/cv_<model> (e.g. resnet18,efficientnet_b0). SLOW on CPU (hours): GPU machine")
    ap.add_argument("--deep-config", type=Path, default=DEFAULT_DEEP_CONFIG, help="config for --train-deep")
    ap.add_argument("--deep-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra config overrides for --train-deep (e.g. train.device=cuda train.epochs=20)")
    ap.add_argument("--musicnn-weights", type=Path, default=None, help="converted MusiCNN weights for --models "
                    "musicnn (default: make musicnn's musicnn_msd.safetensors in $XDG_CACHE_HOME/deam_mamba/teachers)")
    args = ap.parse_args()

    if not args.root.is_dir():
        print(f"4Q dataset not found at {args.root}: nothing to benchmark (see --root)")
        return 0
    names = [m.strip() for m in args.models.split(",") if m.strip() and m.strip().lower() != "none"]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    if "musicnn" in names and args.musicnn_weights is not None:
        # the weights are needed (and checked, with one clear error) only when features are extracted: a cached
        # feature file of these weights (load_features) needs none
        os.environ[MUSICNN_WEIGHTS_ENV] = str(args.musicnn_weights.expanduser().resolve())
    crossvals = _pairs(args.crossval, "--crossval", ap)
    zero_shots = _pairs(args.zero_shot, "--zero-shot", ap)
    deep = [m.strip() for m in args.train_deep.split(",") if m.strip()]
    fusions = _pairs(args.fuse, "--fuse", ap)
    if not (names or crossvals or zero_shots or deep or fusions):
        ap.error("nothing to do: give --models, --crossval, --zero-shot or --train-deep")
    root, work = args.root.resolve(), args.work.resolve()
    feature_cache = (args.feature_cache or work / "cache_4q").resolve()
    load_start = os.getloadavg()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    songs = load_songs(root, args.limit)
    print(f"4Q: {songs.ids.size} clips, {len(set(songs.groups.tolist()))} artist groups "
          f"({songs.n_unknown_artist} songs without an artist, each its own group), per quadrant "
          f"{np.bincount(songs.quadrants, minlength=5)[1:].tolist()}", flush=True)
    protocols: dict[tuple[str, int], Protocol] = {}

    def get_protocol(kind: str, k: int) -> Protocol:
        if (kind, k) not in protocols:
            protocols[kind, k] = make_protocol(songs, kind, k, args.seed)
        return protocols[kind, k]

    bench_protocols = [get_protocol("artist", args.folds)] + ([get_protocol("random", 10)] if args.random_10fold
                                                               else [])
    for p in bench_protocols:
        print(f"{p.key}: test songs per fold {[len(s['test']) for s in p.splits]}, sha1 {p.sha1()[:12]}", flush=True)

    results: dict[str, Any] = {}
    refused: dict[str, Any] = {}
    dropped: dict[str, str] = {}
    feats: dict[str, dict[str, Any]] = {}
    systems = {**MODELS, **{n: fusion_model(d, songs) for n, d in fusions}}
    names += [n for n, _ in fusions]
    if names:
        needed = sorted({f for m in names for f in systems[m].needs})
        feats = {f: load_features(f, songs, work, args.workers) for f in needed}
        dropped = {s: f"{f}: {r}" for f in needed for s, r in feats[f]["failures"].items()}
        if dropped:
            print(f"WARNING: leaving out {len(dropped)} clip(s) whose features failed: {list(dropped.items())[:5]}",
                  flush=True)
        keep = np.array([s not in dropped for s in songs.names])
        for name in names:
            model = systems[name]
            entry: dict[str, Any] = {"description": model.description, "features": {
                f: {"description": FEATURE_SETS[f].description, "dim": int(feats[f]["X"].shape[1]),
                    "extract_s": feats[f]["seconds"], "from_cache": feats[f]["cached"]} for f in model.needs}}
            for proto in bench_protocols:
                print(f"{name} / {proto.key}:", flush=True)
                r = run_protocol(model, proto, songs, {f: feats[f]["X"] for f in model.needs}, keep, args.seed, work,
                                 f"{name} {proto.key}")
                r["artist_leaking"] = not proto.grouped
                r["protocol"] = proto.text + ("; artist-grouped inner folds" if proto.grouped else
                                              "; ungrouped inner folds") + "; fitted on train + val, scored on test"
                entry[proto.key] = r
                s = r["summary"]
                print(f"  {name} {proto.key}: macro-F1 {s['macro_f1']['mean']:.3f} +- {s['macro_f1']['std']:.3f} "
                      f"over {proto.k} folds; pooled out-of-fold:", flush=True)
                print("\n".join("    " + line for line in format_quadrant_metrics(r["pooled_out_of_fold"])),
                      flush=True)
            entry["date"] = started
            results[name] = entry

    for model in deep:
        crossvals.append((model, train_deep(model, args.deep_config, args.deep_overrides, root, feature_cache, work,
                                            args.folds, args.seed)))
    for name, cv_dir in crossvals:
        try:
            pkey, r = read_crossval(name, cv_dir, get_protocol, args.seed, songs)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            print(f"ERROR --crossval {name}={cv_dir}: {exc}", flush=True)
            return 2
        if not r["same_folds"]:
            print(f"REFUSED --crossval {name}={cv_dir}: its test folds differ from the bench's {pkey} folds "
                  f"({r['fold_mismatches'][:2]}); not added to the table", flush=True)
            refused[name] = {"dir": str(cv_dir), "protocol_key": pkey, "same_folds": False,
                             "fold_mismatches": r["fold_mismatches"]}
            continue
        s = r["summary"]
        print(f"crossval {name} {pkey}: {r['n_folds_done']} fold(s), same folds; macro-F1 "
              f"{_f3(s.get('macro_f1', {}).get('mean'))} +- {_f3(s.get('macro_f1', {}).get('std'))}", flush=True)
        results[name] = {"description": r.pop("description"), "source": r.pop("source"), pkey: r, "date": started}
    for name, run_dir in zero_shots:
        results[name] = {**zero_shot(name, run_dir, root, feature_cache, work, bench_protocols, songs, args.seed,
                                     args.zero_shot_force), "date": started}

    load_end = os.getloadavg()
    machine = {**machine_info(args.workers), "load_average_start": list(load_start),
               "load_average_end": list(load_end), "date": started,
               "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    for entry in results.values():  # crossval rows were trained elsewhere (see their source): this machine read them
        entry["read_on_machine" if entry.get("source", {}).get("kind") == "crossval" else "machine"] = machine
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    models = {**old.get("models", {}), **results}
    merged = {
        "benchmark": "4Q (TAFFC) Russell-quadrant classification on real music, development portion; every system "
                     "on the folds of deam-mamba crossval",
        "dataset": {"root": os.path.relpath(root, ROOT), "reader": "deam_mamba.data.registry.open_dataset(kind='4q')",
                    "n_clips": int(songs.ids.size), "n_artist_groups": len(set(songs.groups.tolist())),
                    "n_unknown_artist": songs.n_unknown_artist,
                    "per_quadrant": np.bincount(songs.quadrants, minlength=5)[1:].tolist(),
                    "dropped": dropped if names else old.get("dataset", {}).get("dropped", {}), "sample_rate": SR,
                    "seed": args.seed, "limit_per_quadrant": args.limit or None},
        "folds": {**old.get("folds", {}), **{p.key: p.block(songs) for p in protocols.values()}},
        "notes": "macro-F1 = scikit-learn f1_score(average='macro') over Q1..Q4; summary = mean and sample std "
                 "(ddof=1) over folds; pooled_out_of_fold = metrics of all out-of-fold predictions with "
                 "bootstrap 95 % CIs over songs (pooled AUCs mix the score scales of the fold models). Folds: "
                 "dataset_split(ds, 'kfold', seed, folds=k, fold=i, protocol) = deam-mamba crossval; baselines fit "
                 "on train + val. test_ids_sha1 = sha1 of the sorted test song ids joined by ',' (ASCII); a "
                 "protocol's sha1 = sha1 of its per-fold hashes joined by ','. Published 4Q numbers (900 clips, "
                 "random folds) are not directly comparable: 720 clips here.",
        "models": models,
        "last_run": {"models": names, "crossval": {n: str(d) for n, d in crossvals},
                     "zero_shot": {n: str(d) for n, d in zero_shots}, "machine": machine},
    }
    if refused or old.get("refused"):
        merged["refused"] = {**{k: v for k, v in old.get("refused", {}).items() if k not in results}, **refused}
    atomic_write_json(args.out, merged)
    table = markdown_table(merged)
    md = args.out.with_suffix(".md")
    atomic_write_text(md, table)
    print(f"\n{table}\nwrote {args.out} and {md}", flush=True)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
