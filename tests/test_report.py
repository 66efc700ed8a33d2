"""Report writer: metrics.json, report.md, PNG plots, comparison table."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from deam_mamba.core.errors import DeamError, LabelError
from deam_mamba.evaluation.metrics import mediaeval2015_metrics, regression_metrics
from deam_mamba.evaluation.report import write_comparison, write_report


@pytest.fixture
def static_result():
    rng = np.random.default_rng(0)
    y = rng.uniform(2, 8, size=(30, 2))
    p = np.clip(y + rng.normal(0, 0.5, size=y.shape), 1, 9)
    table = pd.DataFrame({"song_id": np.arange(30) + 2, "valence_true": y[:, 0], "arousal_true": y[:, 1],
                          "valence_pred": p[:, 0], "arousal_pred": p[:, 1], "scale": "1-9"})
    metrics = {"mode": "static", "n_songs": 30, "split": "test",
               "static": regression_metrics(y, p, bootstrap=200, seed=0)}
    return metrics, table


def _history(path):
    rows = []
    for e in range(1, 4):
        rows += [{"epoch": e, "step": 10 * e + s, "train_loss": 1.0 / (e + s), "lr": 1e-3} for s in range(3)]
        rows.append({"epoch": e, "step": 10 * e + 2, "val_loss": 1.0 / e, "val_ccc_valence": 1 - 1 / e})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _curves():
    t = np.arange(15, 45, 0.5)
    tr = np.column_stack([np.sin(t / 5), np.cos(t / 7)]) * 0.5
    pt = np.arange(0, 45, 0.5)
    return {7: {"times_s": t, "true": tr, "true_scale": "[-1, 1]", "pred_times_s": pt,
                "pred": 5 + 2 * np.column_stack([np.sin(pt / 5), np.cos(pt / 7)]), "pred_scale": "1-9"},
            8: {"times_s": t, "true": tr, "pred": tr * 0.9}}


def test_write_report_files_and_content(tmp_path, static_result):
    metrics, table = static_result
    paths = write_report(tmp_path / "eval", metrics, table, history_csv=_history(tmp_path / "log.csv"),
                         dynamic_curves=_curves())
    assert set(paths) == {"metrics_json", "report_md", "learning_curves", "scatter", "va_plane", "dynamic_curves"}
    for k in ("learning_curves", "scatter", "va_plane", "dynamic_curves"):
        img = imread(paths[k])
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200, k
        assert img[..., :3].std() > 0.05, f"{k} looks blank"
    saved = json.loads(paths["metrics_json"].read_text())
    assert saved["static"]["valence"]["ccc"] == metrics["static"]["valence"]["ccc"]
    md = paths["report_md"].read_text()
    ccc_v = metrics["static"]["valence"]["ccc"]
    assert f"| CCC | {ccc_v['value']:.3f} | [{ccc_v['ci_low']:.3f}, {ccc_v['ci_high']:.3f}] |" in md
    assert "### arousal (scale 1-9)" in md and "200 resamples" in md
    assert "![scatter](scatter.png)" in md and "| split | test |" in md
    assert not [p for p in (tmp_path / "eval").iterdir() if p.name.endswith(".tmp")]


def test_write_report_bare_metrics_no_history_and_mediaeval(tmp_path):
    rng = np.random.default_rng(1)
    true = {i: np.tanh(rng.normal(size=(20, 2))) for i in range(5)}
    pred = {i: np.clip(v + rng.normal(0, 0.1, v.shape), -1, 1) for i, v in true.items()}
    y = np.array([v.mean(0) for v in true.values()])
    p = np.array([v.mean(0) for v in pred.values()])
    metrics = {"mode": "dynamic", "mediaeval2015": mediaeval2015_metrics(true, pred),
               "dynamic_song_mean": regression_metrics(y, p, scale="[-1, 1]", bootstrap=0)}
    table = {"song_id": list(true), "valence_true": y[:, 0], "arousal_true": y[:, 1],
             "valence_pred": p[:, 0], "arousal_pred": p[:, 1]}
    paths = write_report(tmp_path, metrics, table)
    md = paths["report_md"].read_text()
    assert "MediaEval 2015" in md and "Scale **[-1, 1]**" in md and "no bootstrap intervals" in md
    assert "learning curves not drawn" in md and "learning_curves" not in paths
    # a bare regression_metrics result is a report too
    paths = write_report(tmp_path / "bare", regression_metrics(y * 4 + 5, p * 4 + 5, bootstrap=0),
                         {k: (np.asarray(v) * 4 + 5 if k != "song_id" else v) for k, v in table.items()})
    assert "## Metrics" in paths["report_md"].read_text()


def test_write_report_bad_inputs(tmp_path, static_result):
    metrics, table = static_result
    with pytest.raises(LabelError, match="arousal_pred"):
        write_report(tmp_path, metrics, table.drop(columns=["arousal_pred"]))
    mixed = table.copy()
    mixed.loc[0, "scale"] = "[-1, 1]"
    with pytest.raises(LabelError, match="mixes scales"):
        write_report(tmp_path, metrics, mixed)
    (tmp_path / "empty.csv").write_text("")
    paths = write_report(tmp_path / "e", metrics, table, history_csv=tmp_path / "empty.csv")
    assert "learning_curves" not in paths
    assert "no learning curves" in paths["report_md"].read_text()


def test_write_comparison(tmp_path, static_result):
    metrics, _ = static_result
    rows = []
    for name, shift in (("mambavision_audio", 0.0), ("ridge", 0.2)):
        m = metrics["static"]
        r = {"model": name, "params": 1234567 if shift == 0 else None, "train_time_s": 12.5, "scale": "1-9",
             "n_test_songs": 30, "mean_ccc": m["mean_ccc"] - shift}
        for d in ("valence", "arousal"):
            for k, v in m[d].items():
                r[f"{d}_{k}"] = v["value"] - shift
                r[f"{d}_{k}_ci"] = [v["ci_low"], v["ci_high"]]
        rows.append(r)
    paths = write_comparison(tmp_path, rows)
    md = paths["comparison_md"].read_text()
    best = rows[0]["valence_ccc"]
    assert f"**{best:.3f}**" in md and "1,234,567" in md and "**1-9**" in md
    # lower RMSE is better: the ridge row's (shifted down) RMSE is the bold one
    assert f"**{rows[1]['valence_rmse']:.3f}**" in md
    assert json.loads(paths["comparison_json"].read_text())["rows"][1]["model"] == "ridge"
    with pytest.raises(DeamError):
        write_comparison(tmp_path, [])
