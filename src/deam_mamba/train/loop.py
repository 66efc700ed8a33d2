"""The training loop: chunks in, song-level validation out, checkpoints that resume exactly.

``train(cfg, run_dir)`` does, in order: join the torchrun process group (if any), find the data
and its split, build (or reuse) the feature cache, take normalisation statistics from the
training split only, then loops epochs of AdamW steps over shuffled chunks
(warm-up + cosine :func:`deam_mamba.train.optim.lr_at`, gradient clipping, optional bf16 autocast on
CUDA, optional weight averaging ``optim.ema_decay`` whose average is what is validated and saved),
validates at song level after each epoch (mean over chunks), keeps ``best``/``last`` checkpoints
and stops early when the validation CCC stalls. With ``model.pooling: attention`` or ``linear`` it then
fits that song-level head on the frozen ``best`` backbone (:mod:`deam_mamba.train.pool`); the chunk
loop, and so exact resume, is the same either way.

Scales (never mixed): static targets are song means on 1-9, trained as ``(y - 5) / 4`` and mapped
back before any metric (names end in ``_1to9``); dynamic targets are DEAM's 2 Hz annotations on
[-1, 1], trained and reported as they are (names end in ``_pm1``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from deam_mamba.config import Config
from deam_mamba.core.distributed import (
    DistInfo,
    ResumableSampler,
    barrier,
    broadcast_flag,
    cleanup,
    init_distributed,
    mean_over_ranks,
    resolve_device,
    sync_buffers,
)
from deam_mamba.core.errors import ConfigError, OutputExistsError
from deam_mamba.core.scales import parse_scale
from deam_mamba.core.seed import seed_everything
from deam_mamba.data.base import MusicDataset
from deam_mamba.data.deam import DEAMHandler
from deam_mamba.evaluation.scoring import predict_cached_songs, run_validation_metrics, target_metric
from deam_mamba.features.cache import FeatureCache
from deam_mamba.features.chunks import Augment, ChunkDataset
from deam_mamba.features.logmel import NormStats
from deam_mamba.features.splits import open_data
from deam_mamba.inference.predictor import Predictor
from deam_mamba.models.build import build_model
from deam_mamba.models.finetune import freeze_stages, keep_frozen_eval
from deam_mamba.runs import checkpoint as ck
from deam_mamba.runs.log import RunLog
from deam_mamba.train.finetune import init_model
from deam_mamba.train.losses import compute_loss
from deam_mamba.train.optim import lr_at, make_ema, make_optimizer, set_lr
from deam_mamba.train.pool import fit_for_run

log = logging.getLogger(__name__)

MIN_VAL_SONGS = 3  # fewer validation songs: a warning at start (scores are noise or undefined)


# --- data ---------------------------------------------------------------------------------


def make_datasets(cfg: Config, cache: FeatureCache, splits: dict[str, list[int]]) -> tuple[ChunkDataset, NormStats]:
    """``(train_ds, norm)``: the training chunk dataset, normalised with statistics of the training
    split only (validation runs song by song, see :func:`validate`)."""
    if not splits["train"]:
        raise ConfigError("the training split is empty: check data.root / data.split")
    if not splits["val"]:
        raise ConfigError("the validation split is empty: early stopping needs validation songs")
    if len(splits["val"]) < MIN_VAL_SONGS:
        log.warning("only %d validation song(s): correlations and AUCs over so few songs are noise, or undefined "
                    "(then no epoch counts as best); use a larger split (data.val_fraction, data.split)",
                    len(splits["val"]))
    norm = cache.norm_stats(splits["train"])
    c = cfg.chunks
    augment = Augment(**c.augment) if c.augment is not None else None
    train_ds = ChunkDataset(cache, splits["train"], chunk_seconds=c.chunk_seconds,
                            hop_seconds=c.hop_seconds or c.chunk_seconds, norm=norm, augment=augment,
                            random_offset=c.random_offset, seed=cfg.train.seed)
    return train_ds, norm


def resolve_label_scale(cfg: Config, dataset: MusicDataset | DEAMHandler) -> None:
    """Static runs regress the dataset's values on their own scale: record it in ``cfg.data.scale`` (so the
    run folder says which scale its predictions are on). A quadrant-only dataset cannot train a static run."""
    if cfg.mode == "dynamic":
        return
    if dataset.scale is None:
        if cfg.mode == "static":
            raise ConfigError(f"{dataset.kind} at {dataset.root} has quadrant labels only (no valence/arousal "
                              "values): train it with mode=quadrant")
        return
    if cfg.data.scale is None:
        cfg.data.scale = dataset.scale.name
    elif parse_scale(cfg.data.scale) != dataset.scale:
        raise ConfigError(f"data.scale={cfg.data.scale} but {dataset.kind} at {dataset.root} has labels on "
                          f"{dataset.scale.name}: drop the override (labels are never rescaled silently)")


# --- validation -----------------------------------------------------------------------------


def validate(cfg: Config, model: nn.Module, cache: FeatureCache, ids: list[int], norm: NormStats | None,
             device: torch.device) -> dict[str, float]:
    """Song-level validation metrics of ``model`` on the songs ``ids`` (names carry the scale).

    Songs go through exactly the path of ``deam-mamba evaluate`` (:mod:`deam_mamba.evaluation.scoring`
    with a :class:`~deam_mamba.inference.predictor.Predictor`: normalised cached log-mel -> chunks
    every ``eval_hop_seconds`` -> model -> mean over chunks), so the validation numbers are the
    numbers ``evaluate --split val`` reports for the same checkpoint. ``model`` is left in the mode
    (train or eval) it was given in.
    """
    was_training = model.training
    pred = Predictor.for_config(model, cfg, norm, device=device, batch_size=cfg.train.eval_batch_size)
    pred.check_finite = False  # a diverged model scores NaN here (never chosen as best) instead of raising
    try:
        preds = predict_cached_songs(pred, cache, ids, progress=False)
    finally:
        model.train(was_training)
    return run_validation_metrics(cfg.mode, cache, preds, cfg.label_scale())


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=bool(bf16 and device.type == "cuda"))


# --- the loop -------------------------------------------------------------------------------


def _lower_is_better(name: str) -> bool:
    return any(w in name for w in ("rmse", "mae", "loss", "songs"))


def monitored_metric(cfg: Config) -> str:
    """The validation metric that picks ``best`` and drives early stopping: ``train.monitor`` or the mode's
    default (:func:`deam_mamba.evaluation.scoring.target_metric`); always one where higher is better."""
    name = cfg.train.monitor or target_metric(cfg.mode, cfg.label_scale())
    if _lower_is_better(name):
        raise ConfigError(f"train.monitor={name}: early stopping needs a metric where higher is better (a CCC, "
                          "AUC, F1 or accuracy), not an error, a loss or a count")
    return name


@dataclass
class LoopState:
    """Where the loop is: saved in every checkpoint's state, so a resumed run continues exactly.

    ``best`` is the best early-stopping score so far (None before the first validation) and
    ``best_step`` the step of that checkpoint; ``history`` holds one row per validated epoch.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    loss_sum: float = 0.0
    loss_n: int = 0
    best: float | None = None
    best_step: int = -1
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def count_step(self, loss: float) -> None:
        """One optimiser step done with training ``loss``: advance the counters and the epoch's loss sum."""
        self.step += 1
        self.batch_in_epoch += 1
        self.loss_sum += loss
        self.loss_n += 1

    def next_epoch(self) -> None:
        """The epoch is over: count it and start the next one's batch counter and loss sum at zero."""
        self.epoch += 1
        self.batch_in_epoch = 0
        self.loss_sum, self.loss_n = 0.0, 0

    def best_row(self) -> dict[str, float]:
        """The history row of the ``best`` checkpoint ({} before any validation)."""
        return next((dict(r) for r in self.history if r["step"] == self.best_step), {})


def restore_loop(opt: torch.optim.Optimizer, saved: dict[str, Any], run_dir: Path) -> LoopState:
    """Resume from a saved training state (``runs.checkpoint.load_state``): the optimiser, the RNG streams and
    the loop position (training and pretraining)."""
    opt.load_state_dict(saved["optimizer"])
    st = LoopState.from_dict(saved["loop"])
    ck.set_rng_state(saved["rng"])
    log.info("resumed %s at step %d (epoch %d, batch %d)", run_dir, st.step, st.epoch, st.batch_in_epoch)
    return st


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
    pooling: dict[str, Any] | None = None  # song head summary (model.pooling attention | linear), else None


def train(cfg: Config, run_dir: str | Path, resume: bool = False, argv: list[str] | None = None) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (resuming from its ``last`` checkpoint when ``resume``)."""
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
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device, info)
    seed_everything(t.seed)
    dataset, cache, splits = open_data(cfg, info)
    resolve_label_scale(cfg, dataset)
    train_ds, norm = make_datasets(cfg, cache, splits)
    model = build_model(cfg)
    has_last = resume and (run_dir / ck.CKPT_DIR / "last.json").is_file()
    if cfg.model.init and not has_last:  # a resumed run's own checkpoint replaces the initial weights
        init_model(model, cfg)
    if cfg.model.freeze_stages:
        n = freeze_stages(model, cfg.model.freeze_stages)
        log.info("model.freeze_stages=%d: %d parameters frozen (stem + first stages)", cfg.model.freeze_stages, n)
    model = model.to(device)
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

    st = LoopState()
    if has_last:
        weights, state_file, _ = ck.checkpoint_paths(run_dir, "last")
        ck.load_weights(eval_model, weights)
        saved = ck.load_state(state_file)
        if ema is not None:  # the weights file held the average; the raw weights are in the state
            if "raw_model" not in saved:
                raise ConfigError(f"{state_file} was written without optim.ema_decay: resume with the run's own "
                                  "config (no ema_decay override)")
            model.load_state_dict(saved["raw_model"])
            ema.n_averaged.fill_(int(saved["ema_n_averaged"]))
        st = restore_loop(opt, saved, run_dir)
    elif resume:
        log.info("no checkpoint in %s yet: starting the run from the beginning", run_dir)
    runlog = RunLog(run_dir, cfg, info.is_main, resume_step=st.step if resume else None, argv=argv,
                    extra={"world_size": info.world_size, "splits": splits, "steps_per_epoch": steps_per_epoch})
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if info.enabled else model
    metric_name = monitored_metric(cfg)
    last_metrics: dict[str, float] = dict(st.history[-1]) if st.history else {}

    def save(best_metrics: dict[str, float] | None) -> None:
        if not info.is_main:
            return
        state = {"optimizer": opt.state_dict(), "loop": st.to_dict(), "rng": ck.rng_state()}
        if ema is not None:
            state.update(raw_model=model.state_dict(), ema_n_averaged=int(ema.n_averaged))
        ck.save_checkpoint(run_dir, eval_model, state, step=st.step, meta=meta, best_metrics=best_metrics)

    while st.epoch < t.epochs and not st.stopped_early and st.step < total_steps:
        sampler.set_position(st.epoch, st.batch_in_epoch, t.batch_size)
        train_ds.set_epoch(st.epoch)  # offsets/augmentation seeded by (seed, epoch, index)
        gen.manual_seed(t.seed * 100_003 + st.epoch)  # worker seeds depend on the epoch only
        net.train()
        keep_frozen_eval(model, cfg.model.freeze_stages)
        bar = tqdm(train_loader, desc=f"epoch {st.epoch + 1}/{t.epochs}", unit="batch",
                   disable=not (t.progress and info.is_main), leave=False)
        for batch in bar:
            lr = lr_at(st.step, cfg.optim, total_steps, steps_per_epoch)
            set_lr(opt, lr)
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
            st.count_step(lv)
            bar.set_postfix(loss=f"{lv:.4f}", lr=f"{lr:.2e}", refresh=False)  # shown at tqdm's own pace (mininterval)
            if st.step % max(1, t.log_every_steps) == 0:
                runlog.scalars({"train/loss": lv, "train/lr": lr}, st.step)
            done = st.step >= total_steps
            if t.save_every_steps and st.step % t.save_every_steps == 0 and not done:
                save(None)
            if done:
                break
        # end of epoch (or of max_steps): validate, early-stop bookkeeping, checkpoint, log
        sync_buffers(info, eval_model)  # the validated model: with EMA its BatchNorm statistics are averaged per rank
        metrics = validate(cfg, eval_model, cache, splits["val"], norm, device)
        if metric_name not in metrics:
            raise ConfigError(f"train.monitor={metric_name}: not a validation metric of this {cfg.mode} run; choose "
                              f"one of {', '.join(m for m in sorted(metrics) if not _lower_is_better(m))}")
        score = metrics[metric_name]
        improved = math.isfinite(score) and (st.best is None or score > st.best + t.min_delta)  # never on NaN
        improved = broadcast_flag(info, improved)  # every rank takes rank 0's decision
        train_loss = mean_over_ranks(info, st.loss_sum / max(1, st.loss_n))
        row = {"epoch": st.epoch + 1, "step": st.step,
               "lr": lr_at(max(0, st.step - 1), cfg.optim, total_steps, steps_per_epoch),
               "train_loss": train_loss, **metrics}
        st.history.append(row)
        last_metrics = row
        if improved:
            st.best = score
            st.best_step = st.step
            st.bad_epochs = 0
        else:
            st.bad_epochs += 1
        st.next_epoch()
        if broadcast_flag(info, bool(t.patience and st.bad_epochs >= t.patience)):
            st.stopped_early = True
            log.info("early stop: %s has not improved for %d epochs", metric_name, t.patience)
        save(dict(row) if improved else None)
        runlog.epoch(row, st.history)
        if info.is_main:
            log.info("epoch %d step %d: train_loss %.4f, %s %.4f%s", row["epoch"], row["step"], row["train_loss"],
                     metric_name, score, " (best)" if improved else "")
    if st.best_step < 0 and info.is_main:
        log.warning("no epoch had a finite %s (validation could not score): there is no 'best' checkpoint; "
                    "use the last one (--which last) or fix the validation split", metric_name)
    pool_info = None
    if cfg.model.pooling != "mean" and info.is_main and st.best_step >= 0:  # song-level head, frozen best backbone
        pool_info = fit_for_run(cfg, run_dir, cache, splits, norm, device, dataset)
    best = st.best_row()
    seconds = time.time() - t_start
    runlog.finish(best, last_metrics, seconds, st.to_dict())
    barrier(info)
    return TrainResult(run_dir=run_dir, step=st.step, epoch=st.epoch, best_metrics=best,
                       last_metrics=last_metrics, stopped_early=st.stopped_early, seconds=seconds,
                       history=list(st.history), pooling=pool_info)
