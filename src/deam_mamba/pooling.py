"""Attention pooling of chunk embeddings into song-level (valence, arousal) — ``model.pooling=attention``.

A song is a bag of chunks. Mean pooling (the default) averages the chunk predictions. Attention
pooling learns, per chunk embedding ``f_i = model.forward_features(chunk_i)`` ``[D]``, a score
``s_i = w2 . tanh(W1 LayerNorm(f_i))``; the song output is ``head(sum_i softmax(s)_i f_i)`` with
padded chunks masked out of the softmax (weight exactly 0).

It is fitted after chunk training, on the FROZEN backbone of the ``best`` checkpoint
(:func:`fit_for_run`): the chunk embeddings of every training and validation song are computed
once, with the evaluation chunking (``chunks.eval_hop_seconds``); the head starts as the backbone's
own linear head and the last score layer starts at zero, so before any step the attention output
equals mean pooling exactly. Full-batch AdamW on the run's loss (static, ``(y - 5) / 4`` scale);
the epoch with the best validation CCC (mean over valence and arousal, epoch 0 = mean pooling
included) is kept, so the pool never does worse than mean pooling *on validation*. It is saved
beside the backbone as ``checkpoints/pool_stepNNNNNNNN.safetensors`` (tensors + metadata) and
loaded by :func:`deam_mamba.checkpoint.load_run` whenever the run's config says
``model.pooling: attention``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from deam_mamba.core.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

POOL_FORMAT = "deam-mamba-pool/1"


class AttentionPool(nn.Module):
    """Attention (MIL) pooling: ``emb [B, N, D]``, ``mask [B, N]`` -> ``([B, O], weights [B, N])``."""

    def __init__(self, dim: int, num_outputs: int = 2, hidden: int = 64):
        super().__init__()
        self.dim, self.num_outputs, self.hidden = int(dim), int(num_outputs), int(hidden)
        self.score = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.score[-1].weight)  # uniform weights at start: attention == mean pooling
        nn.init.zeros_(self.score[-1].bias)
        self.head = nn.Linear(dim, num_outputs)

    def weights(self, emb: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax weights ``[B, N]`` over each bag's valid chunks (masked chunks get exactly 0)."""
        s = self.score(emb).squeeze(-1)  # [B, N]
        if mask is not None:
            mask = mask.bool()
            if not bool(mask.any(dim=1).all()):
                raise ValueError("every bag needs at least one valid (unmasked) chunk")
            s = s.masked_fill(~mask, float("-inf"))
        return torch.softmax(s, dim=1)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights(emb, mask)
        pooled = torch.einsum("bn,bnd->bd", w, emb)
        return self.head(pooled), w

    def init_head_from(self, forward_head: Any) -> None:
        """Copy an affine ``forward_head: [B, D] -> [B, O]`` (the backbone's head) into ``self.head``."""
        with torch.no_grad():
            dev = self.head.weight.device
            eye = torch.eye(self.dim, device=dev)
            zero = torch.zeros(1, self.dim, device=dev)
            b = forward_head(zero).float().reshape(-1)
            w = (forward_head(eye).float() - b).T  # [O, D]
            probe = torch.randn(3, self.dim, generator=torch.Generator().manual_seed(0)).to(dev)
            if w.shape != self.head.weight.shape or not torch.allclose(
                    forward_head(probe).float(), probe @ w.T + b, atol=1e-4, rtol=1e-3):
                raise ConfigError("model.pooling=attention needs a model whose forward_head is one linear layer")
            self.head.weight.copy_(w)
            self.head.bias.copy_(b)


def pad_bags(bags: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of ``[N_i, D]`` -> ``(emb [B, max N, D] zero-padded, mask [B, max N] bool)``."""
    n = max(int(b.shape[0]) for b in bags)
    emb = bags[0].new_zeros((len(bags), n, bags[0].shape[1]))
    mask = torch.zeros((len(bags), n), dtype=torch.bool)
    for i, b in enumerate(bags):
        emb[i, :b.shape[0]] = b
        mask[i, :b.shape[0]] = True
    return emb, mask


def _ccc_np(y: np.ndarray, p: np.ndarray) -> float:
    from deam_mamba.metrics import ccc

    return float(np.asarray(ccc(y, p), dtype=np.float64))


def fit_attention_pool(train: tuple[list[torch.Tensor], torch.Tensor], val: tuple[list[torch.Tensor], torch.Tensor],
                       init_head: Any, *, hidden: int = 64, epochs: int = 300, lr: float = 3e-3,
                       weight_decay: float = 1e-2, loss_weights: tuple[float, float] = (1.0, 0.0), seed: int = 0
                       ) -> tuple[AttentionPool, list[dict[str, float]]]:
    """Fit an :class:`AttentionPool` on bags of chunk embeddings; keep the epoch best on validation.

    ``train``/``val`` are ``(bags [N_i, D] list, targets [B, 2])`` on the training scale. Returns the
    pool (eval mode) and the history ``[{epoch, train_loss, val_ccc_valence, val_ccc_arousal,
    val_ccc_mean}]``; epoch 0 is the untrained pool (= mean pooling).
    """
    from deam_mamba.metrics import ccc_loss, masked_mse

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
    best_state, best = {k: v.clone() for k, v in pool.state_dict().items()}, history[0]["val_ccc_mean"]
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
        if np.isfinite(history[-1]["val_ccc_mean"]) and history[-1]["val_ccc_mean"] > best:
            best, best_state = history[-1]["val_ccc_mean"], {k: v.clone() for k, v in pool.state_dict().items()}
    pool.load_state_dict(best_state)
    return pool.eval(), history


# --- per run: embeddings, fit, save, load ---------------------------------------------------------


def song_bags(predictor: Any, cache: Any, ids: Sequence[int]) -> list[torch.Tensor]:
    """Chunk embeddings ``[N_i, D]`` float32 of each cached song, chunked as the predictor evaluates."""
    bags = []
    for sid in ids:
        mel = torch.from_numpy(np.asarray(cache.features(sid), dtype=np.float32))
        emb, _ = predictor.chunk_embeddings(predictor.normalise(mel))
        bags.append(torch.from_numpy(emb).float())
    return bags


def pool_path(run_dir: str | Path, step: int) -> Path:
    from deam_mamba.checkpoint import CKPT_DIR

    return Path(run_dir) / CKPT_DIR / f"pool_step{step:08d}.safetensors"


def save_pool(path: Path, pool: AttentionPool, meta: dict[str, Any]) -> None:
    """Atomically write the pool's tensors and JSON metadata (``dim``, ``hidden``, metrics...)."""
    from safetensors.torch import save_file

    from deam_mamba.core.io import atomic_path

    info = {"format": POOL_FORMAT, "dim": pool.dim, "num_outputs": pool.num_outputs, "hidden": pool.hidden, **meta}
    tensors = {k: v.detach().cpu().contiguous() for k, v in pool.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"pool": json.dumps(info)})


def load_pool(path: Path) -> tuple[AttentionPool, dict[str, Any]]:
    """Inverse of :func:`save_pool`; :class:`CheckpointError` if missing or unreadable."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"attention pooling head {path} is missing: the run's config says "
                              "model.pooling=attention; finish training with `deam-mamba train --resume RUN_DIR` "
                              "(it fits the head for the best checkpoint), or use --which best")
    try:
        with safe_open(str(path), framework="pt") as fh:
            info = json.loads((fh.metadata() or {})["pool"])
        tensors = load_file(str(path))
        pool = AttentionPool(info["dim"], info["num_outputs"], hidden=info["hidden"])
        pool.load_state_dict(tensors, strict=True)
    except Exception as exc:  # corrupt header / wrong tensors
        raise CheckpointError(f"cannot read attention pooling head {path}: {exc}") from exc
    return pool.eval(), info


def fit_for_run(cfg: Any, run_dir: str | Path, cache: Any, splits: dict[str, list[int]], norm: Any,
                device: torch.device) -> dict[str, Any]:
    """Fit and save the attention pool of ``run_dir``'s ``best`` checkpoint (skipped if already there).

    Returns the pool's summary: backbone step, validation CCCs with mean pooling (epoch 0) and with the
    selected attention pool, and the selected epoch. Also written to ``RUN_DIR/pooling.json``.
    """
    from deam_mamba import checkpoint as ck
    from deam_mamba.inference import Predictor, run_chunking
    from deam_mamba.core.io import atomic_write_json

    if cfg.mode != "static":
        raise ConfigError("model.pooling=attention is for static runs (song-level targets)")
    weights, _, pointer = ck.checkpoint_paths(run_dir, "best")
    step = int(pointer["step"])
    path = pool_path(run_dir, step)
    if path.is_file():
        info = load_pool(path)[1]
        log.info("attention pooling head for step %d already fitted (%s)", step, path)
        return info
    model = ck.build_model(cfg)
    ck.load_weights(model, weights)
    chunk_s, hop_s = run_chunking(cfg)
    pred = Predictor(model, cfg.features, norm, mode="static", chunk_seconds=chunk_s, hop_seconds=hop_s,
                     device=device, batch_size=cfg.train.eval_batch_size)
    from deam_mamba.engine import normalise_static
    from deam_mamba.evaluate import static_truth

    def data(ids: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        y = torch.tensor([static_truth(cache, i) for i in ids], dtype=torch.float32)
        return song_bags(pred, cache, ids), normalise_static(y)

    log.info("attention pooling: embedding %d train + %d val songs (frozen backbone, step %d)",
             len(splits["train"]), len(splits["val"]), step)
    a = cfg.model.attention
    train_bags, val_bags = data(splits["train"]), data(splits["val"])
    model.cpu()  # the pool is fitted on CPU (a few hundred full-batch steps on small tensors)
    pool, history = fit_attention_pool(train_bags, val_bags, model.forward_head, hidden=a.hidden,
                                       epochs=a.epochs, lr=a.lr, weight_decay=a.weight_decay,
                                       loss_weights=cfg.loss.weights(), seed=cfg.train.seed)
    best = max(history, key=lambda r: (r["val_ccc_mean"], -r["epoch"]))
    info = {"step": step, "backbone": weights.name, "selected_epoch": int(best["epoch"]),
            "val_mean_pooling": {k: history[0][k] for k in ("val_ccc_valence", "val_ccc_arousal", "val_ccc_mean")},
            "val_attention": {k: best[k] for k in ("val_ccc_valence", "val_ccc_arousal", "val_ccc_mean")},
            "scale": "1-9", "chunk_seconds": chunk_s, "hop_seconds": pred.hop_seconds}
    save_pool(path, pool, info)
    atomic_write_json(Path(run_dir) / "pooling.json", {**info, "history": history})
    log.info("attention pooling: epoch %d selected, val CCC valence %.4f arousal %.4f (mean pooling %.4f / %.4f)",
             info["selected_epoch"], best["val_ccc_valence"], best["val_ccc_arousal"],
             history[0]["val_ccc_valence"], history[0]["val_ccc_arousal"])
    return info
