"""Evaluation reports: ``metrics.json``, ``report.md`` and PNG plots; model comparison tables.

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch), so they work
headless and leave a notebook's own backend alone. Every file is written atomically. Every
number in a report states its scale: static song labels on 1-9, dynamic annotations on [-1, 1].
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deam_mamba.core.errors import DeamError, LabelError
from deam_mamba.core.io import atomic_path, atomic_write_json, atomic_write_text
from deam_mamba.core.scales import SCALES
from deam_mamba.evaluation.metrics import METRIC_NAMES, ccc, pearson_r, rmse
from deam_mamba.evaluation.quadrants import format_quadrant_metrics

log = logging.getLogger(__name__)

__all__ = [
    "plot_dynamic_curves",
    "plot_learning_curves",
    "plot_scatter",
    "plot_va_plane",
    "write_comparison",
    "write_report",
]

_LABEL = {"mse": "MSE", "rmse": "RMSE", "mae": "MAE", "pearson_r": "Pearson r", "ccc": "CCC", "r2": "R²"}
_SECTION = {"static": "Static song labels", "dynamic_song_mean": "Dynamic curves, averaged per song",
            "mediaeval2015": "MediaEval 2015 dynamic measures (per song, averaged over songs)"}
_HIGHER_IS_BETTER = {"ccc": True, "pearson_r": True, "r2": True, "mse": False, "rmse": False, "mae": False}
_DIMS = ("valence", "arousal")


# --- small helpers -------------------------------------------------------------------------


def _clean(o: Any) -> Any:
    """Recursively turn NaN/inf into None and numpy scalars/arrays into JSON types."""
    if isinstance(o, Mapping):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, Path):
        return str(o)
    return o


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, (bool, np.bool_)):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.{digits}f}"
    return str(x)


def _new_figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib only when plotting
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _scale_limits(scale: str | None, *arrays: np.ndarray) -> tuple[float, float]:
    if scale in SCALES:
        lo, hi = SCALES[scale].bounds
    else:
        vals = np.concatenate([np.ravel(a) for a in arrays])
        lo, hi = float(np.nanmin(vals)), float(np.nanmax(vals))
    pad = 0.03 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def _is_regression(d: Any) -> bool:
    return isinstance(d, Mapping) and d.get("kind", "regression") == "regression" and "names" in d and "scale" in d


def _is_mediaeval(d: Any) -> bool:
    return isinstance(d, Mapping) and d.get("kind") == "mediaeval2015"


def _predictions_table(predictions: Any) -> Any:
    """DataFrame or mapping of arrays -> DataFrame with ``song_id, <dim>_true, <dim>_pred`` (or, for quadrant
    labels, ``song_id, quadrant_true, quadrant_pred``)."""
    df = predictions if isinstance(predictions, pd.DataFrame) else pd.DataFrame(dict(predictions))
    pairs = ("quadrant",) if "quadrant_true" in df.columns and "valence_true" not in df.columns else _DIMS
    need = ["song_id"] + [f"{d}_{s}" for d in pairs for s in ("true", "pred")]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise LabelError(f"predictions table lacks column(s) {missing}; it has {list(df.columns)}")
    return df


# --- plots ---------------------------------------------------------------------------------


def plot_learning_curves(history_csv: str | Path, path: str | Path) -> Path | None:
    """Learning curves from the training CSV log: one panel per group of numeric columns
    (losses, agreement metrics, error metrics, learning rate, other non-constant), against
    ``epoch`` when it is unique per row, else ``step``, else the row number. Returns None (and
    logs why) if there is nothing to plot.
    """
    try:
        df = pd.read_csv(history_csv)
    except (OSError, ValueError) as exc:  # missing, empty or malformed log: report, don't crash the eval
        log.warning("no learning curves: cannot read %s (%s)", history_csv, exc)
        return None
    # per-epoch logs read best against epoch; logs with several rows per epoch need the step
    xcol = next((c for c in ("step", "epoch") if c in df.columns), None)
    if "epoch" in df.columns and df["epoch"].notna().all() and df["epoch"].is_unique:
        xcol = "epoch"
    num = [c for c in df.columns if c not in ("step", "epoch") and pd.api.types.is_numeric_dtype(df[c])
           and df[c].notna().any()]
    if not num:
        log.warning("no learning curves: %s has no numeric columns besides step/epoch", history_csv)
        return None
    groups: dict[str, list[str]] = {"loss": [], "agreement (higher is better)": [],
                                    "error (lower is better)": [], "learning rate": [], "other": []}
    for c in num:
        lc = c.lower()
        if "loss" in lc:
            groups["loss"].append(c)
        elif lc == "lr" or lc.startswith("lr") or "learning_rate" in lc:
            groups["learning rate"].append(c)
        elif any(k in lc for k in ("ccc", "r2", "pearson", "corr")) or lc.endswith("_r"):
            groups["agreement (higher is better)"].append(c)
        elif any(k in lc for k in ("rmse", "mse", "mae")):
            groups["error (lower is better)"].append(c)
        elif df[c].nunique() > 1:  # constant bookkeeping columns (e.g. a song count) are not curves
            groups["other"].append(c)
    groups = {k: v for k, v in groups.items() if v}
    x_all = df[xcol] if xcol else pd.Series(np.arange(len(df)), index=df.index)
    fig = _new_figure(4.2 * len(groups), 3.4)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (title, cols) in zip(axes, groups.items()):
        for c in cols:
            ok = df[c].notna() & x_all.notna()
            ax.plot(x_all[ok], df[c][ok], marker="o" if ok.sum() <= 30 else None, ms=3, lw=1.3, label=c)
        if title == "learning rate" and (df[cols] > 0).all().all():
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xcol or "row")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, Path(path))


def plot_scatter(df: Any, path: str | Path, scale: str = "1-9") -> Path:
    """Predicted vs true per dimension, identity line, CCC / r / RMSE in the corner."""
    fig = _new_figure(4.2 * len(_DIMS), 4.2)
    axes = fig.subplots(1, len(_DIMS), squeeze=False)[0]
    for ax, dim in zip(axes, _DIMS):
        t, p = df[f"{dim}_true"].to_numpy(float), df[f"{dim}_pred"].to_numpy(float)
        lo, hi = _scale_limits(scale, t, p)
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--", label="identity")
        ax.scatter(t, p, s=14, alpha=0.75, edgecolor="none")
        if len(t):
            ax.text(0.03, 0.97, f"CCC {_fmt(ccc(t, p))}\nr {_fmt(pearson_r(t, p))}\nRMSE {_fmt(rmse(t, p))}"
                    f"\nn = {len(t)}", transform=ax.transAxes, va="top", fontsize=8,
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"})
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=f"true {dim} ({scale})", ylabel=f"predicted {dim} ({scale})",
               title=dim, aspect="equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    return _save(fig, Path(path))


def plot_va_plane(df: Any, path: str | Path, scale: str = "1-9") -> Path:
    """Valence-arousal plane: truth (circles), predictions (crosses), a line joining each song's pair."""
    tv, ta = df["valence_true"].to_numpy(float), df["arousal_true"].to_numpy(float)
    pv, pa = df["valence_pred"].to_numpy(float), df["arousal_pred"].to_numpy(float)
    fig = _new_figure(5.4, 5.2)
    ax = fig.subplots()
    from matplotlib.collections import LineCollection  # lazy: matplotlib only when plotting

    segs = np.stack([np.column_stack([tv, ta]), np.column_stack([pv, pa])], axis=1)
    ax.add_collection(LineCollection(segs, colors="0.6", linewidths=0.7, alpha=0.7))
    ax.scatter(tv, ta, s=18, facecolor="none", edgecolor="tab:blue", label="true")
    ax.scatter(pv, pa, s=18, marker="x", color="tab:red", label="predicted")
    lo, hi = _scale_limits(scale, tv, ta, pv, pa)
    mid = SCALES[scale].midpoint if scale in SCALES else None
    if mid is not None:
        ax.axhline(mid, color="0.8", lw=0.8)
        ax.axvline(mid, color="0.8", lw=0.8)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal", xlabel=f"valence ({scale})", ylabel=f"arousal ({scale})",
           title=f"valence-arousal plane, {len(tv)} songs")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, Path(path))


def plot_dynamic_curves(curves: Mapping[Any, Mapping[str, Any]], path: str | Path, max_songs: int = 4) -> Path:
    """True vs predicted curves over time, one row per song, one column per dimension.

    ``curves[song_id]``: ``times_s [K]``, ``true [K, 2]`` and ``pred [M, 2]`` (at ``pred_times_s``,
    default ``times_s``), with optional ``true_scale`` / ``pred_scale`` (default ``"[-1, 1]"``).
    When the scales differ (a static model's chunk predictions on 1-9 against [-1, 1] annotations)
    the prediction gets its own right-hand axis, aligned linearly with the left one and labelled.
    """
    ids = list(curves)[:max_songs]
    fig = _new_figure(11.0, 2.4 * max(1, len(ids)))
    axes = fig.subplots(max(1, len(ids)), len(_DIMS), squeeze=False)
    for row, sid in zip(axes, ids):
        c = curves[sid]
        t = np.asarray(c["times_s"], float)
        y = np.asarray(c["true"], float).reshape(len(t), -1)
        pt = np.asarray(c.get("pred_times_s", t), float)
        p = np.asarray(c["pred"], float).reshape(len(pt), -1)
        ts, ps = c.get("true_scale", "[-1, 1]"), c.get("pred_scale", "[-1, 1]")
        for d, (ax, dim) in enumerate(zip(row, _DIMS)):
            ax.plot(t, y[:, d], color="tab:blue", lw=1.4, label=f"true ({ts})")
            pax = ax if ps == ts else ax.twinx()
            pax.plot(pt, p[:, d], color="tab:red", lw=1.2, ls="--", label=f"predicted ({ps})")
            ax.set_ylim(*_scale_limits(ts, y[:, d]))
            if pax is not ax:
                pax.set_ylim(*_scale_limits(ps, p[:, d]))
                pax.set_ylabel(f"predicted ({ps})", color="tab:red", fontsize=8)
                pax.tick_params(axis="y", labelcolor="tab:red", labelsize=7)
            ax.set_title(f"song {sid}: {dim}", fontsize=9)
            ax.set_xlabel("time (s)", fontsize=8)
            ax.set_ylabel(f"{dim} ({ts})", fontsize=8)
            ax.grid(alpha=0.3)
            handles = ax.get_legend_handles_labels()[0] + (pax.get_legend_handles_labels()[0] if pax is not ax else [])
            ax.legend(handles=handles, fontsize=7, loc="upper left")
    return _save(fig, Path(path))


# --- markdown ------------------------------------------------------------------------------


def _regression_md(title: str, m: Mapping[str, Any]) -> list[str]:
    b = m.get("bootstrap") or {}
    level = f"{100 * (1 - b.get('alpha', 0.05)):g}%"
    ci_note = (f"{level} CI: percentile bootstrap over songs, {b['n']} resamples, seed {b.get('seed')}"
               if b.get("n") else "no bootstrap intervals")
    out = [f"## {title}", "", f"Scale **{m['scale']}**, n = {m.get('n')} songs; {ci_note}.", ""]
    for dim in m["names"]:
        out += [f"### {dim} (scale {m['scale']})", "", f"| metric | value | {level} CI |", "|---|---:|---:|"]
        for k in METRIC_NAMES:
            e = m[dim].get(k)
            if e is None:
                continue
            ci = "n/a" if e.get("ci_low") is None else f"[{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]"
            out.append(f"| {_LABEL.get(k, k)} | {_fmt(e.get('value'))} | {ci} |")
        out.append("")
    out += [f"Mean CCC over dimensions: **{_fmt(m.get('mean_ccc'))}**", ""]
    return out


def _mediaeval_md(title: str, m: Mapping[str, Any]) -> list[str]:
    out = [f"## {title}", "", f"Scale **{m['scale']}**; {m.get('n_songs')} songs with annotations "
           f"({m.get('n_empty', 0)} without). Pearson r is averaged over the songs where it is defined.", "",
           "| dimension | RMSE mean | RMSE std | r mean | r std | songs with r defined | undefined |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for dim in m["names"]:
        r, c = m[dim]["rmse"], m[dim]["pearson_r"]
        out.append(f"| {dim} | {_fmt(r['mean'])} | {_fmt(r['std'])} | {_fmt(c['mean'])} | {_fmt(c['std'])} | "
                   f"{c['n_defined']} | {c['n_undefined']} |")
    return out + [""]


def _report_md(title: str, metrics: Mapping[str, Any], plots: Mapping[str, Path], notes: Sequence[str]) -> str:
    lines = [f"# {title}", ""]
    info = {k: v for k, v in metrics.items()
            if isinstance(v, (str, int, float, bool, type(None))) and k not in ("kind", "scale", "n", "mean_ccc")}
    if info:
        lines += ["| | |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in info.items()] + [""]
    if _is_regression(metrics):
        lines += _regression_md("Metrics", metrics)
    for k, v in metrics.items():
        if _is_regression(v):
            lines += _regression_md(_SECTION.get(k, k), v)
        elif _is_mediaeval(v):
            lines += _mediaeval_md(_SECTION.get(k, k), v)
        elif isinstance(v, Mapping) and v.get("kind") == "quadrants":
            lines += ["## Quadrants (Russell)", "", "```"] + format_quadrant_metrics(v) + ["```", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{k}]({p.name})" for k, p in plots.items()] + [""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


# --- public writers ------------------------------------------------------------------------


def write_report(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    predictions: Any,
    history_csv: str | Path | None = None,
    dynamic_curves: Mapping[Any, Mapping[str, Any]] | None = None,
    title: str = "deam-mamba evaluation",
) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md`` and plots into ``out_dir``; return ``{name: path}``.

    ``metrics``: a :func:`~deam_mamba.evaluation.metrics.regression_metrics` result, or a dict holding such
    blocks (e.g. ``static``, ``dynamic_song_mean``) and/or a ``mediaeval2015`` block, plus scalar
    run info. ``predictions``: DataFrame (or mapping of arrays) with ``song_id, valence_true,
    valence_pred, arousal_true, arousal_pred`` on one scale (a ``scale`` column, else the first
    metrics block's scale, else 1-9). ``history_csv``: the training log for learning curves.
    ``dynamic_curves``: see :func:`plot_dynamic_curves`. Existing files of these names are replaced.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = _predictions_table(predictions)
    scales = sorted(set(df["scale"].astype(str))) if "scale" in df.columns else []
    if len(scales) > 1:
        raise LabelError(f"predictions table mixes scales {scales}; write one report per scale")
    blocks = [metrics] if _is_regression(metrics) else [v for v in metrics.values() if _is_regression(v)]
    scale = scales[0] if scales else (blocks[0]["scale"] if blocks else "1-9")
    paths: dict[str, Path] = {}
    notes: list[str] = []
    plots: dict[str, Path] = {}
    if history_csv is not None:
        p = plot_learning_curves(history_csv, out / "learning_curves.png")
        if p is None:
            notes.append(f"no learning curves: could not read numeric columns from {history_csv}")
        else:
            plots["learning_curves"] = p
    else:
        notes.append("no training log given: learning curves not drawn")
    if len(df) and "valence_true" in df.columns:
        plots["scatter"] = plot_scatter(df, out / "scatter.png", scale)
        plots["va_plane"] = plot_va_plane(df, out / "va_plane.png", scale)
    elif len(df):
        notes.append("quadrant labels only: no scatter or valence-arousal plot (see the confusion matrix)")
    else:
        notes.append("no predictions: scatter and valence-arousal plots not drawn")
    if dynamic_curves:
        plots["dynamic_curves"] = plot_dynamic_curves(dynamic_curves, out / "dynamic_curves.png")
    paths["metrics_json"] = out / "metrics.json"
    atomic_write_json(paths["metrics_json"], _clean(metrics))
    paths["report_md"] = out / "report.md"
    atomic_write_text(paths["report_md"], _report_md(title, metrics, plots, notes))
    paths.update(plots)
    log.info("report written to %s (%d files)", out, len(paths))
    return paths


def _best(rows: Sequence[Mapping[str, Any]], key: str, higher: bool) -> Any:
    vals = [r.get(key) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r.get(key))]
    return (max(vals) if higher else min(vals)) if vals else None


def write_comparison(out_dir: str | Path, rows: Sequence[Mapping[str, Any]],
                     title: str = "Model comparison") -> dict[str, Path]:
    """Write ``comparison.md`` and ``comparison.json`` (one row per model); return their paths.

    A row holds ``model`` (or ``name``), optional ``kind``, ``params``, ``train_time_s``, ``scale``,
    ``n_test_songs``, metric values as ``<dim>_<metric>`` (e.g. ``valence_ccc``), optional
    intervals as ``<dim>_<metric>_ci = [low, high]`` and ``mean_ccc``. The markdown has a
    summary table (best value per column in bold) and a table per dimension with intervals.
    """
    if not rows:
        raise DeamError("nothing to compare: no result rows were given")
    rows = [dict(r) for r in rows]
    for r in rows:
        r.setdefault("model", r.get("name", "?"))
    dims = [d for d in _DIMS if any(f"{d}_ccc" in r for r in rows)] or [
        k[:-4] for k in rows[0] if k.endswith("_ccc") and k != "mean_ccc"]
    scales = sorted({str(r["scale"]) for r in rows if r.get("scale")})
    out = Path(out_dir)
    paths = {"comparison_json": out / "comparison.json", "comparison_md": out / "comparison.md"}
    atomic_write_json(paths["comparison_json"], _clean({"scale": scales[0] if len(scales) == 1 else scales,
                                                        "rows": rows}))
    summary = [("ccc", "CCC"), ("rmse", "RMSE"), ("r2", "R²"), ("pearson_r", "r")]
    head = ["model", "params", "train time (s)"] + [f"{lab} {d}" for k, lab in summary for d in dims] + ["mean CCC"]
    lines = [f"# {title}", "", f"Metrics on the **{', '.join(scales) or 'unstated'}** scale, test songs"
             + (f" (n = {rows[0]['n_test_songs']})" if rows[0].get("n_test_songs") else "")
             + "; best per column in bold.", "", "| " + " | ".join(head) + " |",
             "|---" + "|---:" * (len(head) - 1) + "|"]
    keys = [(f"{d}_{k}", _HIGHER_IS_BETTER[k]) for k, _ in summary for d in dims] + [("mean_ccc", True)]
    best = {k: _best(rows, k, hi) for k, hi in keys}
    for r in rows:
        cells = [str(r["model"]), _fmt(r.get("params")) if r.get("params") else "-", _fmt(r.get("train_time_s"), 1)]
        for k, _ in keys:
            s = _fmt(r.get(k))
            cells.append(f"**{s}**" if best[k] is not None and r.get(k) == best[k] else s)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for d in dims:
        lines += [f"## {d}", "", "| model | " + " | ".join(_LABEL[k] for k in METRIC_NAMES) + " |",
                  "|---" + "|---:" * len(METRIC_NAMES) + "|"]
        for r in rows:
            cells = []
            for k in METRIC_NAMES:
                ci = r.get(f"{d}_{k}_ci")
                s = _fmt(r.get(f"{d}_{k}"))
                if ci and ci[0] is not None:
                    s += f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"
                cells.append(s)
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
        lines += ["", "Values with 95% bootstrap intervals over test songs where available.", ""]
    atomic_write_text(paths["comparison_md"], "\n".join(lines))
    return paths
