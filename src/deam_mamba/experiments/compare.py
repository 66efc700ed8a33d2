"""Compare models on the same split and features: MambaVision, timm baselines, ridge on mel statistics.

Every deep model is trained through the training engine from ONE config with only ``model.name``
overridden (so data, cache, split, chunks, optimiser, epochs and seed are identical), then evaluated
with :func:`deam_mamba.evaluation.evaluate.evaluate_run` on the test split. The non-deep baseline is a ridge
regression on per-song mel statistics (:func:`deam_mamba.evaluation.baselines.fit_ridge_on_cache`) fitted on the
same training songs (train + val: it has no early stopping to feed) and scored on the same test songs.
One table (``comparison.md`` + ``comparison.json`` via :func:`deam_mamba.evaluation.report.write_comparison`)
holds the metrics on the 1-9 scale with parameter counts and training time.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deam_mamba.config import load_config
from deam_mamba.core.errors import ConfigError, DeamError, OutputExistsError
from deam_mamba.evaluation.baselines import fit_ridge_on_cache
from deam_mamba.evaluation.evaluate import evaluate_run, resolve_run_data
from deam_mamba.evaluation.metrics import regression_metrics
from deam_mamba.evaluation.report import write_comparison
from deam_mamba.evaluation.scoring import static_truth
from deam_mamba.models.registry import list_models
from deam_mamba.runs.run import load_run
from deam_mamba.train.loop import train

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("mambavision_audio", "resnet18", "efficientnet_b0", "vit_audio")
RIDGE = "ridge"


def _param_count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _metric_row(name: str, kind: str, params: int | None, train_s: float, metrics: dict) -> dict[str, Any]:
    """One table row: name, kind, params, training time and value + 95% CI of every metric per dimension."""
    row: dict[str, Any] = {"model": name, "kind": kind, "params": params, "train_time_s": round(train_s, 2),
                           "scale": metrics.get("scale"), "n_test_songs": metrics.get("n")}
    for dim in metrics.get("names", ()):
        for k, v in metrics[dim].items():
            row[f"{dim}_{k}"] = v["value"]
            row[f"{dim}_{k}_ci"] = [v["ci_low"], v["ci_high"]]
    row["mean_ccc"] = metrics.get("mean_ccc")
    return row


def _train(cfg: Any, run_dir: Path) -> Any:
    """Train one run through the engine (the same call ``deam-mamba train`` makes)."""
    return train(cfg, run_dir)


def ridge_row(cfg: Any, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Fit the ridge baseline on the run's cache and split (train + val songs), score the test songs."""
    data = resolve_run_data(cfg)
    train_ids = sorted(data.splits.get("train", []) + data.splits.get("val", []))
    test_ids = sorted(data.splits.get("test", []))
    if not train_ids or not test_ids:
        raise DeamError(f"ridge baseline: empty split (train+val {len(train_ids)}, test {len(test_ids)} songs)")
    t0 = time.perf_counter()
    _model, pred = fit_ridge_on_cache(data.cache, train_ids, test_ids)
    fit_s = time.perf_counter() - t0
    y = np.array([static_truth(data.cache, i) for i in test_ids])
    m = regression_metrics(y, np.asarray(pred, dtype=np.float64), scale="1-9", bootstrap=bootstrap, seed=seed)
    return _metric_row(RIDGE, "ridge on mel statistics", None, fit_s, m)


def run_comparison(config: str | Path, overrides: Sequence[str] = (), models: Sequence[str] = DEFAULT_MODELS,
                   out_dir: str | Path = "compare_out", force: bool = False, bootstrap: int = 1000,
                   ridge: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate every model in ``models`` (plus ridge) and write the comparison table.

    Runs go to ``out_dir/runs/<model>`` (each with its ``eval/`` report). An ``out_dir`` that already
    holds a comparison is refused unless ``force``. Returns ``{"rows": [...], "paths": {...}}``.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} exists and is not empty; pass --force to overwrite or choose another --out")
    base = load_config(config, list(overrides))
    if base.mode != "static":
        raise ConfigError("compare works on static runs (song valence/arousal on 1-9); set mode=static")
    known = set(list_models())
    unknown = [m for m in models if m not in known and m != RIDGE]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; available: {', '.join(sorted(known))}")
    rows: list[dict[str, Any]] = []
    for name in [m for m in models if m != RIDGE]:
        ovr = list(overrides) + [f"model.name={name}"] + ([] if progress else ["train.progress=false"])
        if name != base.model.name:  # kwargs in the config belong to its own model
            ovr.append("model.kwargs={}")
        cfg = load_config(config, ovr)
        run_dir = out / "runs" / name
        if run_dir.exists() and force:
            shutil.rmtree(run_dir)
        log.info("compare: training %s into %s", name, run_dir)
        t0 = time.perf_counter()
        _train(cfg, run_dir)
        train_s = time.perf_counter() - t0
        m = evaluate_run(run_dir, split="test", bootstrap=bootstrap, progress=progress)

        params = _param_count(load_run(run_dir, which="best").model)
        rows.append(_metric_row(name, "deep", params, train_s, m["static"]))
    if ridge:
        rows.append(ridge_row(base, bootstrap=bootstrap))
    paths = write_comparison(out, rows)
    return {"rows": rows, "paths": {k: str(v) for k, v in dict(paths).items()}}


def compare_run_with_ridge(run_dir: str | Path, metrics: dict, out_dir: str | Path,
                           bootstrap: int = 1000) -> dict[str, Any]:
    """Put an evaluated static run beside the ridge baseline fitted on the same cache and split.

    ``metrics`` is what :func:`deam_mamba.evaluation.evaluate.evaluate_run` returned for the test split. Writes
    ``comparison.md`` / ``comparison.json`` into ``out_dir`` (the run's eval folder). Returns the rows.
    """
    run = load_run(run_dir, which=metrics.get("checkpoint", "best"))
    if run.mode != "static" or "static" not in metrics:
        raise ConfigError("the ridge baseline compares static runs (song valence/arousal on 1-9)")
    if metrics.get("split") != "test":
        raise ConfigError("the ridge baseline is fitted on train+val songs: compare on --split test only")
    summary = Path(run_dir) / "train_summary.json"
    train_s = float(json.loads(summary.read_text()).get("seconds_this_session", float("nan"))) \
        if summary.exists() else float("nan")
    pooling = metrics.get("pooling", "mean")
    name = run.config.model.name + (" + attention pooling" if pooling == "attention" else "")
    params = _param_count(run.model) + (_param_count(run.pool) if run.pool is not None else 0)
    deep = _metric_row(name, "deep", params, train_s, metrics["static"])
    deep["pooling"] = pooling  # which song-level pooling produced the deep row's numbers
    rows = [deep, ridge_row(run.config, bootstrap=bootstrap)]
    write_comparison(out_dir, rows)
    return rows


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    """A short text table for the CLI (CCC per dimension on 1-9, training time)."""
    lines = [f"{'model':20s} {'params':>10s} {'train s':>9s} {'CCC val':>8s} {'CCC aro':>8s}"]
    for r in rows:
        p = f"{r['params']:,}" if r.get("params") else "-"
        lines.append(f"{r['model']:20s} {p:>10s} {r['train_time_s']:9.1f} {_f(r.get('valence_ccc')):>8s} "
                     f"{_f(r.get('arousal_ccc')):>8s}")
    return lines


def _f(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"
