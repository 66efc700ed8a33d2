"""Quadrant-labelled music end to end: a 4Q-shaped tree (the synthetic corpus' songs in the folders of their
quadrants, six artists) -> quadrant training -> artist-disjoint cross-validation -> predict; a static
(valence/arousal) run scored on quadrant data."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_helpers import TINY_CONFIG, tiny_run
from _reader_trees import write_4q_from_corpus

from deam_mamba.core.errors import ConfigError, OutputExistsError
from deam_mamba.data.registry import open_dataset
from deam_mamba.evaluation.evaluate import evaluate_run
from deam_mamba.experiments.crossval import run_crossval
from deam_mamba.inference.files import predict_paths, predictions_to_csv
from deam_mamba.train.losses import quadrant_loss


@pytest.fixture(scope="module")
def q4(synth_corpus, tmp_path_factory):
    return write_4q_from_corpus(synth_corpus, tmp_path_factory.mktemp("q4"))


def _overrides(tree, cache: Path) -> list[str]:
    return [f"data.root={tree.root}", "data.kind=4q", f"data.cache={cache}", "mode=quadrant", "train.epochs=2",
            "data.val_fraction=0.34", "chunks.chunk_seconds=3.0", "chunks.hop_seconds=3.0",
            "chunks.eval_hop_seconds=3.0", "train.progress=false"]


def test_quadrant_loss_axes_and_classes():
    logits = torch.tensor([[2.0, -1.0], [0.0, 0.0]])
    q = torch.tensor([4, 2])  # Q4: valence positive, arousal low; Q2: negative, high
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert quadrant_loss(logits, q, "axes").item() == pytest.approx(want.item())
    four = torch.tensor([[0.0, 0.0, 0.0, 3.0]])
    assert quadrant_loss(four, torch.tensor([4]), "classes").item() == pytest.approx(
        -torch.log_softmax(four, 1)[0, 3].item())
    smoothed = quadrant_loss(logits, q, "axes", smoothing=0.1).item()
    assert smoothed != pytest.approx(want.item())


@pytest.mark.slow
def test_crossval_on_quadrant_data_is_artist_disjoint_and_resumable(q4, tmp_path):
    out = tmp_path / "cv"
    first = run_crossval(TINY_CONFIG, _overrides(q4, tmp_path / "cache"), out_dir=out, folds=3, bootstrap=50,
                         progress=False, only=[1])  # a budget run of one fold: a partial summary, said so
    assert [r["fold"] for r in first["per_fold"]] == [1] and first["mean_std"]["macro_f1"]["n"] == 1
    assert "folds 1 of 3 only" in (out / "crossval_partial.md").read_text() and not (out / "crossval.json").exists()
    with pytest.raises(ConfigError, match="among 0..2"):
        run_crossval(TINY_CONFIG, [], out_dir=out, folds=3, only=[3])
    summary = run_crossval(TINY_CONFIG, _overrides(q4, tmp_path / "cache"), out_dir=out, folds=3, bootstrap=50,
                           progress=False)
    assert summary["per_fold"][1] == first["per_fold"][0]  # fold 1 reused, not retrained
    assert summary["protocol"] == "artist" and len(summary["per_fold"]) == 3
    tested = []
    for fold in range(3):
        splits = json.loads((out / f"fold{fold}" / "meta.json").read_text())["splits"]
        train_artists = {q4.artist[i] for i in splits["train"] + splits["val"]}
        assert not train_artists & {q4.artist[i] for i in splits["test"]}  # no artist on both sides
        tested += splits["test"]
        row = summary["per_fold"][fold]
        assert row["n_test_songs"] == len(splits["test"]) and 0.0 <= row["macro_f1"] <= 1.0
    assert sorted(tested) == q4.good_ids  # the test parts partition the songs
    ms = summary["mean_std"]["macro_f1"]
    assert ms["n"] == 3 and ms["mean"] == pytest.approx(np.mean([r["macro_f1"] for r in summary["per_fold"]]))
    assert "| mean ± std |" in (out / "crossval.md").read_text()
    json.loads((out / "crossval.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    with pytest.raises(OutputExistsError):
        run_crossval(TINY_CONFIG, _overrides(q4, tmp_path / "cache"), out_dir=out, folds=3, progress=False)
    again = run_crossval(TINY_CONFIG, _overrides(q4, tmp_path / "cache"), out_dir=out, folds=3, force=True,
                         progress=False)  # every fold is reused, not retrained
    assert again["per_fold"] == summary["per_fold"]
    # another --folds (or seed) names other test songs: its fold folders are not reused, before any training
    for kw in ({"folds": 2}, {"seed": 7}):
        with pytest.raises(ConfigError, match="fold0 holds a run with data.(folds=3|split_seed=0)"):
            run_crossval(TINY_CONFIG, _overrides(q4, tmp_path / "cache"), out_dir=out, force=True, progress=False,
                         **{"folds": 3, **kw})
    assert json.loads((out / "crossval.json").read_text())["per_fold"] == summary["per_fold"]

    # predict with a quadrant run: quadrant and per-axis probabilities beside the values
    song = next(iter(sorted((q4.tree / "Q1").glob("*.mp3")) or sorted(q4.tree.rglob("*.mp3"))))
    res = predict_paths(out / "fold0", [song], progress=False)
    p = res.predictions[0]
    assert 1 <= p.quadrant <= 4 and 0.0 <= p.p_valence_positive <= 1.0 and 0.0 <= p.p_arousal_high <= 1.0
    assert (p.valence, p.arousal) == (p.p_valence_positive, p.p_arousal_high)
    rows = list(csv.DictReader(predictions_to_csv(res).splitlines()))
    assert rows[0]["quadrant"] == f"Q{p.quadrant}" and float(rows[0]["p_arousal_high"]) == pytest.approx(
        p.p_arousal_high, abs=1e-5)


def test_static_run_cannot_train_on_quadrant_only_data(q4, tmp_path):
    from deam_mamba.config import load_config
    from deam_mamba.train.loop import train

    cfg = load_config(TINY_CONFIG, _overrides(q4, tmp_path / "cache")[:3] + ["mode=static", "data.split=random"])
    with pytest.raises(ConfigError, match="quadrant labels only"):
        train(cfg, tmp_path / "run")


def test_monitor_picks_best_by_the_named_metric(q4, tmp_path):
    from deam_mamba.config import load_config
    from deam_mamba.train.loop import train

    over = _overrides(q4, tmp_path / "cache") + ["data.split=random", "train.epochs=3", "train.patience=0"]
    train(load_config(TINY_CONFIG, over + ["train.monitor=val_f1_macro_quadrant"]), tmp_path / "run")
    hist = json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    f1 = [float(r["val_f1_macro_quadrant"]) for r in rows if r.get("val_f1_macro_quadrant")]
    steps = [int(float(r["step"])) for r in rows if r.get("val_f1_macro_quadrant")]
    assert len(f1) == 3
    assert hist["step"] == steps[int(np.argmax(f1))]  # the first epoch with the highest F1, not the highest AUC
    with pytest.raises(ConfigError, match="higher is better"):
        train(load_config(TINY_CONFIG, over + ["train.monitor=val_rmse_valence"]), tmp_path / "run2")
    with pytest.raises(ConfigError, match="not a validation metric"):
        train(load_config(TINY_CONFIG, over + ["train.monitor=val_nothing"]), tmp_path / "run3")


@pytest.mark.slow
def test_static_run_is_scored_on_quadrant_data(q4, synth_corpus, tmp_path_factory, tmp_path):
    run_dir = tiny_run(tmp_path_factory, synth_corpus)
    m = evaluate_run(run_dir, split="all", data=q4.root, kind="4q", cache=tmp_path / "cache4q", bootstrap=50,
                     progress=False, out_dir=tmp_path / "eval")
    assert m["quadrants"]["n"] == len(open_dataset(q4.root).ids) and "static" not in m
    assert m["data_kind"] == "4q" and 0.0 <= m["quadrants"]["macro_f1"]["value"] <= 1.0
    assert (tmp_path / "eval" / "report.md").read_text().count("Quadrants") == 1
