"""Faults never become silent numbers: corrupt weights (checksum), non-finite outputs, values off the
scale, inputs the model was not made for (issue 13)."""
from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from _inference_helpers import tiny_run
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from deam_mamba.cli import main
from deam_mamba.config import FeatureConfig
from deam_mamba.core.errors import CheckpointError
from deam_mamba.core.scales import STATIC
from deam_mamba.evaluation.evaluate import evaluate_run
from deam_mamba.inference import checks
from deam_mamba.inference.predictor import Predictor
from deam_mamba.models.heads import AttentionPool
from deam_mamba.runs import checkpoint as ck
from deam_mamba.runs.run import load_run

SR = 16_000


@pytest.fixture(scope="module")
def run(tmp_path_factory, synth_corpus) -> Path:
    return tiny_run(tmp_path_factory, synth_corpus, "static")


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


def _corrupt_tensor_data(path: Path, n: int = 64) -> None:
    """Write ``n`` random bytes into the middle of the tensor data (after the JSON header)."""
    raw = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", bytes(raw[:8]))[0]
    mid = start + (len(raw) - start) // 2
    raw[mid:mid + n] = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))


def _rewrite(path: Path, change) -> None:
    """Load the safetensors file, let ``change(tensors, meta)`` edit it, save it back."""
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
    change(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def _tone(path: Path, seconds: float, amp: float = 0.3, noise: float = 0.0) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    x = amp * np.sin(2 * np.pi * 440 * t) + noise * np.random.default_rng(1).standard_normal(len(t))
    sf.write(path, x.astype(np.float32), SR)
    return path


# --- 1. checksums -------------------------------------------------------------------------


def test_weights_store_a_checksum_of_their_tensors(run):
    weights, _, _ = ck.checkpoint_paths(run, "best")
    with safe_open(str(weights), framework="pt") as fh:
        stored = fh.metadata()[ck.CHECKSUM_KEY]
    assert stored == ck.tensors_sha256(load_file(str(weights)))
    assert len(stored) == 64


def test_corrupt_weights_are_refused_naming_the_file(run, tmp_path, capsys):
    bad = _copy(run, tmp_path / "bad_run")
    weights, _, _ = ck.checkpoint_paths(bad, "best")
    _corrupt_tensor_data(weights)
    with pytest.raises(CheckpointError, match=r"is corrupt \(checksum mismatch\): re-train or restore it") as e:
        load_run(bad)
    assert str(weights) in str(e.value)
    wav = _tone(tmp_path / "a.wav", 4.0)
    rc = main(["predict", str(bad), str(wav)])
    out, err = capsys.readouterr()
    assert rc == 2 and "nan" not in out.lower()
    assert str(weights) in err and "checksum mismatch" in err and "Traceback" not in err


def test_corrupt_pool_is_refused(tmp_path):
    path = tmp_path / "pool_step00000001.safetensors"
    ck.save_pool(path, AttentionPool(32, 2, hidden=8), {"selected_epoch": 1})
    ck.load_pool(path)  # intact: loads
    _corrupt_tensor_data(path, n=16)
    with pytest.raises(CheckpointError, match="checksum mismatch") as e:
        ck.load_pool(path)
    assert str(path) in str(e.value)


def test_old_weights_without_checksum_still_load_with_a_warning(run, tmp_path, caplog, monkeypatch):
    old = _copy(run, tmp_path / "old_run")
    weights, _, _ = ck.checkpoint_paths(old, "best")
    _rewrite(weights, lambda t, m: m.pop(ck.CHECKSUM_KEY))
    monkeypatch.setattr(ck, "_WARNED_NO_CHECKSUM", set())
    with caplog.at_level(logging.WARNING, logger="deam_mamba.runs.checkpoint"):
        load_run(old)
        load_run(old)
    warned = [r for r in caplog.records if "no weights checksum" in r.getMessage()]
    assert len(warned) == 1 and str(weights) in warned[0].getMessage()


# --- 2. non-finite outputs ------------------------------------------------------------------


def _nan_weights(tensors: dict, meta: dict) -> None:
    name = next(k for k, v in sorted(tensors.items()) if v.is_floating_point() and v.numel() > 1)
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    meta[ck.CHECKSUM_KEY] = ck.tensors_sha256(tensors)  # intact file, damaged values


def test_nan_outputs_are_an_error_naming_the_checkpoint_in_predict_and_evaluate(run, tmp_path, capsys):
    bad = _copy(run, tmp_path / "nan_run")
    weights, _, _ = ck.checkpoint_paths(bad, "best")
    _rewrite(weights, _nan_weights)
    wav = _tone(tmp_path / "a.wav", 4.0)
    rc = main(["predict", str(bad), str(wav)])
    out, err = capsys.readouterr()
    assert rc == 2 and "nan" not in out.lower()
    assert str(weights) in err and "non-finite" in err and str(wav) in err
    with pytest.raises(CheckpointError, match="non-finite") as e:
        evaluate_run(bad, split="test", bootstrap=0, progress=False)
    assert str(weights) in str(e.value)
    assert not (bad / "eval").exists()  # failed at the first song, before any report


# --- 3. declared scale and flags --------------------------------------------------------------


class _Const(torch.nn.Module):
    """Fake static model: every chunk predicts ``value`` on the normalised (-1..1) scale."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 2), self.value)


def test_values_off_the_scale_are_clipped_and_flagged():
    pred = Predictor(_Const(3.0), FeatureConfig(n_mels=64), None, chunk_seconds=3.0, scale=STATIC)
    t = np.arange(8 * SR) / SR
    p = pred.predict_wave((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))  # raw 5 + 4 * 3 = 17
    assert p.valence == p.arousal == 9.0 and p.flags == ["clipped"]
    assert np.all(p.curve_valence == 9.0) and np.all(p.curve_arousal == 9.0)
    low = Predictor(_Const(-0.5), FeatureConfig(n_mels=64), None, chunk_seconds=3.0).predict_wave(
        (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    assert low.valence == pytest.approx(3.0) and low.flags == []  # on the scale: untouched, no flag


def test_flag_rules():
    assert checks.is_silent(np.zeros(SR)) and checks.rms_dbfs(np.zeros(SR)) == float("-inf")
    assert checks.is_silent(np.full(SR, 1e-4)) and not checks.is_silent(np.full(SR, 1e-2))
    assert checks.is_short(2.9, 3.0) and not checks.is_short(3.0, 3.0)
    assert not checks.is_out_of_distribution(None)
    assert checks.is_out_of_distribution(checks.feature_shift(torch.full((64, 10), 2.5)))
    assert not checks.is_out_of_distribution(checks.feature_shift(torch.randn(64, 500)))


def test_predict_flags_silence_short_and_out_of_distribution_inputs(run, tmp_path, caplog):
    d = tmp_path / "in"
    d.mkdir()
    sf.write(d / "silence.wav", np.zeros(10 * SR, dtype=np.float32), SR)
    _tone(d / "short.wav", 1.0, amp=0.05, noise=0.1)  # noise: inside the training statistics, but < one chunk
    _tone(d / "tone.wav", 10.0)
    _tone(d / "noise.wav", 10.0, amp=0.0, noise=0.1)
    out = tmp_path / "p.csv"
    with caplog.at_level(logging.WARNING, logger="deam_mamba.inference.files"):
        assert main(["predict", str(run), str(d), "--out", str(out)]) == 0
    rows = {Path(r["file"]).name: r for r in csv.DictReader(out.open())}
    flags = {k: r["flags"].split(";") if r["flags"] else [] for k, r in rows.items()}
    assert "silent" in flags["silence.wav"] and "out_of_distribution" in flags["silence.wav"]
    assert flags["short.wav"] == ["short"]
    assert flags["tone.wav"] == ["out_of_distribution"]
    assert flags["noise.wav"] == []
    for name, r in rows.items():
        assert 1.0 <= float(r["valence"]) <= 9.0 and 1.0 <= float(r["arousal"]) <= 9.0
        assert float(r["feature_shift_z"]) >= 0
    warned = [r.getMessage() for r in caplog.records]
    for name in ("silence.wav", "short.wav", "tone.wav"):
        assert any(str(d / name) in m and "flags:" in m for m in warned), name
    assert not any("noise.wav" in m for m in warned)
    js = tmp_path / "p.json"
    assert main(["predict", str(run), str(d / "tone.wav"), "--out", str(js)]) == 0
    assert json.loads(js.read_text())["predictions"][0]["flags"] == ["out_of_distribution"]


# --- 5. file-system faults: one line, exit 2 -------------------------------------------------------


def _one_error_line(err: str, command: str) -> str:
    err = re.sub(r"\w+:\s+\d+%\|[^\r\n]*", "", err)  # tqdm progress updates (carriage returns)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"deam-mamba {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_prepare_cache_that_is_a_file(synth_corpus, tmp_path, capsys):
    f = tmp_path / "cache_file"
    f.write_text("not a folder")
    assert main(["prepare", "--data", str(synth_corpus), "--cache", str(f), "--workers", "0", "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err, "prepare")
    assert str(f) in line and "not a folder" in line


def test_predict_out_under_a_file_fails_before_any_work(run, tmp_path, capsys):
    f = tmp_path / "plain"
    f.write_text("x")
    wav = _tone(tmp_path / "a.wav", 4.0)
    assert main(["predict", str(run), str(wav), "--out", str(f / "sub" / "p.csv")]) == 2
    line = _one_error_line(capsys.readouterr().err, "predict")
    assert str(f) in line and "not a folder" in line


def test_unforeseen_os_errors_print_file_reason_and_advice(tmp_path, capsys):
    f = tmp_path / "plain"
    f.write_text("x")
    assert main(["synth", "--out", str(f / "corpus"), "--songs", "1", "--full-songs", "0"]) == 2
    line = _one_error_line(capsys.readouterr().err, "synth")
    assert f"{f}: is a file — a part of the path is a file, not a folder: choose another path" in line


def test_permission_denied_is_one_line(run, tmp_path, capsys, monkeypatch):
    import deam_mamba.inference.files as files

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked" / "p.csv"))

    monkeypatch.setattr(files, "atomic_write_text", denied)  # root ignores chmod: fake the fault at the write
    wav = _tone(tmp_path / "a.wav", 4.0)
    assert main(["predict", str(run), str(wav), "--out", str(tmp_path / "p.csv")]) == 2
    line = _one_error_line(capsys.readouterr().err, "predict")
    assert "locked/p.csv: Permission denied — you may not read or write there" in line


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root may write anywhere")
def test_out_in_a_read_only_folder_fails_early(run, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    wav = _tone(tmp_path / "a.wav", 4.0)
    assert main(["predict", str(run), str(wav), "--out", str(locked / "p.csv")]) == 2
    assert "permission denied" in _one_error_line(capsys.readouterr().err, "predict")


# --- 4. portable run folders ----------------------------------------------------------------------


@pytest.mark.slow  # trains a run and builds its cache from a copied corpus (~30-90 s on 2 shared cores)
def test_runs_store_relative_paths_and_evaluate_from_anywhere_and_after_a_move(synth_corpus, tmp_path, monkeypatch,
                                                                              capsys):
    import yaml
    from _inference_helpers import TINY_CONFIG, tiny_overrides

    from deam_mamba.config import load_config
    from deam_mamba.runs.run import read_run_config
    from deam_mamba.train.loop import train

    proj = tmp_path / "proj"
    shutil.copytree(synth_corpus, proj / "corpus")
    monkeypatch.chdir(proj)
    cfg = load_config(TINY_CONFIG, tiny_overrides(Path("corpus"), Path("cache")))  # relative, as a user types them
    train(cfg, Path("runs/r"))
    stored = yaml.safe_load((proj / "runs/r/config.yaml").read_text())["data"]
    assert stored["root"] == "../../corpus" and stored["cache"] == "../../cache"
    rec = json.loads((proj / "runs/r/meta.json").read_text())["run_paths"]
    assert rec["data.root"]["given"] == "corpus" and rec["data.root"]["absolute"] == str(proj / "corpus")
    json.loads((proj / "runs/r/meta.json").read_text(), parse_constant=lambda c: pytest.fail(c))  # strict JSON

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # another working directory
    assert Path(read_run_config(proj / "runs/r").data.root) == proj / "corpus"
    m = evaluate_run(proj / "runs/r", split="test", bootstrap=0, progress=False)
    assert m["n_songs"] == 3

    moved = tmp_path / "moved"
    shutil.move(str(proj), str(moved))  # run and data moved together
    m2 = evaluate_run(moved / "runs/r", split="test", bootstrap=0, progress=False)
    assert m2["static"]["valence"]["ccc"] == m["static"]["valence"]["ccc"]

    alone = tmp_path / "alone"
    shutil.move(str(moved / "runs/r"), str(alone))  # the run alone: its data is not where it says
    assert main(["evaluate", str(alone), "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path.parent / "corpus") in err and "--data ROOT --cache DIR" in err  # where it looked, what to do
    assert main(["evaluate", str(alone), "--bootstrap", "0", "--data", str(moved / "corpus"),
                 "--cache", str(moved / "cache")]) == 0


# --- 6. C decoder noise stays out of the terminal ----------------------------------------------------


def _damaged_mp3(path: Path) -> Path:
    lameenc = pytest.importorskip("lameenc")
    sr = 44_100
    t = np.arange(5 * sr) / sr
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    enc = lameenc.Encoder()
    enc.set_bit_rate(128)
    enc.set_in_sample_rate(sr)
    enc.set_channels(1)
    enc.set_quality(2)
    data = bytearray(enc.encode(pcm.tobytes()) + enc.flush())
    rng = np.random.default_rng(0)
    for k in range(5):  # random bytes over frame headers in the middle of the stream
        pos = len(data) * (k + 2) // 8
        data[pos:pos + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_mpg123_notes_never_reach_the_terminal(run, tmp_path):
    import os
    import subprocess
    import sys

    mp3 = _damaged_mp3(tmp_path / "damaged.mp3")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    res = subprocess.run([sys.executable, "-m", "deam_mamba.cli", "predict", str(run), str(mp3)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert "Illegal Audio-MPEG-Header" not in res.stderr and "libmpg123" not in res.stderr
    assert f"deam-mamba predict: skipped {mp3}" in res.stderr and "the decoder reported" in res.stderr
    assert res.returncode == 1  # nothing could be predicted


def test_stderr_is_restored_after_a_decode(tmp_path):
    import os

    from deam_mamba.data.audio import load_audio

    before = os.fstat(2)
    with pytest.raises(Exception):  # noqa: B017 - any decode error; what matters is fd 2 afterwards
        load_audio(_damaged_mp3(tmp_path / "d.mp3"))
    load_audio(_tone(tmp_path / "ok.wav", 1.0))
    after = os.fstat(2)
    assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)


# --- 7. song ids are integers ---------------------------------------------------------------------------


def test_wave_dataset_refuses_ids_that_are_not_integers(synth_corpus):
    from deam_mamba.core.errors import ConfigError
    from deam_mamba.data.dataset import WaveDataset, song_ids
    from deam_mamba.data.deam import DEAMHandler

    handler = DEAMHandler(root=synth_corpus)
    first = handler.ids[0]
    for bad, shown in ((4.7, "4.7"), (None, "None"), ("12", "'12'"), (True, "True"), (float(first), f"{first}.0")):
        with pytest.raises(ConfigError, match=rf"song id {re.escape(shown)} \(position 0"):
            WaveDataset(handler, [bad])
    with pytest.raises(ConfigError, match="list of integer song ids"):
        WaveDataset(handler, 4.7)
    with pytest.raises(ConfigError, match="list of integer song ids"):
        WaveDataset(handler, "12")
    ok = WaveDataset(handler, [np.int64(first), np.int32(first), torch.tensor(first), np.array(first), first])
    assert ok.ids == [first] * 5 and all(type(i) is int for i in ok.ids)
    assert song_ids(np.array([first, first + 1])) == [first, first + 1]


class _Foreign:  # any class torch's weights_only loader refuses
    def __init__(self) -> None:
        self.x = 1


def test_foreign_state_pickle_is_refused_without_unsafe_advice(tmp_path):
    from deam_mamba.runs.checkpoint import load_state

    path = tmp_path / "step00000001.state.pt"
    torch.save({"loop": _Foreign()}, path)
    with pytest.raises(CheckpointError) as err:
        load_state(path)
    msg = str(err.value)
    assert str(path) in msg and "weights_only" not in msg and "\n" not in msg
