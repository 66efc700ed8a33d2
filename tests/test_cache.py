"""Feature cache: build, incremental re-run, keys, corruption, interruption, skip list, norm stats."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _deam_tree import PROBLEM_IDS, write_audio, write_deam_tree

from deam_mamba.cli import main as cli_main
from deam_mamba.config import FeatureConfig, load_config
from deam_mamba.core.errors import CacheError, OutputExistsError, UnknownSongError
from deam_mamba.data.audio import load_audio
from deam_mamba.data.deam import DEAMHandler
from deam_mamba.features import prepare as cache_mod
from deam_mamba.features.cache import FeatureCache
from deam_mamba.features.logmel import LogMel, compute_norm_stats
from deam_mamba.features.prepare import audio_drift, audio_fingerprint, build_cache, same_audio
from deam_mamba.features.splits import open_data

CORRUPT = PROBLEM_IDS["corrupt_audio"]
CFG = FeatureConfig(n_mels=64)  # smaller arrays, same code path
_REAL_JOB = cache_mod._featurise_job


def _dies_on_2001(job):
    """Stands in for the worker function (module level: it is pickled by name into the workers)."""
    if job[0] == 2001:
        os._exit(3)  # a worker process killed hard (OOM killer, segfault)
    return _REAL_JOB(job)


@pytest.fixture(scope="module")
def tree_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_deam_tree(tmp_path_factory.mktemp("deam_tpl"), seconds=2.0).root


@pytest.fixture()
def tree(tree_template: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny DEAM tree (tests modify audio files)."""
    return Path(shutil.copytree(tree_template, tmp_path / "deam"))


def test_build_contents_labels_and_skip_list(tree: Path, tmp_path: Path) -> None:
    handler = DEAMHandler(tree)
    s = build_cache(handler, tmp_path / "cache", CFG, workers=2, progress=False)
    good = [i for i in handler.ids if i != CORRUPT]
    assert s["processed"] == len(good) and s["reused"] == 0 and s["n_skipped"] == 1
    assert s["skipped"][0]["song_id"] == CORRUPT and "decode" in s["skipped"][0]["reason"]
    key_dir = tmp_path / "cache" / CFG.key()
    skipped = json.loads((key_dir / "skipped.json").read_text())
    assert [r["song_id"] for r in skipped] == [CORRUPT] and skipped[0]["reason"]
    assert f"{CORRUPT}," in (key_dir / "skipped.csv").read_text()

    fc = FeatureCache(tmp_path / "cache")
    assert fc.ids == good and fc.feature_config == CFG and fc.frames_per_second == 100.0
    assert [r["song_id"] for r in fc.skipped] == [CORRUPT]
    with pytest.raises(UnknownSongError, match="skipped at prepare"):
        fc.features(CORRUPT)
    lm = LogMel(CFG)
    for sid in good[:3]:
        x = fc.features(sid)
        wave = load_audio(handler.audio_path(sid), CFG.sample_rate)
        ref = lm(torch.from_numpy(wave[0])).numpy()
        assert x.dtype == np.float16 and isinstance(x, np.memmap) and x.shape == ref.shape == (64, fc.n_frames(sid))
        np.testing.assert_allclose(x.astype(np.float32), ref, atol=0.07)  # float16 rounding of dB values
        assert fc.static_label(sid) == pytest.approx(handler.static_labels(sid))
        for got, want in zip(fc.dynamic_labels(sid), handler.dynamic_labels(sid)):
            np.testing.assert_allclose(got, want, atol=1e-6)
    assert fc.verify() == []


def test_rerun_is_incremental_and_settings_change_key(tree: Path, tmp_path: Path) -> None:
    cdir = tmp_path / "cache"
    first = build_cache(tree, cdir, CFG, workers=0, progress=False)
    again = build_cache(tree, cdir, CFG, workers=0, progress=False)
    assert again["processed"] == 0 and again["reused"] == first["processed"] and again["n_skipped"] == 1
    # rewrite one song (new content, size and mtime) -> exactly that song is reprocessed
    audio = DEAMHandler(tree).audio_path(3)
    before = FeatureCache(cdir).features(3).copy()
    write_audio(audio, 48000, 2, seconds=2.5, freq=1234.0)
    third = build_cache(tree, cdir, CFG, workers=0, progress=False)
    assert third["processed"] == 1 and third["changed"] == 1 and third["reused"] == first["processed"] - 1
    after = FeatureCache(cdir).features(3)
    assert after.shape[1] > before.shape[1]
    # other settings -> a new key folder, nothing reused; the old one stays intact
    other = FeatureConfig(n_mels=80)
    s = build_cache(tree, cdir, other, workers=0, progress=False)
    assert s["key"] != CFG.key() and s["reused"] == 0 and s["processed"] == first["processed"]
    with pytest.raises(CacheError, match="several settings"):
        FeatureCache(cdir)
    assert FeatureCache(cdir, other).features(2).shape[0] == 80
    assert FeatureCache(cdir, CFG).features(2).shape[0] == 64
    with pytest.raises(CacheError, match="no features for these settings"):
        FeatureCache(cdir, FeatureConfig(n_mels=100))


def test_new_timestamps_same_bytes_reused(tree: Path, tmp_path: Path) -> None:
    """A restored or copied dataset (new mtimes, same bytes) keeps its cache; new bytes of the same size do not."""
    cdir = tmp_path / "cache"
    first = build_cache(tree, cdir, CFG, workers=0, progress=False)
    handler = DEAMHandler(tree)
    for sid in handler.ids:
        p = Path(handler.audio_path(sid))
        os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    again = build_cache(tree, cdir, CFG, workers=0, progress=False)
    assert again["processed"] == 0 and again["reused"] == first["processed"] and again["n_skipped"] == 1
    audio = Path(handler.audio_path(2))
    data = bytearray(audio.read_bytes())
    data[-1] ^= 0x55  # same size, new bytes, new mtime
    audio.write_bytes(bytes(data))
    third = build_cache(tree, cdir, CFG, workers=0, progress=False)
    assert third["processed"] == 1 and third["changed"] == 1
    assert build_cache(tree, cdir, CFG, workers=0, progress=False)["processed"] == 0  # new timestamps remembered


def test_same_audio_sees_a_same_size_edit_in_the_middle(tmp_path: Path) -> None:
    """An edit between the two hashed 64 KiB edges, same size, new mtime: only the whole-file hash sees it."""
    p = tmp_path / "song.wav"
    p.write_bytes(np.random.default_rng(0).bytes(300_000))
    stored = audio_fingerprint(p, content=True)
    assert same_audio(stored, p, audio_fingerprint(p)) == stored  # untouched: nothing read beyond the edges
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    kept = same_audio(stored, p, audio_fingerprint(p))
    assert kept is not None and kept["sha1"] == stored["sha1"] and kept["mtime_ns"] != stored["mtime_ns"]
    data = bytearray(p.read_bytes())
    data[150_000] ^= 0xFF
    p.write_bytes(bytes(data))
    fp = audio_fingerprint(p)
    assert fp["size"] == stored["size"] and fp["edge_sha1"] == stored["edge_sha1"]
    assert same_audio(stored, p, fp) is None
    assert same_audio({k: v for k, v in stored.items() if k != "sha1"}, p, audio_fingerprint(p)) is None


def test_corrupt_and_truncated_arrays_detected_and_rebuilt(tree: Path, tmp_path: Path) -> None:
    cdir = tmp_path / "cache"
    build_cache(tree, cdir, CFG, workers=0, progress=False)
    fc = FeatureCache(cdir)
    good_copy = fc.features(2).copy()
    truncated, flipped = fc.root / "features" / "2.npy", fc.root / "features" / "24.npy"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed: only the checksum sees it
    flipped.write_bytes(bytes(data))
    fresh = FeatureCache(cdir)
    with pytest.raises(CacheError, match="corrupt or truncated"):
        fresh.features(2)
    with pytest.raises(CacheError, match="checksum"):
        fresh.features(24, verify=True)
    assert fresh.verify() == [2, 24]
    s = build_cache(tree, cdir, CFG, workers=0, progress=False)
    assert s["rebuilt_corrupt"] == 2 and s["processed"] == 2
    fixed = FeatureCache(cdir)
    assert fixed.verify() == []
    np.testing.assert_array_equal(fixed.features(2), good_copy)


def test_interrupted_build_leaves_usable_cache(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cdir = tmp_path / "cache"
    real = cache_mod._featurise_job
    calls = {"n": 0}

    def flaky(job):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-way
        return real(job)

    monkeypatch.setattr(cache_mod, "_featurise_job", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_cache(tree, cdir, CFG, workers=0, progress=False)
    fc = FeatureCache(cdir)
    assert len(fc.ids) + len(fc.skipped) == 3 and fc.verify() == []
    monkeypatch.setattr(cache_mod, "_featurise_job", real)
    s = build_cache(tree, cdir, CFG, workers=0, progress=False)
    n_good = len(DEAMHandler(tree).ids) - 1
    assert s["reused"] == len(fc.ids) and s["processed"] + s["reused"] == n_good and s["songs"] == n_good


def test_killed_worker_gives_cache_error_and_keeps_finished_songs(tree: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cdir = tmp_path / "cache"
    monkeypatch.setattr(cache_mod, "_featurise_job", _dies_on_2001)  # inherited by the forked workers
    with pytest.raises(CacheError, match="worker process died"):
        build_cache(tree, cdir, CFG, workers=1, progress=False, mp_context="fork")
    kept = FeatureCache(cdir)
    assert 2001 not in kept.ids and kept.verify() == []
    monkeypatch.setattr(cache_mod, "_featurise_job", _REAL_JOB)
    s = build_cache(tree, cdir, CFG, workers=0, progress=False)
    assert s["reused"] == len(kept.ids) and 2001 in FeatureCache(cdir).ids


def test_refuses_foreign_folder_and_cli_prepare(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="--force"):
        build_cache(tree, foreign, CFG, workers=0, progress=False)
    assert cli_main(["prepare", "--data", str(tree), "--cache", str(tmp_path / "c"), "--workers", "0",
                     "--n-mels", "64", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "skipped song 5" in out and "0 reused" in out
    assert cli_main(["prepare", "--data", str(tree), "--cache", str(foreign), "--n-mels", "64"]) == 2
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_norm_stats_train_only_streamed_and_stored(tree: Path, tmp_path: Path) -> None:
    cdir = tmp_path / "cache"
    build_cache(tree, cdir, CFG, workers=0, progress=False)
    fc = FeatureCache(cdir)
    train = fc.ids[: len(fc.ids) // 2]
    stats = fc.norm_stats(train)
    want = compute_norm_stats(np.asarray(fc.features(i), np.float64) for i in train)
    np.testing.assert_allclose(stats.mean, want.mean, rtol=1e-6)
    cat = np.concatenate([np.asarray(fc.features(i), np.float64) for i in train], axis=1)
    np.testing.assert_allclose(stats.std, cat.std(axis=1), rtol=1e-4)
    assert stats.count == cat.shape[1]
    all_stats = fc.norm_stats(fc.ids)
    assert not np.allclose(all_stats.mean, stats.mean)  # other songs -> other statistics
    stored = list((fc.root / "norm").glob("*.json"))
    assert len(stored) == 2
    again = FeatureCache(cdir).norm_stats(list(reversed(train)))  # same set, any order: read back
    np.testing.assert_array_equal(again.mean, stats.mean)
    assert len(list((fc.root / "norm").glob("*.json"))) == 2


def test_open_data_recomputes_audio_edited_after_prepare(tree: Path, tmp_path: Path, caplog) -> None:
    """train/evaluate open their data through open_data: an audio file edited after prepare gets new features
    there (not stale ones), touched-only files are remembered without recomputing, a clean cache is not rewritten."""
    cfg = load_config(None, [f"data.root={tree}", f"data.cache={tmp_path / 'cache'}", "features.n_mels=64",
                             "data.prepare_workers=0", "train.progress=false"])
    _, cache, _ = open_data(cfg)
    index = cache.root / "index.json"
    built = index.stat().st_mtime_ns
    handler = DEAMHandler(tree)
    assert audio_drift(cache, handler.audio_path, handler.ids) == {"changed": [], "touched": [], "unknown": []}
    open_data(cfg)
    assert index.stat().st_mtime_ns == built  # nothing changed: the index is left alone
    before = cache.features(3).copy()
    write_audio(Path(handler.audio_path(3)), 48000, 2, seconds=2.5, freq=1234.0)
    p4 = Path(handler.audio_path(4))
    os.utime(p4, ns=(p4.stat().st_atime_ns, p4.stat().st_mtime_ns + 10**9))
    legacy = json.loads(index.read_text())  # an entry from before whole-file hashes, then touched: cannot tell
    del legacy["songs"]["2"]["fingerprint"]["sha1"]
    index.write_text(json.dumps(legacy))
    p2 = Path(handler.audio_path(2))
    os.utime(p2, ns=(p2.stat().st_atime_ns, p2.stat().st_mtime_ns + 10**9))
    cache = FeatureCache(cache.root)
    assert audio_drift(cache, handler.audio_path, handler.ids) == {"changed": [3], "touched": [4], "unknown": [2]}
    with caplog.at_level("INFO", logger="deam_mamba.features.splits"):
        _, cache, _ = open_data(cfg)
    assert "1 audio files changed since it was built (e.g. song 3)" in caplog.text and "1 audio files have new" \
        in caplog.text and "too old" in caplog.text
    assert cache.features(3).shape[1] > before.shape[1]
    assert audio_drift(cache, handler.audio_path, handler.ids) == {"changed": [], "touched": [], "unknown": []}
