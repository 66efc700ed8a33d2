"""Fitting the attention-pooling head (:class:`deam_mamba.models.heads.AttentionPool`) of a run.

The pool is fitted after chunk training, on the FROZEN backbone of the ``best`` checkpoint
(:func:`fit_for_run`): the chunk embeddings of every training and validation song are computed
once, with the evaluation chunking (``chunks.eval_hop_seconds``); the head starts as the backbone's
own linear head and the last score layer starts at zero, so before any step the attention output
equals mean pooling exactly. Full-batch AdamW on the run's loss (static, ``(y - 5) / 4`` scale);
the epoch with the best validation CCC (mean over valence and arousal, epoch 0 = mean pooling
included) is kept, so the pool never does worse than mean pooling *on validation*. It is saved
beside the backbone as ``checkpoints/pool_stepNNNNNNNN.safetensors`` (tensors + metadata) and
loaded by :func:`deam_mamba.runs.run.load_run` whenever the run's config says
``model.pooling: attention``.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deam_mamba.config import Config
from deam_mamba.core.errors import ConfigError
from deam_mamba.core.io import atomic_write_json
from deam_mamba.evaluation.metrics import ccc
from deam_mamba.evaluation.scoring import static_truth
from deam_mamba.features.cache import FeatureCache
from deam_mamba.features.logmel import NormStats
from deam_mamba.inference.predictor import Predictor
from deam_mamba.models.build import build_model
from deam_mamba.models.heads import AttentionPool, pad_bags
from deam_mamba.runs.checkpoint import checkpoint_paths, load_pool, load_weights, pool_path, save_pool
from deam_mamba.train.losses import ccc_loss, masked_mse

log = logging.getLogger(__name__)


def _ccc_np(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.asarray(ccc(y, p), dtype=np.float64))


def best_epoch(history: list[dict[str, float]]) -> int:
    """The epoch a pool fit keeps: the first with the highest finite ``val_ccc_mean`` (0 = mean pooling
    when no epoch scores, e.g. a single validation song)."""
    best_ep, best = 0, -math.inf
    for row in history:
        score = row["val_ccc_mean"]
        if math.isfinite(score) and score > best:
            best_ep, best = int(row["epoch"]), score
    return best_ep


def fit_attention_pool(train: tuple[list[torch.Tensor], torch.Tensor], val: tuple[list[torch.Tensor], torch.Tensor],
                       init_head: Any, *, hidden: int = 64, epochs: int = 300, lr: float = 3e-3,
                       weight_decay: float = 1e-2, loss_weights: tuple[float, float] = (1.0, 0.0), seed: int = 0
                       ) -> tuple[AttentionPool, list[dict[str, float]]]:
    """Fit an :class:`AttentionPool` on bags of chunk embeddings; keep the epoch best on validation.

    ``train``/``val`` are ``(bags [N_i, D] list, targets [B, 2])`` on the training scale. Returns the
    pool (eval mode) and the history ``[{epoch, train_loss, val_ccc_valence, val_ccc_arousal,
    val_ccc_mean}]``; epoch 0 is the untrained pool (= mean pooling).
    """
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        pool = AttentionPool(int(train[0][0].shape[1]), int(train[1].shape[1]), hidden=hidden)
    finally:
        torch.set_rng_state(gen_state)  # leave the global RNG as it was
    pool.init_head_from(init_head)
    xt, mt = pad_bags(train[0])
    xv, mv = pad_bags(val[0])
    yt, yv = train[1].float(), val[1].double().numpy()
    opt = torch.optim.AdamW(pool.parameters(), lr=lr, weight_decay=weight_decay)
    w_mse, w_ccc = loss_weights

    def score(ep: int, loss: float) -> dict[str, float]:
        pool.eval()
        with torch.no_grad():
            p = pool(xv, mv)[0].double().numpy()
        row = {"epoch": ep, "train_loss": loss, "val_ccc_valence": _ccc_np(yv[:, 0], p[:, 0]),
               "val_ccc_arousal": _ccc_np(yv[:, 1], p[:, 1])}
        row["val_ccc_mean"] = (row["val_ccc_valence"] + row["val_ccc_arousal"]) / 2
        return row

    history = [score(0, float("nan"))]
    best_state = {k: v.clone() for k, v in pool.state_dict().items()}
    for ep in range(1, epochs + 1):
        pool.train()
        out = pool(xt, mt)[0]
        loss = out.new_zeros(())
        if w_mse:
            loss = loss + w_mse * masked_mse(out, yt, None)
        if w_ccc:
            loss = loss + w_ccc * ccc_loss(out, yt, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(score(ep, float(loss.detach())))
        if best_epoch(history) == ep:
            best_state = {k: v.clone() for k, v in pool.state_dict().items()}
    pool.load_state_dict(best_state)
    return pool.eval(), history


# --- per run: embeddings, fit, save, load ---------------------------------------------------------


def song_bags(predictor: Predictor, cache: FeatureCache, ids: Sequence[int]) -> list[torch.Tensor]:
    """Chunk embeddings ``[N_i, D]`` float32 of each cached song, chunked as the predictor evaluates."""
    bags = []
    for sid in ids:
        mel = torch.from_numpy(np.asarray(cache.features(sid), dtype=np.float32))
        emb, _ = predictor.chunk_embeddings(predictor.normalise(mel))
        bags.append(torch.from_numpy(emb).float())
    return bags


def fit_for_run(cfg: Config, run_dir: str | Path, cache: FeatureCache, splits: dict[str, list[int]], norm: NormStats,
                device: torch.device) -> dict[str, Any]:
    """Fit and save the attention pool of ``run_dir``'s ``best`` checkpoint (skipped if already there).

    Returns the pool's summary: backbone step, validation CCCs with mean pooling (epoch 0) and with the
    selected attention pool, and the selected epoch. Also written to ``RUN_DIR/pooling.json``.
    """
    if cfg.mode != "static":
        raise ConfigError("model.pooling=attention is for static runs (song-level targets)")
    weights, _, pointer = checkpoint_paths(run_dir, "best")
    step = int(pointer["step"])
    path = pool_path(run_dir, step)
    if path.is_file():
        info = load_pool(path)[1]
        log.info("attention pooling head for step %d already fitted (%s)", step, path)
        return info
    model = build_model(cfg)
    load_weights(model, weights)
    pred = Predictor.for_config(model, cfg, norm, device=device, batch_size=cfg.train.eval_batch_size)
    def data(ids: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        y = torch.tensor([static_truth(cache, i) for i in ids], dtype=torch.float32)
        return song_bags(pred, cache, ids), cfg.label_scale().to_unit(y)

    log.info("attention pooling: embedding %d train + %d val songs (frozen backbone, step %d)",
             len(splits["train"]), len(splits["val"]), step)
    a = cfg.model.attention
    train_bags, val_bags = data(splits["train"]), data(splits["val"])
    model.cpu()  # the pool is fitted on CPU (a few hundred full-batch steps on small tensors)
    pool, history = fit_attention_pool(train_bags, val_bags, model.forward_head, hidden=a.hidden,
                                       epochs=a.epochs, lr=a.lr, weight_decay=a.weight_decay,
                                       loss_weights=cfg.loss.weights(), seed=cfg.train.seed)
    best = history[best_epoch(history)]
    info = {"step": step, "backbone": weights.name, "selected_epoch": int(best["epoch"]),
            "val_mean_pooling": {k: history[0][k] for k in ("val_ccc_valence", "val_ccc_arousal", "val_ccc_mean")},
            "val_attention": {k: best[k] for k in ("val_ccc_valence", "val_ccc_arousal", "val_ccc_mean")},
            "scale": "1-9", "chunk_seconds": pred.chunk_seconds, "hop_seconds": pred.hop_seconds}
    save_pool(path, pool, info)
    atomic_write_json(Path(run_dir) / "pooling.json", {**info, "history": history})
    log.info("attention pooling: epoch %d selected, val CCC valence %.4f arousal %.4f (mean pooling %.4f / %.4f)",
             info["selected_epoch"], best["val_ccc_valence"], best["val_ccc_arousal"],
             history[0]["val_ccc_valence"], history[0]["val_ccc_arousal"])
    return info
