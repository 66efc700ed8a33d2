"""Evaluate a trained run on a split of its own data: metrics with bootstrap CIs, report, plots.

Uses exactly what training used: the run's feature cache and split (from its resolved config), its
training normalisation statistics, and the same song-level path as ``predict``
(:class:`deam_mamba.inference.Predictor`: chunks with the evaluation hop, pooled per song: the mean,
or the run's fitted attention pool when its config says ``model.pooling: attention``;
``metrics["pooling"]`` says which).

* static runs: per dimension on the 1-9 scale MSE, RMSE, MAE, Pearson r, CCC, R² with bootstrap
  95% intervals over songs (``metrics["static"]``).
* dynamic runs: the MediaEval 2015 measures on [-1, 1] (per-song RMSE and Pearson r over the 2 Hz
  annotation times, averaged over songs; ``metrics["mediaeval2015"]``) plus the song means of the
  curves compared on [-1, 1] (``metrics["dynamic_song_mean"]``). The two scales are never mixed.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deam_mamba.core.errors import ConfigError, DeamError, OutputExistsError
from deam_mamba.inference import DYNAMIC_SCALE, STATIC_SCALE, Predictor, SongPrediction, _get, run_chunking

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class SplitData:
    """The cache and the song ids of every split of a run (``splits[name] -> ids``)."""

    cache: Any
    splits: dict[str, list[int]]


def resolve_run_data(config: Any, build: bool = True) -> SplitData:
    """The run's feature cache and split ids, exactly as training opened them.

    Goes through :func:`deam_mamba.engine.open_data`: same data root, split name and seed, and
    the cache is rebuilt (only what is missing or stale) if it was moved or deleted since training.
    Split ids the cache lacks (skipped at prepare time) are logged there, not hidden.
    """
    from deam_mamba.engine import open_data

    data = _get(config, "data", None)
    if not _get(data, "cache", None):
        raise ConfigError("the run's config has no data.cache: cannot find the features it was trained on")
    _handler, cache, splits = open_data(config, build=build)
    return SplitData(cache=cache, splits={k: [int(i) for i in v] for k, v in splits.items()})


def predict_cached_songs(predictor: Predictor, cache: Any, ids: list[int], progress: bool = True
                         ) -> dict[int, SongPrediction]:
    """Song-level predictions from cached log-mels (``cache.features(id) -> [n_mels, F]`` dB)."""
    from tqdm.auto import tqdm

    out: dict[int, SongPrediction] = {}
    for sid in tqdm(ids, desc="evaluate", unit="song", disable=not progress):
        mel = torch.from_numpy(np.asarray(cache.features(sid), dtype=np.float32))
        out[sid] = predictor.predict_features(predictor.normalise(mel), source=str(sid))
    return out


def static_truth(cache: Any, sid: int) -> tuple[float, float]:
    """(valence_mean, arousal_mean) on 1-9 from the cache (dict- or array-shaped labels)."""
    lab = cache.static_label(sid)
    if isinstance(lab, dict):
        return float(lab["valence_mean"]), float(lab["arousal_mean"])
    arr = np.asarray(lab, dtype=np.float64).ravel()
    return float(arr[0]), float(arr[1])


def dynamic_truth(cache: Any, sid: int) -> tuple[np.ndarray, np.ndarray]:
    """``(times_s [K], values [K, 2])`` on [-1, 1] from the cache (K may be 0)."""
    lab = cache.dynamic_labels(sid)
    if isinstance(lab, dict):
        t, v, a = lab["times_s"], lab["valence"], lab["arousal"]
    else:
        t, v, a = lab
    return np.asarray(t, np.float64), np.stack([np.asarray(v, np.float64), np.asarray(a, np.float64)], axis=1)


def compute_metrics(mode: str, cache: Any, preds: dict[int, SongPrediction], bootstrap: int = 1000,
                    seed: int = 0) -> tuple[dict, Any, dict]:
    """``(metrics, predictions table, dynamic curves)`` for the songs in ``preds``."""
    import pandas as pd

    from deam_mamba.metrics import mediaeval2015_metrics, regression_metrics

    ids = sorted(preds)
    if not ids:
        raise DeamError("no songs to evaluate: the split is empty after removing songs missing from the cache")
    metrics: dict[str, Any] = {"mode": mode, "n_songs": len(ids)}
    curves: dict[int, dict[str, np.ndarray]] = {}
    if mode == "static":
        y = np.array([static_truth(cache, i) for i in ids])
        p = np.array([[preds[i].valence, preds[i].arousal] for i in ids])
        metrics["static"] = regression_metrics(y, p, scale=STATIC_SCALE, bootstrap=bootstrap, seed=seed)
        for i in ids:
            t, yv = dynamic_truth(cache, i)
            curves[i] = _curve_record(preds[i], t, yv)
    else:
        true_c, pred_c, keep = {}, {}, []
        for i in ids:
            t, yv = dynamic_truth(cache, i)
            if len(t) == 0:
                continue
            pc = _interp_curve(preds[i], t)
            true_c[i], pred_c[i] = yv, pc
            curves[i] = _curve_record(preds[i], t, yv)
            keep.append(i)
        if not keep:
            raise DeamError("dynamic evaluation: none of the split's songs has dynamic annotations")
        metrics["mediaeval2015"] = mediaeval2015_metrics(true_c, pred_c)
        y = np.array([true_c[i].mean(axis=0) for i in keep])
        p = np.array([pred_c[i].mean(axis=0) for i in keep])
        metrics["dynamic_song_mean"] = regression_metrics(y, p, scale=DYNAMIC_SCALE, bootstrap=bootstrap,
                                                          seed=seed)
        ids = keep
    scale = STATIC_SCALE if mode == "static" else DYNAMIC_SCALE
    table = pd.DataFrame({
        "song_id": ids,
        "valence_true": y[:, 0], "arousal_true": y[:, 1],
        "valence_pred": p[:, 0], "arousal_pred": p[:, 1],
        "scale": scale,
    })
    return metrics, table, curves


def _interp_curve(pred: SongPrediction, times: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(times, pred.curve_times_s, pred.curve_valence),
                     np.interp(times, pred.curve_times_s, pred.curve_arousal)], axis=1)


def _curve_record(pred: SongPrediction, t: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    return {"times_s": t, "true": y, "true_scale": DYNAMIC_SCALE,
            "pred_times_s": pred.curve_times_s,
            "pred": np.stack([pred.curve_valence, pred.curve_arousal], axis=1),
            "pred_scale": pred.curve_scale}


def default_out_dir(run_dir: Path, split: str) -> Path:
    return run_dir / ("eval" if split == "test" else f"eval_{split}")


def evaluate_run(run_dir: str | Path, split: str = "test", out_dir: str | Path | None = None,
                 which: str = "best", bootstrap: int = 1000, device: str = "cpu", batch_size: int = 32,
                 force: bool = False, n_curves: int = 4, progress: bool = True, seed: int = 0) -> dict:
    """Evaluate ``run_dir`` on ``split`` and write ``metrics.json``, ``report.md``, plots and
    ``predictions.csv`` into ``out_dir`` (default ``RUN/eval`` for test, ``RUN/eval_<split>`` else).

    The default folder inside the run is rewritten on each call; an explicit ``out_dir`` that already
    holds files is refused unless ``force``. Returns the metrics dict (with ``paths`` added).
    """
    from deam_mamba.checkpoint import load_run
    from deam_mamba.report import write_report

    run_dir = Path(run_dir)
    if split not in SPLITS:
        raise DeamError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dir, split)
    if out_dir is not None and out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} exists and is not empty; pass --force to overwrite or choose another --out")
    run = load_run(run_dir, which=which)
    data = resolve_run_data(run.config)
    ids = data.splits.get(split, [])
    chunk_s, hop_s = run_chunking(run.config)
    predictor = Predictor(run.model, run.feature_config, run.norm_stats, mode=run.mode, chunk_seconds=chunk_s,
                          hop_seconds=hop_s, device=device, batch_size=batch_size, pool=run.pool)
    t0 = time.perf_counter()
    preds = predict_cached_songs(predictor, data.cache, ids, progress=progress)
    metrics, table, curves = compute_metrics(run.mode, data.cache, preds, bootstrap=bootstrap, seed=seed)
    metrics.update({"split": split, "run_dir": str(run_dir), "checkpoint": which, "step": run.step,
                    "pooling": predictor.pooling,
                    "chunk_seconds": chunk_s, "hop_seconds": predictor.hop_seconds,
                    "predict_seconds": round(time.perf_counter() - t0, 3)})
    shown = {i: curves[i] for i in _pick_curves(curves, n_curves)}
    history = run_dir / "log.csv"
    paths = write_report(out, metrics, table, history_csv=history if history.exists() else None,
                         dynamic_curves=shown or None)
    from deam_mamba.core.io import atomic_write_text

    pred_csv = out / "predictions.csv"
    atomic_write_text(pred_csv, table.to_csv(index=False))
    metrics["paths"] = {**{k: str(v) for k, v in dict(paths).items()}, "predictions": str(pred_csv)}
    return metrics


def _pick_curves(curves: dict[int, dict], n: int) -> list[int]:
    """Up to ``n`` songs with the longest annotated curves (the full songs, when there are any)."""
    order = sorted(curves, key=lambda i: (-len(curves[i]["times_s"]), i))
    return [i for i in order if len(curves[i]["times_s"]) > 0][:n]


def summary_lines(metrics: dict) -> list[str]:
    """A few human lines for the CLI: CCC and RMSE per dimension, with the scale."""
    lines = [f"{metrics.get('split', '?')} split: {metrics.get('n_songs', '?')} songs ({metrics.get('mode')}, "
             f"{metrics.get('pooling', 'mean')} pooling over chunks)"]
    for key in ("static", "dynamic_song_mean"):
        block = metrics.get(key)
        if not block:
            continue
        for dim in ("valence", "arousal"):
            d = block.get(dim, {})
            lines.append(f"  {dim:8s} CCC {_val(d.get('ccc')):.3f}  RMSE {_val(d.get('rmse')):.3f}  "
                         f"R2 {_val(d.get('r2')):.3f}  (scale {block.get('scale', '?')}, {key})")
    me = metrics.get("mediaeval2015")
    if me:
        for dim in ("valence", "arousal"):
            d = me.get(dim, {})
            lines.append(f"  {dim:8s} MediaEval 2015: per-song RMSE {_val(d.get('rmse', {}).get('mean')):.3f}, "
                         f"per-song r {_val(d.get('pearson_r', {}).get('mean')):.3f} (scale {DYNAMIC_SCALE})")
    return lines


def _val(x: Any) -> float:
    if isinstance(x, dict):
        x = x.get("value", float("nan"))
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")
