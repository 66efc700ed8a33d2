"""Song-level scoring: the ONE path from a predictor and cached songs to truth/prediction pairs and metrics.

Per-epoch validation (:func:`deam_mamba.train.loop.validate`), ``deam-mamba evaluate`` and the
attention-pool fit all go through here, so a checkpoint's validation numbers are the numbers
``evaluate --split val`` reports for it.

* :func:`predict_cached_songs`: cached log-mel -> :class:`SongPrediction` per song (the predictor's
  chunking and pooling).
* :func:`song_pairs`: predictions + the cache's labels -> :class:`SongPairs`. Static runs: song
  means on 1-9. Dynamic runs: the predicted 2 Hz curve at every annotated time on [-1, 1] (songs
  without annotations are left out, and counted).
* :func:`validation_metrics` (``val_*`` names, used for early stopping) and :func:`compute_metrics`
  (full metrics with bootstrap intervals, the predictions table and the curves for plots).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from deam_mamba.core.errors import DeamError, LabelError
from deam_mamba.core.scales import DYNAMIC, STATIC, LabelKind, Scale
from deam_mamba.evaluation.metrics import ccc, mediaeval2015_metrics, pearson_r, regression_metrics, rmse
from deam_mamba.evaluation.quadrants import quadrant_metrics
from deam_mamba.features.cache import FeatureCache
from deam_mamba.inference.predictor import Predictor, SongPrediction

DIMS = ("valence", "arousal")


def static_truth(cache: FeatureCache, sid: int) -> tuple[float, float]:
    """``(valence_mean, arousal_mean)`` of song ``sid`` on 1-9 from the cache; :class:`LabelError` if
    a value is missing or not finite."""
    label = cache.static_label(sid)
    try:
        v, a = float(label["valence_mean"]), float(label["arousal_mean"])
    except KeyError as exc:
        raise LabelError(f"static label of song {sid} lacks {exc}; it has {sorted(label)}") from None
    if not (np.isfinite(v) and np.isfinite(a)):
        raise LabelError(f"static label of song {sid} is not finite: valence={v}, arousal={a}; "
                         "fix the annotation CSV and re-run `deam-mamba prepare`")
    return v, a


def dynamic_truth(cache: FeatureCache, sid: int) -> tuple[np.ndarray, np.ndarray]:
    """``(times_s [K], values [K, 2])`` on [-1, 1] from the cache (K may be 0)."""
    t, v, a = cache.dynamic_labels(sid)
    return np.asarray(t, np.float64), np.stack([np.asarray(v, np.float64), np.asarray(a, np.float64)], axis=1)


def predict_cached_songs(predictor: Predictor, cache: FeatureCache, ids: list[int], progress: bool = True
                         ) -> dict[int, SongPrediction]:
    """Song-level predictions from cached log-mels (``cache.features(id) -> [n_mels, F]`` dB)."""
    out: dict[int, SongPrediction] = {}
    for sid in tqdm(ids, desc="evaluate", unit="song", disable=not progress):
        mel = torch.from_numpy(np.asarray(cache.features(sid), dtype=np.float32))
        out[sid] = predictor.predict_features(predictor.normalise(mel), source=str(sid))
    return out


def interp_curve(pred: SongPrediction, times: np.ndarray) -> np.ndarray:
    """The predicted 2 Hz curve at ``times`` (s) -> ``[len(times), 2]`` (valence, arousal)."""
    return np.stack([np.interp(times, pred.curve_times_s, pred.curve_valence),
                     np.interp(times, pred.curve_times_s, pred.curve_arousal)], axis=1)


@dataclass
class SongPairs:
    """Truth and prediction per scored song. ``y``, ``p``: ``[N, 2]`` (valence, arousal) song values
    (static: 1-9; dynamic: the song means of the annotated curves, [-1, 1]); dynamic runs also keep
    the annotated curves ``true_curves[id]``/``pred_curves[id]`` ``[K, 2]``."""

    mode: str
    ids: list[int]
    y: np.ndarray
    p: np.ndarray
    true_curves: dict[int, np.ndarray] = field(default_factory=dict)
    pred_curves: dict[int, np.ndarray] = field(default_factory=dict)
    scale_: Scale = STATIC  # the static labels' scale

    @property
    def scale(self) -> str:
        return self.scale_.name if self.mode == "static" else DYNAMIC.name


def song_pairs(mode: str, cache: FeatureCache, preds: dict[int, SongPrediction], scale: Scale = STATIC
               ) -> SongPairs:
    """Pair every prediction with its truth (see the module docstring for what each mode compares)."""
    ids = sorted(preds)
    if mode == "static":
        y = np.array([static_truth(cache, i) for i in ids], dtype=np.float64).reshape(-1, 2)
        p = np.array([[preds[i].valence, preds[i].arousal] for i in ids], dtype=np.float64).reshape(-1, 2)
        return SongPairs(mode, ids, y, p, scale_=scale)
    true_c, pred_c = {}, {}
    for i in ids:
        t, yv = dynamic_truth(cache, i)
        if len(t):
            true_c[i], pred_c[i] = yv, interp_curve(preds[i], t)
    keep = sorted(true_c)
    y = np.array([true_c[i].mean(axis=0) for i in keep], dtype=np.float64).reshape(-1, 2)
    p = np.array([pred_c[i].mean(axis=0) for i in keep], dtype=np.float64).reshape(-1, 2)
    return SongPairs(mode, keep, y, p, true_c, pred_c)


@dataclass
class QuadrantPairs:
    """True quadrants and predictions per song: ``pred_q [N]`` the predicted quadrants, ``scores [N, 2]``
    what ranks songs along each axis (higher = more positive valence / higher arousal): the predicted
    probabilities of quadrant runs, the predicted valence/arousal of continuous runs."""

    ids: list[int]
    true_q: np.ndarray
    pred_q: np.ndarray
    scores: np.ndarray


def quadrant_pairs(cache: FeatureCache, preds: dict[int, SongPrediction]) -> QuadrantPairs:
    """Pair every prediction's quadrant and axis scores with the cache's quadrant (label or sign of the
    labels around their scale's midpoint). Songs predicted from non-finite values raise :class:`LabelError`."""
    ids = sorted(preds)
    bad = [i for i in ids if not preds[i].quadrant]
    if bad:
        raise LabelError(f"{len(bad)} song(s) got a non-finite prediction (first: {preds[bad[0]].source}); "
                         "the checkpoint may be damaged: evaluate another one or retrain")
    return QuadrantPairs(ids, np.array([cache.quadrant(i) for i in ids], dtype=np.int64),
                         np.array([preds[i].quadrant for i in ids], dtype=np.int64),
                         np.array([[preds[i].valence, preds[i].arousal] for i in ids], dtype=np.float64))


def quadrant_validation_metrics(pairs: QuadrantPairs) -> dict[str, float]:
    """Per-epoch validation metrics of a quadrant run (names end in ``_quadrant``): macro-F1, accuracy,
    per-axis ROC AUC and their mean (the early-stopping metric: smoother than F1 on small sets)."""
    m = quadrant_metrics(pairs.true_q, pairs.pred_q, pairs.scores[:, 0], pairs.scores[:, 1], bootstrap=0)
    nan = float("nan")
    out = {"val_f1_macro_quadrant": m["macro_f1"]["value"], "val_accuracy_quadrant": m["accuracy"]["value"]}
    for axis in ("valence", "arousal"):
        auc = m[f"{axis}_auc"]["value"]
        out[f"val_auc_{axis}_quadrant"] = nan if auc is None else float(auc)
    out["val_auc_mean_quadrant"] = (out["val_auc_valence_quadrant"] + out["val_auc_arousal_quadrant"]) / 2
    out["val_songs"] = float(len(pairs.ids))
    return out


def validation_metrics(pairs: SongPairs) -> dict[str, float]:
    """Per-epoch validation metrics; every name carries its scale (``_1to9`` / ``_pm1``).

    static: CCC, Pearson r, RMSE per dimension over the song values (1-9). dynamic: pooled CCC,
    Pearson r and RMSE over all annotated points, and the MediaEval-style per-song RMSE averaged
    over songs ([-1, 1]). Fewer than 2 songs (points) give NaN correlations.
    """
    if pairs.mode == "static":
        y, p, sfx = pairs.y, pairs.p, pairs.scale_.suffix
    else:
        y = np.concatenate([pairs.true_curves[i] for i in pairs.ids]) if pairs.ids else np.zeros((0, 2))
        p = np.concatenate([pairs.pred_curves[i] for i in pairs.ids]) if pairs.ids else np.zeros((0, 2))
        sfx = DYNAMIC.suffix
    m: dict[str, float] = {}
    for d, name in enumerate(DIMS):
        ok = len(y) > 1
        m[f"val_ccc_{name}_{sfx}"] = _f(ccc(y[:, d], p[:, d])) if ok else float("nan")
        m[f"val_pearson_{name}_{sfx}"] = _f(pearson_r(y[:, d], p[:, d])) if ok else float("nan")
        m[f"val_rmse_{name}_{sfx}"] = _f(rmse(y[:, d], p[:, d])) if len(y) else float("nan")
        if pairs.mode == "dynamic":
            per_song = [np.sqrt(np.mean((pairs.true_curves[i] - pairs.pred_curves[i]) ** 2, axis=0))[d]
                        for i in pairs.ids]
            m[f"val_song_rmse_{name}_{sfx}"] = float(np.mean(per_song)) if per_song else float("nan")
    m[f"val_ccc_mean_{sfx}"] = (m[f"val_ccc_valence_{sfx}"] + m[f"val_ccc_arousal_{sfx}"]) / 2
    m["val_songs"] = float(len(pairs.ids))
    return m


def target_metric(mode: str, scale: Scale = STATIC) -> str:
    """Name of the early-stopping metric of a run (higher is better): mean CCC on the labels' scale
    (static), on [-1, 1] (dynamic), mean per-axis ROC AUC (quadrant)."""
    if mode == "quadrant":
        return "val_auc_mean_quadrant"
    return f"val_ccc_mean_{scale.suffix if mode == 'static' else DYNAMIC.suffix}"


def run_validation_metrics(mode: str, cache: FeatureCache, preds: dict[int, SongPrediction],
                           scale: Scale = STATIC) -> dict[str, float]:
    """The per-epoch validation metrics of a run of ``mode`` (see :func:`target_metric`)."""
    if mode == "quadrant":
        return quadrant_validation_metrics(quadrant_pairs(cache, preds))
    return validation_metrics(song_pairs(mode, cache, preds, scale))


def compute_metrics(mode: str, cache: FeatureCache, preds: dict[int, SongPrediction], bootstrap: int = 1000,
                    seed: int = 0, scale: Scale = STATIC) -> tuple[dict, pd.DataFrame, dict]:
    """``(metrics, predictions table, curves)`` for the songs in ``preds``.

    Continuous labels (the cache's ``label_kind`` is static) and a continuous run: static runs, per
    dimension on the labels' ``scale`` with bootstrap 95 % intervals over songs (``metrics["static"]``);
    dynamic runs, the MediaEval 2015 measures on [-1, 1] (``metrics["mediaeval2015"]``) and the song means
    of the curves on [-1, 1] (``metrics["dynamic_song_mean"]``). Always, when every song has a quadrant:
    quadrant accuracy, macro-F1, confusion, per-axis accuracy and ROC AUC with bootstrap intervals
    (``metrics["quadrants"]``; continuous predictions give quadrants by their sign around the scale's
    midpoint and rank songs by their values).
    """
    if not preds:
        raise DeamError("no songs to evaluate: the split is empty after removing songs missing from the cache")
    metrics: dict[str, Any] = {"mode": mode, "n_songs": len(preds)}
    curves: dict[int, dict[str, np.ndarray]] = {}
    qp = quadrant_pairs(cache, preds)
    metrics["quadrants"] = quadrant_metrics(qp.true_q, qp.pred_q, qp.scores[:, 0], qp.scores[:, 1],
                                            bootstrap=bootstrap, seed=seed)
    qtable = pd.DataFrame({"song_id": qp.ids, "quadrant_true": [f"Q{q}" for q in qp.true_q],
                           "quadrant_pred": [f"Q{q}" for q in qp.pred_q],
                           "valence_score": qp.scores[:, 0], "arousal_score": qp.scores[:, 1]})
    if mode == "quadrant" or cache.label_kind == LabelKind.QUADRANT:
        metrics["scores"] = preds[qp.ids[0]].song_scale
        return metrics, qtable, curves
    pairs = song_pairs(mode, cache, preds, scale)
    if mode == "static":
        metrics["static"] = regression_metrics(pairs.y, pairs.p, scale=scale.name, bootstrap=bootstrap, seed=seed)
    else:
        if not pairs.ids:
            raise DeamError("dynamic evaluation: none of the split's songs has dynamic annotations")
        metrics["mediaeval2015"] = mediaeval2015_metrics(pairs.true_curves, pairs.pred_curves)
        metrics["dynamic_song_mean"] = regression_metrics(pairs.y, pairs.p, scale=DYNAMIC.name,
                                                          bootstrap=bootstrap, seed=seed)
    for i in pairs.ids:
        t, yv = dynamic_truth(cache, i)
        curves[i] = _curve_record(preds[i], t, yv)
    table = pd.DataFrame({
        "song_id": pairs.ids,
        "valence_true": pairs.y[:, 0], "arousal_true": pairs.y[:, 1],
        "valence_pred": pairs.p[:, 0], "arousal_pred": pairs.p[:, 1],
        "scale": pairs.scale,
    })
    table = table.merge(qtable[["song_id", "quadrant_true", "quadrant_pred"]], on="song_id", how="left")
    return metrics, table, curves


def _curve_record(pred: SongPrediction, t: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    return {"times_s": t, "true": y, "true_scale": DYNAMIC.name,
            "pred_times_s": pred.curve_times_s,
            "pred": np.stack([pred.curve_valence, pred.curve_arousal], axis=1),
            "pred_scale": pred.curve_scale}


def _f(x: Any) -> float:
    return float(np.asarray(x, dtype=np.float64))
