"""Evaluate a trained run on a split of its own data: metrics with bootstrap CIs, report, plots.

Uses exactly what training used: the run's feature cache and split (from its resolved config), its
training normalisation statistics, and the same song-level path as ``predict``
(:class:`deam_mamba.inference.predictor.Predictor`: chunks with the evaluation hop, pooled per song: the mean,
or the run's fitted song head when its config says ``model.pooling: attention | linear``;
``metrics["pooling"]`` says which).

* static runs: per dimension on the 1-9 scale MSE, RMSE, MAE, Pearson r, CCC, R² with bootstrap
  95% intervals over songs (``metrics["static"]``).
* dynamic runs: the MediaEval 2015 measures on [-1, 1] (per-song RMSE and Pearson r over the 2 Hz
  annotation times, averaged over songs; ``metrics["mediaeval2015"]``) plus the song means of the
  curves compared on [-1, 1] (``metrics["dynamic_song_mean"]``). The two scales are never mixed.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deam_mamba.config import Config
from deam_mamba.core.errors import ConfigError, DeamError, OutputExistsError
from deam_mamba.core.io import atomic_write_text
from deam_mamba.core.scales import DYNAMIC
from deam_mamba.evaluation.report import write_report
from deam_mamba.evaluation.scoring import compute_metrics, predict_cached_songs
from deam_mamba.features.cache import FeatureCache
from deam_mamba.features.splits import open_data
from deam_mamba.inference.predictor import Predictor
from deam_mamba.runs.run import load_run

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "all")


@dataclass
class SplitData:
    """The cache and the song ids of every split of a run (``splits[name] -> ids``)."""

    cache: FeatureCache
    splits: dict[str, list[int]]


def resolve_run_data(config: Config, build: bool = True) -> SplitData:
    """The run's feature cache and split ids, exactly as training opened them.

    Goes through :func:`deam_mamba.features.splits.open_data`: same data root, split name and seed, and
    the cache is rebuilt (only what is missing or stale) if it was moved or deleted since training.
    Split ids the cache lacks (skipped at prepare time) are logged there, not hidden.
    """
    if not config.data.cache:
        raise ConfigError("the run's config has no data.cache: cannot find the features it was trained on")
    _handler, cache, splits = open_data(config, build=build)
    return SplitData(cache=cache, splits={k: [int(i) for i in v] for k, v in splits.items()})


def default_out_dir(run_dir: Path, split: str) -> Path:
    return run_dir / ("eval" if split == "test" else f"eval_{split}")


def evaluate_run(run_dir: str | Path, split: str = "test", out_dir: str | Path | None = None,
                 which: str = "best", bootstrap: int = 1000, device: str = "cpu", batch_size: int = 32,
                 force: bool = False, n_curves: int = 4, progress: bool = True, seed: int = 0,
                 data: str | Path | None = None, kind: str | None = None, cache: str | Path | None = None) -> dict:
    """Evaluate ``run_dir`` on ``split`` and write ``metrics.json``, ``report.md``, plots and
    ``predictions.csv`` into ``out_dir`` (default ``RUN/eval`` for test, ``RUN/eval_<split>`` else).

    ``data`` (+ ``kind``) points the run at another dataset (a DEAM-trained run scored on 4Q, a moved
    dataset) and ``cache`` at another feature cache (built with the run's feature settings if missing);
    ``split="all"`` scores every song of the dataset.

    The default folder inside the run is rewritten on each call; an explicit ``out_dir`` that already
    holds files is refused unless ``force``. Returns the metrics dict (with ``paths`` added).
    """
    run_dir = Path(run_dir)
    if split not in SPLITS:
        raise DeamError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dir, split)
    if out_dir is not None and out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} exists and is not empty; pass --force to overwrite or choose another --out")
    run = load_run(run_dir, which=which)
    config = run.config
    if data is not None or cache is not None or kind is not None:
        config = copy.deepcopy(run.config)
        if data is not None:
            config.data.root, config.data.kind = str(data), kind or "auto"
            if split == "all":  # the run's own split may not exist for that dataset; every song is scored
                config.data.split = "random"
            if cache is None:
                raise ConfigError("--data needs --cache: a feature cache folder for that dataset (built if missing)")
        elif kind is not None:
            config.data.kind = kind
        if cache is not None:
            config.data.cache = str(cache)
    if data is None and config.data.root and not Path(config.data.root).exists():
        raise ConfigError(f"the run's dataset root {config.data.root} (data.root in {run_dir / 'config.yaml'}) does "
                          "not exist: was the run or its data moved? Point it at the data with --data ROOT "
                          "--cache DIR")
    resolved = resolve_run_data(config)
    ids = sorted({i for v in resolved.splits.values() for i in v} | set(resolved.cache.ids)) if split == "all" \
        else resolved.splits.get(split, [])
    data_info = {"data_root": config.data.root, "data_kind": config.data.kind, "cache": config.data.cache}
    predictor = Predictor.for_config(run.model, run.config, run.norm_stats, device=device, batch_size=batch_size,
                                     pool=run.pool)
    predictor.checkpoint = f"checkpoint {run.weights} (run {run_dir})"  # named if it outputs NaN: fails at song 1
    t0 = time.perf_counter()
    preds = predict_cached_songs(predictor, resolved.cache, ids, progress=progress)
    metrics, table, curves = compute_metrics(run.mode, resolved.cache, preds, bootstrap=bootstrap, seed=seed,
                                             scale=run.config.label_scale())
    metrics.update({"split": split, "run_dir": str(run_dir), "checkpoint": which, "step": run.step, **data_info,
                    "pooling": predictor.pooling,
                    "chunk_seconds": predictor.chunk_seconds, "hop_seconds": predictor.hop_seconds,
                    "predict_seconds": round(time.perf_counter() - t0, 3)})
    shown = {i: curves[i] for i in _pick_curves(curves, n_curves)}
    history = run_dir / "log.csv"
    paths = write_report(out, metrics, table, history_csv=history if history.exists() else None,
                         dynamic_curves=shown or None)
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
    q = metrics.get("quadrants")
    if q:
        auc = [q[f"{d}_auc"]["value"] for d in ("valence", "arousal")]
        lines.append(f"  quadrants: macro-F1 {_val(q['macro_f1']):.3f}  accuracy {_val(q['accuracy']):.3f}  "
                     f"ROC AUC valence {_val(auc[0]):.3f} arousal {_val(auc[1]):.3f}")
    me = metrics.get("mediaeval2015")
    if me:
        for dim in ("valence", "arousal"):
            d = me.get(dim, {})
            lines.append(f"  {dim:8s} MediaEval 2015: per-song RMSE {_val(d.get('rmse', {}).get('mean')):.3f}, "
                         f"per-song r {_val(d.get('pearson_r', {}).get('mean')):.3f} (scale {DYNAMIC.name})")
    return lines


def _val(x: Any) -> float:
    if isinstance(x, dict):
        x = x.get("value", float("nan"))
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")
