"""MusiCNN (Pons & Serra 2019) in PyTorch: a pretrained music tagger to use as a frozen teacher / feature extractor.

Architecture ("musicnn", MSD/MTT variants of the ``musicnn`` 0.1.0 package, ISC licence), inference only:

- input: a log-mel patch ``[B, 96, T]`` (T = 187 frames = 3 s at 16 kHz, hop 256), ``log10(10000 x + 1)`` of the
  Slaney mel power; a batch norm over the whole patch (one channel);
- front-end: two *timbral* convolutions (7 frames x 38 / 67 mel bands, 204 filters each, time padded 3+3) and three
  *temporal* ones (128 / 64 / 32 frames x 1 band, 51 filters each, 'same' padding), each ReLU -> batch norm -> max
  over frequency; concatenated: ``[B, 561, T]``;
- mid-end: three 1-D convolutions over time (kernel 7, 64 filters, ReLU -> batch norm), the 2nd and 3rd residual;
  the front-end and the three mid-end outputs concatenated: ``[B, 753, T]``;
- back-end: max and mean over time (interleaved per channel: ``[B, 1506]``), batch norm, dense 200 + ReLU, batch norm
  = the **embedding** (``penultimate`` in musicnn), dense 50 -> sigmoid = the tag probabilities (the *taggram*).

Weights: ``make musicnn`` (``scripts/setup_musicnn.sh``) converts the official TensorFlow checkpoints once into a
safetensors file with this module's parameter names; :func:`load_musicnn` reads it. Nothing here needs TensorFlow.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deam_mamba.config.schema import FeatureConfig
from deam_mamba.core.errors import CheckpointError
from deam_mamba.features.logmel import mel_filters

FORMAT = "deam_mamba.musicnn/1"
SAMPLE_RATE = 16_000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
PATCH_FRAMES = 187  # 3 s: librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1
BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default
SETUP_HINT = "run `make musicnn` once (optional set-up: converts the official musicnn weights, needs ~1.6 GB)"


@dataclass(frozen=True)
class MusiCNNConfig:
    """Sizes of a MusiCNN. ``frontend_mult``: 1.6 -> 204 timbral and 51 temporal filters per branch."""

    n_mels: int = N_MELS
    n_tags: int = 50
    frontend_mult: float = 1.6
    midend_filters: int = 64
    backend_units: int = 200

    @property
    def timbral_filters(self) -> int:
        return int(self.frontend_mult * 128)

    @property
    def temporal_filters(self) -> int:
        return int(self.frontend_mult * 32)

    @property
    def frontend_channels(self) -> int:
        return 2 * self.timbral_filters + 3 * self.temporal_filters

    @property
    def midend_channels(self) -> int:
        return self.frontend_channels + 3 * self.midend_filters


class FrozenBatchNorm(nn.Module):
    """Batch norm in inference mode over dimension 1 of ``[B, C, ...]``: ``(x - mean) / sqrt(var + eps) * w + b``."""

    def __init__(self, channels: int, eps: float = BN_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(shape) + shift.view(shape)


class FreqPooledConv(nn.Module):
    """Front-end: ``[B, 1, T, M] -> [B, C, T]``: time padding, conv (time x mel), ReLU, batch norm, max over mel."""

    def __init__(self, channels: int, kernel: tuple[int, int], pad: tuple[int, int]):
        super().__init__()
        self.pad = pad  # (frames before, frames after)
        self.conv = nn.Conv2d(1, channels, kernel)
        self.bn = FrozenBatchNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (0, 0, self.pad[0], self.pad[1]))
        return self.bn(F.relu(self.conv(x))).amax(dim=3)


class TimeConv(nn.Module):
    """Mid-end layer: ``[B, C_in, T] -> [B, C_out, T]``: conv over time (kernel 7, zero padding 3), ReLU, batch norm."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.bn = FrozenBatchNorm(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(F.relu(self.conv(x)))


class Backend(nn.Module):
    """``[B, C, T] -> [B, backend_units]``: max and mean over time, batch norm, dense + ReLU, batch norm."""

    def __init__(self, channels: int, units: int):
        super().__init__()
        self.pool_bn = FrozenBatchNorm(2 * channels)
        self.dense = nn.Linear(2 * channels, units)
        self.dense_bn = FrozenBatchNorm(units)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.stack([x.amax(dim=2), x.mean(dim=2)], dim=2).flatten(1)  # c0 max, c0 mean, c1 max, ...
        return self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))


def same_padding(kernel: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding for stride 1: ``(k - 1) // 2`` before, the rest after."""
    return (kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2


class MusiCNN(nn.Module):
    """MusiCNN tagger. ``forward_features([B, n_mels, T]) -> [B, backend_units]`` (the embedding),
    ``forward_head(embedding) -> [B, n_tags]`` tag probabilities; ``forward`` = both. Any ``T >= 1`` works; the
    weights were trained on ``T = 187`` (3 s). Inference only (batch norms use their running statistics)."""

    def __init__(self, cfg: MusiCNNConfig | None = None, tags: list[str] | None = None):
        super().__init__()
        self.cfg = cfg = cfg or MusiCNNConfig()
        self.tags = list(tags) if tags is not None else [f"tag{i}" for i in range(cfg.n_tags)]
        if len(self.tags) != cfg.n_tags:
            raise CheckpointError(f"MusiCNN has {cfg.n_tags} tags but {len(self.tags)} tag names were given")
        self.input_bn = FrozenBatchNorm(1)
        self.timbral = nn.ModuleList(
            FreqPooledConv(cfg.timbral_filters, (7, int(frac * cfg.n_mels)), (3, 3)) for frac in (0.4, 0.7)
        )
        self.temporal = nn.ModuleList(
            FreqPooledConv(cfg.temporal_filters, (k, 1), same_padding(k)) for k in (128, 64, 32)
        )
        widths = (cfg.frontend_channels, cfg.midend_filters, cfg.midend_filters)
        self.midend = nn.ModuleList(TimeConv(c_in, cfg.midend_filters) for c_in in widths)
        self.backend = Backend(cfg.midend_channels, cfg.backend_units)
        self.head = nn.Linear(cfg.backend_units, cfg.n_tags)
        self.eval()

    def frontend(self, patches: Tensor) -> Tensor:
        """``[B, n_mels, T]`` log-mel -> ``[B, 561, T]`` front-end features (timbral then temporal)."""
        if patches.dim() != 3 or patches.shape[1] != self.cfg.n_mels:
            raise ValueError(f"MusiCNN expects log-mel patches [B, {self.cfg.n_mels}, T], got {tuple(patches.shape)}")
        x = self.input_bn(patches.transpose(1, 2).unsqueeze(1))  # [B, 1, T, M]: time = height, as in TF
        return torch.cat([branch(x) for branch in (*self.timbral, *self.temporal)], dim=1)

    def midend_features(self, patches: Tensor) -> Tensor:
        """``[B, n_mels, T] -> [B, 753, T]``: front-end and the three mid-end layers, concatenated."""
        front = self.frontend(patches)
        c1 = self.midend[0](front)
        c2 = self.midend[1](c1) + c1
        c3 = self.midend[2](c2) + c2
        return torch.cat([front, c1, c2, c3], dim=1)

    def forward_features(self, patches: Tensor) -> Tensor:
        """``[B, n_mels, T] -> [B, backend_units]``: the penultimate layer (after its batch norm)."""
        return self.backend(self.midend_features(patches))

    def forward_head(self, embedding: Tensor, logits: bool = False) -> Tensor:
        """``[B, backend_units] -> [B, n_tags]`` tag probabilities (or logits)."""
        out = self.head(embedding)
        return out if logits else torch.sigmoid(out)

    def forward(self, patches: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(patches))

    def patch_vectors(self, patches: Tensor) -> Tensor:
        """``[B, n_mels, T] -> [B, backend_units + n_tags]``: the penultimate layer, then the tag probabilities
        (the per-patch vector distillation learns and the 4Q benchmark's features summarise)."""
        emb = self.forward_features(patches)
        return torch.cat([emb, self.forward_head(emb)], dim=1)


# --- features ------------------------------------------------------------------------------------------------------

MUSICNN_FEATURES = FeatureConfig(sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS,
                                 fmin=0.0, fmax=None, top_db=None, pad_mode="reflect")
FEATURE_SETTINGS = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "n_mels": N_MELS,
                    "mel": "slaney (librosa defaults, fmin 0, fmax sr/2)", "window": "hann", "center": True,
                    "pad_mode": "reflect", "power": 2.0, "float16_rounding": True, "log": "log10(10000 x + 1)",
                    "patch_frames": PATCH_FRAMES}


def musicnn_logmel(wave: np.ndarray | Tensor) -> Tensor:
    """Mono ``[T]`` wave at 16 kHz -> ``[96, 1 + T // 256]`` float32: musicnn's input representation.

    Hann window 512, hop 256, centred frames (reflect padding, librosa < 0.10's default, with which musicnn was
    released), Slaney mel power (the project's numpy filterbank = ``librosa.filters.mel``), rounded to float16 as
    musicnn's extractor does, then ``log10(10000 x + 1)``."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not isinstance(wave, Tensor) else wave,
                        dtype=torch.float32).cpu()
    if x.dim() != 1:
        raise ValueError(f"musicnn_logmel expects a mono wave [T], got shape {tuple(x.shape)}")
    if x.shape[0] <= N_FFT // 2:
        raise ValueError(f"wave has {x.shape[0]} samples; musicnn needs more than {N_FFT // 2} (16 ms at 16 kHz)")
    spec = torch.stft(x, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT, periodic=True), center=True,
                      pad_mode="reflect", return_complex=True)
    power = torch.view_as_real(spec).square().sum(dim=-1)  # [257, frames]
    mel = torch.from_numpy(np.array(mel_filters(MUSICNN_FEATURES))) @ power
    mel = mel.clamp(max=65504.0).to(torch.float16).to(torch.float32)
    return torch.log10(10000.0 * mel + 1.0)


def musicnn_patches(wave: np.ndarray | Tensor, hop_frames: int = PATCH_FRAMES) -> Tensor:
    """Mono 16 kHz wave -> ``[N, 96, 187]`` patches starting every ``hop_frames`` frames (default: no overlap, as
    musicnn's extractor; a last partial patch is dropped). A clip shorter than one patch is repeated to fill it
    (musicnn's training used repeat-padding)."""
    if int(hop_frames) < 1:
        raise ValueError(f"hop_frames must be positive, got {hop_frames}")
    mel = musicnn_logmel(wave)
    if mel.shape[1] < PATCH_FRAMES:
        mel = mel.repeat(1, -(-PATCH_FRAMES // mel.shape[1]))[:, :PATCH_FRAMES]
    return mel.unfold(1, PATCH_FRAMES, int(hop_frames)).permute(1, 0, 2).contiguous()


# --- weights -------------------------------------------------------------------------------------------------------


def default_teacher_dir() -> Path:
    """``$XDG_CACHE_HOME/deam_mamba/teachers`` (``~/.cache/deam_mamba/teachers`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deam_mamba" / "teachers"


def default_weights(dataset: str = "msd") -> Path:
    """Where ``make musicnn`` writes the converted weights of the ``msd`` or ``mtt`` model."""
    return default_teacher_dir() / f"musicnn_{dataset.lower()}.safetensors"


def load_musicnn(path: str | Path | None = None) -> MusiCNN:
    """The converted MusiCNN (default: the MSD model in :func:`default_teacher_dir`), in eval mode, its tag names in
    ``model.tags`` and the file's metadata in ``model.meta``. A missing or foreign file is a one-line
    :class:`CheckpointError` that says to run ``make musicnn``."""
    from safetensors import safe_open  # light; kept local so that importing this module stays cheap

    path = Path(path) if path is not None else default_weights("msd")
    if not path.is_file():
        raise CheckpointError(f"MusiCNN weights {path} not found: {SETUP_HINT}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"cannot read MusiCNN weights {path} ({type(exc).__name__}): {SETUP_HINT}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a converted MusiCNN file (format {meta.get('format')!r}, "
                              f"expected {FORMAT!r}): {SETUP_HINT}")
    try:
        cfg = MusiCNNConfig(**json.loads(meta["architecture"]))
        model = MusiCNN(cfg, tags=json.loads(meta["tags"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad MusiCNN metadata ({exc}): {SETUP_HINT}") from None
    own = model.state_dict()
    bad = sorted(set(own) ^ set(tensors)) or [k for k in own if tuple(own[k].shape) != tuple(tensors[k].shape)]
    if bad:
        raise CheckpointError(f"{path} does not fit MusiCNN (first mismatched tensors: {bad[:3]}): {SETUP_HINT}")
    model.load_state_dict(tensors, strict=True)
    model.meta = meta
    return model.eval()


def architecture_json(cfg: MusiCNNConfig) -> str:
    """The ``architecture`` metadata entry of a converted file."""
    return json.dumps(asdict(cfg))
