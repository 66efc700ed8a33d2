"""Russell quadrants: mapping valence/arousal to Q1..Q4 and classification metrics with bootstrap intervals.

Quadrants (Russell's circumplex, as in the 4Q / TAFFC dataset):

- Q1 = positive valence, high arousal    (happy, excited)
- Q2 = negative valence, high arousal    (angry, anxious)
- Q3 = negative valence, low arousal     (sad, depressed)
- Q4 = positive valence, low arousal     (calm, relaxed)

Quadrants are plain ints 1..4 everywhere (``np.ndarray[int]``);
:func:`deam_mamba.core.scales.parse_quadrants` reads ``"Q3"``,
``"3"`` or ``3``. :func:`quadrant_metrics` returns a strict-JSON-friendly dict (plain floats, ints and
lists; ``None`` where a value is undefined, never NaN). Its bootstrap intervals reuse
:func:`deam_mamba.evaluation.metrics.bootstrap_ci` (percentile, songs resampled with replacement, seeded; every
headline metric is computed on the same resamples).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import f1_score, roc_auc_score

from deam_mamba.core.errors import LabelError
from deam_mamba.core.scales import QUADRANTS, parse_quadrants, quadrant_axes
from deam_mamba.evaluation.metrics import bootstrap_ci

__all__ = ["QUADRANT_NAMES", "HEADLINE_METRICS", "axis_scores", "quadrant_metrics",
           "format_quadrant_metrics"]

#: Quadrant labels in report order (confusion-matrix rows and columns).
QUADRANT_NAMES: tuple[str, ...] = ("Q1", "Q2", "Q3", "Q4")
#: Metrics that get a bootstrap interval, in report order.
HEADLINE_METRICS: tuple[str, ...] = (
    "accuracy", "macro_f1", "valence_accuracy", "arousal_accuracy", "valence_auc", "arousal_auc",
)


# --- labels ---------------------------------------------------------------------------------------


def _finite_1d(x: Any, what: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LabelError(f"{what} is not numeric: {exc}") from None
    if a.ndim != 1:
        raise LabelError(f"{what}: expected shape [N], got {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        raise LabelError(f"{what} has {int(bad.sum())} NaN/infinite value(s) (first at index "
                         f"{int(np.flatnonzero(bad)[0])})")
    return a


def axis_scores(class_scores: Any, classes: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-class scores ``[N, C]`` (higher = more likely, e.g. a classifier's decision function) ->
    ``(valence_score [N], arousal_score [N])``: the summed scores of the positive-valence (Q1, Q4) /
    high-arousal (Q1, Q2) classes minus those of the others. ``classes`` names the columns (``[C]``).
    A binary decision ``[N]`` (positive = ``classes[1]``) is read as ``[-d, d]``.
    """
    s = np.asarray(class_scores, dtype=np.float64)
    cls = parse_quadrants(list(classes), "classes")
    if s.ndim == 1 and len(cls) == 2:
        s = np.stack([-s, s], axis=1)
    if s.ndim != 2 or s.shape[1] != len(cls):
        raise LabelError(f"class scores of shape {s.shape} do not match {len(cls)} classes {cls.tolist()}")
    v_sign = np.where(np.isin(cls, (1, 4)), 1.0, -1.0)
    a_sign = np.where(np.isin(cls, (1, 2)), 1.0, -1.0)
    return s @ v_sign, s @ a_sign


# --- fast metric cores (used per bootstrap resample; equal to scikit-learn's, see the tests) ----------


def _confusion(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``[4, 4]`` counts, rows true Q1..Q4, columns predicted."""
    return np.bincount((t - 1) * 4 + (p - 1), minlength=16).reshape(4, 4)


def _f1_per_class(cm: np.ndarray) -> np.ndarray:
    """F1 per class ``2TP / (2TP + FP + FN)``; 0 for a class neither true nor predicted (sklearn zero_division=0)."""
    tp = np.diag(cm).astype(np.float64)
    den = 2.0 * tp + (cm.sum(axis=0) - tp) + (cm.sum(axis=1) - tp)
    return np.divide(2.0 * tp, den, out=np.zeros(4), where=den > 0)


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count half) of bool ``y [N]``; NaN when one class is absent."""
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _boot_fn(name: str):
    """Callable ``f(y [N, 1], p [N, 1]) -> float`` for :func:`bootstrap_ci` (the arrays it passes are 2-D)."""
    if name == "accuracy" or name.endswith("_accuracy"):
        return lambda y, p: float(np.mean(y == p))
    if name == "macro_f1":
        return lambda y, p: float(_f1_per_class(_confusion(y.ravel().astype(np.int64),
                                                           p.ravel().astype(np.int64))).mean())
    return lambda y, s: _auc(y.ravel() > 0.5, s.ravel())


# --- metrics ----------------------------------------------------------------------------------------


def _none_if_nan(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def quadrant_metrics(
    true_q: Any,
    pred_q: Any,
    valence_score: Any = None,
    arousal_score: Any = None,
    bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Quadrant classification metrics with bootstrap intervals over songs. ``true_q, pred_q: [N]`` (1..4 or "Q1").

    - ``accuracy``, ``macro_f1`` (scikit-learn ``f1_score(average="macro", labels=[1, 2, 3, 4])``; a class
      neither true nor predicted scores 0), ``per_class_f1`` ``{"Q1": f1, ...}``, ``confusion``
      (``[4][4]`` counts, rows true Q1..Q4, columns predicted Q1..Q4).
    - ``valence_accuracy`` / ``arousal_accuracy``: the predicted quadrant's side of each axis is right.
    - ``valence_auc`` / ``arousal_auc``: ROC AUC of ``valence_score`` / ``arousal_score`` ``[N]`` (higher =
      more positive valence / higher arousal) against the true side of the axis; ``None`` when the score
      is not given or one side is absent.

    Headline values (:data:`HEADLINE_METRICS`) are ``{"value", "ci_low", "ci_high"}``: a percentile
    ``1 - alpha`` interval from ``bootstrap`` song resamples (seeded; resamples where an AUC is undefined
    are skipped). ``bootstrap=0`` leaves the intervals ``None``.
    """
    t = parse_quadrants(true_q, "true quadrants")
    p = parse_quadrants(pred_q, "predicted quadrants")
    if t.shape != p.shape:
        raise LabelError(f"true quadrants have {t.shape[0]} entries but predicted quadrants have {p.shape[0]}")
    if t.shape[0] == 0:
        raise LabelError("cannot compute quadrant metrics on zero songs")
    scores = {"valence": valence_score, "arousal": arousal_score}
    for axis, s in scores.items():
        if s is not None:
            scores[axis] = _finite_1d(s, f"{axis}_score")
            if scores[axis].shape != t.shape:
                raise LabelError(f"{axis}_score has {scores[axis].shape[0]} entries, expected {t.shape[0]}")
    tv, ta = quadrant_axes(t)
    pv, pa = quadrant_axes(p)
    # (y, p) pairs each headline metric is computed on; the bootstrap resamples their rows
    pairs: dict[str, tuple[np.ndarray, np.ndarray] | None] = {
        "accuracy": (t, p), "macro_f1": (t, p), "valence_accuracy": (tv, pv), "arousal_accuracy": (ta, pa),
        "valence_auc": None if scores["valence"] is None else (tv, scores["valence"]),
        "arousal_auc": None if scores["arousal"] is None else (ta, scores["arousal"]),
    }
    cm = _confusion(t, p)
    values = {
        "accuracy": float(np.mean(t == p)),
        "macro_f1": float(f1_score(t, p, labels=list(QUADRANTS), average="macro", zero_division=0.0)),
        "valence_accuracy": float(np.mean(tv == pv)),
        "arousal_accuracy": float(np.mean(ta == pa)),
    }
    for axis, y in (("valence", tv), ("arousal", ta)):
        s = scores[axis]
        defined = s is not None and 0 < int(y.sum()) < y.shape[0]
        values[f"{axis}_auc"] = float(roc_auc_score(y, s)) if defined else None
    out: dict[str, Any] = {
        "kind": "quadrants",
        "n": int(t.shape[0]),
        "labels": list(QUADRANT_NAMES),
        "bootstrap": {
            "n": int(bootstrap), "seed": int(seed), "alpha": float(alpha),
            "method": "percentile; songs resampled with replacement; resamples with an undefined AUC skipped",
        },
    }
    for name in HEADLINE_METRICS:
        lo = hi = None
        if bootstrap and pairs[name] is not None and values[name] is not None:
            y, q = pairs[name]
            lo, hi = bootstrap_ci(_boot_fn(name), y.astype(np.float64), q.astype(np.float64),
                                  n=int(bootstrap), seed=seed, alpha=alpha)
        out[name] = {"value": values[name], "ci_low": _none_if_nan(lo), "ci_high": _none_if_nan(hi)}
    f1s = f1_score(t, p, labels=list(QUADRANTS), average=None, zero_division=0.0)
    out["per_class_f1"] = {n: float(f) for n, f in zip(QUADRANT_NAMES, f1s, strict=True)}
    out["support"] = {n: int(c) for n, c in zip(QUADRANT_NAMES, cm.sum(axis=1), strict=True)}
    out["confusion"] = cm.tolist()
    out["scores_given"] = {axis: scores[axis] is not None for axis in ("valence", "arousal")}
    return out


def _fmt(v: dict[str, Any]) -> str:
    if v["value"] is None:
        return "n/a"
    s = f"{v['value']:.3f}"
    if v.get("ci_low") is not None and v.get("ci_high") is not None:
        s += f" [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
    return s


def format_quadrant_metrics(m: dict[str, Any]) -> list[str]:
    """Human-readable lines for a :func:`quadrant_metrics` result (values with their intervals)."""
    b = m["bootstrap"]
    ci = f"{100 * (1 - b['alpha']):.0f} % CI, {b['n']} song resamples" if b["n"] else "no intervals"
    lines = [
        f"quadrants: n = {m['n']} songs ({ci})",
        f"  accuracy          {_fmt(m['accuracy'])}",
        f"  macro-F1          {_fmt(m['macro_f1'])}",
        "  per-class F1      " + "  ".join(f"{k} {v:.3f}" for k, v in m["per_class_f1"].items()),
    ]
    for axis in ("valence", "arousal"):
        lines.append(f"  {axis:<8} axis     accuracy {_fmt(m[f'{axis}_accuracy'])}   AUC {_fmt(m[f'{axis}_auc'])}")
    lines.append("  confusion (rows true, columns predicted):")
    lines.append("        " + "".join(f"{n:>6}" for n in m["labels"]))
    for name, row in zip(m["labels"], m["confusion"], strict=True):
        lines.append(f"    {name:<4}" + "".join(f"{c:>6d}" for c in row))
    return lines
