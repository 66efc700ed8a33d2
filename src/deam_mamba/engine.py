"""The training loop: chunks in, song-level validation out, checkpoints that resume exactly.

``train(cfg, run_dir)`` does, in order: join the torchrun process group (if any), find the data
and its split, build (or reuse) the feature cache, take normalisation statistics from the
training split only, then loops epochs of AdamW steps over shuffled chunks
(warm-up + cosine :func:`deam_mamba.schedule.lr_at`, gradient clipping, optional bf16 autocast on
CUDA, optional weight averaging ``optim.ema_decay`` whose average is what is validated and saved),
validates at song level after each epoch (mean over chunks), keeps ``best``/``last`` checkpoints
and stops early when the validation CCC stalls. With ``model.pooling: attention`` it then fits
the attention-pooling head on the frozen ``best`` backbone (:mod:`deam_mamba.pooling`); the chunk
loop, and so exact resume, is the same either way.

Scales (never mixed): static targets are song means on 1-9, trained as ``(y - 5) / 4`` and mapped
back before any metric (names end in ``_1to9``); dynamic targets are DEAM's 2 Hz annotations on
[-1, 1], trained and reported as they are (names end in ``_pm1``).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from deam_mamba import checkpoint as ck
from deam_mamba.config import Config
from deam_mamba.core.distributed import (DistInfo, ResumableSampler, barrier, broadcast_flag, cleanup, init_distributed,
                          mean_over_ranks, sync_buffers)
from deam_mamba.core.errors import ConfigError
from deam_mamba.runlog import RunLog
from deam_mamba.schedule import lr_at
from deam_mamba.core.seed import seed_everything

log = logging.getLogger(__name__)

STATIC_CENTER, STATIC_HALF_RANGE = 5.0, 4.0  # (y - 5) / 4 maps 1..9 onto -1..1


def normalise_static(y: torch.Tensor) -> torch.Tensor:
    """1-9 scale -> training scale ``(y - 5) / 4``."""
    return (y - STATIC_CENTER) / STATIC_HALF_RANGE


def denormalise_static(y: np.ndarray) -> np.ndarray:
    """Training scale -> 1-9 scale."""
    return np.asarray(y, dtype=np.float64) * STATIC_HALF_RANGE + STATIC_CENTER


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name} but CUDA is not available (use train.device=cpu)")
        if dev.index is None:
            dev = torch.device("cuda", info.local_rank if info else 0)
    return dev


# --- data ---------------------------------------------------------------------------------


def open_data(cfg: Config, info: DistInfo | None = None, build: bool = True):
    """``(handler, cache, splits)``: the DEAM handler, an up-to-date feature cache, train/val/test ids.

    The cache is (re)built by rank 0 when missing, built with other feature settings (the cache
    keys its folders by :meth:`FeatureConfig.key`) or lacking songs of the dataset (songs that
    could not be decoded at prepare time are not retried); other ranks wait. Split ids absent from the cache are dropped with a warning.
    """
    from deam_mamba.cache import FeatureCache, build_cache
    from deam_mamba.data.deam import DEAMHandler
    from deam_mamba.core.errors import CacheError

    info = info or DistInfo()
    handler = DEAMHandler(cfg.data.root)
    splits = handler.split(cfg.data.split, seed=cfg.data.split_seed)
    needed = set(int(i) for ids in splits.values() for i in ids)
    cache_dir = Path(cfg.data.cache)
    if info.is_main and build:
        reason = None
        try:
            cache = FeatureCache(cache_dir, cfg.features)
            skipped = set(int(x["song_id"]) for x in cache.skipped)  # undecodable at prepare time
            missing = needed - set(int(i) for i in cache.ids) - skipped
            if missing:
                reason = f"{len(missing)} songs missing"
        except CacheError as exc:
            reason = str(exc)
        if reason:
            log.info("preparing feature cache %s (%s)", cache_dir, reason)
            build_cache(handler, cache_dir, cfg.features, workers=cfg.data.prepare_workers,
                        progress=cfg.train.progress)
    barrier(info)
    cache = FeatureCache(cache_dir, cfg.features)
    return handler, cache, _filter_splits(splits, cache)


def _filter_splits(splits: dict[str, list[int]], cache: Any) -> dict[str, list[int]]:
    have = set(int(i) for i in cache.ids)
    out = {}
    for name, ids in splits.items():
        lost = [int(i) for i in ids if int(i) not in have]
        if lost:
            log.warning("split %s: %d song(s) not in the feature cache, left out: %s", name, len(lost), lost[:10])
        out[name] = [int(i) for i in ids if int(i) in have]
    return out


def split_ids(config: Config, cache: Any) -> dict[str, list[int]]:
    """The train/val/test song ids a run of ``config`` used (restricted to songs in ``cache``)."""
    from deam_mamba.data.deam import DEAMHandler

    splits = DEAMHandler(config.data.root).split(config.data.split, seed=config.data.split_seed)
    return _filter_splits(splits, cache)


def make_datasets(cfg: Config, cache: Any, splits: dict[str, list[int]]):
    """``(train_ds, norm)``: the training chunk dataset, normalised with statistics of the training
    split only (validation runs song by song, see :func:`validate`)."""
    from deam_mamba.data.chunks import Augment, ChunkDataset

    if not splits["train"]:
        raise ConfigError("the training split is empty: check data.root / data.split")
    if not splits["val"]:
        raise ConfigError("the validation split is empty: early stopping needs validation songs")
    norm = cache.norm_stats(splits["train"])
    c = cfg.chunks
    augment = Augment(**c.augment) if c.augment is not None else None
    train_ds = ChunkDataset(cache, splits["train"], chunk_seconds=c.chunk_seconds,
                            hop_seconds=c.hop_seconds or c.chunk_seconds, norm=norm, augment=augment,
                            random_offset=c.random_offset, seed=cfg.train.seed)
    return train_ds, norm


# --- loss and validation --------------------------------------------------------------------


def compute_loss(cfg: Config, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Weighted MSE + (1 - CCC) on the training scale (static: ``(y-5)/4``; dynamic: [-1, 1])."""
    from deam_mamba.metrics import ccc_loss, masked_mse

    w_mse, w_ccc = cfg.loss.weights()
    out = out.float()
    if cfg.mode == "static":
        pred, target, mask = out, normalise_static(batch["y"].float()), None
    else:
        k = batch["y_dyn"].shape[1]
        if out.shape[1] != 2 * k:
            raise ConfigError(f"dynamic mode: the model gives {out.shape[1]} outputs but chunks hold {k} "
                              f"annotation points ({2 * k} outputs needed)")
        pred, target, mask = out.view(out.shape[0], k, 2), batch["y_dyn"].float(), batch["y_dyn_mask"].bool()
    loss = out.new_zeros(())
    if w_mse:
        loss = loss + w_mse * masked_mse(pred, target, mask)
    if w_ccc:
        loss = loss + w_ccc * ccc_loss(pred, target, mask)
    return loss


def validate(cfg: Config, model: nn.Module, cache: Any, ids: list[int], norm: Any, device: torch.device,
             progress: bool = False) -> dict[str, float]:
    """Song-level validation metrics; every name carries its scale (``_1to9`` / ``_pm1``).

    Songs go through exactly the path of ``deam-mamba evaluate``/``predict``
    (:class:`deam_mamba.inference.Predictor`: normalised cached log-mel -> chunks every
    ``eval_hop_seconds`` -> model -> mean over chunks), so the validation numbers are the numbers
    ``evaluate --split val`` reports for the same checkpoint.

    static: song means mapped to 1-9 vs the song labels (CCC, Pearson r, RMSE per dimension).
    dynamic: the predicted 2 Hz curve at every annotated time on [-1, 1] (pooled CCC and RMSE over
    all points, and the MediaEval-style per-song RMSE averaged over songs).
    """
    from deam_mamba.evaluate import dynamic_truth, static_truth
    from deam_mamba.inference import Predictor, run_chunking

    chunk_s, hop_s = run_chunking(cfg)
    pred = Predictor(model, cfg.features, norm, mode=cfg.mode, chunk_seconds=chunk_s, hop_seconds=hop_s,
                     device=device, batch_size=cfg.train.eval_batch_size)
    dims = ("valence", "arousal")
    m: dict[str, float] = {}
    truth, guess, song_rmse = [], [], []
    with torch.no_grad():
        for sid in ids:
            mel = torch.from_numpy(np.asarray(cache.features(sid), dtype=np.float32))
            sp = pred.predict_features(pred.normalise(mel), source=str(sid))
            if cfg.mode == "static":
                truth.append(static_truth(cache, sid))
                guess.append((sp.valence, sp.arousal))
            else:
                t, y = dynamic_truth(cache, sid)
                if len(t) == 0:
                    continue
                p = np.stack([np.interp(t, sp.curve_times_s, sp.curve_valence),
                              np.interp(t, sp.curve_times_s, sp.curve_arousal)], axis=1)
                truth.append(y)
                guess.append(p)
                song_rmse.append(np.sqrt(np.mean((y - p) ** 2, axis=0)))
    model.train()
    from deam_mamba.metrics import ccc, pearson_r, rmse

    if cfg.mode == "static":
        y, p, sfx = np.asarray(truth, np.float64), np.asarray(guess, np.float64), "1to9"
    else:
        y = np.concatenate(truth) if truth else np.zeros((0, 2))
        p = np.concatenate(guess) if guess else np.zeros((0, 2))
        sfx = "pm1"
    for d, name in enumerate(dims):
        ok = len(y) > 1
        m[f"val_ccc_{name}_{sfx}"] = _f(ccc(y[:, d], p[:, d])) if ok else float("nan")
        m[f"val_pearson_{name}_{sfx}"] = _f(pearson_r(y[:, d], p[:, d])) if ok else float("nan")
        m[f"val_rmse_{name}_{sfx}"] = _f(rmse(y[:, d], p[:, d])) if len(y) else float("nan")
        if cfg.mode == "dynamic":
            m[f"val_song_rmse_{name}_{sfx}"] = float(np.mean([r[d] for r in song_rmse])) if song_rmse else float("nan")
    m[f"val_ccc_mean_{sfx}"] = (m[f"val_ccc_valence_{sfx}"] + m[f"val_ccc_arousal_{sfx}"]) / 2
    m["val_songs"] = float(len(truth))
    return m


def target_metric(mode: str) -> str:
    """Name of the early-stopping metric (higher is better)."""
    return "val_ccc_mean_1to9" if mode == "static" else "val_ccc_mean_pm1"


def _f(x: Any) -> float:
    return float(np.asarray(x, dtype=np.float64))


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=bool(bf16 and device.type == "cuda"))


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and other 1-d parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    o = cfg.optim
    return torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=o.lr, betas=(o.beta1, o.beta2))


# --- the loop -------------------------------------------------------------------------------


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s parameters and buffers (BatchNorm statistics
    included), or None when ``decay`` is 0. After each optimiser step ``ema.update_parameters(model)``
    sets ``avg = decay * avg + (1 - decay) * w`` (the first update copies ``w``)."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


@dataclass
class TrainResult:
    """What :func:`train` returns: where the run is and how it ended."""

    run_dir: Path
    step: int
    epoch: int
    best_metrics: dict[str, float]
    last_metrics: dict[str, float]
    stopped_early: bool
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    pooling: dict[str, Any] | None = None  # attention pool summary (model.pooling=attention), else None


def train(cfg: Config, run_dir: str | Path, resume: bool = False, argv: list[str] | None = None) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (resuming from its ``last`` checkpoint when ``resume``)."""
    from deam_mamba.core.errors import OutputExistsError

    run_dir = Path(run_dir)
    if not resume and (run_dir / "config.yaml").exists():
        raise OutputExistsError(f"{run_dir} already holds a run: continue it with --resume {run_dir} "
                                "or choose another --run-dir")
    t_start = time.time()
    probe = torch.device("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    info = init_distributed(probe.type)
    try:
        return _train(cfg, run_dir, resume, argv, info, t_start)
    finally:
        cleanup(info)


def _train(cfg: Config, run_dir: Path, resume: bool, argv: list[str] | None, info: DistInfo,
           t_start: float) -> TrainResult:
    from torch.nn.parallel import DistributedDataParallel as DDP

    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device, info)
    seed_everything(t.seed)
    _, cache, splits = open_data(cfg, info)
    train_ds, norm = make_datasets(cfg, cache, splits)
    model = ck.build_model(cfg).to(device)
    opt = make_optimizer(model, cfg)
    ema = make_ema(model, cfg.optim.ema_decay)
    eval_model = ema.module if ema is not None else model  # what is validated and saved
    sampler = ResumableSampler(train_ds, info, seed=t.seed, drop_last=True)
    full_batches = sampler.num_samples >= t.batch_size  # else one smaller batch per epoch
    steps_per_epoch = sampler.num_samples // t.batch_size if full_batches else 1
    total_steps = t.max_steps or t.epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(t.seed)  # DataLoader's own RNG: leaves the global one alone
    train_loader = DataLoader(train_ds, batch_size=t.batch_size, sampler=sampler, drop_last=full_batches,
                              num_workers=cfg.data.loader_workers, generator=gen)
    meta = ck.checkpoint_meta(cfg, norm)

    st = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "loss_sum": 0.0, "loss_n": 0, "best": None,
          "best_step": -1, "bad_epochs": 0, "history": [], "stopped_early": False}
    if resume and (run_dir / ck.CKPT_DIR / "last.json").is_file():
        weights, state_file, _ = ck.checkpoint_paths(run_dir, "last")
        ck.load_weights(eval_model, weights)
        saved = ck.load_state(state_file)
        if ema is not None:  # the weights file held the average; the raw weights are in the state
            if "raw_model" not in saved:
                raise ConfigError(f"{state_file} was written without optim.ema_decay: resume with the run's own "
                                  "config (no ema_decay override)")
            model.load_state_dict(saved["raw_model"])
            ema.n_averaged.fill_(int(saved["ema_n_averaged"]))
        opt.load_state_dict(saved["optimizer"])
        st.update(saved["loop"])
        ck.set_rng_state(saved["rng"])
        log.info("resumed %s at step %d (epoch %d, batch %d)", run_dir, st["step"], st["epoch"], st["batch_in_epoch"])
    elif resume:
        log.info("no checkpoint in %s yet: starting the run from the beginning", run_dir)
    runlog = RunLog(run_dir, cfg, info.is_main, resume_step=st["step"] if resume else None, argv=argv,
                    extra={"world_size": info.world_size, "splits": splits, "steps_per_epoch": steps_per_epoch})
    net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if info.enabled else model
    metric_name = target_metric(cfg.mode)
    last_metrics: dict[str, float] = dict(st["history"][-1]) if st["history"] else {}

    def save(best_metrics: dict[str, float] | None) -> None:
        if not info.is_main:
            return
        state = {"optimizer": opt.state_dict(), "loop": dict(st), "rng": ck.rng_state()}
        if ema is not None:
            state.update(raw_model=model.state_dict(), ema_n_averaged=int(ema.n_averaged))
        ck.save_checkpoint(run_dir, eval_model, state, step=st["step"], meta=meta, best_metrics=best_metrics)

    from tqdm.auto import tqdm

    while st["epoch"] < t.epochs and not st["stopped_early"] and st["step"] < total_steps:
        sampler.set_position(st["epoch"], st["batch_in_epoch"], t.batch_size)
        train_ds.set_epoch(st["epoch"])  # offsets/augmentation seeded by (seed, epoch, index)
        gen.manual_seed(t.seed * 100_003 + st["epoch"])  # worker seeds depend on the epoch only
        net.train()
        bar = tqdm(train_loader, desc=f"epoch {st['epoch'] + 1}/{t.epochs}", unit="batch",
                   disable=not (t.progress and info.is_main), leave=False)
        for batch in bar:
            lr = lr_at(st["step"], cfg.optim, total_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            with _autocast(device, t.bf16):
                out = net(batch["x"].to(device, non_blocking=True))
            loss = compute_loss(cfg, out, {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            lv = float(loss.detach())
            st["step"] += 1
            st["batch_in_epoch"] += 1
            st["loss_sum"] += lv
            st["loss_n"] += 1
            bar.set_postfix(loss=f"{lv:.4f}", lr=f"{lr:.2e}")
            if st["step"] % max(1, t.log_every_steps) == 0:
                runlog.scalars({"train/loss": lv, "train/lr": lr}, st["step"])
            done = st["step"] >= total_steps
            if t.save_every_steps and st["step"] % t.save_every_steps == 0 and not done:
                save(None)
            if done:
                break
        # end of epoch (or of max_steps): validate, early-stop bookkeeping, checkpoint, log
        sync_buffers(info, eval_model)  # the validated model: with EMA its BatchNorm statistics are averaged per rank
        metrics = validate(cfg, eval_model, cache, splits["val"], norm, device)
        score = metrics[metric_name]
        improved = st["best"] is None or (math.isfinite(score) and score > st["best"] + t.min_delta)
        improved = broadcast_flag(info, improved)  # every rank takes rank 0's decision
        train_loss = mean_over_ranks(info, st["loss_sum"] / max(1, st["loss_n"]))
        row = {"epoch": st["epoch"] + 1, "step": st["step"], "lr": lr_at(max(0, st["step"] - 1), cfg.optim, total_steps),
               "train_loss": train_loss, **metrics}
        st["history"].append(row)
        last_metrics = row
        if improved:
            st["best"] = score if math.isfinite(score) else -math.inf
            st["best_step"] = st["step"]
            st["bad_epochs"] = 0
        else:
            st["bad_epochs"] += 1
        st["epoch"] += 1
        st["batch_in_epoch"] = 0
        st["loss_sum"], st["loss_n"] = 0.0, 0
        if broadcast_flag(info, bool(t.patience and st["bad_epochs"] >= t.patience)):
            st["stopped_early"] = True
            log.info("early stop: %s has not improved for %d epochs", metric_name, t.patience)
        save(dict(row) if improved else None)
        runlog.epoch(row, st["history"])
        if info.is_main:
            log.info("epoch %d step %d: train_loss %.4f, %s %.4f%s", row["epoch"], row["step"], row["train_loss"],
                     metric_name, score, " (best)" if improved else "")
    pool_info = None
    if cfg.model.pooling == "attention" and info.is_main and st["best_step"] >= 0:
        from deam_mamba.pooling import fit_for_run  # the song-level head, on the frozen best backbone

        pool_info = fit_for_run(cfg, run_dir, cache, splits, norm, device)
    best = _best_row(st)
    seconds = time.time() - t_start
    runlog.finish(best, last_metrics, seconds, st)
    barrier(info)
    return TrainResult(run_dir=run_dir, step=st["step"], epoch=st["epoch"], best_metrics=best,
                       last_metrics=last_metrics, stopped_early=st["stopped_early"], seconds=seconds,
                       history=list(st["history"]), pooling=pool_info)


def _best_row(st: dict[str, Any]) -> dict[str, float]:
    for row in st["history"]:
        if row["step"] == st["best_step"]:
            return dict(row)
    return {}
