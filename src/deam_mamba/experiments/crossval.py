"""k-fold cross-validation of one config: train and evaluate a run per fold, then mean ± std over folds.

``run_crossval("configs/real_4q.yaml", ["data.root=../shared/real/4q"], out_dir="cv/4q", folds=5)`` trains
fold ``i`` with ``data.split=kfold data.fold=i`` (so every fold's test songs are those of
:func:`deam_mamba.data.folds.song_kfold_split`: stratified by quadrant; with ``protocol="artist"`` no
artist on both sides, with ``"random"`` the literature's protocol that lets one artist's songs fall on
both sides), evaluates its ``best`` checkpoint on the fold's test songs and writes ``crossval.json`` and
``crossval.md`` (per fold and mean ± std, sample std over folds).

Resumable: a fold whose evaluation exists is reused, a fold with a run folder but no evaluation resumes
training from its last checkpoint, so an interrupted cross-validation continues where it stopped.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from deam_mamba.config import Config, load_config
from deam_mamba.core.errors import ConfigError, OutputExistsError
from deam_mamba.core.io import atomic_write_json, atomic_write_text
from deam_mamba.data.folds import fold_summary
from deam_mamba.evaluation.evaluate import evaluate_run
from deam_mamba.runs.paths import read_run_config_dict
from deam_mamba.train.loop import train

log = logging.getLogger(__name__)

QUADRANT_KEYS = ("macro_f1", "accuracy", "valence_accuracy", "arousal_accuracy", "valence_auc", "arousal_auc")
PROTOCOLS = {"artist": "stratified, artist-disjoint k-fold (no artist on both sides of a split)",
             "random": "stratified random k-fold (the literature's protocol: one artist's songs can fall on "
                       "both sides of a split, which flatters every model)"}


def fold_config(config: str | Path, overrides: Sequence[str], folds: int, fold: int, protocol: str,
                seed: int | None = None) -> Config:
    """The config of fold ``fold``: the user's config and overrides, then the fold settings."""
    extra = ["data.split=kfold", f"data.folds={folds}", f"data.fold={fold}", f"data.fold_protocol={protocol}"]
    if seed is not None:
        extra.append(f"data.split_seed={seed}")
    return load_config(config, list(overrides) + extra)


def fold_row(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The numbers of one fold's evaluation that are averaged over folds."""
    row: dict[str, float | None] = {"n_test_songs": float(metrics["n_songs"])}
    q = metrics.get("quadrants") or {}
    for k in QUADRANT_KEYS:
        if k in q:
            row[k] = q[k]["value"]
    static = metrics.get("static")
    if static:
        for dim in static.get("names", ()):
            for k in ("ccc", "rmse", "pearson_r"):
                row[f"{dim}_{k}"] = static[dim][k]["value"]
    return row


def run_crossval(config: str | Path, overrides: Sequence[str] = (), out_dir: str | Path = "crossval_out",
                 folds: int = 5, protocol: str = "artist", seed: int | None = None, bootstrap: int = 1000,
                 force: bool = False, progress: bool = True, only: Sequence[int] | None = None) -> dict[str, Any]:
    """Train + evaluate every fold into ``out_dir/fold<i>`` and summarise; returns the summary dict.

    ``only``: train and summarise just these folds (a budget run); the summary then goes to
    ``crossval_partial.json``/``.md`` and says which folds it holds, and a later full call reuses them.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    chosen = sorted(set(range(folds) if only is None else only))
    if not chosen or any(not 0 <= i < folds for i in chosen):
        raise ConfigError(f"folds to run {list(only or [])} must be among 0..{folds - 1}")
    partial = len(chosen) < folds
    out = Path(out_dir)
    summary_path = out / f"{_stem(partial)}.json"
    if summary_path.exists() and not force and not partial:
        raise OutputExistsError(f"{summary_path} exists: this cross-validation is finished; pass --force to "
                                "redo the summary (finished folds are reused) or choose another --out")
    cfgs = {i: fold_config(config, overrides, folds, i, protocol, seed) for i in chosen}  # validate first
    for i, cfg in cfgs.items():
        check_same_split(out / f"fold{i}", cfg)
    rows, seconds = [], []
    for i, cfg in cfgs.items():
        run_dir = out / f"fold{i}"
        eval_json = run_dir / "eval" / "metrics.json"
        t0 = time.perf_counter()
        if eval_json.is_file():
            log.info("crossval: fold %d already evaluated (%s)", i, eval_json)
            metrics = json.loads(eval_json.read_text(encoding="utf-8"))
        else:
            if not progress:
                cfg.train.progress = False
            resume = (run_dir / "config.yaml").is_file()
            log.info("crossval: %s fold %d/%d into %s", "resuming" if resume else "training", i + 1, folds, run_dir)
            train(cfg, run_dir, resume=resume)
            metrics = evaluate_run(run_dir, split="test", bootstrap=bootstrap, progress=progress)
        seconds.append(round(time.perf_counter() - t0, 1))
        rows.append({"fold": i, **fold_row(metrics)})
        log.info("crossval: fold %d: %s", i, {k: v for k, v in rows[-1].items() if k in ("macro_f1", "valence_auc")})
    first = cfgs[chosen[0]]
    summary = {
        "config": str(config), "overrides": list(overrides), "folds": folds, "folds_summarised": chosen,
        "protocol": protocol, "protocol_description": PROTOCOLS[protocol], "split_seed": first.data.split_seed,
        "mode": first.mode, "model": first.model.name, "data_root": first.data.root,
        "per_fold": rows, "seconds_per_fold_this_call": seconds,
        "mean_std": fold_summary([{k: v for k, v in r.items() if k != "fold"} for r in rows]),
    }
    atomic_write_json(summary_path, summary)
    atomic_write_text(table_path(out, summary), crossval_markdown(summary))
    return summary


SPLIT_KEYS = ("split", "folds", "fold", "fold_protocol", "split_seed")


def check_same_split(run_dir: Path, cfg: Config) -> None:
    """A fold folder that already holds a run is reused only if it was trained on the same split (``data.split``,
    ``folds``, ``fold``, ``fold_protocol``, ``split_seed``) and model: another ``--folds`` or seed names other
    songs as the test part, so reusing it would summarise folds of another protocol. One-line ``ConfigError``."""
    if not (run_dir / "config.yaml").is_file():
        return
    old = read_run_config_dict(run_dir)
    want = {**{f"data.{k}": getattr(cfg.data, k) for k in SPLIT_KEYS}, "model.name": cfg.model.name}
    have = {**{f"data.{k}": (old.get("data") or {}).get(k) for k in SPLIT_KEYS},
            "model.name": (old.get("model") or {}).get("name")}
    diff = [f"{k}={have[k]} (asked: {want[k]})" for k in want if have[k] != want[k]]
    if diff:
        raise ConfigError(f"{run_dir} holds a run with {', '.join(diff)}: reusing it would mix in another split; "
                          "choose another --out, or the same --folds/--protocol/--seed as that run")


def _stem(partial: bool) -> str:
    return "crossval_partial" if partial else "crossval"


def _partial_folds(summary: dict[str, Any]) -> str | None:
    """``"0, 1, 2"`` when the summary holds only some folds, else None."""
    done = summary["folds_summarised"]
    return ", ".join(map(str, done)) if len(done) < summary["folds"] else None


def table_path(out_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Where :func:`run_crossval` writes the markdown table of ``summary``."""
    return Path(out_dir) / f"{_stem(_partial_folds(summary) is not None)}.md"


def crossval_markdown(summary: dict[str, Any]) -> str:
    """Per-fold rows and the mean ± std line as a markdown table."""
    keys = [k for k in (*QUADRANT_KEYS, "valence_ccc", "arousal_ccc") if k in summary["mean_std"]]
    part = _partial_folds(summary)
    which = (f"{summary['folds']} folds" if part is None else
             f"folds {part} of {summary['folds']} only (a partial run: not the full protocol)")
    lines = [f"# Cross-validation: {summary['model']} ({summary['mode']}), {which}",
             "", f"Protocol: {summary['protocol_description']}; split seed {summary['split_seed']}.", "",
             "| fold | test songs | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for r in summary["per_fold"]:
        lines.append(f"| {r['fold']} | {int(r['n_test_songs'])} | "
                     + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
    ms = summary["mean_std"]
    lines.append("| mean ± std | | " + " | ".join(f"{_fmt(ms[k]['mean'])} ± {_fmt(ms[k]['std'])}" for k in keys)
                 + " |")
    return "\n".join(lines) + "\n"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A few human lines for the CLI."""
    ms = summary["mean_std"]
    part = _partial_folds(summary)
    scope = "" if part is None else f", folds {part} only"
    out = [f"{summary['folds']}-fold cross-validation ({summary['protocol']}{scope}), {summary['model']}:"]
    for k in (*QUADRANT_KEYS, "valence_ccc", "arousal_ccc"):
        if k in ms:
            out.append(f"  {k:17s} {_fmt(ms[k]['mean'])} ± {_fmt(ms[k]['std'])}")
    return out


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{float(x):.3f}"
