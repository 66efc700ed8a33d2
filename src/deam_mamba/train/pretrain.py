"""``deam-mamba pretrain``: self-supervised pretraining of a MambaVision backbone on unlabelled audio folders.

``pretrain(cfg, run_dir)`` collects the audio files of ``cfg.pretrain.data`` (every format ``predict`` reads),
builds or updates their log-mel feature cache (``data.cache``; label-free, see
:class:`~deam_mamba.data.folders.AudioFolders`), normalises with per-band statistics of the whole corpus, and trains
:class:`~deam_mamba.models.pretrain.MaskedSpecModel` (masked spectrogram patch reconstruction; why this objective:
that module's docstring; or contrastive, or distillation from a MusiCNN teacher whose per-crop targets
:mod:`deam_mamba.train.distill` computes once and caches) on crops of ``chunks.chunk_seconds`` taken every
``chunks.hop_seconds`` with a random shift per epoch. Optimiser and schedule are the training loop's
(:mod:`deam_mamba.train.optim`); the run folder has the same layout as a ``train`` run (``config.yaml``,
``meta.json``, ``checkpoints/``, ``log.csv`` with one row per epoch, ``tb/``) and resumes exactly (``--resume``).
``best`` points at the epoch with the lowest mean training loss (there is no validation). Fine-tune with ``train ...
model.init=RUN``. Single process (no torchrun).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from deam_mamba.config import Config, apply_overrides, config_from_dict, load_config
from deam_mamba.core.distributed import DistInfo, ResumableSampler, resolve_device
from deam_mamba.core.errors import CacheError, ConfigError, DatasetNotFoundError, OutputExistsError
from deam_mamba.core.seed import seed_everything
from deam_mamba.data.folders import AudioFolders
from deam_mamba.features.cache import FeatureCache
from deam_mamba.features.chunks import chunk_layout
from deam_mamba.features.logmel import NormStats
from deam_mamba.features.prepare import audio_drift, build_cache, drift_reason
from deam_mamba.inference.files import collect_audio_files
from deam_mamba.models.pretrain import (
    FORMAT,
    MaskedSpecModel,
    band_mean_baseline,
    build_pretrain_model,
    info_nce,
    random_mask,
)
from deam_mamba.runs import checkpoint as ck
from deam_mamba.runs.log import RunLog
from deam_mamba.runs.paths import read_run_config_dict, write_run_config
from deam_mamba.train.distill import ConcatTargets, TeacherTargets, prepare_teacher, teacher_files
from deam_mamba.train.loop import LoopState, restore_loop
from deam_mamba.train.optim import lr_at, make_optimizer, set_lr

log = logging.getLogger(__name__)


class CropDataset(Dataset):
    """Normalised log-mel crops of cached songs: ``{"x": [1, n_mels, chunk_frames] float32, "song_id": int,
    "start": int}`` (``start``: the crop's first frame).

    One crop every ``hop_frames`` per song (:func:`~deam_mamba.features.chunks.chunk_layout`); each epoch
    shifts every crop by a random ``[0, hop_frames)`` frames (kept inside the song), seeded by
    ``(seed, epoch, index)``. A song shorter than a crop is padded with 0 (the corpus mean once normalised).
    ``pairs``: also ``"x2"``, a second crop of the same song anywhere in it (the contrastive objective's view).
    ``teacher``: also ``"teacher"``, the crop's ``[D]`` distillation target (its frames' span in seconds).
    """

    def __init__(self, cache: FeatureCache, ids: list[int], chunk_frames: int, hop_frames: int, norm: NormStats,
                 seed: int = 0, pairs: bool = False, teacher: TeacherTargets | ConcatTargets | None = None):
        self.cache, self.norm, self.seed, self.pairs = cache, norm, int(seed), bool(pairs)
        self.teacher, self.fps = teacher, float(cache.frames_per_second)
        self.chunk_frames, self.hop_frames = int(chunk_frames), int(hop_frames)
        self.items: list[tuple[int, int, int]] = []  # (song id, start frame, song frames)
        for sid in ids:
            n = cache.n_frames(sid)
            starts, _ = chunk_layout(n, self.chunk_frames, self.hop_frames)
            self.items += [(int(sid), int(s), n) for s in starts]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def span(self, start: int, n: int) -> tuple[float, float]:
        """Seconds ``(t0, t1)`` of the song's frames a crop at ``start`` holds (padding not counted)."""
        return start / self.fps, min(start + self.chunk_frames, n) / self.fps

    def _crop(self, sid: int, start: int) -> torch.Tensor:
        feats = np.asarray(self.cache.features(sid)[:, start:start + self.chunk_frames], dtype=np.float32)
        x = self.norm.apply(feats)
        if x.shape[1] < self.chunk_frames:
            x = np.pad(x, ((0, 0), (0, self.chunk_frames - x.shape[1])))
        return torch.from_numpy(np.ascontiguousarray(x))[None]

    def __getitem__(self, i: int) -> dict[str, Any]:
        sid, start, n = self.items[i]
        rng = np.random.default_rng((self.seed, self.epoch, i))
        room = max(0, n - self.chunk_frames - start)
        if room:
            start += int(rng.integers(0, min(self.hop_frames, room + 1)))
        item = {"x": self._crop(sid, start), "song_id": sid, "start": start}
        if self.teacher is not None:
            item["teacher"] = torch.from_numpy(self.teacher.crop_target(sid, *self.span(start, n)))
        if self.pairs:
            item["x2"] = self._crop(sid, int(rng.integers(0, max(0, n - self.chunk_frames) + 1)))
        return item


def open_corpus(cfg: Config, progress: bool = True) -> tuple[AudioFolders, FeatureCache]:
    """The audio files of ``cfg.pretrain.data`` and their (built or updated) label-free feature cache."""
    files, missing = collect_audio_files(cfg.pretrain.data)
    for m in missing:
        log.warning("skipping %s: %s", m["path"], m["reason"])
    if not files:
        raise DatasetNotFoundError(f"no audio files under {cfg.pretrain.data}; pass folders holding audio with --data")
    corpus = AudioFolders(files)
    cache_dir = Path(cfg.data.cache)
    reason = None
    try:
        cache = FeatureCache(cache_dir, cfg.features)
        kind = cache.index.get("dataset_kind")
        if kind != AudioFolders.kind:
            raise ConfigError(f"data.cache={cache_dir} holds features of a {kind} dataset; pretraining would "
                              "replace them: choose another data.cache for the pretraining corpus")
        skipped = {int(s["song_id"]) for s in cache.skipped}
        lacking = set(corpus.ids) - set(cache.ids) - skipped
        gone = set(cache.ids) - set(corpus.ids)
        if lacking or gone:
            reason = f"{len(lacking)} files new, {len(gone)} gone"
        else:
            reason = drift_reason(audio_drift(cache, corpus.audio_path, corpus.ids))
    except CacheError as exc:
        reason = str(exc)
    if reason:
        log.info("preparing feature cache %s for %d audio files (%s)", cache_dir, len(corpus), reason)
        build_cache(corpus, cache_dir, cfg.features, workers=cfg.data.prepare_workers, progress=progress)
        cache = FeatureCache(cache_dir, cfg.features)
    elif cache.skipped:  # a reused cache: its skipped files are left out of this run too -- say so every time
        log.warning("%d of %d audio files are left out: they could not be decoded when %s was built (listed with "
                    "the reasons in %s); fix or replace them to retry (a changed file is retried)", len(cache.skipped),
                    len(corpus), cache_dir, cache.root / "skipped.csv")
    return corpus, cache


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns."""

    run_dir: Path
    step: int
    epoch: int
    seconds: float
    files: int
    hours: float
    history: list[dict[str, float]] = field(default_factory=list)


def step_loss(model: MaskedSpecModel, batch: dict[str, Any], cfg: Config, device: torch.device,
              mask_gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective's loss on one batch, and its parts (``mse``: masked-patch MSE, ``nce``: InfoNCE, ``distill``:
    MSE to the standardised teacher targets)."""
    p = cfg.pretrain
    x = batch["x"].to(device, non_blocking=True)
    if p.objective == "mask":
        loss = model.loss(model(x, ratio=p.mask_ratio, generator=mask_gen))
        return loss, {"mse": float(loss.detach())}
    if p.objective == "distill":
        dist = F.mse_loss(model.distill(x).float(), batch["teacher"].to(device, non_blocking=True))
        return dist, {"distill": float(dist.detach())}
    if p.objective == "mask+distill":  # one masked pass: its reconstruction + its pooled features -> teacher
        out = model(x, ratio=p.mask_ratio, generator=mask_gen)
        mse = model.loss(out)
        dist = F.mse_loss(out["distill"].float(), batch["teacher"].to(device, non_blocking=True))
        return mse + p.distill_weight * dist, {"mse": float(mse.detach()), "distill": float(dist.detach())}
    x2 = batch["x2"].to(device, non_blocking=True)
    songs = torch.as_tensor(batch["song_id"], device=device)
    if p.objective == "contrast":
        nce = info_nce(model.embed(x), model.embed(x2), songs, p.temperature)
        return nce, {"nce": float(nce.detach())}
    o1 = model(x, ratio=p.mask_ratio, generator=mask_gen)
    o2 = model(x2, ratio=p.mask_ratio, generator=mask_gen)
    mse = 0.5 * (model.loss(o1) + model.loss(o2))
    nce = info_nce(o1["emb"], o2["emb"], songs, p.temperature)
    return mse + p.contrast_weight * nce, {"mse": float(mse.detach()), "nce": float(nce.detach())}


def baseline_mse(ds: CropDataset, cfg: Config, n: int = 256) -> float:
    """:func:`~deam_mamba.models.pretrain.band_mean_baseline` on up to ``n`` fixed crops (seed 0): the masked-patch
    MSE that knowing each crop's band levels alone gives; the pretraining loss has to go below it."""
    idx = np.random.default_rng(0).choice(len(ds), size=min(n, len(ds)), replace=False)
    x = torch.stack([ds[int(i)]["x"] for i in idx])
    p = cfg.pretrain
    gm, gt = x.shape[-2] // p.patch_mels, x.shape[-1] // p.patch_frames
    mask = random_mask(len(x), gm * gt, p.mask_ratio, torch.Generator().manual_seed(0))
    return float(band_mean_baseline(x, mask, p.patch_mels, p.patch_frames))


def distill_floors(ds: CropDataset) -> dict[str, Any]:
    """meta.json entries: the distillation MSE of predicting the corpus mean (0) and each crop's song mean target,
    on the dataset's crops at their unshifted positions, plus the teacher cache's identity."""
    t = ds.teacher
    fl = t.floors([(sid, *ds.span(start, n)) for sid, start, n in ds.items])
    return {"baseline_distill_mse_corpus_mean": fl["corpus_mean"], "baseline_distill_mse_song_mean": fl["song_mean"],
            "teacher": t.info()}


def crop_frames(cfg: Config) -> tuple[int, int]:
    """``(chunk_frames, hop_frames)``: ``chunks.chunk_seconds`` rounded down to whole patches, and the hop."""
    fps = cfg.features.frames_per_second
    pf = cfg.pretrain.patch_frames
    chunk = int(round(cfg.chunks.chunk_seconds * fps)) // pf * pf
    if chunk < pf:
        raise ConfigError(f"chunks.chunk_seconds={cfg.chunks.chunk_seconds} is shorter than one patch "
                          f"({pf} frames)")
    hop = max(1, int(round((cfg.chunks.hop_seconds or cfg.chunks.chunk_seconds) * fps)))
    return chunk, hop


def pretrain(cfg: Config, run_dir: str | Path, resume: bool = False, argv: list[str] | None = None) -> PretrainResult:
    """Pretrain ``cfg`` into ``run_dir`` (resuming from its ``last`` checkpoint when ``resume``)."""
    run_dir = Path(run_dir)
    if not resume and (run_dir / "config.yaml").exists():
        raise OutputExistsError(f"{run_dir} already holds a run: continue it with --resume {run_dir} "
                                "or choose another --out")
    if cfg.optim.ema_decay:
        raise ConfigError("optim.ema_decay is not supported by pretrain; set it to 0")
    if not cfg.pretrain.data:
        raise ConfigError("no audio to pretrain on: pass --data FOLDER [FOLDER ...]")
    distill = "distill" in cfg.pretrain.objective
    if distill:  # before any audio work; stored absolute so that --resume finds it from anywhere
        paths = [str(p.resolve()) for p in teacher_files(cfg)]
        cfg.pretrain.teacher = paths[0] if len(paths) == 1 else paths
    t_start = time.time()
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    seed_everything(t.seed)
    corpus, cache = open_corpus(cfg, progress=t.progress)
    ids = [i for i in corpus.ids if i in cache]
    if not ids:
        raise DatasetNotFoundError(f"none of the {len(corpus)} audio files could be decoded (see "
                                   f"{cache.root / 'skipped.csv'})")
    hours = sum(cache.duration_s(i) for i in ids) / 3600
    norm = cache.norm_stats(ids, progress=t.progress)
    chunk, hop = crop_frames(cfg)
    teacher = prepare_teacher(cfg, corpus, ids, device, t.progress) if distill else None
    if teacher is not None:
        ids = teacher.ids
    ds = CropDataset(cache, ids, chunk, hop, norm, seed=t.seed, pairs=cfg.pretrain.objective in ("contrast", "both"),
                     teacher=teacher)
    baseline = baseline_mse(ds, cfg) if cfg.pretrain.objective in ("mask", "both", "mask+distill") else None
    extra = distill_floors(ds) if teacher is not None else {}
    model = build_pretrain_model(cfg, distill_dim=teacher.dim if teacher is not None else None).to(device)
    opt = make_optimizer(model, cfg)
    info = DistInfo()
    sampler = ResumableSampler(ds, info, seed=t.seed, drop_last=True)
    full = sampler.num_samples >= t.batch_size
    steps_per_epoch = sampler.num_samples // t.batch_size if full else 1
    total_steps = t.max_steps or t.epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(t.seed)
    loader = DataLoader(ds, batch_size=t.batch_size, sampler=sampler, drop_last=full,
                        num_workers=cfg.data.loader_workers, generator=gen)
    meta = {**ck.checkpoint_meta(cfg, norm), "pretrain": FORMAT}

    st = LoopState()
    has_last = resume and (run_dir / ck.CKPT_DIR / "last.json").is_file()
    if has_last:
        weights, state_file, _ = ck.checkpoint_paths(run_dir, "last")
        ck.load_weights(model, weights)
        saved = ck.load_state(state_file)
        st = restore_loop(opt, saved, run_dir)
    elif resume:
        log.info("no checkpoint in %s yet: starting the run from the beginning", run_dir)
    runlog = RunLog(run_dir, cfg, True, resume_step=st.step if resume else None, argv=argv,
                    extra={"kind": "pretrain", "objective": cfg.pretrain.objective, "files": len(ids),
                           "audio_hours": round(hours, 3), "crops": len(ds), "steps_per_epoch": steps_per_epoch,
                           "baseline_band_mean_mse": baseline, **extra})
    log.info("pretraining on %d files (%.2f h of audio, %d crops of %d frames), %d steps per epoch", len(ids), hours,
             len(ds), chunk, steps_per_epoch)
    if baseline is not None:
        log.info("masked-patch MSE of predicting each band's visible mean (a model that learned nothing else): %.4f",
                 baseline)
    if extra:
        log.info("distillation MSE floors: predicting the corpus mean %.4f, each crop's song mean %.4f (teacher "
                 "targets of %d songs, %d patches, in %s)", extra["baseline_distill_mse_corpus_mean"],
                 extra["baseline_distill_mse_song_mean"], len(ids), teacher.n_patches, teacher.root)

    def save(best_row: dict[str, float] | None) -> None:
        state = {"optimizer": opt.state_dict(), "loop": st.to_dict(), "rng": ck.rng_state()}
        ck.save_checkpoint(run_dir, model, state, step=st.step, meta=meta, best_metrics=best_row)

    while st.epoch < t.epochs and st.step < total_steps:
        sampler.set_position(st.epoch, st.batch_in_epoch, t.batch_size)
        ds.set_epoch(st.epoch)
        gen.manual_seed(t.seed * 100_003 + st.epoch)
        model.train()
        bar = tqdm(loader, desc=f"pretrain epoch {st.epoch + 1}/{t.epochs}", unit="batch", disable=not t.progress,
                   leave=False)
        for batch in bar:
            lr = lr_at(st.step, cfg.optim, total_steps, steps_per_epoch)
            set_lr(opt, lr)
            mask_gen = torch.Generator().manual_seed(t.seed * 1_000_003 + st.step)  # resumable masks
            loss, parts = step_loss(model, batch, cfg, device, mask_gen)
            if not torch.isfinite(loss):
                raise ConfigError(f"pretraining loss is {float(loss)} at step {st.step} of {run_dir}: the run "
                                  "diverged; lower optim.lr and resume from the last checkpoint (--resume)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            lv = float(loss.detach())
            st.count_step(lv)
            bar.set_postfix(loss=f"{lv:.4f}", lr=f"{lr:.2e}", refresh=False)  # shown at tqdm's own pace (mininterval)
            if st.step % max(1, t.log_every_steps) == 0:
                parts.update(loss=lv, lr=lr)
                runlog.scalars({f"pretrain/{k}": v for k, v in parts.items()}, st.step)
                if not t.progress:
                    log.info("step %d: loss %.4f, lr %.2e", st.step, lv, lr)
            done = st.step >= total_steps
            if t.save_every_steps and st.step % t.save_every_steps == 0 and not done:
                save(None)
            if done:
                break
        mean_loss = st.loss_sum / max(1, st.loss_n)
        row = {"epoch": st.epoch + 1, "step": st.step, "lr": lr_at(max(0, st.step - 1), cfg.optim, total_steps,
                                                                      steps_per_epoch), "train_loss": mean_loss}
        st.history.append(row)
        improved = st.best is None or -mean_loss > st.best  # LoopState keeps "higher is better"
        if improved:
            st.best, st.best_step = -mean_loss, st.step
        st.next_epoch()
        save(dict(row) if improved else None)
        runlog.epoch(row, st.history)
        log.info("pretrain epoch %d step %d: loss %.4f%s", row["epoch"], row["step"], mean_loss,
                 " (best)" if improved else "")
    seconds = time.time() - t_start
    last = dict(st.history[-1]) if st.history else {}
    runlog.finish(st.best_row(), last, seconds, st.to_dict())
    return PretrainResult(run_dir=run_dir, step=st.step, epoch=st.epoch, seconds=seconds, files=len(ids),
                          hours=hours, history=list(st.history))


def start_pretraining(config: str | Path | None, overrides: list[str], data: list[str] | None,
                      out: str | Path | None, resume: str | Path | None = None,
                      argv: list[str] | None = None) -> PretrainResult:
    """What ``deam-mamba pretrain`` does: resolve the config (``--resume``: the run's own ``config.yaml``, whose
    ``pretrain.data`` is used unless ``--data`` is given) and the run folder, then :func:`pretrain`."""
    if resume is not None:
        rd = Path(resume)
        if not (rd / "config.yaml").is_file():
            raise ConfigError(f"--resume {rd}: no config.yaml there (not a run folder written by `deam-mamba "
                              "pretrain`)")
        cfg = config_from_dict(apply_overrides(read_run_config_dict(rd), overrides))  # paths resolved to the run
        if data:
            cfg.pretrain.data = [str(d) for d in data]
        if overrides or data:
            log.warning("resuming with overrides %s%s: results may differ from an uninterrupted run", overrides,
                        f" and --data {data}" if data else "")
            write_run_config(rd, cfg)
        return pretrain(cfg, rd, resume=True, argv=argv)
    if out is None:
        raise ConfigError("give --out RUN_DIR (the new run folder), or --resume RUN_DIR")
    cfg = load_config(config, overrides)
    if data:
        cfg.pretrain.data = [str(d) for d in data]
    return pretrain(cfg, Path(out), resume=False, argv=argv)
