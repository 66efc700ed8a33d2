"""The Python API: ``deam_mamba.load(RUN_DIR)`` -> :class:`EmotionModel` with ``predict`` and ``embed``.

A thin layer over :class:`deam_mamba.inference.predictor.Predictor` (one prediction path for the CLI, the
web page and programs); it adds in-memory audio (numpy arrays or tensors at any rate) and embeddings::

    import deam_mamba
    model = deam_mamba.load("runs/my_run")              # best checkpoint, CPU
    pred = model.predict("song.mp3")                    # SongPrediction: valence, arousal, quadrant, curves
    pred = model.predict(wave, sr=44100)                # wave [T] or [C, T] float in [-1, 1]
    emb = model.embed("song.mp3")                       # Embedding: song [D], chunks [N, D], chunk_starts_s [N]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deam_mamba.data.audio import load_audio, wave_from_array
from deam_mamba.inference.predictor import Predictor, SongPrediction

AudioInput = Any  # a path (str | Path), or an array / tensor [T] or [C, T] with sr


@dataclass
class Embedding:
    """One song's embeddings from the backbone's ``forward_features`` (the pooled features the head sees).

    ``song [D]`` is the mean of ``chunks [N, D]`` (one row per chunk of ``chunk_seconds`` starting at
    ``chunk_starts_s [N]`` seconds; the chunking of :meth:`EmotionModel.predict`)."""

    source: str
    song: np.ndarray
    chunks: np.ndarray
    chunk_starts_s: np.ndarray
    chunk_seconds: float

    @property
    def dim(self) -> int:
        return int(self.song.shape[0])


class EmotionModel:
    """A trained run ready for use from Python; build it with :func:`load`.

    ``sample_rate`` is the run's rate (arrays at another ``sr`` are resampled); ``mode`` is ``static``
    (valence/arousal on the labels' scale), ``dynamic`` ([-1, 1]) or ``quadrant`` (probabilities)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @property
    def sample_rate(self) -> int:
        return self.predictor.sample_rate

    @property
    def mode(self) -> str:
        return self.predictor.mode

    @property
    def run_dir(self) -> str | None:
        return self.predictor.run_dir

    @property
    def chunk_seconds(self) -> float:
        return self.predictor.chunk_seconds

    def __repr__(self) -> str:
        return (f"EmotionModel(run_dir={self.run_dir!r}, mode={self.mode!r}, sample_rate={self.sample_rate}, "
                f"chunk_seconds={self.chunk_seconds}, pooling={self.predictor.pooling!r})")

    def _wave(self, audio: AudioInput, sr: int | None) -> tuple[np.ndarray, str]:
        """``(wave [1, T] float32 at the run's rate, source name)``."""
        if isinstance(audio, (str, Path)):
            return load_audio(audio, target_sr=self.sample_rate, mono=True), str(audio)
        return wave_from_array(audio, sr, self.sample_rate, mono=True), "<array>"

    def predict(self, audio: AudioInput, sr: int | None = None) -> SongPrediction:
        """Song values, quadrant and 2 Hz curves of a file (any format ``predict`` reads) or of an array
        ``[T]`` / ``[C, T]`` at ``sr`` Hz (required for arrays). See :class:`SongPrediction` for the scales."""
        wave, source = self._wave(audio, sr)
        return self.predictor.predict_wave(wave, source=source)

    def embed(self, audio: AudioInput, sr: int | None = None) -> Embedding:
        """Per-chunk and per-song embeddings (``forward_features``) of a file or an array at ``sr`` Hz."""
        wave, source = self._wave(audio, sr)
        chunks, starts = self.predictor.embed_wave(wave)
        return Embedding(source=source, song=chunks.mean(axis=0), chunks=chunks, chunk_starts_s=starts,
                         chunk_seconds=self.predictor.chunk_seconds)


def load(run_dir: str | Path, which: str = "best", device: str = "cpu", batch_size: int = 16,
         hop_seconds: float | None = None) -> EmotionModel:
    """Load a trained run folder (``which``: ``best`` or ``last`` checkpoint) for prediction and embeddings."""
    return EmotionModel(Predictor.from_run(run_dir, which=which, device=device, batch_size=batch_size,
                                           hop_seconds=hop_seconds))
