"""Attention pooling (model.pooling=attention): masking, permutation invariance, mean-pooling start,
fitting, and the end-to-end path train -> checkpoint -> evaluate / predict / Predictor."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_helpers import shared_cache

from deam_mamba.models.heads import AttentionPool, pad_bags
from deam_mamba.train.pool import fit_attention_pool

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "test_tiny.yaml"


def _pool(dim: int = 6, seed: int = 0) -> AttentionPool:
    torch.manual_seed(seed)
    pool = AttentionPool(dim, 2, hidden=5)
    torch.nn.init.normal_(pool.score[-1].weight)  # non-uniform weights for the tests
    return pool.eval()


def test_padded_chunks_get_zero_weight_and_do_not_change_the_output():
    pool = _pool()
    a, b = torch.randn(3, 6), torch.randn(5, 6)
    emb, mask = pad_bags([a, b])
    assert emb.shape == (2, 5, 6) and mask.tolist()[0] == [True, True, True, False, False]
    emb[0, 3:] = 1e3  # garbage in the padding must not matter
    with torch.no_grad():
        out, w = pool(emb, mask)
        alone, _ = pool(a[None])
    assert torch.all(w[0, 3:] == 0)
    assert torch.allclose(w.sum(dim=1), torch.ones(2))
    assert torch.allclose(out[0], alone[0], atol=1e-6)
    with pytest.raises(ValueError, match="valid"):
        pool(emb, torch.zeros_like(mask))


def test_permutation_invariant():
    pool = _pool()
    x = torch.randn(1, 7, 6)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, w = pool(x)
        out_p, w_p = pool(x[:, perm])
    assert torch.allclose(out, out_p, atol=1e-6)
    assert torch.allclose(w[0, perm], w_p[0], atol=1e-7)


def test_starts_as_mean_pooling_of_the_backbone_head():
    head = torch.nn.Linear(6, 2)
    pool = AttentionPool(6, 2, hidden=4)
    pool.init_head_from(head)
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        out, w = pool(x)
        mean_of_chunks = head(x).mean(dim=1)
    assert torch.allclose(w, torch.full((2, 5), 0.2))
    assert torch.allclose(out, mean_of_chunks, atol=1e-6)


def test_non_linear_head_is_refused():
    from deam_mamba.core.errors import ConfigError

    with pytest.raises(ConfigError, match="linear"):
        AttentionPool(4, 2).init_head_from(lambda f: torch.tanh(f[:, :2] * 3))


def _bags(n: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Songs whose target is carried only by 'marked' chunks (dim 0 = 1); the others are noise."""
    g = torch.Generator().manual_seed(seed)
    bags, ys = [], []
    for _ in range(n):
        k = int(torch.randint(4, 9, (1,), generator=g))
        y = torch.rand(2, generator=g) * 2 - 1
        x = torch.randn(k, 6, generator=g)
        x[:, 0] = 0.0
        marked = torch.randperm(k, generator=g)[:2]
        x[marked, 0] = 1.0
        x[marked, 1:3] = y
        bags.append(x)
        ys.append(y)
    return bags, torch.stack(ys)


def test_fitting_reduces_the_loss_and_beats_mean_pooling_on_validation():
    train, val = _bags(64, 0), _bags(32, 1)
    head = torch.nn.Linear(6, 2)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    pool, hist = fit_attention_pool(train, val, head, hidden=8, epochs=150, lr=2e-2, weight_decay=0.0, seed=0)
    assert hist[0]["epoch"] == 0 and len(hist) == 151
    assert hist[-1]["train_loss"] < 0.5 * hist[1]["train_loss"]
    best = max(h["val_ccc_mean"] for h in hist)
    # the kept pool is the best epoch on validation
    xv, mv = pad_bags(val[0])
    with torch.no_grad():
        out, w = pool(xv, mv)
    from deam_mamba.evaluation.metrics import ccc

    got = np.mean([float(ccc(val[1][:, d].double().numpy(), out[:, d].double().numpy())) for d in range(2)])
    assert got == pytest.approx(best, abs=1e-5)
    assert best > hist[0]["val_ccc_mean"] + 0.1
    # the attention went to the marked chunks
    marked = (xv[..., 0] == 1.0) & mv
    assert float((w * marked).sum(dim=1).mean()) > 0.6


# --- end to end on the tiny corpus --------------------------------------------------------


@pytest.fixture(scope="module")
def attn_run(synth_corpus, tmp_path_factory):
    from deam_mamba.config import load_config
    from deam_mamba.train.loop import train

    cfg = load_config(TINY, [f"data.root={synth_corpus}", f"data.cache={shared_cache(tmp_path_factory)}",
                             "data.split=official2015", "train.epochs=1", "train.progress=false",
                             "model.pooling=attention", "model.attention.epochs=40", "model.attention.lr=1e-2"])
    return cfg, train(cfg, tmp_path_factory.mktemp("attn") / "run")


@pytest.mark.slow
def test_train_fits_saves_and_loads_the_attention_pool(attn_run):
    from deam_mamba.runs.checkpoint import pool_path
    from deam_mamba.runs.run import load_run

    cfg, res = attn_run
    info = res.pooling
    assert info is not None and info["step"] == res.step
    assert pool_path(res.run_dir, res.step).is_file()
    saved = json.loads((res.run_dir / "pooling.json").read_text())
    for f in sorted(res.run_dir.rglob("*.json")):  # every JSON file of the run is strict (no bare NaN)
        json.loads(f.read_text(), parse_constant=lambda name: pytest.fail(f"{f} holds {name}"))
    hist = saved["history"]
    assert len(hist) == 41 and hist[-1]["train_loss"] < hist[1]["train_loss"]  # fitting reduces the loss
    assert saved["val_attention"]["val_ccc_mean"] >= saved["val_mean_pooling"]["val_ccc_mean"]
    run = load_run(res.run_dir)
    assert run.pooling == "attention" and isinstance(run.pool, AttentionPool) and not run.pool.training
    # epoch 0 of the fit is mean pooling: it reproduces the engine's own (mean-pooled) validation
    assert saved["val_mean_pooling"]["val_ccc_valence"] == pytest.approx(
        res.best_metrics["val_ccc_valence_1to9"], abs=1e-4)


@pytest.mark.slow
def test_evaluate_and_predict_use_the_attention_pool(attn_run, synth_corpus, tmp_path):
    import pandas as pd

    from deam_mamba.evaluation.evaluate import evaluate_run, resolve_run_data
    from deam_mamba.inference.files import predict_paths, predictions_to_json
    from deam_mamba.inference.predictor import Predictor
    from deam_mamba.runs.run import read_run_config

    cfg, res = attn_run
    m = evaluate_run(res.run_dir, split="val", out_dir=tmp_path / "ev", bootstrap=20, progress=False)
    assert m["pooling"] == "attention"
    pred = Predictor.from_run(res.run_dir)
    assert pred.pooling == "attention"
    data = resolve_run_data(read_run_config(res.run_dir), build=False)
    sid = data.splits["val"][0]
    feats = pred.normalise(torch.from_numpy(np.asarray(data.cache.features(sid), dtype=np.float32)))
    sp = pred.predict_features(feats)
    emb, raw = pred.chunk_embeddings(feats)
    with torch.no_grad():
        want = pred.pool(torch.from_numpy(emb)[None])[0][0].numpy() * 4 + 5
    assert (sp.valence, sp.arousal) == pytest.approx((float(want[0]), float(want[1])), abs=1e-5)
    assert sp.pooling == "attention"
    table = {int(r.song_id): r for r in pd.read_csv(tmp_path / "ev" / "predictions.csv").itertuples()}
    assert table[sid].valence_pred == pytest.approx(sp.valence, abs=1e-4)
    # the mean of the chunk outputs differs from the attention value (the pool is really used)
    mean_va = raw[:, :2].mean(axis=0) * 4 + 5
    assert not np.allclose(mean_va, want, atol=1e-6)
    from deam_mamba.data.deam import DEAMHandler

    wav = DEAMHandler(synth_corpus).audio_path(sid)
    result = predict_paths(res.run_dir, [wav], progress=False)
    doc = json.loads(predictions_to_json(result))
    assert doc["pooling"] == "attention" and doc["predictions"][0]["pooling"] == "attention"


def test_missing_pool_file_is_a_checkpoint_error(tmp_path):
    from deam_mamba.core.errors import CheckpointError
    from deam_mamba.runs.checkpoint import load_pool

    with pytest.raises(CheckpointError, match="train --resume"):
        load_pool(tmp_path / "pool_step00000001.safetensors")
