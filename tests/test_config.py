"""Config dataclasses, YAML round trip, dotted overrides, the LR schedule, checkpoint files."""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from deam_mamba.config import Config, OptimConfig, config_from_dict, dump_config, load_config
from deam_mamba.core.errors import CheckpointError, ConfigError
from deam_mamba.train.optim import lr_at

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_round_trip_through_yaml():
    cfg = Config()
    again = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path):
    cfg = load_config(path)
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg


def test_overrides_are_typed():
    cfg = load_config(None, ["optim.lr=3e-4", "train.epochs=7", "train.bf16=true", "data.root=/data/deam",
                             "features.fmax=null", "model.kwargs.depths=[1, 1, 2, 1]", "mode=dynamic",
                             "chunks.chunk_seconds=4", "optim.grad_clip=null"])
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 7 and cfg.train.bf16 is True
    assert cfg.data.root == "/data/deam"
    assert cfg.features.fmax is None
    assert cfg.model.kwargs == {"depths": [1, 1, 2, 1]}
    assert cfg.mode == "dynamic"
    assert cfg.chunks.chunk_seconds == 4.0 and isinstance(cfg.chunks.chunk_seconds, float)
    assert cfg.optim.grad_clip is None


def test_override_on_top_of_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 3\n  batch_size: 8\noptim:\n  lr: 1e-3\n")
    cfg = load_config(p, ["train.epochs=5"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr) == (5, 8, pytest.approx(1e-3))


def test_unknown_key_names_key_and_close_matches():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["optim.lrr=0.1"])
    msg = str(exc.value)
    assert "optim.lrr" in msg and "optim.lr" in msg


def test_unknown_key_in_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epohcs: 3\n")
    with pytest.raises(ConfigError, match="train.epohcs.*train.epochs"):
        load_config(p)


@pytest.mark.parametrize("override, match", [
    ("train.epochs=abc", "train.epochs must be an integer"),
    ("train.bf16=3", "train.bf16 must be true or false"),
    ("optim.lr=fast", "optim.lr must be a number"),
    ("mode=both", "mode must be one of"),
    ("data.split=weird", "data.split must be one of"),
    ("loss.name=l1", "loss.name"),
    ("epochs", "key=value"),
    ("features.n_mels=7", "n_mels"),
    ("model.pooling=max", "model.pooling must be one of"),
    ("model.attention.epochs=-1", "model.attention"),
    ("model.attention.hiden=3", "model.attention.hidden"),
])
def test_bad_values_raise_config_error(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_attention_pooling_config():
    cfg = load_config(None, ["model.pooling=attention", "model.attention.epochs=20", "model.attention.lr=1e-2"])
    assert cfg.model.pooling == "attention"
    assert (cfg.model.attention.epochs, cfg.model.attention.lr) == (20, 1e-2)
    with pytest.raises(ConfigError, match="static"):
        load_config(None, ["model.pooling=attention", "mode=dynamic"])


def test_missing_config_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_loss_weights():
    assert load_config(None, ["loss.name=mse"]).loss.weights() == (1.0, 0.0)
    assert load_config(None, ["loss.name=ccc"]).loss.weights() == (0.0, 1.0)
    assert load_config(None, ["loss.name=mse+ccc", "loss.ccc_weight=0.5"]).loss.weights() == (1.0, 0.5)


def test_lr_schedule_warmup_then_cosine():
    cfg = OptimConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg, total_steps=110) for s in range(130)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))  # warm-up increases
    assert all(a >= b for a, b in zip(lrs[10:110], lrs[11:111]))  # cosine decreases
    assert lrs[60] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # half way down the cosine
    assert lrs[110] == pytest.approx(1e-4) and lrs[129] == pytest.approx(1e-4)
    assert lr_at(37, cfg, 110) == lr_at(37, cfg, 110)  # pure: no hidden state


def test_lr_schedule_no_warmup():
    cfg = OptimConfig(lr=2.0, warmup_steps=0, min_lr_ratio=0.0)
    assert lr_at(0, cfg, 100) == pytest.approx(2.0)
    assert lr_at(100, cfg, 100) == pytest.approx(0.0)
    assert not math.isnan(lr_at(0, cfg, 0))


# --- checkpoint files (no training needed) -------------------------------------------------


def test_rng_state_round_trip():
    from deam_mamba.runs.checkpoint import rng_state, set_rng_state

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    s = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(s)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_save_checkpoint_atomic_pointers_and_prune(tmp_path):
    from deam_mamba.runs.checkpoint import checkpoint_paths, load_state, load_weights, save_checkpoint

    model = torch.nn.Linear(3, 2)
    meta = {"mode": "static"}
    save_checkpoint(tmp_path, model, {"loop": {"step": 1}}, step=1, meta=meta, best_metrics={"m": 0.5})
    with torch.no_grad():
        model.weight.add_(1.0)
    save_checkpoint(tmp_path, model, {"loop": {"step": 2}}, step=2, meta=meta)
    save_checkpoint(tmp_path, model, {"loop": {"step": 3}}, step=3, meta=meta)
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    # step 2 is referenced by nothing and is pruned; best (1) and last (3) stay; no temp files
    assert files == ["best.json", "last.json", "step00000001.safetensors", "step00000001.state.pt",
                     "step00000003.safetensors", "step00000003.state.pt"]
    w, s, p = checkpoint_paths(tmp_path, "best")
    fresh = torch.nn.Linear(3, 2)
    assert load_weights(fresh, w)["mode"] == "static"
    assert not torch.equal(fresh.weight, model.weight)
    assert p["metrics"] == {"m": 0.5} and load_state(s)["loop"]["step"] == 1
    w, s, _ = checkpoint_paths(tmp_path, "last")
    load_weights(fresh, w)
    assert torch.equal(fresh.weight, model.weight)


def test_checkpoint_errors_are_actionable(tmp_path):
    from deam_mamba.runs.checkpoint import checkpoint_paths, load_state, load_weights, save_checkpoint
    from deam_mamba.runs.run import load_run

    with pytest.raises(CheckpointError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="config.yaml"):
        load_run(tmp_path)
    with pytest.raises(CheckpointError, match="no 'last' checkpoint"):
        checkpoint_paths(tmp_path, "last")
    save_checkpoint(tmp_path, torch.nn.Linear(3, 2), {}, step=5, meta={})
    w, s, _ = checkpoint_paths(tmp_path, "last")
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_weights(torch.nn.Linear(4, 2), w)
    s.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read training state"):
        load_state(s)
    w.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint_paths(tmp_path, "last")
    (tmp_path / "checkpoints" / "last.json").write_text("{")
    with pytest.raises(CheckpointError, match="unreadable"):
        checkpoint_paths(tmp_path, "last")


def test_cli_takes_overrides_after_options(tmp_path, capsys):
    """``train --config C --out DIR key=value``: the override is taken (and here checked), not refused."""
    from deam_mamba import cli

    cfg = tmp_path / "c.yaml"
    cfg.write_text("mode: static\n")
    assert cli.main(["train", "--config", str(cfg), "--out", str(tmp_path / "runs"), "optim.lrr=1e-3"]) == 2
    assert "optim.lrr" in capsys.readouterr().err  # the override reached the config (unknown key named)
    with pytest.raises(SystemExit):
        cli.main(["train", "--config", str(cfg), "--out", str(tmp_path / "runs"), "--nonsense"])


def test_progress_is_throttled_when_stderr_is_not_a_terminal():
    """``make demo > log 2>&1`` must not fill the log with carriage-return progress updates: with stderr
    redirected (as here, a pipe), the CLI sets tqdm's update interval to 30 s."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TQDM_MININTERVAL"}
    script = "import os\nfrom deam_mamba import cli\ncli.main(['train'])\nprint(os.environ.get('TQDM_MININTERVAL'))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "30", (out.stdout, out.stderr)
