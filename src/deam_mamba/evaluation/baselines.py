"""The non-deep baseline: ridge regression on per-song log-mel statistics.

Each song becomes one fixed-length vector (:func:`mel_statistics`): the mean and standard
deviation of every mel band over time, plus a few global descriptors of loudness, change and
brightness. :class:`RidgeBaseline` standardises the vectors and fits scikit-learn's ``RidgeCV``
(efficient leave-one-out choice of the penalty, one per target) to the static labels on the
1-9 scale; it predicts ``[N, 2]`` (valence, arousal) on the same scale.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from deam_mamba.core.errors import CacheError, ConfigError, DeamError, LabelError

log = logging.getLogger(__name__)

__all__ = [
    "GLOBAL_STAT_NAMES",
    "RidgeBaseline",
    "cache_features",
    "cache_static_labels",
    "fit_ridge_on_cache",
    "mel_statistic_names",
    "mel_statistics",
]

#: Names of the global statistics appended after the per-band means and standard deviations.
GLOBAL_STAT_NAMES: tuple[str, ...] = (
    "energy_mean",        # mean over frames of the band-averaged level (dB)
    "energy_std",         # its standard deviation over frames (dB): loudness dynamics
    "delta_energy_mean",  # mean |frame-to-frame change| of that level (dB per frame)
    "flux_mean",          # spectral flux: band-averaged positive level change per frame (dB)
    "flux_std",
    "centroid_mean",      # power-weighted mean mel band, as a fraction of n_mels (brightness)
    "centroid_std",
    "band_delta_std",     # std of per-band frame-to-frame changes (dB): texture / roughness
)

#: Ridge penalties tried by leave-one-out cross-validation (on standardised features).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 5, 29))


def mel_statistic_names(n_mels: int) -> list[str]:
    """Names of the entries of :func:`mel_statistics` for ``n_mels`` bands."""
    return ([f"band{b:03d}_mean" for b in range(n_mels)] + [f"band{b:03d}_std" for b in range(n_mels)]
            + list(GLOBAL_STAT_NAMES))


def mel_statistics(logmel: Any) -> np.ndarray:
    """One song's log-mel ``[n_mels, frames]`` (dB, any float dtype) -> ``[2 * n_mels + 8]`` float64.

    Per-band mean and std over frames, then :data:`GLOBAL_STAT_NAMES`. Frame-difference
    statistics are 0 for a single frame. Raises ``ValueError`` for a wrong shape, no frames or
    non-finite values (callers that know the song wrap it in a :class:`CacheError`).
    """
    x = np.asarray(logmel, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"expected a log-mel of shape [n_mels, frames] with frames >= 1, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"log-mel has {int((~np.isfinite(x)).sum())} non-finite value(s)")
    n_mels, frames = x.shape
    energy = x.mean(axis=0)  # [frames] dB
    # power-weighted band centroid, stable for any dB offset
    w = 10.0 ** ((x - x.max(axis=0, keepdims=True)) / 10.0)
    centroid = (np.arange(n_mels)[:, None] * w).sum(0) / w.sum(0) / max(1, n_mels - 1)
    if frames > 1:
        d = np.diff(x, axis=1)  # [n_mels, frames-1]
        flux = np.maximum(d, 0.0).mean(axis=0)
        dyn = [np.abs(np.diff(energy)).mean(), flux.mean(), flux.std(), d.std()]
    else:
        dyn = [0.0, 0.0, 0.0, 0.0]
    glob = [energy.mean(), energy.std(), dyn[0], dyn[1], dyn[2], centroid.mean(), centroid.std(), dyn[3]]
    return np.concatenate([x.mean(axis=1), x.std(axis=1), np.asarray(glob)])


class RidgeBaseline:
    """``StandardScaler`` + ``RidgeCV`` (leave-one-out penalty per target) on song feature vectors.

    ``fit(X [N, F], y [N, 2])`` with labels on 1-9; ``predict(X [M, F]) -> [M, 2]`` on 1-9.
    ``clip`` optionally clamps predictions to a range (e.g. ``(1, 9)``); off by default.
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS, clip: tuple[float, float] | None = None):
        from sklearn.linear_model import RidgeCV  # lazy: scikit-learn is heavy to import
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        self.alphas = tuple(float(a) for a in alphas)
        if not self.alphas or min(self.alphas) <= 0:
            raise ConfigError(f"ridge alphas must be positive and non-empty, got {alphas}")
        self.clip = clip
        self.pipeline = Pipeline([("scale", StandardScaler()),
                                  ("ridge", RidgeCV(alphas=self.alphas, alpha_per_target=True))])
        self.n_features_: int | None = None

    def fit(self, X: Any, y: Any) -> RidgeBaseline:
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or y.ndim != 2 or X.shape[0] != y.shape[0]:
            raise LabelError(f"fit needs X [N, F] and y [N, D] with the same N, got {X.shape} and {y.shape}")
        if X.shape[0] < 3:
            raise LabelError(f"ridge needs at least 3 training songs, got {X.shape[0]}")
        if not np.isfinite(X).all():
            raise LabelError("ridge features contain NaN/inf values")
        if not np.isfinite(y).all():
            raise LabelError("ridge labels contain NaN/inf values")
        self.pipeline.fit(X, y)
        self.n_features_ = X.shape[1]
        alpha = np.atleast_1d(self.pipeline[-1].alpha_)
        if np.isin(alpha, [self.alphas[0], self.alphas[-1]]).any():
            log.warning("ridge penalty at the edge of the searched grid: %s", alpha)
        return self

    @property
    def alpha_(self) -> np.ndarray:
        """Chosen penalty per target (after :meth:`fit`)."""
        if self.n_features_ is None:
            raise DeamError("RidgeBaseline is not fitted: call fit() first")
        return np.atleast_1d(self.pipeline[-1].alpha_)

    def predict(self, X: Any) -> np.ndarray:
        if self.n_features_ is None:
            raise DeamError("RidgeBaseline is not fitted: call fit() first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_:
            raise LabelError(f"predict needs X [M, {self.n_features_}], got {X.shape}")
        if not np.isfinite(X).all():
            raise LabelError("ridge features contain NaN/inf values")
        p = np.asarray(self.pipeline.predict(X), dtype=np.float64).reshape(X.shape[0], -1)
        return np.clip(p, *self.clip) if self.clip is not None else p


def cache_features(cache: Any, ids: Iterable[int], progress: bool = False) -> np.ndarray:
    """``[N, F]`` :func:`mel_statistics` of each song in a :class:`~deam_mamba.features.cache.FeatureCache`."""
    rows = []
    for sid in tqdm(list(ids), desc="mel statistics", unit="song", disable=not progress):
        try:
            rows.append(mel_statistics(cache.features(sid)))
        except ValueError as exc:
            raise CacheError(f"cached features of song {sid} are unusable ({exc}); rebuild the cache") from None
    if not rows:
        raise LabelError("no songs given")
    return np.stack(rows)


def _static_pair(label: Any, sid: int) -> tuple[float, float]:
    if isinstance(label, dict):
        try:
            v, a = label["valence_mean"], label["arousal_mean"]
        except KeyError as exc:
            raise LabelError(f"static label of song {sid} lacks {exc}; it has {sorted(label)}") from None
    else:
        arr = np.asarray(label, dtype=np.float64).ravel()
        if arr.size < 2:
            raise LabelError(f"static label of song {sid} has {arr.size} value(s), expected valence and arousal")
        v, a = arr[0], arr[1]
    v, a = float(v), float(a)
    if not (np.isfinite(v) and np.isfinite(a)):
        raise LabelError(f"static label of song {sid} is not finite: valence={v}, arousal={a}")
    return v, a


def cache_static_labels(cache: Any, ids: Iterable[int]) -> np.ndarray:
    """``[N, 2]`` (valence_mean, arousal_mean) on 1-9 from ``cache.static_label(id)``."""
    return np.array([_static_pair(cache.static_label(sid), sid) for sid in ids], dtype=np.float64).reshape(-1, 2)


def fit_ridge_on_cache(cache: Any, train_ids: Sequence[int], test_ids: Sequence[int],
                       alphas: Sequence[float] = DEFAULT_ALPHAS, progress: bool = False,
                       ) -> tuple[RidgeBaseline, np.ndarray]:
    """Fit :class:`RidgeBaseline` on ``train_ids`` and predict ``test_ids``.

    Returns ``(model, predictions [len(test_ids), 2])``: valence, arousal on 1-9, rows in
    ``test_ids`` order. Songs in both lists raise :class:`ConfigError` (that would leak labels).
    """
    overlap = sorted(set(train_ids) & set(test_ids))
    if overlap:
        raise ConfigError(f"{len(overlap)} song(s) are in both the training and test ids, e.g. {overlap[:5]}")
    X_tr = cache_features(cache, train_ids, progress)
    y_tr = cache_static_labels(cache, train_ids)
    model = RidgeBaseline(alphas=alphas).fit(X_tr, y_tr)
    X_te = cache_features(cache, test_ids, progress)
    pred = model.predict(X_te)
    log.info("ridge baseline: %d train songs, %d features, alphas %s; predicted %d songs",
             len(train_ids), X_tr.shape[1], model.alpha_.tolist(), len(test_ids))
    return model, pred
