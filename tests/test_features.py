"""LogMel agrees with librosa; shapes; batch == per item; NormStats; FeatureConfig keys."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deam_mamba.config import FeatureConfig
from deam_mamba.core.errors import ConfigError
from deam_mamba.features.logmel import LogMel, NormStats, compute_norm_stats

librosa = pytest.importorskip("librosa")


def _wave(seconds: float, sr: int = 16_000, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A music-like test signal: chirp + harmonics + noise with a fade, ``[C, T]`` float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    out = []
    for c in range(channels):
        f0 = 110.0 * (1 + c) * (1 + t / max(seconds, 1e-3))
        sig = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / sr) / k for k in range(1, 6))
        sig = 0.2 * sig * np.linspace(0.1, 1.0, t.size) + 0.01 * rng.standard_normal(t.size)
        out.append(sig)
    return np.stack(out).astype(np.float32)


def _librosa_db(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
        fmin=cfg.fmin, fmax=cfg.fmax, center=True, pad_mode=cfg.pad_mode, power=2.0,
    )
    return librosa.power_to_db(mel, ref=1.0, amin=cfg.amin, top_db=cfg.top_db)


@pytest.mark.parametrize(
    "cfg",
    [
        FeatureConfig(),
        FeatureConfig(top_db=None),
        FeatureConfig(n_mels=64, fmin=20.0, fmax=None, pad_mode="constant"),
        FeatureConfig(sample_rate=22_050, n_fft=2048, hop_length=512, n_mels=96, fmax=11_025.0),
    ],
    ids=["default", "no_top_db", "mel64_constant", "sr22050"],
)
def test_logmel_matches_librosa_within_0p1_db(cfg: FeatureConfig) -> None:
    y = _wave(3.3, sr=cfg.sample_rate)[0]
    ref = _librosa_db(y, cfg)
    got = LogMel(cfg)(torch.from_numpy(y)).numpy()
    assert got.shape == ref.shape == (cfg.n_mels, cfg.n_frames(y.size))
    assert np.abs(got - ref).max() < 0.1
    # a sharper check: dB values agree far below the 0.1 dB budget where the signal is above the floor
    assert np.abs(got - ref).max() < 1e-2


def test_multichannel_top_db_is_per_clip_like_librosa() -> None:
    cfg = FeatureConfig(top_db=40.0)
    y = _wave(2.0, channels=2)
    y[1] *= 0.01  # 40 dB quieter channel: the floor is set by the loud channel
    ref = _librosa_db(y, cfg)  # librosa: one max over the whole multichannel array
    got = LogMel(cfg)(torch.from_numpy(y)).numpy()
    assert got.shape == (2, cfg.n_mels, cfg.n_frames(y.shape[-1]))
    np.testing.assert_allclose(got, ref, atol=1e-2)


def test_shapes_and_batch_equals_per_item() -> None:
    cfg = FeatureConfig()
    lm = LogMel(cfg, block_frames=37)  # odd block size: block edges must not show
    batch = torch.from_numpy(np.stack([_wave(1.5, seed=s, channels=2) for s in range(3)]))  # [3, 2, T]
    out = lm(batch)
    frames = cfg.n_frames(batch.shape[-1])
    assert out.shape == (3, 2, cfg.n_mels, frames) and out.dtype == torch.float32
    for b in range(3):
        torch.testing.assert_close(out[b], lm(batch[b]), rtol=0, atol=1e-4)  # [C, T] keeps C
    torch.testing.assert_close(out[0, :1], lm(batch[0, :1]))
    single = lm(batch[0, 0])  # [T] -> [n_mels, frames]
    assert single.shape == (cfg.n_mels, frames)
    # same numbers in inference mode, and with 1 (serial) or 2 (threaded blocks) torch threads
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.inference_mode():
                torch.testing.assert_close(lm(batch), out, rtol=0, atol=1e-4)
            assert torch.get_num_threads() == n  # restored after the threaded section
    finally:
        torch.set_num_threads(threads)
    # reused per-thread buffers made inside inference mode still work outside it
    lm_inf = LogMel(cfg, block_frames=41)
    with torch.inference_mode():
        first = lm_inf(batch)
    torch.testing.assert_close(lm_inf(batch), first, rtol=0, atol=0)
    torch.testing.assert_close(first, out, rtol=0, atol=1e-4)
    # the blocked CPU path and the vectorised (GPU) path agree
    flat = batch.reshape(-1, batch.shape[-1])
    a = lm._logmel_blocked(flat, per_item=2)
    v = lm._power_to_db(lm._mel_power_vectorised(flat))
    lm._apply_top_db(v, v.reshape(v.shape[0], -1).amax(dim=1), per_item=2)
    torch.testing.assert_close(a, v, rtol=0, atol=1e-3)
    torch.testing.assert_close(a.reshape(out.shape), out, rtol=0, atol=1e-4)


def test_logmel_rejects_bad_input() -> None:
    lm = LogMel()
    with pytest.raises(ValueError, match="expects"):
        lm(torch.zeros(1, 1, 1, 4000))
    with pytest.raises(ValueError, match="samples"):
        lm(torch.zeros(100))


def test_logmel_device_follows_input_module_moves() -> None:
    lm = LogMel().to("cpu")
    x = torch.from_numpy(_wave(0.5))
    assert lm(x).device == x.device
    if torch.cuda.is_available():  # not on the CPU box; runs where a GPU is lent
        torch.testing.assert_close(lm(x.cuda()).cpu(), lm(x), rtol=0, atol=1e-2)


def test_feature_config_validation_dict_and_key() -> None:
    cfg = FeatureConfig()
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.key() == FeatureConfig().key()
    assert cfg.key() != FeatureConfig(n_mels=64).key()
    assert cfg.key() != FeatureConfig(top_db=None).key()
    assert cfg.frames_per_second == 100.0 and cfg.n_frames(16_000) == 101
    for bad in (dict(n_mels=32), dict(n_mels=256), dict(fmax=9000.0), dict(hop_length=0), dict(top_db=-1.0),
                dict(pad_mode="wrap"), dict(fmin=8000.0)):
        with pytest.raises(ConfigError):
            FeatureConfig(**bad)
    with pytest.raises(ConfigError, match="unknown"):
        FeatureConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_norm_stats_streaming_equals_concatenated() -> None:
    rng = np.random.default_rng(1)
    arrays = [(rng.standard_normal((64, n)) * 7 - 40 + np.arange(64)[:, None]).astype(np.float16)
              for n in (120, 5, 300, 0, 77)]
    stats = compute_norm_stats(iter(arrays))
    cat = np.concatenate([a.astype(np.float64) for a in arrays], axis=1)
    np.testing.assert_allclose(stats.mean, cat.mean(axis=1), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(stats.std, cat.std(axis=1), rtol=1e-5)
    assert stats.count == cat.shape[1]
    z = stats.apply(cat)
    np.testing.assert_allclose(z.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=1), 1, atol=1e-4)
    zt = stats.apply(torch.from_numpy(cat.astype(np.float32))[None, None])  # [1, 1, n_mels, frames]
    np.testing.assert_allclose(zt[0, 0].numpy(), z, atol=1e-4)
    again = NormStats.from_dict(stats.to_dict())
    np.testing.assert_array_equal(again.mean, stats.mean)
    np.testing.assert_array_equal(again.std, stats.std)
    with pytest.raises(ValueError):
        stats.apply(np.zeros((128, 10)))
    with pytest.raises(ValueError, match="no frames"):
        compute_norm_stats([])
    with pytest.raises(ConfigError):
        NormStats.from_dict({"mean": [0.0]})
