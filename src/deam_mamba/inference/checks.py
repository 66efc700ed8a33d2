"""The rules that flag a prediction the user should not take at face value (one home for each).

A :class:`~deam_mamba.inference.predictor.SongPrediction` carries ``flags``, a list of these names in
the order of :data:`FLAGS`; ``predict`` writes them as a column and logs one warning per flagged file:

* ``clipped``: the model's song value or curve left the declared scale (e.g. below 1 on 1-9) and was
  clipped onto it (:func:`clip_to_scale`).
* ``silent``: the input is digital silence or its RMS is below :data:`SILENCE_DBFS` (:func:`is_silent`).
* ``short``: the input is shorter than one chunk, so the model saw it padded with silence (:func:`is_short`).
* ``out_of_distribution``: the song's log-mel, normalised with the run's training statistics, sits far from
  them: the mean over bands of ``|per-band mean z-score|`` exceeds :data:`OOD_MEAN_ABS_Z`
  (:func:`feature_shift`).

Non-finite model outputs are not a flag but an error (:func:`check_finite`).
"""
from __future__ import annotations

import numpy as np
import torch

from deam_mamba.core.errors import CheckpointError
from deam_mamba.core.scales import Scale

FLAGS = ("clipped", "silent", "short", "out_of_distribution")

# RMS (over all samples, mono mix) in dB relative to full scale below which an input counts as silent.
# Mastered music sits around -20..-8 dBFS RMS and even quiet classical passages rarely average below
# -40 dBFS; -60 dBFS is the hiss/dither floor of a 16-bit recording's pauses, i.e. nothing audible.
SILENCE_DBFS = -60.0

# Mean over mel bands of |mean z-score of the band over the song| (z: the run's training NormStats).
# A song from the training distribution has per-band means within about one training std of the
# training means (the training std includes the spread between songs). Measured with the tiny test run on
# the synthetic corpus (tests/test_faults.py): its 19 training/validation/test songs give 0.10-1.53, white
# noise at -20 dBFS 1.40, 10 s pure tones (440 Hz, 1 kHz) 2.67-2.70 (most bands at the song's -80 dB floor),
# digital silence 6.3. Above 2.0 the features are far outside anything the model was trained on.
OOD_MEAN_ABS_Z = 2.0

FLAG_TEXT = {
    "clipped": "the model's prediction left the scale and was clipped onto it",
    "silent": f"the input is silent (RMS below {SILENCE_DBFS:g} dBFS)",
    "short": "the input is shorter than one chunk and was padded with silence",
    "out_of_distribution": (f"the input's log-mel statistics are far outside the training data "
                            f"(mean |z| over bands above {OOD_MEAN_ABS_Z:g})"),
}


def ordered(flags: set[str] | list[str]) -> list[str]:
    """``flags`` in the canonical order of :data:`FLAGS`."""
    return [f for f in FLAGS if f in set(flags)]


def describe(flags: list[str]) -> str:
    """One human line for a prediction's flags ("" when none)."""
    return "; ".join(FLAG_TEXT[f] for f in flags)


def rms_dbfs(wave: np.ndarray | torch.Tensor) -> float:
    """RMS level of ``wave [C, T]`` or ``[T]`` in [-1, 1] (mono mix), in dB full scale; ``-inf`` for digital silence."""
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim > 1:
        x = x.mean(axis=0)
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def is_silent(wave: np.ndarray | torch.Tensor) -> bool:
    """True for digital silence or an RMS below :data:`SILENCE_DBFS`."""
    return rms_dbfs(wave) < SILENCE_DBFS


def is_short(duration_s: float, chunk_seconds: float) -> bool:
    """True if a song of ``duration_s`` is shorter than one chunk (the model then sees it padded)."""
    return float(duration_s) < float(chunk_seconds) - 1e-6


def feature_shift(feats: torch.Tensor) -> float:
    """Mean over bands of ``|mean over frames|`` of normalised log-mel ``feats [n_mels, F]`` (z-scores
    against the run's training NormStats): 0 at the training mean."""
    return float(feats.double().mean(dim=-1).abs().mean())


def is_out_of_distribution(shift: float | None) -> bool:
    """True if :func:`feature_shift` exceeds :data:`OOD_MEAN_ABS_Z` (``None``: no training statistics, never)."""
    return shift is not None and shift > OOD_MEAN_ABS_Z


def clip_to_scale(values: np.ndarray, scale: Scale) -> tuple[np.ndarray, bool]:
    """``values`` clipped onto ``[scale.lo, scale.hi]`` and whether any finite value was outside."""
    arr = np.asarray(values, dtype=np.float64)
    outside = bool(np.any((arr < scale.lo) | (arr > scale.hi)))
    return np.clip(arr, scale.lo, scale.hi), outside


def check_finite(raw: np.ndarray, checkpoint: str | None, source: str) -> None:
    """Refuse non-finite model outputs: a :class:`CheckpointError` naming the checkpoint and the input."""
    if not np.all(np.isfinite(np.asarray(raw, dtype=np.float64))):
        raise CheckpointError(
            f"{checkpoint or 'the model'} gives non-finite outputs (NaN or inf) for {source or 'an input'}: its "
            "weights are damaged or its training diverged; re-train or restore the checkpoint")
