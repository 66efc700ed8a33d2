"""Cross-validation folds for song-level emotion labels: artist-disjoint (honest) and random (literature).

Songs of one artist share production, voice and often mood, so a model that has heard an artist in
training recognises them again in test and looks better than it is. :func:`artist_disjoint_folds`
keeps every artist (group) on one side of each split; :func:`random_stratified_folds` reproduces the
protocol of most published 4Q results (random stratified folds, artists leak). Folds are lists of
``(train_idx [n_train], test_idx [n_test])`` int64 arrays of row indices, each sorted.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from deam_mamba.core.errors import ConfigError, DeamError, LabelError

__all__ = ["artist_disjoint_folds", "random_stratified_folds", "inner_validation_split", "fold_summary"]

Fold = tuple[np.ndarray, np.ndarray]


def _labels(labels: Any) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] == 0:
        raise LabelError(f"labels: expected a non-empty 1-D sequence, got shape {y.shape}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise LabelError(f"labels have {int((~np.isfinite(y)).sum())} NaN/infinite value(s)")
    return y


def _labels_groups(labels: Any, groups: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(labels)
    g = np.asarray(groups)
    if g.shape != y.shape:
        raise LabelError(f"groups have shape {g.shape} but labels have shape {y.shape} (one group per song)")
    if g.dtype.kind == "f" and not np.isfinite(g).all():
        raise LabelError(f"groups have {int((~np.isfinite(g)).sum())} NaN value(s): every song needs an artist")
    return y, g


def _check_k(k: int, n_groups: int, what: str) -> int:
    k = int(k)
    if k < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got k={k}")
    if k > n_groups:
        raise ConfigError(f"cannot make {k} folds from {n_groups} {what}: use k <= {n_groups}")
    return k


def _check_disjoint(g: np.ndarray, train: np.ndarray, test: np.ndarray) -> None:
    shared = np.intersect1d(g[train], g[test])
    if shared.size:  # an invariant of StratifiedGroupKFold; checked because every result depends on it
        raise DeamError(f"internal error: {shared.size} artist(s) on both sides of a split, e.g. {shared[:3].tolist()}")


def artist_disjoint_folds(labels: Any, groups: Any, k: int = 5, seed: int = 0) -> list[Fold]:
    """``k`` folds stratified by ``labels [N]`` with no group (artist) in both train and test of any fold.

    scikit-learn ``StratifiedGroupKFold(shuffle=True, random_state=seed)``: deterministic for a seed; the
    class balance per fold is as close as whole artists allow. Every song is in exactly one test fold.
    Raises :class:`ConfigError` if ``k < 2`` or ``k`` exceeds the number of distinct groups.
    """
    y, g = _labels_groups(labels, groups)
    k = _check_k(k, len(np.unique(g)), "artists (groups)")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = [(np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64)) for tr, te in splitter.split(y, y, g)]
    for tr, te in folds:
        _check_disjoint(g, tr, te)
    return folds


def random_stratified_folds(labels: Any, k: int = 10, seed: int = 0) -> list[Fold]:
    """``k`` random folds stratified by ``labels [N]`` (``StratifiedKFold(shuffle=True, random_state=seed)``).

    This ignores artists: songs of one artist can fall on both sides of a split, which inflates scores
    (artist/album effect). It is the protocol of most published 4Q results, kept for comparison only.
    """
    y = _labels(labels)
    _, counts = np.unique(y, return_counts=True)
    k = _check_k(k, int(counts.max()), "songs of the largest class")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64)) for tr, te in splitter.split(y, y)]


def inner_validation_split(
    labels: Any, groups: Any, train_idx: Any, fraction: float = 0.15, seed: int = 0,
) -> Fold:
    """Split a training fold's rows ``train_idx`` into ``(fit_idx, val_idx)`` for early stopping / model choice.

    Artist-disjoint and stratified: one fold of ``StratifiedGroupKFold(round(1 / fraction))`` over the
    training rows, so the validation share is ``~1 / round(1 / fraction)`` (0.15 -> 1/7 = 14.3 %) and
    varies with artist sizes. ``labels, groups`` cover all ``N`` songs; the returned indices are rows of
    them (subsets of ``train_idx``), sorted.
    """
    y, g = _labels_groups(labels, groups)
    if not 0.0 < float(fraction) <= 0.5:
        raise ConfigError(f"validation fraction must be in (0, 0.5], got {fraction}")
    idx = np.asarray(train_idx, dtype=np.int64)
    if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= y.shape[0]:
        raise LabelError(f"train_idx must be a non-empty 1-D array of row indices in [0, {y.shape[0]})")
    k = _check_k(max(2, round(1.0 / float(fraction))), len(np.unique(g[idx])), "artists in the training rows")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fit_rel, val_rel = next(splitter.split(idx, y[idx], g[idx]))
    fit_idx, val_idx = np.sort(idx[fit_rel]), np.sort(idx[val_rel])
    _check_disjoint(g, fit_idx, val_idx)
    return fit_idx, val_idx


def fold_summary(per_fold: Sequence[Mapping[str, float | None]]) -> dict[str, dict[str, Any]]:
    """Per-fold metric dicts -> ``{key: {"mean", "std", "n"}}`` over the folds where the key is a number.

    ``std`` is the sample standard deviation (ddof=1; ``None`` with one fold); ``None`` values (an
    undefined AUC) are left out and ``n`` counts the folds used. Non-numeric values (names) are skipped.
    """
    keys: list[str] = []
    for d in per_fold:
        keys += [k for k, v in d.items() if k not in keys and isinstance(v, (int, float, np.number))
                 and not isinstance(v, bool)]
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        vals = np.array([float(d[key]) for d in per_fold if isinstance(d.get(key), (int, float, np.number))
                         and not isinstance(d.get(key), bool) and np.isfinite(d[key])])
        out[key] = {
            "mean": float(vals.mean()) if vals.size else None,
            "std": float(vals.std(ddof=1)) if vals.size > 1 else None,
            "n": int(vals.size),
        }
    return out


def song_kfold_split(ids: Sequence[int], quadrants: Sequence[int], groups: Sequence[str | None], k: int, fold: int,
                     seed: int = 0, protocol: str = "artist", val_fraction: float = 0.1) -> dict[str, list[int]]:
    """``{"train", "val", "test"}`` song ids of fold ``fold`` of a ``k``-fold protocol over ``ids``.

    ``quadrants [N]`` (1..4) stratify; ``groups [N]`` are artists (None: the song is its own group).
    ``protocol="artist"``: :func:`artist_disjoint_folds`; ``"random"``: :func:`random_stratified_folds`
    (an artist's songs may fall on both sides). The fold's training part is cut once more by
    :func:`inner_validation_split` (artist-disjoint) into train and a validation part for early stopping.
    The same ``(ids, quadrants, groups, k, seed, protocol)`` give the same folds in any process, so a
    baseline and a model evaluated on fold ``i`` see the same test songs.
    """
    order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
    sid = np.asarray(ids, dtype=np.int64)[order]
    q = np.asarray(quadrants, dtype=np.int64)[order]
    g = np.asarray([f"<song {s}>" if groups[i] is None else str(groups[i]) for i, s in zip(order, sid, strict=True)])
    if protocol == "artist":
        folds = artist_disjoint_folds(q, g, k=k, seed=seed)
    elif protocol == "random":
        folds = random_stratified_folds(q, k=k, seed=seed)
    else:
        raise ConfigError(f"unknown fold protocol {protocol!r}: choose 'artist' or 'random'")
    if not 0 <= fold < len(folds):
        raise ConfigError(f"fold {fold} does not exist: there are {len(folds)} folds (0..{len(folds) - 1})")
    train_idx, test_idx = folds[fold]
    fit_idx, val_idx = inner_validation_split(q, g, train_idx, fraction=val_fraction, seed=seed)
    return {"train": sid[fit_idx].tolist(), "val": sid[val_idx].tolist(), "test": sid[test_idx].tolist()}
