"""Song-level prediction from a trained run: audio of any length -> valence/arousal + a 2 Hz curve.

The path mirrors training exactly: wave ``[C, T]`` at the run's sample rate -> log-mel in dB
(:class:`deam_mamba.features.logmel.LogMel`, the run's :class:`FeatureConfig`) -> normalised with the
run's training statistics (:class:`NormStats`) -> chunks of ``chunk_seconds`` every
``hop_seconds`` plus a last chunk flush with the end on the 0.5 s grid (the rule of
:func:`deam_mamba.features.chunks.chunk_starts`, shared with training; a song shorter than one chunk is
padded, never refused) -> the model in batches.

Scales (never mixed):

* static runs predict one (valence, arousal) per chunk on the 1-9 scale (the model works on
  ``(y - 5) / 4``; mapped back here). The song value is the mean over chunks; the 2 Hz curve is the
  chunk predictions placed at the chunk centres and linearly interpolated at 0, 0.5, 1.0, ... s.
  Runs trained with ``model.pooling: attention`` or ``linear`` pool the chunk *embeddings* with their fitted
  song head (:mod:`deam_mamba.models.heads`) instead (song value only; the curve stays per chunk).
* quadrant runs predict per chunk the probabilities that valence is positive and arousal high (``axes``
  head: two sigmoids; ``classes`` head: a softmax over Q1..Q4, summed into the two axes); the song's
  probabilities are their means over chunks, or with ``model.pooling: linear`` the song head's own
  probabilities from the chunk embeddings, and its quadrant follows from them (``axes``: each axis at
  0.5; ``classes``: the most probable quadrant). ``valence``/``arousal`` then hold those probabilities
  (``song_scale`` ``"P(positive valence), P(high arousal)"``), and so do the curves.
* dynamic runs predict ``K = 2 * chunk_seconds`` (valence, arousal) pairs per chunk at the 2 Hz
  annotation times inside it, on DEAM's dynamic [-1, 1] scale; overlapping chunks are averaged per
  time step. The song value is the mean of that curve, on [-1, 1] as well (``song_scale`` says so).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from deam_mamba.config import Config, FeatureConfig
from deam_mamba.core.errors import DeamError
from deam_mamba.core.scales import DYNAMIC, STATIC, Scale, quadrant_of
from deam_mamba.data.audio import load_audio
from deam_mamba.features.chunks import chunk_layout, slice_chunks  # one chunking rule for training and inference
from deam_mamba.features.logmel import LogMel, NormStats
from deam_mamba.inference import checks
from deam_mamba.runs.run import load_run

log = logging.getLogger(__name__)

CURVE_HZ = 2.0
QUADRANT_SCALE = "P(positive valence), P(high arousal)"  # what quadrant runs' song values and curves are


def quadrant_probabilities(raw: np.ndarray, head: str) -> tuple[np.ndarray | None, np.ndarray]:
    """Chunk logits ``raw [N, 2]`` (``axes``) or ``[N, 4]`` (``classes``, Q1..Q4) -> ``(class probabilities
    [N, 4] or None, axis probabilities [N, 2] = (P(valence positive), P(arousal high)))``."""
    logits = np.asarray(raw, dtype=np.float64)
    if head == "classes":
        z = np.exp(logits[:, :4] - logits[:, :4].max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
        return probs, np.stack([probs[:, 0] + probs[:, 3], probs[:, 0] + probs[:, 1]], axis=1)
    return None, 1.0 / (1.0 + np.exp(-logits[:, :2]))


# --- results -------------------------------------------------------------------------------


@dataclass
class SongPrediction:
    """One song: song-level values and a 2 Hz curve (``curve_times_s`` in seconds from the start)."""

    source: str
    duration_s: float
    valence: float
    arousal: float
    song_scale: str
    curve_times_s: np.ndarray
    curve_valence: np.ndarray
    curve_arousal: np.ndarray
    curve_scale: str
    n_chunks: int
    pooling: str = "mean"  # how the song value was pooled over chunks: "mean" | "attention" | "linear"
    quadrant: int = 0  # Russell quadrant 1..4 (continuous runs: sign around the scale's midpoint)
    p_valence_positive: float | None = None  # quadrant runs: P(valence positive) (mean over chunks, or the song head's)
    p_arousal_high: float | None = None  # quadrant runs: P(arousal high) (mean over chunks, or the song head's)
    flags: list[str] = field(default_factory=list)  # see deam_mamba.inference.checks.FLAGS
    feature_shift_z: float | None = None  # checks.feature_shift: mean |z| of the bands vs. training statistics

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("curve_times_s", "curve_valence", "curve_arousal"):
            d[k] = [round(float(v), 5) for v in np.asarray(d[k])]
        d["flags"] = list(self.flags)
        for k in ("duration_s", "valence", "arousal", "p_valence_positive", "p_arousal_high", "feature_shift_z"):
            d[k] = None if d[k] is None else round(float(d[k]), 5)
        d["quadrant"] = f"Q{self.quadrant}" if self.quadrant else None
        return d


# --- the predictor -------------------------------------------------------------------------


class ChunkModel(Protocol):
    """What the predictor needs of a model besides a torch module: ``model(chunks [B, 1, n_mels, frames]) ->
    outputs [B, O]`` (a tensor), and for embeddings or attention pooling ``embed_and_predict(chunks) ->
    (embeddings [B, D], outputs [B, O])``."""

    def __call__(self, chunks: torch.Tensor) -> torch.Tensor: ...

    def embed_and_predict(self, chunks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...



class Predictor:
    """Wraps a trained model with its feature pipeline; see the module docstring for the scales.

    ``model`` maps ``[B, 1, n_mels, chunk_frames]`` to ``[B, 2]`` (static, normalised targets) or
    ``[B, 2 * K]`` / ``[B, K, 2]`` (dynamic, [-1, 1]); ``norm`` is the run's training NormStats
    (``None``: features are used un-normalised, as a run trained without them). ``pool``: a fitted song head
    of :mod:`deam_mamba.models.heads` (``AttentionPool``: static runs with ``model.pooling: attention``;
    ``LinearSongHead``: static or quadrant runs with ``model.pooling: linear``), used on the chunk embeddings
    ``model.forward_features``; ``None`` = mean pooling.
    """

    def __init__(self, model: torch.nn.Module | ChunkModel, feature_config: FeatureConfig,
                 norm: NormStats | None = None, mode: str = "static",
                 chunk_seconds: float = 5.0, hop_seconds: float | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 16, pool: torch.nn.Module | None = None, scale: Scale = STATIC,
                 quadrant_head: str = "axes"):
        if mode not in ("static", "dynamic", "quadrant"):
            raise DeamError(f"unknown run mode {mode!r}: expected 'static', 'dynamic' or 'quadrant'")
        if quadrant_head not in ("axes", "classes"):
            raise DeamError(f"unknown quadrant head {quadrant_head!r}: expected 'axes' or 'classes'")
        self.scale = scale  # static runs: the labels' scale (predictions are mapped onto it)
        self.quadrant_head = quadrant_head
        if batch_size < 1:
            raise DeamError(f"--batch-size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        # a torch module, or any ChunkModel (e.g. the ONNX Runtime session of inference/export.py)
        self.model = model.to(self.device).eval() if isinstance(model, torch.nn.Module) else model
        self.pooling = getattr(pool, "kind", "attention") if pool is not None else "mean"
        if pool is not None and (mode == "dynamic" or (mode == "quadrant" and self.pooling != "linear")):
            raise DeamError(f"{self.pooling} pooling does not fit mode={mode}: attention pooling is for static runs, "
                            "linear pooling for static and quadrant runs; dynamic runs pool their 2 Hz curves")
        self.pool = pool.to(self.device).eval() if pool is not None else None
        self.feature_config = feature_config
        self.norm = norm
        self.mode = mode
        self.batch_size = int(batch_size)
        self.sample_rate = int(feature_config.sample_rate)
        self.frames_per_second = self.sample_rate / float(feature_config.hop_length)
        self.chunk_seconds = float(chunk_seconds)
        self.hop_seconds = float(hop_seconds if hop_seconds else chunk_seconds)
        if self.hop_seconds <= 0:
            raise DeamError(f"hop_seconds must be > 0, got {self.hop_seconds}")
        self.chunk_frames = int(round(self.chunk_seconds * self.frames_per_second))
        self.hop_frames = max(1, int(round(self.hop_seconds * self.frames_per_second)))
        self.align_frames = max(1, int(round(self.frames_per_second / CURVE_HZ)))  # the 0.5 s grid
        self.logmel = LogMel(feature_config).to(self.device).eval()
        self.run_dir: str | None = None
        self.checkpoint: str | None = None  # named in errors: "checkpoint PATH (run DIR)"
        self.check_finite = True  # non-finite outputs raise (training's validation turns this off: NaN scores)

    @classmethod
    def from_run(cls, run_dir: str | Path, which: str = "best", device: str = "cpu", batch_size: int = 16,
                 hop_seconds: float | None = None) -> Predictor:
        """Load ``run_dir`` with :func:`deam_mamba.runs.run.load_run` and build the predictor."""
        run = load_run(run_dir, which=which, device=device)
        pred = cls.for_config(run.model, run.config, run.norm_stats, device=device, batch_size=batch_size,
                              pool=run.pool, hop_seconds=hop_seconds)
        pred.run_dir = str(run_dir)
        pred.checkpoint = f"checkpoint {run.weights} (run {run_dir})"
        return pred

    @classmethod
    def for_config(cls, model: torch.nn.Module | ChunkModel, cfg: Config, norm: NormStats | None,
                   device: str | torch.device,
                   batch_size: int, pool: torch.nn.Module | None = None, hop_seconds: float | None = None
                   ) -> Predictor:
        """The predictor of a run of ``cfg``: its features, mode, chunking (the evaluation hop unless
        ``hop_seconds``), label scale and quadrant head."""
        chunk_s, hop_s = run_chunking(cfg)
        return cls(model, cfg.features, norm, mode=cfg.mode, chunk_seconds=chunk_s, hop_seconds=hop_seconds or hop_s,
                   device=device, batch_size=batch_size, pool=pool, scale=cfg.label_scale(),
                   quadrant_head=cfg.loss.quadrant)

    # -- model on chunks --

    @torch.no_grad()
    def predict_chunks(self, feats: torch.Tensor, starts: np.ndarray) -> np.ndarray:
        """Model outputs ``[N, D]`` float64 for the chunks of normalised ``feats [n_mels, F]`` at
        ``starts``; chunks are cut batch by batch, so memory stays bounded for songs of any length."""
        outs = []
        for i in range(0, len(starts), self.batch_size):
            xb = slice_chunks(feats, starts[i:i + self.batch_size], self.chunk_frames).to(self.device, torch.float32)
            outs.append(self.model(xb).float().reshape(xb.shape[0], -1).cpu())
        return torch.cat(outs).double().numpy()

    @torch.no_grad()
    def chunk_embeddings(self, feats: torch.Tensor, starts: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """``(embeddings [N, D] float32, outputs [N, O] float64)`` of the chunks of normalised
        ``feats [n_mels, F]`` (``starts`` default: the evaluation chunking), via
        ``model.forward_features`` then ``model.forward_head`` (= ``model(x)``)."""
        if starts is None:
            starts = chunk_layout(int(feats.shape[-1]), self.chunk_frames, self.hop_frames, self.align_frames)[0]
        embs, outs = [], []
        for i in range(0, len(starts), self.batch_size):
            xb = slice_chunks(feats, starts[i:i + self.batch_size], self.chunk_frames).to(self.device, torch.float32)
            if hasattr(self.model, "embed_and_predict"):  # one pass for both (ChunkModel)
                f, out = self.model.embed_and_predict(xb)
            else:
                f = self.model.forward_features(xb).float()
                out = self.model.forward_head(f)
            embs.append(f.float().cpu())
            outs.append(out.float().reshape(xb.shape[0], -1).cpu())
        return torch.cat(embs).numpy(), torch.cat(outs).double().numpy()

    def embed_wave(self, wave: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``wave [C, T]`` float32 at ``self.sample_rate`` Hz -> ``(chunk embeddings [N, D] float32, chunk start
        times [N] in s)`` over the evaluation chunking (the chunks :meth:`predict_wave` averages)."""
        feats = self.features(wave)
        starts = chunk_layout(int(feats.shape[-1]), self.chunk_frames, self.hop_frames, self.align_frames)[0]
        emb, _ = self.chunk_embeddings(feats, starts)
        return emb, np.asarray(starts, dtype=np.float64) / self.frames_per_second

    def features(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``wave [C, T]`` (or ``[T]``) float32 at the run's rate -> normalised log-mel ``[n_mels, F]``."""
        w = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        if w.ndim == 1:
            w = w[None]
        if w.shape[0] > 1:  # the model was trained on mono
            w = w.mean(dim=0, keepdim=True)
        min_len = int(self.feature_config.n_fft)
        if w.shape[-1] < min_len:  # a few ms of audio: pad with silence so one frame exists
            w = torch.nn.functional.pad(w, (0, min_len - w.shape[-1]))
        with torch.no_grad():
            mel = self.logmel(w[None].to(self.device))[0, 0]  # [n_mels, F] dB
        return self.normalise(mel)

    def normalise(self, mel: torch.Tensor) -> torch.Tensor:
        """Apply the run's training statistics to ``mel [n_mels, F]`` (dB)."""
        if self.norm is None:
            return mel.float()
        out = self.norm.apply(mel)
        return torch.as_tensor(out, dtype=torch.float32, device=mel.device)

    def predict_features(self, feats: torch.Tensor, source: str = "", duration_s: float | None = None
                         ) -> SongPrediction:
        """Normalised ``feats [n_mels, F]`` of one song -> :class:`SongPrediction`.

        ``duration_s`` defaults to ``(F - 1) / frames_per_second`` (centred frames). Non-finite model outputs
        raise :class:`~deam_mamba.core.errors.CheckpointError`; values off the declared scale are clipped onto it
        and the prediction flagged (``flags``, rules in :mod:`deam_mamba.inference.checks`)."""
        n_frames = int(feats.shape[-1])
        duration = float(duration_s) if duration_s is not None else max(n_frames - 1, 1) / self.frames_per_second
        starts, valid = chunk_layout(n_frames, self.chunk_frames, self.hop_frames, self.align_frames)
        if self.pool is not None:
            emb, raw = self.chunk_embeddings(feats, starts)
            with torch.no_grad():  # [1, O]: the song head's outputs, in the chunk head's format
                pooled = self.pool(torch.from_numpy(emb).to(self.device)[None])[0].float().cpu().numpy()
            pooled = pooled.astype(np.float64)
            if self.check_finite:
                checks.check_finite(pooled, self.checkpoint, source)
        else:
            raw = self.predict_chunks(feats, starts)
        if self.check_finite:
            checks.check_finite(raw, self.checkpoint, source)
        flags: set[str] = set()
        start_s = starts / self.frames_per_second
        grid = np.arange(0.0, max(duration, 1.0 / CURVE_HZ) - 1e-9, 1.0 / CURVE_HZ)
        centres = start_s + np.minimum(valid, self.chunk_frames) / self.frames_per_second / 2.0
        p_val = p_aro = None
        if self.mode == "static":
            va = self.scale.from_unit(np.asarray(raw[:, :2], dtype=np.float64))  # [N, 2] on the labels' scale
            va, clipped = checks.clip_to_scale(va, self.scale)  # each chunk onto the declared scale
            if self.pool is not None:
                song_pool, clipped_pool = checks.clip_to_scale(self.scale.from_unit(pooled[0, :2]), self.scale)
                clipped = clipped or clipped_pool
            if clipped:
                flags.add("clipped")
            song = song_pool if self.pool is not None else va.mean(axis=0)
            curve = np.stack([np.interp(grid, centres, va[:, d]) for d in range(2)], axis=1)
            song_scale = curve_scale = self.scale.name
            quadrant = _quadrant(song, self.scale.midpoint)
        elif self.mode == "quadrant":
            probs, axes = quadrant_probabilities(raw, self.quadrant_head)  # [N, 4] or None, [N, 2]
            if self.pool is not None:  # the linear song head: its own probabilities ([1, 4] or None, [1, 2])
                song_probs, song_axes = quadrant_probabilities(pooled, self.pool.task)
                song, song_probs = song_axes[0], None if song_probs is None else song_probs[0]
            else:
                song, song_probs = axes.mean(axis=0), None if probs is None else probs.mean(axis=0)
            p_val, p_aro = float(song[0]), float(song[1])
            quadrant = _quadrant(song, 0.5) if song_probs is None else int(np.argmax(song_probs)) + 1
            curve = np.stack([np.interp(grid, centres, axes[:, d]) for d in range(2)], axis=1)
            song_scale = curve_scale = QUADRANT_SCALE
        else:
            curve, clipped = checks.clip_to_scale(dynamic_curve(raw, start_s, self.chunk_seconds, grid), DYNAMIC)
            if clipped:
                flags.add("clipped")
            song = np.nanmean(curve, axis=0)
            song_scale = curve_scale = DYNAMIC.name
            quadrant = _quadrant(song, DYNAMIC.midpoint)
        if checks.is_short(duration, self.chunk_seconds):
            flags.add("short")
        shift = checks.feature_shift(feats) if self.norm is not None and n_frames > 0 else None
        if checks.is_out_of_distribution(shift):
            flags.add("out_of_distribution")
        return SongPrediction(source=source, duration_s=float(duration), valence=float(song[0]),
                              arousal=float(song[1]), song_scale=song_scale, curve_times_s=grid,
                              curve_valence=curve[:, 0], curve_arousal=curve[:, 1], curve_scale=curve_scale,
                              n_chunks=int(len(starts)), pooling=self.pooling, quadrant=quadrant,
                              p_valence_positive=p_val, p_arousal_high=p_aro, flags=checks.ordered(flags),
                              feature_shift_z=shift)

    def predict_wave(self, wave: np.ndarray | torch.Tensor, source: str = "") -> SongPrediction:
        """``wave [C, T]`` float32 in [-1, 1] at ``self.sample_rate`` Hz -> :class:`SongPrediction`."""
        n_samples = int(np.shape(wave)[-1])
        pred = self.predict_features(self.features(wave), source=source, duration_s=n_samples / self.sample_rate)
        if checks.is_silent(wave):
            pred.flags = checks.ordered([*pred.flags, "silent"])
        return pred

    def predict_file(self, path: str | Path) -> SongPrediction:
        """Decode any mp3/wav/flac/ogg (any rate/channels) and predict; AudioDecodeError if unreadable."""
        wave = load_audio(path, target_sr=self.sample_rate, mono=True)
        return self.predict_wave(wave, source=str(path))


def _quadrant(song: np.ndarray, midpoint: float) -> int:
    """Quadrant 1..4 of a song's (valence, arousal) around ``midpoint``; 0 when a value is not finite."""
    return int(quadrant_of(song[0], song[1], midpoint)) if np.isfinite(song[:2]).all() else 0


def dynamic_curve(raw: np.ndarray, start_s: np.ndarray, chunk_seconds: float, grid: np.ndarray) -> np.ndarray:
    """Average the per-chunk 2 Hz predictions ``raw [N, 2K]`` (pairs (valence, arousal) at
    ``start + k / 2`` s, k < K) onto ``grid`` (2 Hz, s) -> ``[len(grid), 2]`` on [-1, 1].
    Grid points no chunk covers (none, normally) take the nearest covered value."""
    n = raw.shape[0]
    k = raw.shape[1] // 2
    per = raw.reshape(n, k, 2)
    acc = np.zeros((len(grid), 2))
    cnt = np.zeros(len(grid))
    for i in range(n):
        idx = np.rint((start_s[i] + np.arange(k) / CURVE_HZ) * CURVE_HZ).astype(np.int64)
        ok = (idx >= 0) & (idx < len(grid))
        np.add.at(acc, idx[ok], per[i][ok])
        np.add.at(cnt, idx[ok], 1.0)
    covered = cnt > 0
    curve = np.full((len(grid), 2), np.nan)
    curve[covered] = acc[covered] / cnt[covered, None]
    if covered.any() and not covered.all():
        for d in range(2):
            curve[~covered, d] = np.interp(grid[~covered], grid[covered], curve[covered, d])
    return curve


def run_chunking(config: Config) -> tuple[float, float | None]:
    """``(chunk_seconds, eval hop_seconds or None)`` of a run's config: the hop the training loop
    validates with, so ``evaluate`` reproduces its song-level numbers (None = ``chunk_seconds``)."""
    hop = config.chunks.eval_hop_seconds
    return float(config.chunks.chunk_seconds), (float(hop) if hop else None)
