"""Is a (synthetic) corpus learnable but not trivial? Ridge on a few librosa features.

Per song (16 kHz mono): mean RMS (dB), mean spectral centroid (Hz), onset rate (1/s), and
chroma summarised key-invariantly (the 6 interval-class co-occurrences of the chroma frames,
plus chroma flatness). A standardised ridge regression predicts the static valence/arousal
means on held-out songs (k-fold out-of-fold predictions); each scalar feature's Pearson r with
each label is reported too. Used by ``tests/test_synth.py`` and ``bench/bench_synth.py``.
"""
from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from deam_mamba.data.audio import load_audio
from deam_mamba.data.deam import DEAMHandler

log = logging.getLogger(__name__)

SR = 16_000
FEATURE_NAMES = ["rms_db", "centroid_hz", "onset_rate"] + [f"chroma_ic{s}" for s in range(1, 7)] + [
    "chroma_flatness"
]


def song_features(wave: np.ndarray, sr: int = SR) -> np.ndarray:
    """``wave [T]`` float32 mono at ``sr`` Hz -> feature vector ``[len(FEATURE_NAMES)]``."""
    import librosa  # lazy: heavy, only the learnability check needs it

    rms = librosa.feature.rms(y=wave, frame_length=2048, hop_length=512)[0]
    rms_db = 20.0 * np.log10(np.mean(rms) + 1e-8)
    centroid = float(np.mean(librosa.feature.spectral_centroid(y=wave, sr=sr, hop_length=512)))
    onsets = librosa.onset.onset_detect(y=wave, sr=sr, hop_length=512, units="time")
    onset_rate = len(onsets) / (wave.size / sr)
    chroma = librosa.feature.chroma_stft(y=wave, sr=sr, hop_length=512)  # [12, frames]
    chroma = chroma / (np.linalg.norm(chroma, axis=0, keepdims=True) + 1e-8)
    ics = [float(np.mean(np.sum(chroma * np.roll(chroma, s, axis=0), axis=0))) for s in range(1, 7)]
    flat = float(np.mean(np.exp(np.mean(np.log(chroma + 1e-6), axis=0)) / (np.mean(chroma, axis=0) + 1e-8)))
    return np.array([rms_db, centroid, onset_rate, *ics, flat], dtype=np.float64)


def _features_of(path: str) -> np.ndarray:
    return song_features(load_audio(path, SR, mono=True)[0], SR)


def corpus_features(root: str | Path, workers: int = 1) -> tuple[list[int], np.ndarray, np.ndarray]:
    """``(ids, X [N, F], Y [N, 2])`` for every song of a DEAM-layout root; Y = static (valence, arousal)."""
    h = DEAMHandler(root=root)
    ids = list(h.ids)
    paths = [str(h.audio_path(i)) for i in ids]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            feats = list(pool.map(_features_of, paths, chunksize=4))
    else:
        feats = [_features_of(p) for p in paths]
    labels = [h.static_labels(i) for i in ids]
    y = np.array([[lab["valence_mean"], lab["arousal_mean"]] for lab in labels], dtype=np.float64)
    return ids, np.stack(feats), y


def learnability(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> dict:
    """Held-out R² of a standardised RidgeCV per label and each feature's Pearson r with each label."""
    from sklearn.linear_model import RidgeCV  # lazy: scikit-learn is heavy to import
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out: dict = {"n_songs": len(y), "features": FEATURE_NAMES, "ridge_r2": {}, "feature_r": {}}
    cv = KFold(n_splits=min(folds, len(y)), shuffle=True, random_state=seed)
    for j, name in enumerate(("valence", "arousal")):
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 12)))
        pred = cross_val_predict(model, x, y[:, j], cv=cv)
        out["ridge_r2"][name] = float(r2_score(y[:, j], pred))
        out["feature_r"][name] = {
            f: float(np.corrcoef(x[:, k], y[:, j])[0, 1]) if np.std(x[:, k]) > 0 else 0.0
            for k, f in enumerate(FEATURE_NAMES)
        }
    out["max_abs_feature_r"] = float(max(abs(r) for d in out["feature_r"].values() for r in d.values()))
    return out
