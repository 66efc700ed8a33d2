"""The training engine end to end on the tiny synthetic corpus: run folder, load_run, dynamic mode,
exact resume after SIGKILL, and DDP with 2 gloo processes (torchrun)."""
from __future__ import annotations

import csv
import importlib.metadata
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _inference_helpers import shared_cache

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "test_tiny.yaml"


def _overrides(corpus: Path, cache: Path, *extra: str) -> list[str]:
    return [f"data.root={corpus}", f"data.cache={cache}", "data.split=official2015", *extra]


def _weights(run_dir: Path, which: str = "last") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from deam_mamba.runs.checkpoint import checkpoint_paths

    return load_file(str(checkpoint_paths(run_dir, which)[0]))


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="module")
def static_run(synth_corpus, tmp_path_factory):
    from deam_mamba.config import load_config
    from deam_mamba.train.loop import train

    cfg = load_config(TINY, _overrides(synth_corpus, shared_cache(tmp_path_factory)))
    run_dir = tmp_path_factory.mktemp("train_static") / "run"
    return cfg, train(cfg, run_dir, argv=["test"])


def test_run_folder_holds_everything(static_run):
    import yaml

    from deam_mamba.config import config_from_dict

    cfg, res = static_run
    rd = res.run_dir
    assert config_from_dict(yaml.safe_load((rd / "config.yaml").read_text())) == cfg
    meta = json.loads((rd / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["command"] == ["test"] and meta["mode"] == "static"
    assert meta["versions"]["torch"] == importlib.metadata.version("torch")
    assert "start_time_utc" in meta and "git_commit" in meta
    assert set(meta["splits"]) == {"train", "val", "test"} and meta["splits"]["test"] == [2001, 2002, 2003]
    rows = _rows(rd)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert list(rows[0])[:4] == ["epoch", "step", "lr", "train_loss"]
    assert int(rows[-1]["step"]) == res.step > 0
    assert any(p.name.startswith("events.out.tfevents") for p in (rd / "tb").iterdir())
    names = {p.name for p in (rd / "checkpoints").iterdir()}
    assert {"best.json", "last.json"} <= names and not any(n.endswith(".tmp") for n in names)
    assert json.loads((rd / "train_summary.json").read_text())["step"] == res.step


def test_metric_names_carry_the_static_scale(static_run):
    _, res = static_run
    keys = [k for k in res.last_metrics if k.startswith("val_") and k != "val_songs"]
    assert keys and all(k.endswith("_1to9") for k in keys)
    for k in ("val_ccc_valence_1to9", "val_ccc_arousal_1to9", "val_rmse_valence_1to9", "val_ccc_mean_1to9"):
        assert math.isfinite(res.last_metrics[k])
    assert res.last_metrics["val_songs"] == 2


def test_lr_in_log_follows_the_schedule(static_run):
    from deam_mamba.train.optim import lr_at

    cfg, res = static_run
    for r in _rows(res.run_dir):
        assert float(r["lr"]) == pytest.approx(lr_at(int(r["step"]) - 1, cfg.optim, res.step), rel=1e-5)


def test_load_run_gives_eval_model_and_norm_stats(static_run, synth_corpus, tmp_path_factory):
    from deam_mamba.features.cache import FeatureCache
    from deam_mamba.runs.run import load_run

    cfg, res = static_run
    run = load_run(res.run_dir)
    assert not run.model.training and run.mode == "static" and run.feature_config == cfg.features
    assert run.norm_stats is not None and run.norm_stats.n_mels == cfg.features.n_mels
    assert run.best_metrics["val_ccc_mean_1to9"] == pytest.approx(
        max(r["val_ccc_mean_1to9"] for r in res.history))
    # norm stats are those of the training split only
    cache = FeatureCache(cfg.data.cache, cfg.features)
    expect = cache.norm_stats(json.loads((res.run_dir / "meta.json").read_text())["splits"]["train"])
    assert run.norm_stats.mean == pytest.approx(expect.mean, abs=1e-5)
    frames = int(cfg.chunks.chunk_seconds * cache.frames_per_second)
    out = run.model(torch.zeros(3, 1, cfg.features.n_mels, frames))
    assert out.shape == (3, 2)


def test_existing_run_is_not_overwritten(static_run):
    from deam_mamba.core.errors import OutputExistsError
    from deam_mamba.train.loop import train

    cfg, res = static_run
    with pytest.raises(OutputExistsError, match="--resume"):
        train(cfg, res.run_dir)


def test_dynamic_mode_keeps_the_scales_apart(synth_corpus, tmp_path_factory):
    from deam_mamba.config import load_config
    from deam_mamba.runs.run import load_run
    from deam_mamba.train.loop import train

    cfg = load_config(TINY, _overrides(synth_corpus, shared_cache(tmp_path_factory), "mode=dynamic",
                                       "train.epochs=1", "loss.name=mse+ccc"))
    res = train(cfg, tmp_path_factory.mktemp("train_dyn") / "run")
    keys = [k for k in res.last_metrics if k.startswith("val_") and k != "val_songs"]
    assert keys and all(k.endswith("_pm1") for k in keys)
    assert math.isfinite(res.last_metrics["val_ccc_mean_pm1"])
    assert res.last_metrics["val_songs"] >= 1
    run = load_run(res.run_dir)
    k = int(round(cfg.chunks.chunk_seconds * 2))
    assert run.mode == "dynamic"
    assert run.model(torch.zeros(1, 1, cfg.features.n_mels, 200)).shape == (1, 2 * k)


def test_make_ema_averages_parameters_and_batchnorm_statistics() -> None:
    from deam_mamba.train.optim import make_ema

    assert make_ema(torch.nn.Linear(2, 2), 0.0) is None
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = make_ema(model, 0.75)
    w0 = model[0].weight.detach().clone()
    ema.update_parameters(model)  # the first update copies
    torch.testing.assert_close(ema.module[0].weight, w0, rtol=0, atol=0)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()
    model(torch.randn(8, 3))  # moves the BatchNorm running statistics
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module[0].weight, 0.75 * w0 + 0.25 * model[0].weight.detach())
    torch.testing.assert_close(ema.module[1].running_mean, 0.25 * model[1].running_mean)  # avg started at 0


def test_ema_run_validates_and_saves_the_average(synth_corpus, tmp_path_factory):
    from deam_mamba.config import load_config
    from deam_mamba.features.splits import split_ids
    from deam_mamba.runs.checkpoint import checkpoint_paths, load_state
    from deam_mamba.runs.run import load_run
    from deam_mamba.train.loop import train, validate

    cfg = load_config(TINY, _overrides(synth_corpus, shared_cache(tmp_path_factory), "optim.ema_decay=0.8",
                                       "train.epochs=1"))
    res = train(cfg, tmp_path_factory.mktemp("train_ema") / "run")
    saved = _weights(res.run_dir)
    raw = load_state(checkpoint_paths(res.run_dir, "last")[1])["raw_model"]
    assert saved.keys() == raw.keys()
    assert any(not torch.equal(saved[k], raw[k]) for k in saved if saved[k].is_floating_point())
    # the logged validation numbers are those of the saved (averaged) weights
    run = load_run(res.run_dir)
    from deam_mamba.features.cache import FeatureCache

    cache = FeatureCache(cfg.data.cache, cfg.features)
    metrics = validate(cfg, run.model, cache, split_ids(cfg, cache)["val"], run.norm_stats, torch.device("cpu"))
    assert metrics["val_ccc_mean_1to9"] == pytest.approx(res.best_metrics["val_ccc_mean_1to9"], abs=1e-6)
    # validation leaves the model in the mode it was given in
    assert not run.model.training
    run.model.train()
    validate(cfg, run.model, cache, split_ids(cfg, cache)["val"], run.norm_stats, torch.device("cpu"))
    assert run.model.training


@pytest.mark.slow
def test_resume_after_sigkill_reaches_the_same_result(synth_corpus, tmp_path_factory, tmp_path):
    """A run killed with SIGKILL mid-epoch and resumed ends bit-identical to an uninterrupted one."""
    from deam_mamba.config import load_config
    from deam_mamba.train.launch import start_training
    from deam_mamba.train.loop import train

    ovr = _overrides(synth_corpus, shared_cache(tmp_path_factory), "train.epochs=3", "train.save_every_steps=3",
                     "model.kwargs.drop_path_rate=0.1",  # drop path: the RNG state matters too
                     "model.pooling=attention", "model.attention.epochs=10",  # fitted after the loop, resumed too
                     "optim.ema_decay=0.9")  # the weight average and the raw weights both resume
    ref = train(load_config(TINY, ovr), tmp_path / "ref")

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "deam_mamba.cli", "train", "--config", str(TINY), "--run-dir", str(killed), *ovr]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = killed / "checkpoints" / "last.json"
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            step = json.loads(last.read_text())["step"]
        except (OSError, ValueError):
            step = 0
        if step >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 6 <= json.loads(last.read_text())["step"] < ref.step  # killed part-way

    res = start_training(None, [], resume=killed)
    assert res.step == ref.step and res.epoch == ref.epoch
    a, b = _weights(ref.run_dir), _weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from deam_mamba.runs.checkpoint import checkpoint_paths, load_state

    ra, rb = (load_state(checkpoint_paths(r, "last")[1])["raw_model"] for r in (ref.run_dir, killed))
    assert all(torch.equal(ra[k], rb[k]) for k in ra)
    assert res.best_metrics == ref.best_metrics
    assert (killed / "log.csv").read_text() == (ref.run_dir / "log.csv").read_text()
    assert len(json.loads((killed / "meta.json").read_text())["resumed"]) == 1
    from safetensors.torch import load_file

    from deam_mamba.runs.checkpoint import pool_path

    pa, pb = (load_file(str(pool_path(r, res.best_metrics["step"]))) for r in (ref.run_dir, killed))
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert res.pooling == ref.pooling


@pytest.mark.slow
def test_ddp_two_gloo_processes(synth_corpus, tmp_path_factory, tmp_path):
    """torchrun with 2 CPU processes: each rank trains on half the chunks, only rank 0 writes."""
    from deam_mamba.runs.run import load_run

    run_dir = tmp_path / "ddp"
    ovr = _overrides(synth_corpus, shared_cache(tmp_path_factory), "train.epochs=1", "train.batch_size=4")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "deam_mamba.cli", "train", "--config", str(TINY), "--run-dir", str(run_dir), *ovr]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["world_size"] == 2
    from deam_mamba.config import load_config
    from deam_mamba.features.splits import open_data
    from deam_mamba.train.loop import make_datasets

    cfg = load_config(TINY, ovr)
    _, cache, splits = open_data(cfg, build=False)
    n_chunks = len(make_datasets(cfg, cache, splits)[0])
    assert meta["steps_per_epoch"] == (n_chunks // 2) // 4  # one shard per rank
    assert int(_rows(run_dir)[-1]["step"]) == meta["steps_per_epoch"]
    assert len(list((run_dir / "checkpoints").glob("*.safetensors"))) == 1
    run = load_run(run_dir)
    assert math.isfinite(run.best_metrics["val_ccc_mean_1to9"])
    assert done.stdout.count("best {") == 1  # the summary line is printed by rank 0 only


@pytest.mark.slow
def test_best_is_never_chosen_on_a_nan_validation_score(synth_corpus, tmp_path_factory, monkeypatch):
    """An epoch whose validation cannot score (NaN) never becomes 'best'; best.json stays strict JSON."""
    import json

    from deam_mamba.config import load_config
    from deam_mamba.train import loop

    real = loop.validate
    calls = []

    def first_nan(*args, **kwargs):
        m = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            m = {k: (float("nan") if k.startswith("val_ccc") else v) for k, v in m.items()}
        return m

    monkeypatch.setattr(loop, "validate", first_nan)
    cfg = load_config(TINY, _overrides(synth_corpus, shared_cache(tmp_path_factory), "train.epochs=2"))
    res = loop.train(cfg, tmp_path_factory.mktemp("nan_best") / "run")
    assert len(calls) == 2 and res.history[0]["step"] < res.history[1]["step"]
    best = json.loads((res.run_dir / "checkpoints" / "best.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"bare {c} in best.json"))
    assert best["step"] == res.history[1]["step"]  # epoch 1 (NaN) was not chosen
    hist = json.loads((res.run_dir / "train_summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert hist["best"]["epoch"] == 2


def test_progress_bar_redraws_at_tqdms_pace_not_every_step(synth_corpus, tmp_path_factory, monkeypatch, capsys):
    """With stderr redirected the CLI sets a long tqdm mininterval; the per-step loss/lr postfix must not force
    a redraw every step (that wrote one stale ``0/N`` bar per step into logs)."""
    from functools import partial

    from deam_mamba.config import load_config
    from deam_mamba.train import loop

    # what the CLI's TQDM_MININTERVAL gives (tqdm reads that variable once, at import, so it is set here directly);
    # maxinterval too, so that tqdm's monitor thread forces no redraw on a slow machine
    monkeypatch.setattr(loop, "tqdm", partial(loop.tqdm, mininterval=1000, maxinterval=1000))
    cfg = load_config(TINY, _overrides(synth_corpus, shared_cache(tmp_path_factory), "train.epochs=1",
                                       "train.progress=true"))
    res = loop.train(cfg, tmp_path_factory.mktemp("progress") / "run")
    steps = res.history[-1]["step"]
    draws = capsys.readouterr().err.count("loss=")
    assert steps >= 10 and draws <= 3, f"{draws} bar redraws for {steps} steps"
