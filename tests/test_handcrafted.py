"""Handcrafted-feature baseline: features on synthetic audio, parallel extraction with failures, the SVM."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold

from deam_mamba.core.errors import LabelError
from deam_mamba.core.scales import quadrant_of
from deam_mamba.data.audio import load_audio
from deam_mamba.evaluation.handcrafted import (
    extract_many,
    fit_predict_svm,
    handcrafted_feature_names,
    handcrafted_features,
    ovo_axis_scores,
    svm_classifier,
)
from deam_mamba.evaluation.quadrants import quadrant_metrics

SR = 22050
D = 152


def _tone(seconds: float = 2.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _duration(wave: np.ndarray, sr: int) -> np.ndarray:
    """A module-level feature function (picklable) for extract_many."""
    return np.array([wave.shape[0] / sr, float(np.abs(wave).max())], dtype=np.float32)


def test_feature_names():
    names = handcrafted_feature_names()
    assert len(names) == D and len(set(names)) == D
    assert names[:3] == ["mfcc_00_mean", "mfcc_00_std", "mfcc_01_mean"]
    assert names[-4:] == ["onset_strength_mean", "onset_strength_std", "onset_strength_skew", "tempo_bpm"]
    assert "chroma_A_mean" in names and "tonnetz_5_std" in names and "mfcc_delta_19_std" in names


def test_features_of_a_tone_followed_by_silence():
    wave = np.concatenate([_tone(2.0), np.zeros(SR, dtype=np.float32)])
    f = handcrafted_features(wave, SR)
    assert f.shape == (D,) and f.dtype == np.float32 and np.isfinite(f).all()
    x = dict(zip(handcrafted_feature_names(), f.tolist(), strict=True))
    chroma = {k: v for k, v in x.items() if k.startswith("chroma_") and k.endswith("_mean")}
    assert max(chroma, key=chroma.get) == "chroma_A_mean"  # 440 Hz is an A
    assert 250.0 < x["centroid_hz_mean"] < 460.0  # tone frames ~446 Hz, silent frames 0
    assert x["rms_mean"] == pytest.approx(0.5 / np.sqrt(2) * 2 / 3, rel=0.1)  # 2 s of RMS 0.354, 1 s of 0
    assert x["rms_skew"] < 0  # mostly loud frames, a tail of silent ones


def test_silence_and_very_short_inputs_are_finite():
    silent = handcrafted_features(np.zeros(2 * SR, dtype=np.float32), SR)
    assert np.isfinite(silent).all()
    x = dict(zip(handcrafted_feature_names(), silent.tolist(), strict=True))
    assert x["rms_mean"] == 0.0 and x["rms_skew"] == 0.0 and x["centroid_hz_mean"] == 0.0
    for n in (1, 100, 2047):
        assert np.isfinite(handcrafted_features(_tone()[:n], SR)).all()
    with pytest.raises(ValueError, match="non-empty mono"):
        handcrafted_features(np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(ValueError, match="non-empty mono"):
        handcrafted_features(np.zeros((2, 100), dtype=np.float32), SR)


def test_extract_many_reports_failures_and_keeps_order(tmp_path):
    tone, silent, broken = tmp_path / "tone.wav", tmp_path / "silent.wav", tmp_path / "broken.wav"
    sf.write(tone, _tone(1.0), SR)
    sf.write(silent, np.zeros(SR // 2, dtype=np.float32), SR)
    broken.write_bytes(b"RIFF not really a wave file")
    X, failures = extract_many([tone, broken, silent], sr=SR, workers=2, progress=False)
    assert X.shape == (3, D) and X.dtype == np.float32
    assert np.isnan(X[1]).all() and np.isfinite(X[[0, 2]]).all()
    assert [p for p, _ in failures] == [str(broken)]
    assert "AudioDecodeError" in failures[0][1]
    # same values as in-process (up to BLAS summation order: workers run one thread)
    np.testing.assert_allclose(X[0], handcrafted_features(load_audio(tone, target_sr=SR)[0], SR), rtol=1e-4, atol=1e-4)
    # any module-level feature function; in-process when workers=1
    Y, fails = extract_many([silent, tone], sr=SR, workers=1, progress=False, features=_duration)
    assert Y.tolist() == [[0.5, 0.0], [1.0, pytest.approx(0.5, abs=0.01)]] and fails == []


def test_ovo_axis_scores_by_hand():
    # pairs over classes [1, 2, 3, 4]: (Q1,Q2) (Q1,Q3) (Q1,Q4) (Q2,Q3) (Q2,Q4) (Q3,Q4); positive favours the first
    d = np.array([[2.0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0], [0, 0, 0, 0, 0, -3.0]])
    v, a = ovo_axis_scores(d, [1, 2, 3, 4])
    assert v.tolist() == [2.0, 1.0, 3.0]  # Q1 vs Q2 crosses valence only; Q3 vs Q4 favouring Q4: +valence
    assert a.tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(LabelError, match="does not match"):
        ovo_axis_scores(np.zeros((2, 4)), [1, 2, 3, 4])


def test_svm_classifier_inner_cv():
    g = svm_classifier(seed=3)
    assert isinstance(g, GridSearchCV) and isinstance(g.cv, StratifiedGroupKFold) and g.cv.random_state == 3
    assert isinstance(svm_classifier(seed=3, grouped=False).cv, StratifiedKFold)
    svc = g.estimator.named_steps["svc"]
    assert svc.kernel == "rbf" and svc.class_weight == "balanced" and g.scoring == "f1_macro"


def test_fit_predict_svm_learns_quadrants_and_axis_scores():
    rng = np.random.default_rng(0)
    va = rng.uniform(-1, 1, size=(160, 2))
    q = quadrant_of(va[:, 0], va[:, 1], 0.0)
    X = np.c_[va, rng.normal(0, 1, size=(160, 3))]  # 2 informative + 3 noise features
    groups = np.arange(160) // 2
    r = fit_predict_svm(X[:120], q[:120], groups[:120], X[120:], seed=0)
    assert r.pred.dtype == np.int64 and set(r.pred.tolist()) <= {1, 2, 3, 4}
    m = quadrant_metrics(q[120:], r.pred, r.valence_score, r.arousal_score, bootstrap=0)
    assert m["accuracy"]["value"] >= 0.8
    assert m["valence_auc"]["value"] > 0.97 and m["arousal_auc"]["value"] > 0.97
    assert set(r.best_params) == {"C", "gamma"}
    again = fit_predict_svm(X[:120], q[:120], groups[:120], X[120:], seed=0)
    np.testing.assert_array_equal(again.valence_score, r.valence_score)
    with pytest.raises(ValueError, match="failed extraction"):
        fit_predict_svm(np.where(X[:120] > 2, np.nan, X[:120]), q[:120], None, X[120:])
    with pytest.raises(LabelError, match="expected X_train"):
        fit_predict_svm(X[:120], q[:100], None, X[120:])
