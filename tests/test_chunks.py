"""Chunk datasets: labels and masks against the handler, padding, song view, augmentation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from deam_mamba.config import FeatureConfig
from deam_mamba.core.errors import ConfigError, UnknownSongError
from deam_mamba.core.scales import LabelKind
from deam_mamba.data.deam import DEAMHandler
from deam_mamba.features.cache import FeatureCache
from deam_mamba.features.chunks import Augment, ChunkDataset, SongBatchSampler, chunk_starts
from deam_mamba.features.logmel import NormStats
from deam_mamba.features.prepare import build_cache


@pytest.fixture(scope="module")
def synth_cache(synth_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[DEAMHandler, FeatureCache]:
    handler = DEAMHandler(synth_corpus)
    out = tmp_path_factory.mktemp("chunk_cache")
    build_cache(handler, out, FeatureConfig(n_mels=64), workers=2, progress=False)
    return handler, FeatureCache(out)


class FakeCache:
    """In-memory stand-in for FeatureCache: one song per entry of ``frames``."""

    frames_per_second = 100.0
    label_kind = LabelKind.STATIC

    def __init__(self, frames: dict[int, int], n_mels: int = 64):
        rng = np.random.default_rng(0)
        self.arrays = {s: (rng.standard_normal((n_mels, n)) * 10 - 40).astype(np.float16) for s, n in frames.items()}

    def __contains__(self, sid: object) -> bool:
        return sid in self.arrays

    def features(self, sid: int) -> np.ndarray:
        return self.arrays[sid]

    def static_label(self, sid: int) -> dict[str, float]:
        return {"valence_mean": 3.0 + sid % 3, "valence_std": 1.0, "arousal_mean": 6.0, "arousal_std": 1.0}

    def quadrant(self, sid: int) -> int:
        return 1 if sid % 3 >= 2 else 2  # valence 3, 4, 5 around the midpoint 5; arousal 6 (high)

    def dynamic_labels(self, sid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dur = (self.arrays[sid].shape[1] - 1) / 100.0
        t = np.arange(15.0, dur + 1e-9, 0.5)
        return t, (0.01 * np.arange(t.size)).astype(np.float32), (-0.01 * np.arange(t.size)).astype(np.float32)


def test_chunk_labels_masks_and_features_match_handler(synth_cache) -> None:
    handler, cache = synth_cache
    ds = ChunkDataset(cache, cache.ids, chunk_seconds=5.0, hop_seconds=2.5)
    assert ds.k == 10 and ds.chunk_frames == 500
    n_masked = n_labelled = 0
    for sid in cache.ids:
        idx = ds.song_chunks(sid)
        n = cache.n_frames(sid)
        assert [ds.chunk_info(i)[1] for i in idx] == [s / 100 for s in chunk_starts(n, 500, 250, 50)]
        times, val, aro = handler.dynamic_labels(sid)
        label_at = {round(t * 2): (v, a) for t, v, a in zip(times, val, aro)}
        static = handler.static_labels(sid)
        for i in idx:
            item = ds[i]
            start = item["start_s"]
            assert item["song_id"] == sid and (start * 2).is_integer()
            np.testing.assert_allclose(item["y"].numpy(), [static["valence_mean"], static["arousal_mean"]], rtol=1e-6)
            f0 = int(round(start * 100))
            want = np.asarray(cache.features(sid), np.float32)[:, f0:f0 + 500]
            np.testing.assert_array_equal(item["x"][0].numpy(), want)
            for k in range(ds.k):
                g = int(start * 2) + k  # slot k is the time start + k/2
                if g in label_at:
                    assert item["y_dyn_mask"][k]
                    np.testing.assert_allclose(item["y_dyn"][k].numpy(), label_at[g], atol=1e-6)
                    n_labelled += 1
                else:
                    assert not item["y_dyn_mask"][k] and item["y_dyn"][k].abs().sum() == 0
                    n_masked += 1
        # the last chunk reaches the end of the song (no tail dropped)
        last = ds[idx[-1]]
        assert int(round(last["start_s"] * 100)) + 500 >= n - 50 or n <= 500
    assert n_labelled > 100 and n_masked > 100  # the first 15 s are masked, later slots labelled
    assert sorted(i for v in ds.song_index.values() for i in v) == list(range(len(ds)))


def test_short_song_padded_not_dropped_and_norm_applied() -> None:
    cache = FakeCache({1: 201, 2: 3001})  # 2 s and 30 s
    norm = NormStats(mean=np.full(64, -40.0), std=np.full(64, 10.0))
    ds = ChunkDataset(cache, [1, 2], chunk_seconds=3.0, norm=norm)
    assert ds.song_chunks(1) == [0]
    item = ds[0]
    assert item["x"].shape == (1, 64, 300) and item["valid_frames"] == 201
    np.testing.assert_allclose(item["x"][0, :, :201].numpy(), (cache.arrays[1].astype(np.float32) + 40) / 10, atol=1e-5)
    assert torch.all(item["x"][0, :, 201:] == 0)  # padded with the training mean
    assert not item["y_dyn_mask"].any()  # no annotation before 15 s
    starts = [ds[i]["start_s"] for i in ds.song_chunks(2)]
    assert starts == [0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0, 27.0]
    last = ds[ds.song_chunks(2)[-1]]
    assert last["y_dyn_mask"].all() and last["valid_frames"] == 300
    np.testing.assert_allclose(last["y_dyn"][:, 0].numpy(), 0.01 * (np.arange(6) + 24), atol=1e-6)


def test_validation_of_settings_and_ids() -> None:
    cache = FakeCache({1: 1000})
    for bad in (2.0, 11.0, 4.3):
        with pytest.raises(ConfigError, match="chunk_seconds"):
            ChunkDataset(cache, [1], chunk_seconds=bad)
    with pytest.raises(ConfigError, match="hop_seconds"):
        ChunkDataset(cache, [1], hop_seconds=0)
    with pytest.raises(UnknownSongError, match="99"):
        ChunkDataset(cache, [1, 99])
    with pytest.raises(ConfigError):
        Augment(p=2.0)


def test_augment_only_when_asked_seeded_and_per_epoch() -> None:
    cache = FakeCache({1: 2001, 2: 4001})
    plain = ChunkDataset(cache, [1, 2], chunk_seconds=4.0)
    raw = plain[1]["x"]
    assert torch.equal(plain[1]["x"], raw)  # no augmentation unless asked
    gain_only = ChunkDataset(cache, [1, 2], chunk_seconds=4.0,
                             augment=Augment(gain_db=6, time_masks=0, freq_masks=0, p=1))
    shift = gain_only[1]["x"] - raw
    assert 0 < shift.abs().max() <= 6 and torch.allclose(shift, shift.flatten()[0].expand_as(shift), atol=1e-4)
    masked = ChunkDataset(cache, [1, 2], chunk_seconds=4.0, augment=Augment(gain_db=0, time_mask_frames=30,
                                                                           freq_mask_bins=10, p=1), seed=3)
    a, b = masked[1]["x"], masked[1]["x"]
    assert torch.equal(a, b)  # seeded by (seed, epoch, index)
    assert not torch.equal(a, raw)
    changed = (a != raw)[0]
    assert changed.any(dim=0).sum() > 0 or changed.any(dim=1).sum() > 0
    masked.set_epoch(1)
    assert not torch.equal(masked[1]["x"], a)
    offs = ChunkDataset(cache, [1, 2], chunk_seconds=4.0, random_offset=True)
    starts = {offs[i]["start_s"] for i in range(len(offs))} | set()
    base = {plain[i]["start_s"] for i in range(len(plain))}
    assert starts != base and all((s * 2).is_integer() for s in starts)
    for i in range(len(offs)):
        item = offs[i]
        n = cache.arrays[item["song_id"]].shape[1]
        assert int(round(item["start_s"] * 100)) + 400 <= n
        t, v, _ = cache.dynamic_labels(item["song_id"])
        for k in np.flatnonzero(item["y_dyn_mask"].numpy()):
            np.testing.assert_allclose(item["y_dyn"][k, 0].item(), np.interp(item["start_s"] + k / 2, t, v), atol=1e-6)


def test_dataloader_batches_and_song_batch_sampler() -> None:
    cache = FakeCache({1: 1601, 2: 2201, 3: 301})
    ds = ChunkDataset(cache, [1, 2, 3], chunk_seconds=5.0)
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["x"].shape == (4, 1, 64, 500) and batch["x"].dtype == torch.float32
    assert batch["y"].shape == (4, 2) and batch["y_dyn"].shape == (4, 10, 2) and batch["y_dyn_mask"].dtype == torch.bool
    songs = [b["song_id"].unique().tolist() for b in DataLoader(ds, batch_sampler=SongBatchSampler(ds))]
    assert songs == [[1], [2], [3]]
    assert [len(ds.song_chunks(s)) for s in (1, 2, 3)] == [4, 5, 1]
