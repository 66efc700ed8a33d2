"""Fitting a run's song-level head: the attention pool or the linear song head (:mod:`deam_mamba.models.heads`).

**Linear head** (``model.pooling: linear``, static and quadrant runs; :func:`fit_linear_head`): each training and
validation song is described by the mean and std of its chunk embeddings on the frozen ``best`` backbone
(evaluation chunking), standardised; a logistic regression (quadrant runs: four classes, or one per axis, as
``loss.quadrant`` says; classes balanced) or a ridge (static runs, ``(y - 5) / 4`` scale) with ``C`` chosen on
stratified, artist-disjoint inner folds of those songs (:meth:`MusicDataset.kfold`), then refitted on all of
them. It is what a linear probe does, inside the product: a frozen pretrained backbone's knowledge reaches
``evaluate`` and ``predict`` without the chunk head's label smoothing and per-chunk thresholds in between.

**Attention pool** (``model.pooling: attention``, static runs): fitted after chunk training, on the FROZEN
backbone of the ``best`` checkpoint: the chunk embeddings of every training and validation song are computed
once, with the evaluation chunking (``chunks.eval_hop_seconds``); the head starts as the backbone's
own linear head and the last score layer starts at zero, so before any step the attention output
equals mean pooling exactly. Full-batch AdamW on the run's loss (static, ``(y - 5) / 4`` scale);
the epoch with the best validation CCC (mean over valence and arousal, epoch 0 = mean pooling
included) is kept, so the pool never does worse than mean pooling *on validation*.

Either head is fitted by :func:`fit_for_run`, saved beside the backbone as
``checkpoints/pool_stepNNNNNNNN.safetensors`` (tensors + metadata) and loaded by
:func:`deam_mamba.runs.run.load_run` whenever the run's config names it in ``model.pooling``.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from deam_mamba.config import Config
from deam_mamba.core.errors import CheckpointError, ConfigError
from deam_mamba.core.io import atomic_write_json
from deam_mamba.evaluation.metrics import ccc
from deam_mamba.evaluation.scoring import static_truth
from deam_mamba.features.cache import FeatureCache
from deam_mamba.features.logmel import NormStats
from deam_mamba.inference.predictor import Predictor
from deam_mamba.models.build import build_model
from deam_mamba.models.heads import AttentionPool, LinearSongHead, pad_bags, song_statistics
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


# --- the linear song head ---------------------------------------------------------------------------


def _axes_of(q: np.ndarray) -> np.ndarray:
    """Quadrants ``[B]`` (1..4) -> ``[B, 2]`` int: (valence positive = Q1/Q4, arousal high = Q1/Q2)."""
    return np.stack([np.isin(q, (1, 4)), np.isin(q, (1, 2))], axis=1).astype(np.int64)


def _quadrant_of_axes(p: np.ndarray) -> np.ndarray:
    """Axis decisions ``[B, 2]`` (1 = valence positive / arousal high) -> quadrants 1..4."""
    v, a = p[:, 0] > 0, p[:, 1] > 0
    return np.where(a, np.where(v, 1, 2), np.where(v, 4, 3)).astype(np.int64)


def _fit_affine(task: str, C: float, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One regularised linear model on standardised ``X [B, F]`` -> ``(weight [O, F], bias [O])`` whose affine
    outputs are what :class:`LinearSongHead` emits for ``task``. ``y``: quadrants ``[B]`` (1..4) or unit-scale
    values ``[B, 2]``."""
    if task == "values":
        ridge = Ridge(alpha=1.0 / C).fit(X, y)
        return np.asarray(ridge.coef_, np.float64), np.asarray(ridge.intercept_, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if task == "classes":
            lr = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit(X, y)
            if list(lr.classes_) != [1, 2, 3, 4]:
                raise ConfigError(f"model.pooling=linear with loss.quadrant=classes needs songs of all four quadrants "
                                  f"to fit on, got only {[int(c) for c in lr.classes_]}")
            return np.asarray(lr.coef_, np.float64), np.asarray(lr.intercept_, np.float64)
        axes = _axes_of(y)
        ws, bs = [], []
        for d, name in enumerate(("valence", "arousal")):
            if len(np.unique(axes[:, d])) < 2:
                raise ConfigError(f"model.pooling=linear with loss.quadrant=axes needs songs on both sides of the "
                                  f"{name} axis to fit on, got one side only")
            lr = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit(X, axes[:, d])
            ws.append(lr.coef_[0])
            bs.append(lr.intercept_[0])
        return np.stack(ws).astype(np.float64), np.asarray(bs, np.float64)


def _score(task: str, y: np.ndarray, out: np.ndarray) -> float:
    """Inner-fold score of affine outputs ``out [B, O]``: quadrant macro-F1, or the mean CCC of the two values."""
    if task == "values":
        return float(np.mean([_ccc_np(y[:, d], out[:, d]) for d in range(2)]))
    pred = np.argmax(out, axis=1) + 1 if task == "classes" else _quadrant_of_axes(out)
    return float(f1_score(y, pred, labels=[1, 2, 3, 4], average="macro", zero_division=0))


def fit_linear_head(X: np.ndarray, y: np.ndarray, task: str, c_grid: Sequence[float],
                    folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[LinearSongHead, dict[str, Any]]:
    """Fit a :class:`LinearSongHead` on song statistics ``X [B, 2 D]`` and targets ``y`` (quadrants ``[B]`` for
    ``classes``/``axes``, unit-scale ``[B, 2]`` for ``values``).

    ``C`` is the value of ``c_grid`` with the best mean score over ``folds`` (``(train rows, test rows)``; the
    scaler is fitted inside each fold; ties go to the smaller ``C``); folds whose training rows cannot fit (a
    quadrant or an axis side missing) are left out of the choice. Returns the head refitted on all rows and
    ``{"C", "inner_scores" {C: mean score}, "inner_folds" used, "inner_metric"}``.
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64 if task == "values" else np.int64)
    scores: dict[float, list[float]] = {float(c): [] for c in c_grid}
    used = 0
    for tr, te in folds:
        if len(tr) == 0 or len(te) == 0:
            continue
        scaler = StandardScaler().fit(X[tr])
        Xtr, Xte = scaler.transform(X[tr]), scaler.transform(X[te])
        try:
            fitted = {c: _fit_affine(task, c, Xtr, y[tr]) for c in scores}
        except ConfigError as exc:
            log.info("linear song head: an inner fold is left out of the choice of C (%s)", exc)
            continue
        used += 1
        for c, (w, b) in fitted.items():
            scores[c].append(_score(task, y[te], Xte @ w.T + b))
    if used:
        means = {c: float(np.mean(v)) for c, v in scores.items()}
        best_c = max(sorted(means), key=lambda c: (means[c], -c))  # ties: the stronger regularisation
    else:
        log.warning("linear song head: no inner fold could be fitted (too few songs per class); using the "
                    "strongest regularisation of model.linear.c_grid")
        means, best_c = {}, min(scores)
    scaler = StandardScaler().fit(X)
    w, b = _fit_affine(task, best_c, scaler.transform(X), y)
    head = LinearSongHead(X.shape[1] // 2, w.shape[0], task)
    with torch.no_grad():
        head.center.copy_(torch.from_numpy(scaler.mean_).float())
        head.scale.copy_(torch.from_numpy(scaler.scale_).float())
        head.head.weight.copy_(torch.from_numpy(w).float())
        head.head.bias.copy_(torch.from_numpy(b).float())
    info = {"C": best_c, "inner_scores": {repr(c): v for c, v in means.items()}, "inner_folds": used,
            "inner_metric": "ccc_mean" if task == "values" else "f1_macro_quadrant"}
    return head.eval(), info


# --- per run: embeddings, fit, save, load ---------------------------------------------------------


def song_bags(predictor: Predictor, cache: FeatureCache, ids: Sequence[int]) -> list[torch.Tensor]:
    """Chunk embeddings ``[N_i, D]`` float32 of each cached song, chunked as the predictor evaluates."""
    bags = []
    for sid in ids:
        mel = torch.from_numpy(np.asarray(cache.features(sid), dtype=np.float32))
        emb, _ = predictor.chunk_embeddings(predictor.normalise(mel))
        bags.append(torch.from_numpy(emb).float())
    return bags


def _inner_folds(dataset: Any, ids: list[int], k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` stratified, artist-disjoint folds of ``ids`` (the dataset's :meth:`kfold`) as row indices."""
    row = {int(s): n for n, s in enumerate(ids)}
    k = max(2, min(int(k), len(ids)))
    return [(np.asarray([row[int(s)] for s in f["train"] if int(s) in row], np.int64),
             np.asarray([row[int(s)] for s in f["val"] if int(s) in row], np.int64))
            for f in dataset.kfold(k, seed=seed, ids=ids)]


def fit_for_run(cfg: Config, run_dir: str | Path, cache: FeatureCache, splits: dict[str, list[int]], norm: NormStats,
                device: torch.device, dataset: Any = None) -> dict[str, Any]:
    """Fit and save the song-level head (``model.pooling``) of ``run_dir``'s ``best`` checkpoint (skipped if
    already there). ``dataset`` (its ``kfold``) gives the linear head's inner folds.

    Returns the head's summary, also written to ``RUN_DIR/pooling.json``: attention: backbone step,
    validation CCCs with mean pooling (epoch 0) and with the selected pool, the selected epoch; linear: the
    task, the chosen ``C`` and the inner-fold scores of every ``C``.
    """
    kind = cfg.model.pooling
    if kind == "attention" and cfg.mode != "static":
        raise ConfigError("model.pooling=attention is for static runs (song-level targets)")
    if kind == "linear" and cfg.mode == "dynamic":
        raise ConfigError("model.pooling=linear is for static and quadrant runs (song-level targets)")
    weights, _, pointer = checkpoint_paths(run_dir, "best")
    step = int(pointer["step"])
    path = pool_path(run_dir, step)
    if path.is_file():
        try:
            info = load_pool(path, kind)[1]
        except CheckpointError as exc:  # another kind (model.pooling changed) or damaged: it is derived, refit it
            log.warning("%s; fitting the %s pooling head again", exc, kind)
        else:
            log.info("%s pooling head for step %d already fitted (%s)", kind, step, path)
            return info
    model = build_model(cfg)
    load_weights(model, weights)
    pred = Predictor.for_config(model, cfg, norm, device=device, batch_size=cfg.train.eval_batch_size)
    if kind == "linear":
        return _fit_linear_for_run(cfg, run_dir, cache, splits, pred, dataset, step, weights.name, path)
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


def _fit_linear_for_run(cfg: Config, run_dir: str | Path, cache: FeatureCache, splits: dict[str, list[int]],
                        pred: Predictor, dataset: Any, step: int, backbone: str, path: Path) -> dict[str, Any]:
    """:func:`fit_for_run` for ``model.pooling: linear``: train + validation songs, inner folds, save."""
    if dataset is None:
        raise ConfigError("model.pooling=linear needs the run's dataset for its inner folds")
    ids = sorted(set(int(i) for i in splits["train"]) | set(int(i) for i in splits["val"]))
    task = cfg.loss.quadrant if cfg.mode == "quadrant" else "values"
    log.info("linear song head: embedding %d train + val songs (frozen backbone, step %d)", len(ids), step)
    X = torch.stack([song_statistics(b[None])[0][0] for b in song_bags(pred, cache, ids)]).double().numpy()
    if task == "values":
        y = cfg.label_scale().to_unit(np.asarray([static_truth(cache, i) for i in ids], np.float64))
    else:
        y = np.asarray([cache.quadrant(i) for i in ids], np.int64)
    lin = cfg.model.linear
    head, fit = fit_linear_head(X, y, task, lin.c_grid, _inner_folds(dataset, ids, lin.inner_folds,
                                                                      cfg.train.seed))
    info = {"step": step, "backbone": backbone, "task": task, "n_songs": len(ids), **fit,
            "features": "mean and std of forward_features over the song's chunks, standardised",
            "chunk_seconds": pred.chunk_seconds, "hop_seconds": pred.hop_seconds}
    save_pool(path, head, info)
    atomic_write_json(Path(run_dir) / "pooling.json", info)
    log.info("linear song head (%s): C=%g chosen by %d inner folds, %s %.4f", task, fit["C"], fit["inner_folds"],
             fit["inner_metric"], fit["inner_scores"].get(repr(fit["C"]), float("nan")))
    return info
