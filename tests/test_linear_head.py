"""The linear song head (model.pooling=linear): song statistics, the fit against scikit-learn, the choice of C,
saving/loading, and a quadrant run end to end (train -> pooling.json -> evaluate/predict use the head)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_helpers import TINY_CONFIG, shared_cache
from _reader_trees import write_4q_from_corpus
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from deam_mamba.core.errors import CheckpointError, ConfigError
from deam_mamba.models.heads import AttentionPool, LinearSongHead, pad_bags, song_statistics
from deam_mamba.runs import checkpoint as ck
from deam_mamba.train.pool import fit_linear_head


def _blobs(n: int = 80, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Song statistics ``[n, 2 dim]`` whose first two columns carry the quadrant (valence, arousal signs)."""
    rng = np.random.default_rng(seed)
    q = np.tile([1, 2, 3, 4], n // 4)
    v = np.where(np.isin(q, (1, 4)), 1.0, -1.0)
    a = np.where(np.isin(q, (1, 2)), 1.0, -1.0)
    X = rng.normal(size=(n, 2 * dim))
    X[:, 0] += 1.5 * v
    X[:, 1] += 1.5 * a
    return X, q


def _folds(n: int, k: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    idx = np.arange(n)
    part = (idx // 4) % k  # every part holds all four quadrants (the blobs tile Q1..Q4)
    return [(idx[part != f], idx[part == f]) for f in range(k)]


def test_song_statistics_are_mean_and_std_over_valid_chunks():
    bags = [torch.randn(5, 3), torch.randn(2, 3)]
    emb, mask = pad_bags(bags)
    feats, w = song_statistics(emb, mask)
    for i, b in enumerate(bags):
        assert torch.allclose(feats[i, :3], b.mean(0), atol=1e-6)
        assert torch.allclose(feats[i, 3:], b.std(0, unbiased=False), atol=1e-6)
    assert float(w[1, 2:].abs().sum()) == 0.0 and torch.allclose(w.sum(1), torch.ones(2))
    one, _ = song_statistics(torch.randn(1, 1, 3))  # one chunk: std 0, never NaN
    assert torch.isfinite(one).all() and float(one[0, 3:].abs().max()) == 0.0
    with pytest.raises(ValueError, match="at least one valid"):
        song_statistics(emb, torch.zeros_like(mask))


@pytest.mark.parametrize("task", ["classes", "axes", "values"])
def test_linear_head_reproduces_scikit_learn(task):
    X, q = _blobs()
    y = q if task != "values" else np.stack([np.isin(q, (1, 4)), np.isin(q, (1, 2))], 1) * 0.8 - 0.4
    head, info = fit_linear_head(X, y, task, [0.5], _folds(len(X)))
    assert info["C"] == 0.5 and info["inner_folds"] == 4
    Z = StandardScaler().fit(X).transform(X)
    with torch.no_grad():  # each song a bag of its own statistics twice -> mean = X, std = 0
        d = X.shape[1] // 2
        bag = torch.from_numpy(np.stack([X[:, :d] - X[:, d:], X[:, :d] + X[:, d:]], axis=1)).float()
        out = head(bag)[0].double().numpy()
    # scikit-learn fitted on the same rows, applied to the statistics the head saw: (mean, |std|)
    S = StandardScaler().fit(X).transform(np.concatenate([X[:, :d], np.abs(X[:, d:])], axis=1))
    if task == "classes":
        ref = LogisticRegression(C=0.5, class_weight="balanced", max_iter=5000).fit(Z, y)
        p = torch.softmax(torch.from_numpy(out), 1).numpy()
        assert np.allclose(p, ref.predict_proba(S), atol=1e-4)
    elif task == "axes":
        for dim, side in enumerate(((1, 4), (1, 2))):
            ref = LogisticRegression(C=0.5, class_weight="balanced", max_iter=5000).fit(Z, np.isin(y, side))
            assert np.allclose(1 / (1 + np.exp(-out[:, dim])), ref.predict_proba(S)[:, 1], atol=1e-4)
    else:
        ref = Ridge(alpha=2.0).fit(Z, y)
        assert np.allclose(out, ref.predict(S), atol=1e-4)


def test_c_is_chosen_by_inner_folds_and_ties_go_to_the_smaller_c():
    from sklearn.metrics import f1_score

    X, q = _blobs(n=120)
    folds = _folds(len(X))
    _, info = fit_linear_head(X, q, "classes", [1e-6, 1.0], folds)
    scores = {float(k): v for k, v in info["inner_scores"].items()}
    assert info["C"] == max(scores, key=scores.get) and scores[1.0] != scores[1e-6]
    want = []  # the inner score of C=1: scaler and model fitted on each fold's training rows only
    for tr, te in folds:
        sc = StandardScaler().fit(X[tr])
        lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000).fit(sc.transform(X[tr]), q[tr])
        want.append(f1_score(q[te], lr.predict(sc.transform(X[te])), average="macro"))
    assert scores[1.0] == pytest.approx(float(np.mean(want)), abs=1e-9)
    easy = X.copy()
    easy[:, 0], easy[:, 1] = np.isin(q, (1, 4)), np.isin(q, (1, 2))  # separable: every C scores 1.0,
    _, tie = fit_linear_head(easy, q, "classes", [2.0, 1.0], folds)  # and the smaller one is kept
    assert tie["inner_scores"] == {"1.0": 1.0, "2.0": 1.0} and tie["C"] == 1.0


def test_missing_quadrant_is_a_clear_error_and_unfittable_inner_folds_are_skipped():
    X, q = _blobs()
    keep = q != 3
    with pytest.raises(ConfigError, match="all four quadrants"):
        fit_linear_head(X[keep], q[keep], "classes", [1.0], _folds(int(keep.sum())))
    one_side = np.isin(q, (1, 2))  # arousal always high
    with pytest.raises(ConfigError, match="both sides of the arousal axis"):
        fit_linear_head(X[one_side], q[one_side], "axes", [1.0], _folds(int(one_side.sum())))
    # an inner fold without Q4 in its training rows cannot score C: it is left out, the head still fits
    folds = [(np.flatnonzero(q != 4), np.flatnonzero(q == 4))] + _folds(len(X))
    _, info = fit_linear_head(X, q, "classes", [1.0], folds)
    assert info["inner_folds"] == 4


def test_linear_head_saves_and_loads_and_kinds_are_checked(tmp_path):
    X, q = _blobs()
    head, _ = fit_linear_head(X, q, "classes", [1.0], _folds(len(X)))
    path = tmp_path / "pool_step00000007.safetensors"
    ck.save_pool(path, head, {"C": 1.0})
    back, info = ck.load_pool(path, "linear")
    assert isinstance(back, LinearSongHead) and info["kind"] == "linear" and info["task"] == "classes"
    emb = torch.randn(2, 4, X.shape[1] // 2)
    assert torch.equal(back(emb)[0], head(emb)[0])
    with pytest.raises(CheckpointError, match="is a 'linear' pooling head"):
        ck.load_pool(path, "attention")
    old = tmp_path / "pool_step00000008.safetensors"  # attention pools written before the kind was recorded
    ck.save_pool(old, AttentionPool(8, 2, hidden=4), {})
    assert isinstance(ck.load_pool(old)[0], AttentionPool)
    with pytest.raises(CheckpointError, match="model.pooling=linear"):
        ck.load_pool(tmp_path / "pool_step00000009.safetensors", "linear")


def test_config_refuses_linear_pooling_for_dynamic_runs_and_attention_for_quadrant_runs():
    from deam_mamba.config import load_config

    with pytest.raises(ConfigError, match="model.pooling=linear"):
        load_config(None, ["model.pooling=linear", "mode=dynamic"])
    with pytest.raises(ConfigError, match="use model.pooling=linear for quadrant runs"):
        load_config(None, ["model.pooling=attention", "mode=quadrant"])
    with pytest.raises(ConfigError, match="c_grid"):
        load_config(None, ["model.pooling=linear", "model.linear.c_grid=[0.1, -1]"])
    cfg = load_config(None, ["model.pooling=linear", "mode=quadrant", "model.linear.inner_folds=3"])
    assert cfg.model.linear.inner_folds == 3


# --- end to end: a quadrant run with a linear song head ---------------------------------------------


@pytest.fixture(scope="module")
def linear_run(synth_corpus, tmp_path_factory):
    from deam_mamba.config import load_config
    from deam_mamba.train.loop import train

    q4 = write_4q_from_corpus(synth_corpus, tmp_path_factory.mktemp("q4lin"))
    over = [f"data.root={q4.root}", "data.kind=4q", f"data.cache={tmp_path_factory.mktemp('q4cache')}",
            "mode=quadrant", "data.split=kfold", "data.folds=3", "data.val_fraction=0.34", "train.epochs=1",
            "train.progress=false",
            "chunks.chunk_seconds=3.0", "chunks.hop_seconds=3.0", "chunks.eval_hop_seconds=1.5",
            "loss.quadrant=classes", "model.pooling=linear", "model.linear.inner_folds=3",
            "model.linear.c_grid=[0.001, 0.1]"]
    cfg = load_config(TINY_CONFIG, over)
    return q4, cfg, train(cfg, tmp_path_factory.mktemp("lin") / "run")


@pytest.mark.slow
def test_quadrant_run_fits_the_linear_head_and_evaluate_predict_use_it(linear_run, tmp_path):
    from deam_mamba.evaluation.evaluate import evaluate_run, resolve_run_data
    from deam_mamba.inference.files import predict_paths, predictions_to_json
    from deam_mamba.inference.predictor import Predictor
    from deam_mamba.runs.run import load_run, read_run_config

    q4, cfg, res = linear_run
    info = res.pooling
    assert info is not None and info["task"] == "classes" and info["C"] in (0.001, 0.1)
    best_step = json.loads((Path(res.run_dir) / "checkpoints" / "best.json").read_text())["step"]
    assert info["step"] == best_step and ck.pool_path(res.run_dir, best_step).is_file()
    saved = json.loads((Path(res.run_dir) / "pooling.json").read_text())
    assert saved["n_songs"] == len(set(q4.good_ids)) - len(json.loads(
        (Path(res.run_dir) / "meta.json").read_text())["splits"]["test"])  # train + val songs
    run = load_run(res.run_dir)
    assert run.pooling == "linear" and isinstance(run.pool, LinearSongHead)

    pred = Predictor.from_run(res.run_dir)
    data = resolve_run_data(read_run_config(res.run_dir), build=False)
    sid = data.splits["test"][0]
    feats = pred.normalise(torch.from_numpy(np.asarray(data.cache.features(sid), dtype=np.float32)))
    sp = pred.predict_features(feats)
    emb, raw = pred.chunk_embeddings(feats)
    with torch.no_grad():
        p = torch.softmax(run.pool(torch.from_numpy(emb)[None])[0][0].double(), 0).numpy()
    assert sp.pooling == "linear" and sp.quadrant == int(np.argmax(p)) + 1
    assert sp.p_valence_positive == pytest.approx(p[0] + p[3], abs=1e-5)
    assert sp.p_arousal_high == pytest.approx(p[0] + p[1], abs=1e-5)
    chunk_p = torch.softmax(torch.from_numpy(raw[:, :4]), 1).numpy().mean(0)
    assert not np.allclose(chunk_p, p, atol=1e-4)  # the head, not the mean of the chunk head, decided

    # a head of another kind (or a damaged file) where the linear head belongs is refitted, not trusted
    from deam_mamba.data.registry import open_dataset
    from deam_mamba.train.pool import fit_for_run

    path = ck.pool_path(res.run_dir, best_step)
    ck.save_pool(path, AttentionPool(run.pool.dim, 4, hidden=4), {})
    with pytest.raises(CheckpointError, match="is a 'attention' pooling head"):
        load_run(res.run_dir)
    again = fit_for_run(cfg, res.run_dir, data.cache, data.splits, run.norm_stats, torch.device("cpu"),
                        open_dataset(q4.root))
    assert again == info and ck.load_pool(path, "linear")[1]["C"] == info["C"]

    m = evaluate_run(res.run_dir, split="test", out_dir=tmp_path / "ev", bootstrap=20, progress=False)
    assert m["pooling"] == "linear" and 0.0 <= m["quadrants"]["macro_f1"]["value"] <= 1.0
    wav = next(iter(sorted(q4.tree.rglob("*.mp3"))))
    doc = json.loads(predictions_to_json(predict_paths(res.run_dir, [wav], progress=False)))
    assert doc["pooling"] == "linear" and doc["predictions"][0]["quadrant"] in ("Q1", "Q2", "Q3", "Q4")


# --- end to end: a static (valence/arousal) run with a linear song head (ridge) -------------------------


@pytest.fixture(scope="module")
def static_linear_run(synth_corpus, tmp_path_factory):
    from deam_mamba.config import load_config
    from deam_mamba.train.loop import train

    cfg = load_config(TINY_CONFIG, [f"data.root={synth_corpus}", f"data.cache={shared_cache(tmp_path_factory)}",
                                    "data.split=official2015", "train.epochs=1", "train.progress=false",
                                    "model.pooling=linear", "model.linear.inner_folds=3",
                                    "model.linear.c_grid=[0.01, 1.0]"])
    return cfg, train(cfg, tmp_path_factory.mktemp("lin_static") / "run")


@pytest.mark.slow
def test_static_run_fits_a_ridge_head_and_predict_returns_its_values(static_linear_run, tmp_path):
    import pandas as pd

    from deam_mamba.evaluation.evaluate import evaluate_run, resolve_run_data
    from deam_mamba.evaluation.scoring import static_truth
    from deam_mamba.inference.predictor import Predictor
    from deam_mamba.runs.run import load_run, read_run_config
    from deam_mamba.train.pool import song_bags

    cfg, res = static_linear_run
    info = res.pooling
    assert info["task"] == "values" and info["inner_metric"] == "ccc_mean" and info["C"] in (0.01, 1.0)
    assert info["inner_folds"] == 3 and all(np.isfinite(v) for v in info["inner_scores"].values())
    run = load_run(res.run_dir)
    assert isinstance(run.pool, LinearSongHead) and run.pool.task == "values" and run.pool.num_outputs == 2

    # the head's ridge reproduces scikit-learn's on the same song statistics (train + val songs, unit scale)
    pred = Predictor.from_run(res.run_dir)
    data = resolve_run_data(read_run_config(res.run_dir), build=False)
    ids = sorted(set(data.splits["train"]) | set(data.splits["val"]))
    X = torch.stack([song_statistics(b[None])[0][0] for b in song_bags(pred, data.cache, ids)]).double().numpy()
    y = (np.asarray([static_truth(data.cache, sid) for sid in ids], np.float64) - 5.0) / 4.0
    scaler = StandardScaler().fit(X)
    ref = Ridge(alpha=1.0 / info["C"]).fit(scaler.transform(X), y)
    np.testing.assert_allclose(run.pool.head.weight.detach().double().numpy(), ref.coef_, rtol=1e-3, atol=1e-4)

    # predict: the song's valence/arousal are the head's output on the 1-9 scale, not the mean of the chunk head
    sid = data.splits["val"][0]
    feats = pred.normalise(torch.from_numpy(np.asarray(data.cache.features(sid), dtype=np.float32)))
    sp = pred.predict_features(feats)
    emb, raw = pred.chunk_embeddings(feats)
    with torch.no_grad():
        want = run.pool(torch.from_numpy(emb)[None])[0][0].double().numpy() * 4 + 5
    assert sp.pooling == "linear" and (sp.valence, sp.arousal) == pytest.approx(tuple(want), abs=1e-4)
    assert not np.allclose(raw[:, :2].mean(axis=0) * 4 + 5, want, atol=1e-4)
    m = evaluate_run(res.run_dir, split="val", out_dir=tmp_path / "ev", bootstrap=20, progress=False)
    assert m["pooling"] == "linear"
    table = {int(r.song_id): r for r in pd.read_csv(tmp_path / "ev" / "predictions.csv").itertuples()}
    assert table[sid].valence_pred == pytest.approx(sp.valence, abs=1e-3)


@pytest.mark.slow
def test_onnx_export_of_a_linear_head_run_matches_pytorch(linear_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from deam_mamba.cli import main
    from deam_mamba.inference.files import predict_paths

    q4, _, res = linear_run
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(res.run_dir), "--onnx", str(onnx_path)]) == 0
    wavs = sorted(q4.tree.rglob("*.mp3"))[:3]
    pt = predict_paths(res.run_dir, wavs, progress=False)
    ox = predict_paths(res.run_dir, wavs, progress=False, backend="onnx", onnx=onnx_path)
    for a, b in zip(pt.predictions, ox.predictions, strict=True):
        assert a.pooling == b.pooling == "linear" and a.quadrant == b.quadrant
        assert (a.p_valence_positive, a.p_arousal_high) == pytest.approx((b.p_valence_positive, b.p_arousal_high),
                                                                         abs=1e-4)
