"""Evaluate a tiny trained run: metrics/report files, consistency with training and with predict, CLI."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from _inference_helpers import tiny_run

from deam_mamba import cli
from deam_mamba.core.errors import OutputExistsError
from deam_mamba.evaluation.evaluate import evaluate_run, resolve_run_data
from deam_mamba.evaluation.metrics import regression_metrics

# every test here needs a run trained through the engine on the session's synthetic corpus
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def static_run(tmp_path_factory, synth_corpus):
    return tiny_run(tmp_path_factory, synth_corpus, "static")


@pytest.fixture(scope="module")
def static_eval(static_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("static_eval") / "eval"
    return out, evaluate_run(static_run, split="test", out_dir=out, bootstrap=100, progress=False)


def test_evaluate_static_writes_metrics_report_and_plots(static_run, static_eval):
    out, m = static_eval
    from deam_mamba.runs.run import load_run

    cfg = load_run(static_run).config
    test_ids = resolve_run_data(cfg).splits["test"]
    assert m["n_songs"] == len(test_ids) >= 2 and m["mode"] == "static"
    st = m["static"]
    assert st["scale"] == "1-9" and st["n"] == len(test_ids)
    for dim in ("valence", "arousal"):
        for k in ("mse", "rmse", "mae", "pearson_r", "ccc", "r2"):
            assert k in st[dim]
        assert st[dim]["rmse"]["ci_low"] <= st[dim]["rmse"]["value"] <= st[dim]["rmse"]["ci_high"]
    for name in ("metrics.json", "report.md", "predictions.csv", "scatter.png", "va_plane.png",
                 "learning_curves.png", "dynamic_curves.png"):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["static"]["valence"]["ccc"]["value"] == pytest.approx(st["valence"]["ccc"]["value"])
    assert "1-9" in (out / "report.md").read_text()
    # the numbers are those of the written predictions (song level, 1-9 scale)
    df = pd.read_csv(out / "predictions.csv")
    assert sorted(df.song_id) == sorted(test_ids) and set(df.scale) == {"1-9"}
    again = regression_metrics(df[["valence_true", "arousal_true"]].to_numpy(),
                               df[["valence_pred", "arousal_pred"]].to_numpy(), bootstrap=0)
    assert again["arousal"]["rmse"]["value"] == pytest.approx(st["arousal"]["rmse"]["value"], rel=1e-6)


def test_evaluate_on_val_reproduces_the_training_validation(static_run, tmp_path):
    from deam_mamba.runs.run import load_run

    best = load_run(static_run).best_metrics
    m = evaluate_run(static_run, split="val", out_dir=tmp_path / "v", bootstrap=0, progress=False)
    for dim in ("valence", "arousal"):
        assert m["static"][dim]["ccc"]["value"] == pytest.approx(best[f"val_ccc_{dim}_1to9"], abs=1e-4)
        assert m["static"][dim]["rmse"]["value"] == pytest.approx(best[f"val_rmse_{dim}_1to9"], abs=1e-4)


def test_predict_from_audio_matches_evaluate_from_the_cache(static_run, static_eval, synth_corpus):
    from deam_mamba.data.deam import DEAMHandler
    from deam_mamba.inference.predictor import Predictor

    out, m = static_eval
    df = pd.read_csv(out / "predictions.csv").set_index("song_id")
    handler = DEAMHandler(synth_corpus)
    pred = Predictor.from_run(static_run)
    for sid in list(df.index)[:2]:
        p = pred.predict_file(handler.audio_path(sid))
        # same path, but the cache stores float16 log-mels: agreement to ~1e-2 on 1-9
        assert p.valence == pytest.approx(df.loc[sid, "valence_pred"], abs=2e-2)
        assert p.arousal == pytest.approx(df.loc[sid, "arousal_pred"], abs=2e-2)
    assert m["hop_seconds"] == pred.hop_seconds


def test_explicit_out_is_not_overwritten_without_force(static_run, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="--force"):
        evaluate_run(static_run, out_dir=out, bootstrap=0, progress=False)
    assert (out / "notes.txt").read_text() == "keep me"
    evaluate_run(static_run, out_dir=out, bootstrap=0, progress=False, force=True)
    assert (out / "metrics.json").is_file()


def test_cli_evaluate_and_predict(static_run, synth_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(static_run, run)
    assert cli.main(["evaluate", str(run), "--bootstrap", "50"]) == 0
    assert (run / "eval" / "report.md").is_file()
    out = capsys.readouterr().out
    assert "valence" in out and "scale 1-9" in out
    # predict: a good file, a corrupt one, and a folder; then nothing readable -> exit 1
    audio = tmp_path / "audio"
    audio.mkdir()
    from deam_mamba.data.deam import DEAMHandler

    src = DEAMHandler(synth_corpus).audio_path(2001)
    shutil.copy(src, audio / "song.mp3")
    (audio / "bad.mp3").write_bytes(b"\x00garbage" * 100)
    res = tmp_path / "pred.json"
    assert cli.main(["predict", str(run), str(audio), "--out", str(res), "--batch-size", "3"]) == 0
    err = capsys.readouterr().err
    assert "bad.mp3" in err
    doc = json.loads(res.read_text())
    assert [p["source"].split("/")[-1] for p in doc["predictions"]] == ["song.mp3"]
    assert doc["skipped"][0]["path"].endswith("bad.mp3")
    assert doc["song_scale"] == "1-9" and np.isfinite(doc["predictions"][0]["valence"])
    assert cli.main(["predict", str(run), str(audio), "--out", str(res)]) == 2  # exists, no --force
    assert "--force" in capsys.readouterr().err
    assert cli.main(["predict", str(run), str(audio / "bad.mp3")]) == 1
    assert cli.main(["predict", str(run), str(audio), "--out", str(tmp_path / "p.txt")]) == 2
    assert ".csv or .json" in capsys.readouterr().err
    sf.write(tmp_path / "short.wav", np.zeros((8000, 2), np.float32), 16000)
    assert cli.main(["predict", str(run), str(tmp_path / "short.wav"), "--out", str(tmp_path / "s.csv")]) == 0
    assert "short.wav" in (tmp_path / "s.csv").read_text()
    # argument values are checked; key=value-free commands refuse stray words
    assert cli.main(["predict", str(run), str(tmp_path / "short.wav"), "--hop-seconds", "0"]) == 2
    assert "--hop-seconds must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["predict", str(run), "--which", "best", "--bogus"])


def test_evaluate_dynamic_run_reports_mediaeval_on_pm1(tmp_path_factory, synth_corpus, tmp_path):
    run = tiny_run(tmp_path_factory, synth_corpus, "dynamic")
    m = evaluate_run(run, split="test", out_dir=tmp_path / "d", bootstrap=50, progress=False)
    me = m["mediaeval2015"]
    assert me["scale"] == "[-1, 1]" and me["n_songs"] >= 1
    assert m["dynamic_song_mean"]["scale"] == "[-1, 1]" and "static" not in m
    for dim in ("valence", "arousal"):
        assert me[dim]["rmse"]["mean"] is not None and 0 <= me[dim]["rmse"]["mean"] < 2.0
    assert (tmp_path / "d" / "dynamic_curves.png").is_file()
