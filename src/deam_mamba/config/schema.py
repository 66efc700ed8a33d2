"""Every setting of a run as nested dataclasses: data, features, chunks, model, optimiser, loss, training.

Each dataclass checks its own values (``__post_init__``); :mod:`deam_mamba.config.load` reads and
writes them as YAML and applies dotted ``key=value`` overrides.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from deam_mamba.core.errors import ConfigError
from deam_mamba.core.scales import STATIC, Scale, parse_scale

#: Bump when the computation changes in a way that changes stored features (invalidates caches).
FEATURE_VERSION = 1


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel settings. Everything here changes the features, so everything is in :meth:`key`.

    sample_rate: Hz the audio is resampled to; n_fft: window and FFT length (samples);
    hop_length: samples between frames (160 at 16 kHz = 10 ms, 100 frames/s);
    n_mels: mel bands (64..128); fmin/fmax: Hz (fmax None = sample_rate / 2);
    top_db: dynamic range floor below each clip's maximum (None = no floor);
    amin: power floor before log10; pad_mode: "reflect" or "constant" for centred frames.
    """

    sample_rate: int = 16_000
    n_fft: int = 1024
    hop_length: int = 160
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = 8000.0
    top_db: float | None = 80.0
    amin: float = 1e-10
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        if int(self.sample_rate) <= 0:
            raise ConfigError(f"sample_rate must be positive, got {self.sample_rate}")
        if not 64 <= int(self.n_mels) <= 128:
            raise ConfigError(f"n_mels must be in 64..128, got {self.n_mels}")
        if int(self.n_fft) < 16:
            raise ConfigError(f"n_fft must be at least 16, got {self.n_fft}")
        if not 0 < int(self.hop_length) <= int(self.n_fft):
            raise ConfigError(f"hop_length must be in 1..n_fft ({self.n_fft}), got {self.hop_length}")
        nyquist = self.sample_rate / 2
        fmax = nyquist if self.fmax is None else float(self.fmax)
        if not 0.0 <= float(self.fmin) < fmax <= nyquist:
            raise ConfigError(
                f"need 0 <= fmin < fmax <= sample_rate/2 ({nyquist:g} Hz), got fmin={self.fmin}, fmax={self.fmax}"
            )
        if self.top_db is not None and not float(self.top_db) > 0:
            raise ConfigError(f"top_db must be positive or None, got {self.top_db}")
        if not float(self.amin) > 0:
            raise ConfigError(f"amin must be positive, got {self.amin}")
        if self.pad_mode not in ("reflect", "constant"):
            raise ConfigError(f"pad_mode must be 'reflect' or 'constant', got {self.pad_mode!r}")

    @property
    def frames_per_second(self) -> float:
        """Feature frames per second of audio (100.0 for 16 kHz / hop 160)."""
        return self.sample_rate / self.hop_length

    def n_frames(self, n_samples: int) -> int:
        """Number of centred frames for ``n_samples`` samples (``1 + n_samples // hop_length``)."""
        return 1 + int(n_samples) // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureConfig":
        """Build from a dict (e.g. a checkpoint or cache index); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown feature setting(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def key(self) -> str:
        """Stable short id of these settings, e.g. ``mel128-sr16000-hop160-3f9a0c1b2d``.

        Equal configs give equal keys across runs and machines; any change gives a new key.
        """
        payload = {k: (float(v) if isinstance(v, float) else v) for k, v in self.to_dict().items()}
        payload["_version"] = FEATURE_VERSION
        digest = hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
        return f"mel{self.n_mels}-sr{self.sample_rate}-hop{self.hop_length}-{digest}"


MODES = ("static", "dynamic", "quadrant")
POOLINGS = ("mean", "attention", "linear")
SPLITS = ("official2015", "random", "kfold")
DATASET_KINDS = ("auto", "deam", "4q", "pmemo", "csv")
FOLD_PROTOCOLS = ("artist", "random")
QUADRANT_HEADS = ("axes", "classes")


@dataclass
class DataConfig:
    """Where the songs and the feature cache live, and which split to use.

    ``kind``: the dataset reader (``auto`` detects DEAM, 4Q, PMEmo or a CSV file from ``root``).
    ``scale``: the scale of a continuous dataset's labels (a user's CSV; resolved from the dataset and
    stored in the run's config when None). ``split``: ``official2015`` (DEAM), ``random`` (80/10/10;
    stratified and artist-disjoint for quadrant datasets), or ``kfold``: fold ``fold`` of ``folds``
    (``fold_protocol``: ``artist`` = stratified, artist-disjoint; ``random`` = stratified, lets an artist's
    songs fall on both sides, the literature's protocol), the training part cut once more for a
    validation set of ``val_fraction`` (artist-disjoint) for early stopping.
    """

    root: str | None = None  # dataset root (or a CSV file for kind=csv); None -> DEAM_ROOT or kagglehub
    kind: str = "auto"  # "auto" | "deam" | "4q" | "pmemo" | "csv"
    scale: str | None = None  # label scale of continuous labels ("1-9", "0-1", "[-1, 1]", "lo,hi")
    cache: str = "cache"  # feature cache dir, built on demand if missing or stale
    split: str = "official2015"  # "official2015" | "random" | "kfold"
    split_seed: int = 0
    folds: int = 5  # split=kfold: number of folds
    fold: int = 0  # split=kfold: which fold is the test part (0-based)
    fold_protocol: str = "artist"  # split=kfold: "artist" (artist-disjoint) | "random"
    val_fraction: float = 0.1  # split=kfold: share of the training part held out for early stopping
    prepare_workers: int | None = None  # processes used to build the cache (None = all cores)
    loader_workers: int = 0  # DataLoader worker processes (0 = in the training process)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"data.split must be one of {SPLITS}, got {self.split!r}")
        if self.kind not in DATASET_KINDS:
            raise ConfigError(f"data.kind must be one of {DATASET_KINDS}, got {self.kind!r}")
        if self.fold_protocol not in FOLD_PROTOCOLS:
            raise ConfigError(f"data.fold_protocol must be one of {FOLD_PROTOCOLS}, got {self.fold_protocol!r}")
        if not 2 <= int(self.folds):
            raise ConfigError(f"data.folds must be at least 2, got {self.folds}")
        if not 0 <= int(self.fold) < int(self.folds):
            raise ConfigError(f"data.fold must be in 0..{int(self.folds) - 1} (data.folds={self.folds}), "
                              f"got {self.fold}")
        if not 0.0 < float(self.val_fraction) < 0.5:
            raise ConfigError(f"data.val_fraction must be in (0, 0.5), got {self.val_fraction}")


@dataclass
class ChunkConfig:
    """How songs are cut into fixed-length training/validation chunks (seconds)."""

    chunk_seconds: float = 5.0
    hop_seconds: float | None = None  # training hop; None = chunk_seconds (no overlap)
    eval_hop_seconds: float | None = None  # validation/inference hop; None = hop_seconds, else chunk/2
    random_offset: bool = False  # shift training chunks by a random multiple of 0.5 s each epoch
    augment: dict[str, Any] | None = None  # None = off; {} = default Augment (gain, time/freq masks)

    def __post_init__(self) -> None:
        if self.chunk_seconds <= 0:
            raise ConfigError(f"chunks.chunk_seconds must be > 0, got {self.chunk_seconds}")
        for name in ("hop_seconds", "eval_hop_seconds"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"chunks.{name} must be > 0 or null, got {v}")


@dataclass
class AttentionConfig:
    """The attention-pooling head (``model.pooling: attention``), fitted after chunk training on the
    frozen best backbone's chunk embeddings (see :mod:`deam_mamba.train.pool`)."""

    hidden: int = 64  # width of the scoring MLP
    epochs: int = 300  # full-batch AdamW steps; the one with the best validation CCC is kept
    lr: float = 3e-3
    weight_decay: float = 1e-2

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.epochs < 0 or self.lr <= 0:
            raise ConfigError(f"model.attention needs hidden >= 1, epochs >= 0 and lr > 0, got {self}")


@dataclass
class LinearHeadConfig:
    """The linear song head (``model.pooling: linear``), fitted after chunk training on the frozen best
    backbone: mean + std of a song's chunk embeddings, standardised, then L2 logistic regression (quadrant
    runs: four classes or two axes as ``loss.quadrant`` says, classes balanced) or ridge (static runs). The
    inverse regularisation ``C`` (ridge: ``alpha = 1 / C``) is chosen from ``c_grid`` by ``inner_folds``
    stratified, artist-disjoint folds of the training + validation songs (quadrant macro-F1; static: mean
    CCC), then the head is refitted on all of them (see :mod:`deam_mamba.train.pool`)."""

    c_grid: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 1.0])
    inner_folds: int = 5

    def __post_init__(self) -> None:
        if not self.c_grid or any(not (float(c) > 0) for c in self.c_grid):
            raise ConfigError(f"model.linear.c_grid needs one or more values > 0, got {self.c_grid}")
        if int(self.inner_folds) < 2:
            raise ConfigError(f"model.linear.inner_folds must be >= 2, got {self.inner_folds}")


@dataclass
class ModelConfig:
    """Which registered model to build (``deam_mamba.models.create_model``) and its overrides."""

    name: str = "mambavision_audio"
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to create_model
    # song-level pooling: "mean" of chunk predictions | "attention" (static mode) | "linear" (static, quadrant)
    pooling: str = "mean"
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    linear: LinearHeadConfig = field(default_factory=LinearHeadConfig)
    # fine-tuning: start from these weights (backbone only, the head stays new): a pretrain or train run
    # folder (its best, else last checkpoint) or a .safetensors file; tensors matched by name and shape
    init: str | None = None
    freeze_stages: int = 0  # freeze the stem and the first N stages (0..4; 0 = train everything)

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"model.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if not 0 <= int(self.freeze_stages) <= 4:
            raise ConfigError(f"model.freeze_stages must be in 0..4 (stem + first N stages), got {self.freeze_stages}")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``lr * min_lr_ratio``."""

    lr: float = 1e-3
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0  # max global grad norm; None = no clipping
    # exponential moving average of the weights (and BatchNorm statistics), updated every step:
    # 0 = off; e.g. 0.99 averages over ~100 steps. When on, validation, `best` and every saved
    # weights file use the averaged model; the raw weights live in the state file (for --resume).
    ema_decay: float = 0.0
    # fine-tuning: the backbone's parameter groups get lr * backbone_lr_scale (the head keeps lr)
    backbone_lr_scale: float = 1.0
    # warm-up length in epochs (may be fractional); when set it replaces warmup_steps
    warmup_epochs: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"optim.ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")
        if not float(self.backbone_lr_scale) >= 0.0:
            raise ConfigError(f"optim.backbone_lr_scale must be >= 0, got {self.backbone_lr_scale}")
        if self.warmup_epochs is not None and not float(self.warmup_epochs) >= 0.0:
            raise ConfigError(f"optim.warmup_epochs must be >= 0 or null, got {self.warmup_epochs}")


@dataclass
class LossConfig:
    """Loss = mse_weight * MSE + ccc_weight * (1 - CCC), on normalised targets (static and dynamic modes).

    ``quadrant`` (mode=quadrant): ``axes`` = two binary logits (valence positive, arousal high) with binary
    cross-entropy; ``classes`` = four logits (Q1..Q4) with cross-entropy.
    """

    name: str = "mse"  # "mse" | "ccc" | "mse+ccc" (weights below)
    mse_weight: float = 1.0
    ccc_weight: float = 1.0
    quadrant: str = "axes"  # mode=quadrant: "axes" | "classes"
    label_smoothing: float = 0.0  # mode=quadrant: targets move this far towards 0.5 (axes) / uniform (classes)

    def __post_init__(self) -> None:
        if self.name not in ("mse", "ccc", "mse+ccc"):
            raise ConfigError(f"loss.name must be 'mse', 'ccc' or 'mse+ccc', got {self.name!r}")
        if self.quadrant not in QUADRANT_HEADS:
            raise ConfigError(f"loss.quadrant must be one of {QUADRANT_HEADS}, got {self.quadrant!r}")
        if not 0.0 <= float(self.label_smoothing) < 0.5:
            raise ConfigError(f"loss.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")

    def weights(self) -> tuple[float, float]:
        """(mse weight, ccc weight) actually used."""
        if self.name == "mse":
            return 1.0, 0.0
        if self.name == "ccc":
            return 0.0, 1.0
        return self.mse_weight, self.ccc_weight


@dataclass
class TrainConfig:
    """Loop length, batch, seed, device, early stopping and checkpoint cadence."""

    epochs: int = 20
    batch_size: int = 32
    eval_batch_size: int = 64
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    bf16: bool = False  # bf16 autocast (CUDA only; ignored on CPU)
    patience: int = 5  # epochs without val improvement before stopping; 0 = never stop early
    min_delta: float = 0.0
    save_every_steps: int = 0  # also write `last` every N optimiser steps (0 = only each epoch)
    log_every_steps: int = 10
    max_steps: int | None = None  # stop after this many optimiser steps (tests, smoke runs)
    threads: int | None = None  # torch.set_num_threads on CPU (None = leave as is)
    # early-stopping / best-checkpoint metric: a per-epoch validation metric where higher is better (e.g.
    # val_f1_macro_quadrant); None = the mode's default (evaluation.scoring.target_metric)
    monitor: str | None = None
    progress: bool = True  # tqdm progress bars


PRETRAIN_OBJECTIVES = ("mask", "contrast", "both", "distill", "mask+distill")
MASK_FILLS = ("token", "zero")


@dataclass
class PretrainConfig:
    """Self-supervised pretraining (``deam-mamba pretrain``): masked spectrogram patch reconstruction.

    Each normalised log-mel chunk is cut into ``patch_mels`` x ``patch_frames`` patches; ``mask_ratio`` of
    them (random, per chunk) are replaced at the input by a learned token (``mask_fill: token``) or 0 (the
    training mean), the backbone encodes the chunk, a light decoder (``decoder_dim`` channels,
    ``decoder_depth`` conv blocks) predicts every patch and the loss is the MSE on the masked patches only.
    ``objective``: ``mask`` (that alone), ``contrast`` (InfoNCE between the pooled, projected embeddings of two
    unmasked crops of one song; ``proj_dim``, ``temperature``) or ``both`` (both crops masked: the mean of their
    reconstruction losses + ``contrast_weight`` x InfoNCE of their embeddings), ``distill`` (predict a teacher's
    standardised per-crop vector from the pooled features of the unmasked crop through a small head; MSE) or
    ``mask+distill`` (one masked pass: reconstruction loss + ``distill_weight`` x the distillation MSE of that
    masked crop). ``teacher``: the converted MusiCNN safetensors (None: ``make musicnn``'s MSD file), or a list of
    them: the targets are their standardised vectors side by side (e.g. the MSD- and the MTT-trained MusiCNN);
    ``teacher_hop_seconds``: hop between its 3 s patches; ``distill_hidden``: hidden units of the head (0: one
    Linear). See :mod:`deam_mamba.train.distill`.
    ``data``: the audio folders/files (set by ``--data``). See :mod:`deam_mamba.models.pretrain`.
    """

    data: list[str] = field(default_factory=list)
    objective: str = "mask"  # "mask" | "contrast" | "both"
    mask_ratio: float = 0.6
    patch_mels: int = 16
    patch_frames: int = 16
    mask_fill: str = "token"  # "token" (learned patch) | "zero"
    decoder_dim: int = 128
    decoder_depth: int = 2
    proj_dim: int = 128  # contrast/both: projection head output size
    temperature: float = 0.1  # contrast/both: InfoNCE temperature
    contrast_weight: float = 1.0  # both: weight of the InfoNCE term
    teacher: str | list[str] | None = None  # distill: converted MusiCNN .safetensors, or a list (None: musicnn_msd)
    teacher_hop_seconds: float = 1.5  # distill: hop between the teacher's 3 s patches
    distill_hidden: int = 512  # distill: hidden units of the 2-layer head (0: a single Linear)
    distill_weight: float = 1.0  # mask+distill: weight of the distillation term

    @property
    def teachers(self) -> list[str]:
        """``teacher`` as a list: one file, several, or none (``[]``: the default teacher)."""
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher or [])

    def __post_init__(self) -> None:
        if int(self.proj_dim) < 1 or not float(self.temperature) > 0 or not float(self.contrast_weight) >= 0:
            raise ConfigError(f"pretrain needs proj_dim >= 1, temperature > 0, contrast_weight >= 0, got "
                              f"{self.proj_dim}, {self.temperature}, {self.contrast_weight}")
        if self.objective not in PRETRAIN_OBJECTIVES:
            raise ConfigError(f"pretrain.objective must be one of {PRETRAIN_OBJECTIVES}, got {self.objective!r}")
        if not 0.0 < float(self.mask_ratio) < 1.0:
            raise ConfigError(f"pretrain.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if int(self.patch_mels) < 1 or int(self.patch_frames) < 1:
            raise ConfigError(f"pretrain.patch_mels/patch_frames must be >= 1, got {self.patch_mels}, "
                              f"{self.patch_frames}")
        if self.mask_fill not in MASK_FILLS:
            raise ConfigError(f"pretrain.mask_fill must be one of {MASK_FILLS}, got {self.mask_fill!r}")
        if not 0.0 < float(self.teacher_hop_seconds) <= 60.0:
            raise ConfigError(f"pretrain.teacher_hop_seconds must be in (0, 60] seconds, got "
                              f"{self.teacher_hop_seconds}")
        if int(self.distill_hidden) < 0 or not float(self.distill_weight) >= 0:
            raise ConfigError(f"pretrain needs distill_hidden >= 0 (0: one Linear) and distill_weight >= 0, got "
                              f"{self.distill_hidden}, {self.distill_weight}")
        if self.teacher is not None and (not self.teachers or any(not isinstance(f, str) or not f.strip()
                                                                  for f in self.teachers)):
            raise ConfigError(f"pretrain.teacher={self.teacher!r} is empty: give the converted MusiCNN .safetensors "
                              "(or a list of them, [A, B]) or leave it unset")
        if int(self.decoder_dim) < 1 or int(self.decoder_depth) < 0:
            raise ConfigError(f"pretrain.decoder_dim must be >= 1 and decoder_depth >= 0, got "
                              f"{self.decoder_dim}, {self.decoder_depth}")


@dataclass
class Config:
    """Everything one training run needs; written resolved into ``RUN_DIR/config.yaml``."""

    mode: str = "static"  # "static" (song means on the labels' scale) | "dynamic" (2 Hz, [-1, 1]) | "quadrant"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    chunks: ChunkConfig = field(default_factory=ChunkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # used by `deam-mamba pretrain` only

    def label_scale(self) -> Scale:
        """The scale static targets and predictions are on (``data.scale``; DEAM's 1-9 when unset). Static
        training works on ``label_scale().to_unit(y)`` (``(y - 5) / 4`` for 1-9)."""
        return parse_scale(self.data.scale) if self.data.scale is not None else STATIC

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "static" and self.data.scale is not None:
            parse_scale(self.data.scale)  # a bad name fails here, with what to write instead
        if self.model.pooling == "attention" and self.mode != "static":
            raise ConfigError(f"model.pooling=attention pools song-level (static) targets, not mode={self.mode}: "
                              "use model.pooling=linear for quadrant runs, model.pooling=mean for dynamic ones")
        if self.model.pooling == "linear" and self.mode == "dynamic":
            raise ConfigError("model.pooling=linear fits song-level targets; dynamic runs predict 2 Hz curves per "
                              "chunk: use model.pooling=mean with mode=dynamic")
