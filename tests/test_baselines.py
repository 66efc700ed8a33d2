"""Ridge baseline on mel statistics: feature extraction, fit/predict, cache integration."""
from __future__ import annotations

import numpy as np
import pytest

from deam_mamba.core.errors import CacheError, ConfigError, DeamError, LabelError
from deam_mamba.evaluation.baselines import (
    GLOBAL_STAT_NAMES,
    RidgeBaseline,
    fit_ridge_on_cache,
    mel_statistic_names,
    mel_statistics,
)
from deam_mamba.evaluation.metrics import ccc

N_MELS = 32


class FakeCache:
    """Stands in for ``FeatureCache``: ``features(id) -> [n_mels, frames] float16`` and ``static_label(id)``.

    Labels drive the spectrum: arousal raises the upper bands and the frame-to-frame flux,
    valence raises a low-mid band group; a random per-song tilt and noise are distractors.
    """

    def __init__(self, n: int = 120, seed: int = 0, dict_labels: bool = True):
        rng = np.random.default_rng(seed)
        self.ids = list(range(2, 2 + n))
        self._lab = {i: rng.uniform(1.5, 8.5, size=2) for i in self.ids}
        self._feat = {}
        bands = np.arange(N_MELS)[:, None]
        for i, (v, a) in self._lab.items():
            frames = int(rng.integers(150, 250))
            x = -55 + rng.normal(0, 2.0, size=(N_MELS, frames)) + rng.normal(0, 3.0) * (bands / N_MELS - 0.5)
            x[20:] += 1.5 * (a - 5)
            x[20:] += rng.normal(0, 0.4 * a, size=(N_MELS - 20, frames))  # busier when aroused
            x[5:11] += 1.2 * (v - 5)
            self._feat[i] = x.astype(np.float16)
        self.dict_labels = dict_labels

    def features(self, sid: int) -> np.ndarray:
        return self._feat[sid]

    def static_label(self, sid: int):
        v, a = self._lab[sid]
        if self.dict_labels:
            return {"valence_mean": v, "valence_std": 1.0, "arousal_mean": a, "arousal_std": 1.0}
        return np.array([v, a])


def test_mel_statistics_values():
    rng = np.random.default_rng(0)
    x = rng.normal(-40, 5, size=(N_MELS, 100))
    s = mel_statistics(x.astype(np.float16))
    assert s.shape == (2 * N_MELS + len(GLOBAL_STAT_NAMES),) == (len(mel_statistic_names(N_MELS)),)
    x16 = x.astype(np.float16).astype(np.float64)
    np.testing.assert_allclose(s[:N_MELS], x16.mean(1))
    np.testing.assert_allclose(s[N_MELS:2 * N_MELS], x16.std(1))
    g = dict(zip(GLOBAL_STAT_NAMES, s[2 * N_MELS:]))
    assert g["energy_mean"] == pytest.approx(x16.mean())
    assert 0.0 <= g["centroid_mean"] <= 1.0
    # a steady spectrum has no flux; a dB offset changes level stats only
    steady = np.tile(rng.normal(-40, 5, size=(N_MELS, 1)), (1, 50))
    gs = dict(zip(GLOBAL_STAT_NAMES, mel_statistics(steady)[2 * N_MELS:]))
    assert gs["flux_mean"] == 0.0 and gs["band_delta_std"] == 0.0
    assert gs["energy_std"] == pytest.approx(0.0, abs=1e-9)
    shifted = mel_statistics(steady + 20.0)
    np.testing.assert_allclose(shifted[:N_MELS], mel_statistics(steady)[:N_MELS] + 20.0)
    assert shifted[2 * N_MELS + 5] == pytest.approx(gs["centroid_mean"])
    # brighter spectrum -> higher centroid
    bright = steady + np.linspace(0, 30, N_MELS)[:, None]
    assert dict(zip(GLOBAL_STAT_NAMES, mel_statistics(bright)[2 * N_MELS:]))["centroid_mean"] > gs["centroid_mean"]
    assert np.isfinite(mel_statistics(x[:, :1])).all()  # one frame is fine
    with pytest.raises(ValueError, match="shape"):
        mel_statistics(np.zeros(10))
    with pytest.raises(ValueError, match="non-finite"):
        mel_statistics(np.full((4, 4), np.nan))


def test_ridge_learns_and_shuffled_labels_do_not():
    cache = FakeCache(n=120, seed=0)
    train, test = cache.ids[:80], cache.ids[80:]
    model, pred = fit_ridge_on_cache(cache, train, test)
    assert pred.shape == (40, 2)
    truth = np.array([cache._lab[i] for i in test])
    c = ccc(truth, pred)
    assert (c > 0.8).all(), c
    assert model.alpha_.shape == (2,)
    # control: the same features with labels shuffled across songs carry no signal
    rng = np.random.default_rng(1)
    perm = rng.permutation(train)
    X = np.stack([mel_statistics(cache.features(i)) for i in train])
    y = np.array([cache._lab[i] for i in perm])
    ctrl = RidgeBaseline().fit(X, y).predict(np.stack([mel_statistics(cache.features(i)) for i in test]))
    assert (ccc(truth, ctrl) < 0.4).all()


def test_ridge_deterministic_and_array_labels():
    a = fit_ridge_on_cache(FakeCache(n=40, seed=3), list(range(2, 32)), list(range(32, 42)))[1]
    b = fit_ridge_on_cache(FakeCache(n=40, seed=3, dict_labels=False), list(range(2, 32)), list(range(32, 42)))[1]
    np.testing.assert_array_equal(a, b)


def test_ridge_errors():
    cache = FakeCache(n=20, seed=0)
    with pytest.raises(ConfigError, match="both"):
        fit_ridge_on_cache(cache, cache.ids[:12], cache.ids[10:])
    cache._feat[5] = np.full((N_MELS, 10), np.inf, dtype=np.float16)
    with pytest.raises(CacheError, match="song 5"):
        fit_ridge_on_cache(cache, cache.ids[:12], cache.ids[12:])
    cache = FakeCache(n=20, seed=0)
    cache._lab[4] = np.array([np.nan, 3.0])
    with pytest.raises(LabelError, match="song 4"):
        fit_ridge_on_cache(cache, cache.ids[:12], cache.ids[12:])
    with pytest.raises(DeamError, match="not fitted"):
        RidgeBaseline().predict(np.zeros((2, 3)))
    with pytest.raises(LabelError, match="at least 3"):
        RidgeBaseline().fit(np.zeros((2, 3)), np.zeros((2, 2)))
    m = RidgeBaseline(clip=(1.0, 9.0)).fit(np.arange(12.0).reshape(6, 2), np.arange(12.0).reshape(6, 2))
    assert m.predict(np.array([[100.0, 100.0]])).max() <= 9.0
    with pytest.raises(LabelError, match=r"\[M, 2\]"):
        m.predict(np.zeros((1, 3)))


@pytest.fixture(scope="module")
def real_cache(synth_corpus, tmp_path_factory):
    """A real ``FeatureCache`` built from the session's synthetic corpus (small, cheap config)."""
    from deam_mamba.config import FeatureConfig
    from deam_mamba.features import cache as cache_mod
    from deam_mamba.features.prepare import build_cache

    out = tmp_path_factory.mktemp("ridge_cache")
    build_cache(synth_corpus, out, FeatureConfig(n_mels=64, hop_length=320), workers=0, progress=False)
    return cache_mod.FeatureCache(out)


@pytest.mark.slow
def test_ridge_on_real_cache_of_synthetic_corpus(real_cache):
    from deam_mamba.data.deam import DEAMHandler

    ids = real_cache.ids
    test = ids[::3]
    train = [i for i in ids if i not in test]
    model, pred = fit_ridge_on_cache(real_cache, train, test)
    assert pred.shape == (len(test), 2) and np.isfinite(pred).all()
    assert model.n_features_ == 2 * 64 + len(GLOBAL_STAT_NAMES)
    # labels come from the cache without audio, and agree with the dataset's CSVs
    handler = DEAMHandler(real_cache.index["data_root"])
    lab = handler.static_labels(test[0])
    truth = np.array([[real_cache.static_label(i)["valence_mean"], real_cache.static_label(i)["arousal_mean"]]
                      for i in test])
    assert truth[0].tolist() == pytest.approx([lab["valence_mean"], lab["arousal_mean"]])
    # the synthetic music carries its emotion in the spectrum: ridge beats predicting the training mean
    y_tr = np.array([[real_cache.static_label(i)["valence_mean"], real_cache.static_label(i)["arousal_mean"]]
                     for i in train])
    err_ridge = np.sqrt(((pred - truth) ** 2).mean(0))
    err_mean = np.sqrt(((y_tr.mean(0) - truth) ** 2).mean(0))
    assert (err_ridge < err_mean).all()
