"""Regression metrics for valence/arousal: pure functions on numpy arrays (torch tensors accepted).

Scales. The metrics themselves are scale-agnostic, but the numbers they produce are only
meaningful on a stated scale: static DEAM labels (per-song means) are on **1-9**, dynamic
2 Hz annotations on **[-1, 1]**. Callers map model outputs back to the label scale *before*
calling these functions (never report metrics on normalised targets); ``regression_metrics``
and ``mediaeval2015_metrics`` write the ``scale`` label into their result and check that the
true values lie on it.

Shapes. Every metric takes ``y_true`` and ``y_pred`` of the same shape, ``[N]`` (returns a float)
or ``[N, D]`` (returns ``np.ndarray [D]``, one value per column, e.g. valence and arousal).

Undefined values (documented, never silently replaced):
- ``pearson_r`` is ``nan`` when either side is constant (zero variance) or ``N < 2``.
- ``ccc`` (Lin's concordance, population variances) is well defined when only one side is
  constant (it is then 0 if the other varies); it is ``nan`` only when both sides are constant
  *and* equal (0 / 0).
- ``r2`` is ``nan`` when ``y_true`` is constant (scikit-learn's ``r2_score`` returns 0 or 1
  there by convention; we do not invent a value).
NaN or infinite inputs raise :class:`LabelError`; so do mismatched shapes.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from deam_mamba.core.errors import ConfigError, LabelError
from deam_mamba.core.scales import SCALES

__all__ = [
    "METRIC_NAMES",
    "bootstrap_ci",
    "ccc",
    "flat_metrics",
    "mae",
    "mediaeval2015_metrics",
    "mse",
    "pearson_r",
    "r2",
    "regression_metrics",
    "rmse",
]

#: Metric names in report order.
METRIC_NAMES: tuple[str, ...] = ("mse", "rmse", "mae", "pearson_r", "ccc", "r2")
_SCALE_TOL = 1e-6


# --- input handling -----------------------------------------------------------------------


def _to_numpy(x: Any, what: str) -> np.ndarray:
    """Any array-like or torch tensor -> float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LabelError(f"{what} is not a numeric array: {exc}") from None


def _check_finite(a: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise LabelError(
            f"{what} has {int(bad.sum())} NaN/infinite value(s) (first at index {first}); "
            "remove or mask them before computing metrics"
        )


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate and return ``(y [N, D], p [N, D], was_1d)``."""
    y = _to_numpy(y_true, "y_true")
    p = _to_numpy(y_pred, "y_pred")
    if y.shape != p.shape:
        raise LabelError(f"shape mismatch: y_true has shape {y.shape}, y_pred has shape {p.shape}")
    if y.ndim not in (1, 2):
        raise LabelError(f"expected arrays of shape [N] or [N, D], got shape {y.shape}")
    if y.shape[0] == 0:
        raise LabelError(f"cannot compute metrics on zero samples (shape {y.shape})")
    _check_finite(y, "y_true")
    _check_finite(p, "y_pred")
    was_1d = y.ndim == 1
    if was_1d:
        y, p = y[:, None], p[:, None]
    return y, p, was_1d


def _out(v: np.ndarray, was_1d: bool) -> float | np.ndarray:
    return float(v[0]) if was_1d else v


# --- batched cores --------------------------------------------------------------------------
# ``_stats_last`` works on [..., N] arrays and reduces the LAST axis (contiguous, so numpy's
# reductions are fast); every requested metric shares the same moments. ``_compute`` adapts the
# public [..., N, D] layout to it.


def _stats_last(y: np.ndarray, p: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``y, p: [..., N]`` -> ``{name: [...]}`` for the metrics in ``names``."""
    out: dict[str, np.ndarray] = {}
    err = p - y
    mse_ = np.einsum("...i,...i->...", err, err) / y.shape[-1]
    if "mse" in names:
        out["mse"] = mse_
    if "rmse" in names:
        out["rmse"] = np.sqrt(mse_)
    if "mae" in names:
        out["mae"] = np.abs(err).mean(-1)
    if not {"pearson_r", "ccc", "r2"} & set(names):
        return out
    my = y.mean(-1)
    dy = y - my[..., None]
    vy = np.einsum("...i,...i->...", dy, dy) / y.shape[-1]
    y_const = y.max(-1) == y.min(-1)  # exact test: float round-off cannot fake a variance
    with np.errstate(divide="ignore", invalid="ignore"):
        if "r2" in names:  # 1 - SS_res / SS_tot, both divided by N
            out["r2"] = np.where(y_const, np.nan, 1.0 - mse_ / vy)
        if {"pearson_r", "ccc"} & set(names):
            mp = p.mean(-1)
            dp = p - mp[..., None]
            vp = np.einsum("...i,...i->...", dp, dp) / y.shape[-1]
            p_const = p.max(-1) == p.min(-1)
            cov = np.where(y_const | p_const, 0.0, np.einsum("...i,...i->...", dy, dp) / y.shape[-1])
            if "pearson_r" in names:
                r = np.clip(cov / np.sqrt(vy * vp), -1.0, 1.0)
                out["pearson_r"] = np.where(y_const | p_const | (y.shape[-1] < 2), np.nan, r)
            if "ccc" in names:
                den = vy + vp + (my - mp) ** 2
                out["ccc"] = np.where(den > 0, 2.0 * cov / den, np.nan)
    return out


def _compute(y: np.ndarray, p: np.ndarray, names: Sequence[str] = METRIC_NAMES) -> dict[str, np.ndarray]:
    """``y, p: [..., N, D]`` -> ``{name: [..., D]}``."""
    yt = np.ascontiguousarray(np.swapaxes(y, -1, -2))
    pt = np.ascontiguousarray(np.swapaxes(p, -1, -2))
    return _stats_last(yt, pt, names)


# --- public point metrics -----------------------------------------------------------------


def mse(y_true: Any, y_pred: Any) -> float | np.ndarray:
    """Mean squared error, in squared label units. ``[N]`` -> float, ``[N, D]`` -> ``[D]``."""
    y, p, one = _pair(y_true, y_pred)
    return _out(_compute(y, p, ("mse",))["mse"], one)


def rmse(y_true: Any, y_pred: Any) -> float | np.ndarray:
    """Root mean squared error, in label units (1-9 points for static, [-1, 1] units for dynamic)."""
    y, p, one = _pair(y_true, y_pred)
    return _out(_compute(y, p, ("rmse",))["rmse"], one)


def mae(y_true: Any, y_pred: Any) -> float | np.ndarray:
    """Mean absolute error, in label units."""
    y, p, one = _pair(y_true, y_pred)
    return _out(_compute(y, p, ("mae",))["mae"], one)


def pearson_r(y_true: Any, y_pred: Any) -> float | np.ndarray:
    """Pearson correlation in [-1, 1]; ``nan`` where either side is constant or N < 2."""
    y, p, one = _pair(y_true, y_pred)
    return _out(_compute(y, p, ("pearson_r",))["pearson_r"], one)


def ccc(y_true: Any, y_pred: Any) -> float | np.ndarray:
    """Lin's concordance correlation ``2 cov / (var_t + var_p + (mean_t - mean_p)^2)``.

    Population (ddof=0) moments. In [-1, 1]; 0 when exactly one side is constant; ``nan`` only
    when both sides are constant and equal.
    """
    y, p, one = _pair(y_true, y_pred)
    return _out(_compute(y, p, ("ccc",))["ccc"], one)


def r2(y_true: Any, y_pred: Any) -> float | np.ndarray:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (can be negative); ``nan`` if y_true is constant."""
    y, p, one = _pair(y_true, y_pred)
    return _out(_compute(y, p, ("r2",))["r2"], one)


# --- bootstrap ----------------------------------------------------------------------------


def _boot_indices(n_items: int, n: int, seed: int) -> np.ndarray:
    """``[n, n_items]`` resample indices (items drawn with replacement), deterministic in seed."""
    return np.random.default_rng(seed).integers(0, n_items, size=(n, n_items))


def _check_boot_args(n: int, alpha: float) -> None:
    if int(n) < 1:
        raise ConfigError(f"bootstrap needs at least 1 resample, got n={n}")
    if not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"bootstrap alpha must be in (0, 1), got {alpha}")


def _boot_many(
    names: Sequence[str], y: np.ndarray, p: np.ndarray, n: int, seed: int, alpha: float,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Percentile intervals of several metrics on the SAME song resamples. ``y, p: [N, D]``.

    Resamples are processed in blocks so memory stays ~O(4M floats) whatever N is.
    """
    idx = _boot_indices(y.shape[0], n, seed)
    block = max(1, 4_000_000 // max(1, y.size))
    yt, pt = np.ascontiguousarray(y.T), np.ascontiguousarray(p.T)  # [D, N]
    stats: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for s in range(0, n, block):
        b = idx[s : s + block]
        # one 1-D gather per dimension keeps [D, B, N] C-contiguous (yt[:, b] would not be)
        yb, pb = np.stack([c[b] for c in yt]), np.stack([c[b] for c in pt])
        for k, v in _stats_last(yb, pb, names).items():  # [D, B, N] -> [D, B]
            stats[k].append(v.T)
    return {k: _percentile_ci(np.concatenate(parts, axis=0), alpha) for k, parts in stats.items()}


def _percentile_ci(vals: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """``vals [n_resamples, D]`` -> ``(low [D], high [D])``, ignoring NaN resamples."""
    lo_hi = np.full((2, vals.shape[1]), np.nan)
    ok = np.isfinite(vals).any(axis=0)
    if ok.any():
        lo_hi[:, ok] = np.nanquantile(vals[:, ok], [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)
    return lo_hi[0], lo_hi[1]


def bootstrap_ci(
    metric: str | Callable[[np.ndarray, np.ndarray], Any],
    y: Any,
    p: Any,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Percentile bootstrap ``(1 - alpha)`` interval of a metric, resampling rows (songs) with replacement.

    ``metric`` is a name from :data:`METRIC_NAMES` (vectorised: all resamples at once) or any
    callable ``f(y_true, y_pred)`` (called once per resample). ``y, p``: ``[N]`` or ``[N, D]``, one
    row per song. Resamples where the metric is undefined (``nan``) are left out of the quantiles;
    the interval is ``nan`` if all are. Returns ``(low, high)``, floats or ``[D]`` arrays.
    """
    _check_boot_args(n, alpha)
    yy, pp, one = _pair(y, p)
    if isinstance(metric, str):
        if metric not in METRIC_NAMES:
            raise ConfigError(f"unknown metric {metric!r}; known: {', '.join(METRIC_NAMES)}")
        lo, hi = _boot_many([metric], yy, pp, n, seed, alpha)[metric]
        return _out(lo, one), _out(hi, one)
    idx = _boot_indices(yy.shape[0], n, seed)
    vals = np.array([np.atleast_1d(np.asarray(metric(yy[i], pp[i]), dtype=np.float64)) for i in idx])
    lo, hi = _percentile_ci(vals.reshape(n, -1), alpha)
    return _out(lo, lo.shape[0] == 1), _out(hi, hi.shape[0] == 1)


# --- summaries ----------------------------------------------------------------------------


def _check_scale(y: np.ndarray, scale: str, what: str) -> None:
    if scale not in SCALES:
        return
    lo, hi = SCALES[scale].bounds
    if y.min() < lo - _SCALE_TOL or y.max() > hi + _SCALE_TOL:
        raise LabelError(
            f"{what} spans [{y.min():.4g}, {y.max():.4g}] but the scale is {scale!r} "
            f"([{lo:g}, {hi:g}]): were normalised targets passed? Map predictions and labels "
            "back to the label scale before computing metrics"
        )


def _num(x: float) -> float | None:
    """JSON-friendly float: ``nan`` -> ``None``."""
    x = float(x)
    return None if not np.isfinite(x) else x


def regression_metrics(
    y_true: Any,
    y_pred: Any,
    names: Sequence[str] = ("valence", "arousal"),
    scale: str = "1-9",
    bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """All metrics per dimension with bootstrap CIs over songs. ``y_true, y_pred: [N, len(names)]``.

    ``scale`` labels the units (``"1-9"`` static, ``"[-1, 1]"`` dynamic); for a known scale the
    true values must lie on it (catches metrics computed on normalised targets). ``bootstrap=0``
    skips the intervals (fast, e.g. per-epoch validation). Undefined values are ``None``.

    Returns ``{"kind": "regression", "scale", "n", "names", "bootstrap": {...},
    <name>: {<metric>: {"value", "ci_low", "ci_high"}}, "mean_ccc"}``.
    """
    y, p, one = _pair(y_true, y_pred)
    names = list(names)
    if one or y.shape[1] != len(names):
        raise LabelError(
            f"expected arrays of shape [N, {len(names)}] for dimensions {names}, got {tuple(np.shape(y_true))}"
        )
    _check_scale(y, scale, "y_true")
    values = _compute(y, p)
    cis = None
    if bootstrap:
        _check_boot_args(bootstrap, alpha)
        cis = _boot_many(METRIC_NAMES, y, p, int(bootstrap), seed, alpha)
    out: dict[str, Any] = {
        "kind": "regression",
        "scale": scale,
        "n": int(y.shape[0]),
        "names": names,
        "bootstrap": {
            "n": int(bootstrap), "seed": int(seed), "alpha": float(alpha),
            "method": "percentile; songs resampled with replacement",
        },
    }
    for d, name in enumerate(names):
        out[name] = {
            k: {
                "value": _num(values[k][d]),
                "ci_low": _num(cis[k][0][d]) if cis else None,
                "ci_high": _num(cis[k][1][d]) if cis else None,
            }
            for k in METRIC_NAMES
        }
    c = values["ccc"]
    out["mean_ccc"] = _num(np.mean(c)) if np.isfinite(c).all() else None
    return out


def flat_metrics(m: Mapping[str, Any], prefix: str = "") -> dict[str, float | None]:
    """Flatten a :func:`regression_metrics` result to ``{prefix + "valence_ccc": value, ...}``."""
    flat: dict[str, float | None] = {}
    for name in m["names"]:
        for k, v in m[name].items():
            flat[f"{prefix}{name}_{k}"] = v["value"]
    flat[f"{prefix}mean_ccc"] = m.get("mean_ccc")
    return flat


def mediaeval2015_metrics(
    per_song_true: Mapping[Any, Any],
    per_song_pred: Mapping[Any, Any],
    names: Sequence[str] = ("valence", "arousal"),
    scale: str = "[-1, 1]",
) -> dict[str, Any]:
    """MediaEval 2015 dynamic-task measures: per-song RMSE and Pearson r, averaged over songs.

    ``per_song_*``: ``{song_id: [K, len(names)]}`` curves on the 2 Hz grid, same keys, same K
    per song, on [-1, 1]. Songs with K = 0 are counted (``n_empty``) and left out. Pearson r is
    undefined for a song whose true or predicted curve is constant (or K < 2): it is averaged
    over the songs where it is defined and the others are counted (``n_undefined``).
    """
    names = list(names)
    missing_p = sorted(set(per_song_true) - set(per_song_pred), key=str)
    missing_t = sorted(set(per_song_pred) - set(per_song_true), key=str)
    if missing_p or missing_t:
        raise LabelError(
            f"per-song curves do not match: {len(missing_p)} song(s) without predictions "
            f"{missing_p[:5]}, {len(missing_t)} prediction(s) without labels {missing_t[:5]}"
        )
    rmses: list[np.ndarray] = []
    rs: list[np.ndarray] = []
    n_empty = 0
    for sid in sorted(per_song_true, key=str):
        t = _to_numpy(per_song_true[sid], f"true curve of song {sid}")
        q = _to_numpy(per_song_pred[sid], f"predicted curve of song {sid}")
        if t.shape != q.shape or t.ndim != 2 or t.shape[1] != len(names):
            raise LabelError(
                f"song {sid}: expected true and predicted curves of shape [K, {len(names)}], "
                f"got {t.shape} and {q.shape}"
            )
        if t.shape[0] == 0:
            n_empty += 1
            continue
        _check_finite(t, f"true curve of song {sid}")
        _check_finite(q, f"predicted curve of song {sid}")
        _check_scale(t, scale, f"true curve of song {sid}")
        v = _compute(t, q, ("rmse", "pearson_r"))
        rmses.append(v["rmse"])
        rs.append(v["pearson_r"])
    out: dict[str, Any] = {
        "kind": "mediaeval2015", "scale": scale, "names": names,
        "n_songs": len(rmses), "n_empty": n_empty,
    }
    R = np.array(rmses).reshape(-1, len(names))
    C = np.array(rs).reshape(-1, len(names))
    for d, name in enumerate(names):
        r_ok = C[np.isfinite(C[:, d]), d]
        out[name] = {
            "rmse": {
                "mean": _num(R[:, d].mean()) if len(R) else None,
                "std": _num(R[:, d].std()) if len(R) else None,
                "n": len(R),
            },
            "pearson_r": {
                "mean": _num(r_ok.mean()) if len(r_ok) else None,
                "std": _num(r_ok.std()) if len(r_ok) else None,
                "n_defined": len(r_ok),
                "n_undefined": int(len(C) - len(r_ok)),
            },
        }
    return out
