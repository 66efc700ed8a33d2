"""Classical music-emotion baseline: handcrafted librosa descriptors per clip -> RBF SVM over quadrants.

Features (:func:`handcrafted_features`, names in :func:`handcrafted_feature_names`, D = 152), from a
mono clip at ``sr`` Hz with ``n_fft = 2048``, ``hop = 512`` (93 / 23 ms at 22.05 kHz):

- MFCC 0..19 (from a 128-band mel power spectrogram in dB) and their deltas: mean, std over frames (80)
- chroma (STFT, C..B, per-frame max-normalised): mean, std (24)
- spectral contrast (7 bands): mean, std (14)
- tonnetz (6 tonal centroid dims, from CQT chroma): mean, std (12)
- spectral centroid, bandwidth, rolloff (85 %) in Hz; spectral flatness; zero-crossing rate; RMS of the
  signal (full scale = 1); onset strength: mean, std, skewness over frames (21)
- global tempo estimate in BPM (1; for a clip without onsets, e.g. silence, librosa's prior peak ~117 BPM)

Undefined values never reach a model as NaN: clips shorter than ``n_fft`` samples are zero-padded to
``n_fft``, the skewness of a (near-)constant series is 0, and any remaining NaN/inf (e.g. a statistic of
digital silence) is set to 0. Nothing is dropped silently: :func:`extract_many` returns the files that
failed to decode, and their rows are NaN.
"""
from __future__ import annotations

import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import librosa
import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from deam_mamba.core.errors import LabelError
from deam_mamba.core.scales import parse_quadrants
from deam_mamba.data.audio import load_audio

__all__ = [
    "N_FFT", "HOP", "SVM_GRID", "handcrafted_feature_names", "handcrafted_features", "extract_many",
    "svm_classifier", "ovo_axis_scores", "SvmResult", "fit_predict_svm",
]

N_FFT = 2048
HOP = 512
#: Grid searched by :func:`svm_classifier` (features are standardised, D = 152: gamma "scale" ~ 0.0066).
SVM_GRID: dict[str, list[float]] = {"svc__C": [0.1, 1.0, 10.0, 100.0], "svc__gamma": [1e-3, 3e-3, 1e-2, 3e-2]}

_PITCH = ("C", "Cs", "D", "Ds", "E", "F", "Fs", "G", "Gs", "A", "As", "B")
# (block name, per-dim names, statistics) in feature order
_BLOCKS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("mfcc", tuple(f"{i:02d}" for i in range(20)), ("mean", "std")),
    ("mfcc_delta", tuple(f"{i:02d}" for i in range(20)), ("mean", "std")),
    ("chroma", _PITCH, ("mean", "std")),
    ("contrast", tuple(str(i) for i in range(7)), ("mean", "std")),
    ("tonnetz", tuple(str(i) for i in range(6)), ("mean", "std")),
    ("centroid_hz", ("",), ("mean", "std", "skew")),
    ("bandwidth_hz", ("",), ("mean", "std", "skew")),
    ("rolloff_hz", ("",), ("mean", "std", "skew")),
    ("flatness", ("",), ("mean", "std", "skew")),
    ("zcr", ("",), ("mean", "std", "skew")),
    ("rms", ("",), ("mean", "std", "skew")),
    ("onset_strength", ("",), ("mean", "std", "skew")),
)


def handcrafted_feature_names() -> list[str]:
    """The ``D = 152`` feature names, in the order of :func:`handcrafted_features`, e.g. ``mfcc_03_std``."""
    names = [f"{block}_{dim}_{stat}" if dim else f"{block}_{stat}"
             for block, dims, stats in _BLOCKS for dim in dims for stat in stats]
    return names + ["tempo_bpm"]


def _stats(x: np.ndarray, stats: tuple[str, ...]) -> np.ndarray:
    """``x [d, frames]`` -> ``[d * len(stats)]``, per dim in ``stats`` order; skew is 0 for a flat series."""
    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(axis=1), x.std(axis=1)
    cols = [mean, std]
    if "skew" in stats:
        flat = std <= 1e-8 * (np.abs(x).max(axis=1) + 1e-30)
        m3 = ((x - mean[:, None]) ** 3).mean(axis=1)
        cols.append(np.where(flat, 0.0, m3 / np.where(flat, 1.0, std) ** 3))
    return np.stack(cols, axis=1).ravel()


def handcrafted_features(wave: Any, sr: int) -> np.ndarray:
    """One mono clip ``wave [T]`` (float, nominally [-1, 1]) at ``sr`` Hz -> ``[152]`` float32, finite.

    See the module docstring for the features and how silence and short clips are handled. Raises
    ``ValueError`` for an empty or non-1-D input.
    """
    y = np.asarray(wave, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"expected a non-empty mono wave of shape [T], got shape {y.shape}")
    y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    if y.size < N_FFT:
        y = np.pad(y, (0, N_FFT - y.size))
    with warnings.catch_warnings():  # librosa warns about short inputs (CQT) and empty beat tracks
        warnings.simplefilter("ignore", UserWarning)
        mag = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))
        power = mag**2
        mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr, n_mels=128))
        mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=20)
        delta = librosa.feature.delta(mfcc, mode="nearest") if mfcc.shape[1] > 1 else np.zeros_like(mfcc)
        onset = librosa.onset.onset_strength(S=mel_db, sr=sr)[None, :]
        series = {
            "mfcc": mfcc,
            "mfcc_delta": delta,
            "chroma": librosa.feature.chroma_stft(S=power, sr=sr),
            "contrast": librosa.feature.spectral_contrast(S=mag, sr=sr),
            "tonnetz": librosa.feature.tonnetz(y=y, sr=sr),
            "centroid_hz": librosa.feature.spectral_centroid(S=mag, sr=sr),
            "bandwidth_hz": librosa.feature.spectral_bandwidth(S=mag, sr=sr),
            "rolloff_hz": librosa.feature.spectral_rolloff(S=mag, sr=sr),
            "flatness": librosa.feature.spectral_flatness(S=mag),
            "zcr": librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP),
            "rms": librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP),  # of the signal, not windowed
            "onset_strength": onset,
        }
        tempo = librosa.feature.tempo(onset_envelope=onset[0], sr=sr, hop_length=HOP)
    parts = [_stats(series[block], stats) for block, _, stats in _BLOCKS]
    out = np.concatenate(parts + [np.atleast_1d(tempo).astype(np.float64)[:1]])
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


# --- many files ------------------------------------------------------------------------------------

FeatureFn = Callable[[np.ndarray, int], np.ndarray]


def _extract_one(path: str, sr: int, fn: FeatureFn) -> tuple[np.ndarray | None, str | None]:
    """Decode ``path`` (mono, ``sr`` Hz) and apply ``fn``; ``(vector, None)`` or ``(None, reason)``."""
    try:
        vec = np.asarray(fn(load_audio(path, target_sr=sr, mono=True)[0], sr), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - any failure of one file is reported, not raised
        return None, f"{type(exc).__name__}: {exc}"
    if vec.ndim != 1 or not np.isfinite(vec).all():
        return None, f"feature function returned shape {vec.shape} with non-finite values"
    return vec, None


def _worker_init() -> None:
    """One BLAS/OpenMP thread per worker process: the processes are the parallelism."""
    threadpool_limits(1)


def extract_many(
    paths: Sequence[str | Path],
    sr: int = 22050,
    workers: int = 2,
    progress: bool = True,
    features: FeatureFn = handcrafted_features,
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Features of many audio files -> ``(X [N, D] float32, failures [(path, reason)])``, rows in ``paths`` order.

    ``features(wave [T], sr) -> [D]`` (default :func:`handcrafted_features`) runs on ``workers`` forked
    processes (``fork``, so a function defined in a script works too); ``workers <= 1`` runs in this
    process. With ``workers > 1`` the function is pickled by name, so it must be defined at module level
    (no lambda). A file that cannot be decoded or featurised is listed in ``failures`` and its row is NaN,
    so it cannot be used by accident; callers drop those rows explicitly.
    """
    paths = [str(p) for p in paths]
    results: list[tuple[np.ndarray | None, str | None]] = [(None, "not run")] * len(paths)
    bar = tqdm(total=len(paths), desc="features", unit="file", disable=not progress)
    try:
        if workers <= 1 or len(paths) <= 1:
            for i, p in enumerate(paths):
                results[i] = _extract_one(p, sr, features)
                bar.update()
        else:
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=min(workers, len(paths)), mp_context=ctx,
                                     initializer=_worker_init) as pool:
                futures = {pool.submit(_extract_one, p, sr, features): i for i, p in enumerate(paths)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update()
    finally:
        bar.close()
    dims = {v.shape[0] for v, _ in results if v is not None}
    if len(dims) > 1:
        raise ValueError(f"feature function returned vectors of different lengths {sorted(dims)}")
    d = dims.pop() if dims else (len(handcrafted_feature_names()) if features is handcrafted_features else 0)
    X = np.full((len(paths), d), np.nan, dtype=np.float32)
    failures: list[tuple[str, str]] = []
    for i, (vec, reason) in enumerate(results):
        if vec is None:
            failures.append((paths[i], str(reason)))
        else:
            X[i] = vec
    return X, failures


# --- SVM -------------------------------------------------------------------------------------------


class SvmResult(NamedTuple):
    """Test-set output of :func:`fit_predict_svm`; arrays are ``[M]`` for M test clips."""

    pred: np.ndarray            # predicted quadrant 1..4 (int64)
    valence_score: np.ndarray   # higher = more positive valence (see ovo_axis_scores)
    arousal_score: np.ndarray   # higher = higher arousal
    best_params: dict[str, float]


def svm_classifier(seed: int = 0, grouped: bool = True, inner_folds: int = 5) -> GridSearchCV:
    """``StandardScaler -> SVC(rbf, class_weight="balanced")`` in a grid search over :data:`SVM_GRID`.

    Model choice by macro-F1 on ``inner_folds`` inner folds: ``StratifiedGroupKFold`` (pass ``groups``
    to ``fit``; no artist on both sides) when ``grouped``, else ``StratifiedKFold``; shuffled with ``seed``.
    No probability estimates (SVC's default); the SVC returns one-vs-one decision values
    (``decision_function_shape="ovo"``), from which :func:`ovo_axis_scores` makes the axis scores.
    """
    # probability=False is SVC's default; passing it explicitly is deprecated since scikit-learn 1.9
    svc = SVC(kernel="rbf", class_weight="balanced", decision_function_shape="ovo")
    pipe = Pipeline([("scale", StandardScaler()), ("svc", svc)])
    splitter = StratifiedGroupKFold if grouped else StratifiedKFold
    cv = splitter(n_splits=inner_folds, shuffle=True, random_state=seed)
    return GridSearchCV(pipe, SVM_GRID, scoring="f1_macro", cv=cv, n_jobs=1, refit=True)


def ovo_axis_scores(decision: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-one SVC decision values ``[M, C(C-1)/2]`` -> ``(valence_score [M], arousal_score [M])``.

    scikit-learn orders the pairs ``(0, 1), (0, 2), ..., (C-2, C-1)`` over ``classes`` and a positive
    value favours the first class of the pair. The valence score sums the margins of the pairwise
    classifiers whose two classes lie on opposite sides of the valence axis (e.g. Q1 vs Q2), oriented
    towards the positive side; pairs on the same side do not count. Likewise for arousal.
    """
    cls = [int(c) for c in classes]
    d = np.asarray(decision, dtype=np.float64)
    if d.ndim == 1:
        d = d[:, None]
    pairs = [(i, j) for i in range(len(cls)) for j in range(i + 1, len(cls))]
    if d.ndim != 2 or d.shape[1] != len(pairs):
        raise LabelError(f"one-vs-one decision of shape {d.shape} does not match {len(cls)} classes")
    pos = {c: c in (1, 4) for c in cls}
    high = {c: c in (1, 2) for c in cls}
    wv = np.array([float(pos[cls[i]]) - float(pos[cls[j]]) for i, j in pairs])
    wa = np.array([float(high[cls[i]]) - float(high[cls[j]]) for i, j in pairs])
    return d @ wv, d @ wa


def fit_predict_svm(
    X_train: Any, y_train: Any, groups_train: Any, X_test: Any, seed: int = 0, inner_folds: int = 5,
) -> SvmResult:
    """Fit :func:`svm_classifier` on ``X_train [N, D]``, quadrants ``y_train [N]`` (artist ``groups_train [N]``
    or None for ungrouped inner folds) and predict ``X_test [M, D]``.

    Axis scores come from the same model (no extra classifiers): :func:`ovo_axis_scores` of its
    one-vs-one decision values, so the per-axis AUC measures how well the quadrant SVM ranks clips along
    each axis.
    """
    Xtr = np.asarray(X_train, dtype=np.float64)
    Xte = np.asarray(X_test, dtype=np.float64)
    y = parse_quadrants(y_train, "y_train")
    if Xtr.ndim != 2 or Xte.ndim != 2 or Xtr.shape[1] != Xte.shape[1] or Xtr.shape[0] != y.shape[0]:
        raise LabelError(f"expected X_train [N, D], y_train [N], X_test [M, D]; got {Xtr.shape}, {y.shape}, "
                         f"{Xte.shape}")
    for name, X in (("X_train", Xtr), ("X_test", Xte)):
        if not np.isfinite(X).all():
            raise ValueError(f"{name} has {int((~np.isfinite(X)).sum())} non-finite value(s): drop the rows of "
                             "files that failed extraction (extract_many's failures) first")
    grid = svm_classifier(seed, grouped=groups_train is not None, inner_folds=inner_folds)
    if groups_train is None:
        grid.fit(Xtr, y)
    else:
        g = np.asarray(groups_train)
        if g.shape != y.shape:
            raise LabelError(f"groups_train has shape {g.shape}, expected {y.shape}")
        grid.fit(Xtr, y, groups=g)
    v, a = ovo_axis_scores(grid.decision_function(Xte), grid.classes_)
    pred = grid.predict(Xte).astype(np.int64)
    return SvmResult(pred, v, a, {k.removeprefix("svc__"): float(p) for k, p in grid.best_params_.items()})
