"""Distillation pretraining from a MusiCNN teacher (``pretrain.objective=distill``): teacher cache, crop targets,
the run, and fine-tuning from it. The teacher is a small random-weight MusiCNN saved in ``load_musicnn``'s format."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_pretrain import TINY, _write_wavs

from deam_mamba.cli import main
from deam_mamba.config import config_from_dict, load_config
from deam_mamba.core.errors import CacheError, ConfigError
from deam_mamba.data.folders import AudioFolders
from deam_mamba.features.cache import FeatureCache
from deam_mamba.inference.files import collect_audio_files
from deam_mamba.models import musicnn as mn
from deam_mamba.models.build import build_model
from deam_mamba.runs import checkpoint as ck
from deam_mamba.runs.paths import read_run_config_dict
from deam_mamba.train import distill as dt
from deam_mamba.train.finetune import init_model

REPO = Path(__file__).resolve().parents[1]
SMALL = mn.MusiCNNConfig(frontend_mult=0.1, midend_filters=8)  # 200 + 50 outputs as the real one, few filters
# 3.52 s crops (352 frames) of 4 s songs, one every 0.5 s; teacher patches (2.99 s) every 0.496 s (31 frames)
DISTILL = [*TINY, "chunks.chunk_seconds=3.6", "chunks.hop_seconds=0.5", "pretrain.teacher_hop_seconds=0.5",
           "pretrain.distill_hidden=16", "train.batch_size=2"]


def _teacher(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = mn.MusiCNN(SMALL)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bn.bias"):
                p.add_(0.1 * torch.randn_like(p))
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": mn.FORMAT, "architecture": mn.architecture_json(SMALL), "tags": json.dumps(model.tags)}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    return path


@pytest.fixture(scope="module")
def distill_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step distillation run through the CLI (3 WAVs of 4 s, random teacher)."""
    tmp = tmp_path_factory.mktemp("distill")
    audio = _write_wavs(tmp / "audio", n=3, seconds=4.0)
    teacher = _teacher(tmp / "teachers" / "musicnn_test.safetensors")
    run = tmp / "run"
    rc = main(["pretrain", "--data", str(audio), "--out", str(run), "--config", str(REPO / "configs/pretrain.yaml"),
               f"data.cache={tmp / 'cache'}", "train.max_steps=2", "pretrain.objective=distill",
               f"pretrain.teacher={teacher}", *DISTILL])
    assert rc == 0
    return run


def test_crop_gets_exactly_the_patches_inside() -> None:
    times = dt.patch_times(6, 94, duration_s=9.0)  # hop 94 frames = 1.504 s, patches of 2.992 s
    assert times[1].tolist() == pytest.approx([1.504, 4.496]) and times[-1, 1] == 9.0  # last end clipped
    assert dt.crop_patches(times, 1.5, 6.5).tolist() == [1, 2]
    assert dt.crop_patches(times, 1.504 - 0.005, 6.0 - 0.005).tolist() == [1, 2]  # within half a frame: rounding
    assert dt.crop_patches(times, 1.52, 6.5).tolist() == [2]  # patch 1 starts 16 ms before the crop: out
    assert dt.crop_patches(times, 0.0, 9.0).tolist() == list(range(6))
    assert dt.crop_patches(times, 0.5, 2.5).tolist() == [0]  # none inside: the most-overlapping one
    assert dt.crop_patches(times, 4.3, 6.3).tolist() == [3]  # overlaps 3 by 1.79 s, 2 by 1.70 s, 4 by 0.28 s


def test_dataset_targets_are_the_patches_inside_each_crop(distill_run: Path) -> None:
    """Every crop's target (after the per-epoch random shift) is the standardised mean of exactly the teacher
    patches inside its span, recomputed here by brute force from the cached arrays."""
    from deam_mamba.features.cache import FeatureCache
    from deam_mamba.train.pretrain import CropDataset, crop_frames

    cfg = config_from_dict(read_run_config_dict(distill_run))
    cache = FeatureCache(cfg.data.cache, cfg.features)
    meta = json.loads((distill_run / "meta.json").read_text())
    targets = dt.TeacherTargets(meta["teacher"]["cache"], cache.ids)
    chunk, hop = crop_frames(cfg)
    ds = CropDataset(cache, targets.ids, chunk, hop, cache.norm_stats(cache.ids), seed=3, teacher=targets)
    ds.set_epoch(1)
    allv = np.concatenate([targets.vectors[s] for s in targets.ids]).astype(np.float64)
    mu, sd = allv.mean(0), allv.std(0)
    sd[sd < 1e-6] = 1.0
    counts, fps = set(), cache.frames_per_second
    assert fps == 100
    for i in range(len(ds)):
        item = ds[i]
        sid, start = item["song_id"], item["start"]
        n = cache.n_frames(sid)
        feats = ds.norm.apply(np.asarray(cache.features(sid)[:, start:start + chunk], np.float32))
        np.testing.assert_array_equal(item["x"][0, :, :feats.shape[1]].numpy(), feats)  # "start" is where it is
        t0, t1 = start / fps, min(start + chunk, n) / fps
        times = targets.times[sid]
        inside = [j for j in range(len(times)) if times[j, 0] >= t0 - 0.008 and times[j, 1] <= t1 + 0.008]
        assert inside, (t0, t1, times)
        counts.add(len(inside))
        want = (targets.vectors[sid][inside].astype(np.float64).mean(0) - mu) / sd
        np.testing.assert_allclose(item["teacher"].numpy(), want, rtol=1e-4, atol=1e-4)
    assert counts == {1, 2}  # crops holding one and two whole patches both occur


def test_teacher_cache_reused_refuses_another_teacher_and_lists_unreadable(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    audio = _write_wavs(tmp_path / "audio", n=2, seconds=4.6)
    teacher = _teacher(tmp_path / "t" / "musicnn_x.safetensors")
    corpus = AudioFolders(collect_audio_files([audio])[0])
    root = dt.build_teacher_cache(corpus, corpus.ids, tmp_path / "cache", teacher, 1.5)
    assert root.parent == tmp_path / "cache" / "teacher" and root.name.startswith("musicnn_x-")
    index = json.loads((root / "index.json").read_text())
    assert set(index["songs"]) == {str(i) for i in corpus.ids} and index["dim"] == 250
    arr = np.load(root / index["songs"][str(corpus.ids[0])]["file"])
    assert arr.shape == (2, 252) and arr[1, 0] == pytest.approx(94 * 0.016)  # 4.6 s: patches at 0 and 1.504 s
    mtimes = {p.name: p.stat().st_mtime_ns for p in (root / "songs").iterdir()}

    calls: list[int] = []
    real = dt.teacher_vectors
    monkeypatch.setattr(dt, "teacher_vectors", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert dt.build_teacher_cache(corpus, corpus.ids, tmp_path / "cache", teacher, 1.5) == root
    assert calls == []  # everything reused, nothing recomputed
    assert {p.name: p.stat().st_mtime_ns for p in (root / "songs").iterdir()} == mtimes
    for p in audio.iterdir():  # the same bytes under new timestamps (a restored copy): still reused
        os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    assert dt.build_teacher_cache(corpus, corpus.ids, tmp_path / "cache", teacher, 1.5) == root
    assert calls == []

    (audio / "broken.wav").write_bytes(b"RIFF\0\0\0\0WAVEjunk")  # one new, unreadable file; one new good one
    _write_wavs(tmp_path / "more", n=1, seconds=3.0)
    corpus2 = AudioFolders(collect_audio_files([audio, tmp_path / "more"])[0])
    dt.build_teacher_cache(corpus2, corpus2.ids, tmp_path / "cache", teacher, 1.5)
    assert len(calls) == 1  # only the new readable song was computed
    targets = dt.TeacherTargets(root, corpus2.ids)
    assert len(targets.ids) == 3 and len(targets.skipped) == 1
    assert "broken.wav" in (root / "skipped.csv").read_text()

    other = _teacher(tmp_path / "t2" / "musicnn_x.safetensors", seed=1)  # same name, other weights
    with pytest.raises(CacheError, match="another teacher file"):
        dt.build_teacher_cache(corpus, corpus.ids, tmp_path / "cache", other, 1.5)
    assert dt.teacher_dir(tmp_path / "cache", teacher, 1.0) != root  # another hop: another folder


def test_distill_run_resumes_and_init_loads_the_backbone(distill_run: Path) -> None:
    meta = json.loads((distill_run / "meta.json").read_text())
    assert meta["objective"] == "distill" and meta["files"] == 3 and meta["baseline_band_mean_mse"] is None
    assert 0 < meta["baseline_distill_mse_song_mean"] and 0 < meta["baseline_distill_mse_corpus_mean"] < 2
    summary = json.loads((distill_run / "train_summary.json").read_text())
    assert np.isfinite(summary["last"]["train_loss"]) and summary["last"]["train_loss"] > 0
    weights = load_file(str(ck.checkpoint_paths(distill_run, "last")[0]))
    assert any(k.startswith("distill_head.") for k in weights)
    assert not any(k.startswith(("dec_", "mask_token", "proj.")) for k in weights)  # no decoder for distill alone
    # resume continues from step 2 with the cached teacher targets
    assert main(["pretrain", "--resume", str(distill_run), "train.max_steps=3"]) == 0
    assert json.loads((distill_run / "checkpoints/last.json").read_text())["step"] == 3

    cfg = load_config(REPO / "configs/test_tiny.yaml", ["features.n_mels=64", f"model.init={distill_run}"])
    model = build_model(cfg)
    rep = init_model(model, cfg)
    saved = load_file(str(ck.checkpoint_paths(distill_run, "best")[0]))
    backbone = {k[len("backbone."):]: v for k, v in saved.items() if k.startswith("backbone.")}
    assert backbone and set(rep.loaded) == set(backbone)
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in backbone.items())
    assert {k for k in rep.unused} == {k for k in saved if k.startswith("distill_head.")}


def test_mask_plus_distill_runs(distill_run: Path, tmp_path: Path) -> None:
    from deam_mamba.train.pretrain import pretrain

    old = config_from_dict(read_run_config_dict(distill_run))
    cfg = load_config(REPO / "configs/pretrain.yaml", [
        *DISTILL, f"data.cache={old.data.cache}", "train.max_steps=1", "pretrain.objective=mask+distill",
        "pretrain.distill_weight=0.5", f"pretrain.teacher={old.pretrain.teacher}"])
    cfg.pretrain.data = old.pretrain.data
    res = pretrain(cfg, tmp_path / "run", argv=["test"])
    assert res.step == 1 and np.isfinite(res.history[-1]["train_loss"])
    keys = set(load_file(str(ck.checkpoint_paths(tmp_path / "run", "last")[0])))
    assert any(k.startswith("distill_head.") for k in keys) and any(k.startswith("dec_") for k in keys)
    meta = json.loads((tmp_path / "run/meta.json").read_text())
    assert meta["baseline_band_mean_mse"] > 0 and meta["teacher"]["cache"] == json.loads(
        (distill_run / "meta.json").read_text())["teacher"]["cache"]  # the same teacher cache, reused


def test_missing_teacher_is_one_line_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    audio = _write_wavs(tmp_path / "audio", n=1, seconds=1.0)
    base = ["pretrain", "--data", str(audio), "--out", str(tmp_path / "run"), "--config",
            str(REPO / "configs/pretrain.yaml"), f"data.cache={tmp_path / 'cache'}", "pretrain.objective=distill",
            *TINY]
    assert main(base) != 0
    err = capsys.readouterr().err.strip()
    assert "make musicnn" in err and "musicnn_msd.safetensors" in err and "\n" not in err
    assert main([*base, f"pretrain.teacher={tmp_path / 'nope.safetensors'}"]) != 0
    err = capsys.readouterr().err.strip()
    assert "nope.safetensors" in err and "make musicnn" in err and "\n" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_distill_config_checks() -> None:
    with pytest.raises(ConfigError, match="objective"):
        load_config(REPO / "configs/pretrain.yaml", ["pretrain.objective=distil"])
    with pytest.raises(ConfigError, match="teacher_hop_seconds"):
        load_config(REPO / "configs/pretrain.yaml", ["pretrain.teacher_hop_seconds=0"])
    with pytest.raises(ConfigError, match="distill_hidden"):
        load_config(REPO / "configs/pretrain.yaml", ["pretrain.distill_hidden=-1"])
    assert load_config(REPO / "configs/pretrain.yaml", ["pretrain.objective=mask+distill"]).pretrain.objective == \
        "mask+distill"


def test_two_teachers_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``pretrain.teacher=[A, B]``: each teacher gets its own cache beside the run's, a crop's target is A's
    standardised target then B's, the head predicts both (500 = 2 x 250) and the run records both teachers."""
    audio = _write_wavs(tmp_path / "audio", n=3, seconds=4.0)
    a = _teacher(tmp_path / "t" / "musicnn_a.safetensors", seed=0)
    b = _teacher(tmp_path / "t" / "musicnn_b.safetensors", seed=1)
    run = tmp_path / "run"
    base = ["pretrain", "--data", str(audio), "--config", str(REPO / "configs/pretrain.yaml"),
            f"data.cache={tmp_path / 'cache'}", "train.max_steps=2", "pretrain.objective=distill", *DISTILL]
    assert main([*base, "--out", str(run), f"pretrain.teacher=[{a}, {b}]"]) == 0
    meta = json.loads((run / "meta.json").read_text())
    info = meta["teacher"]
    assert info["dim"] == 500 and [t["dim"] for t in info["teachers"]] == [250, 250]
    roots = [Path(t["cache"]) for t in info["teachers"]]
    assert [r.name.split("-")[0] for r in roots] == ["musicnn_a", "musicnn_b"]
    assert read_run_config_dict(run)["pretrain"]["teacher"] == [str(a.resolve()), str(b.resolve())]
    weights = load_file(str(ck.checkpoint_paths(run, "last")[0]))
    assert weights["distill_head.2.weight"].shape[0] == 500

    cache = FeatureCache(tmp_path / "cache", config_from_dict(read_run_config_dict(run)).features)
    ta, tb = (dt.TeacherTargets(r, cache.ids) for r in roots)
    both = dt.ConcatTargets([ta, tb])
    assert both.ids == ta.ids == tb.ids and len(both.ids) == 3 and both.dim == 500
    sid = both.ids[0]
    got = both.crop_target(sid, 0.2, 3.8)
    np.testing.assert_array_equal(got[:250], ta.crop_target(sid, 0.2, 3.8))
    np.testing.assert_array_equal(got[250:], tb.crop_target(sid, 0.2, 3.8))
    assert not np.allclose(got[:250], got[250:])  # two teachers, two targets
    crops = [(s, 0.2, 3.8) for s in both.ids]
    fl = both.floors(crops)  # the mean over 500 dims = the mean of each teacher's floor
    assert fl["corpus_mean"] == pytest.approx((ta.floors(crops)["corpus_mean"] + tb.floors(crops)["corpus_mean"]) / 2)

    # a teacher given twice (or two files sharing a name, hence a cache folder) is one line, before any work
    twin = _teacher(tmp_path / "t2" / "musicnn_a.safetensors", seed=2)
    for dup in (f"[{a}, {a}]", f"[{a}, {twin}]"):
        assert main([*base, "--out", str(tmp_path / "run2"), f"pretrain.teacher={dup}"]) != 0
        err = capsys.readouterr().err.strip()
        assert "pretrain.teacher" in err and "musicnn_a" in err and "\n" not in err
    assert not (tmp_path / "run2").exists()
    with pytest.raises(ConfigError, match="pretrain.teacher"):
        load_config(REPO / "configs/pretrain.yaml", ["pretrain.teacher=[]"])
