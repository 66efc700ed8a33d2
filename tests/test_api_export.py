"""Python API (deam_mamba.load), `embed` (.npz) and ONNX export / `predict --backend onnx` on tiny runs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from _inference_helpers import tiny_run
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import deam_mamba
from deam_mamba.cli import main
from deam_mamba.core.errors import CheckpointError, DeamError, OutputExistsError
from deam_mamba.inference.files import predict_paths
from deam_mamba.inference.predictor import Predictor
from deam_mamba.runs.checkpoint import CHECKSUM_KEY, checkpoint_paths, tensors_sha256

SR = 22_050


def _song(seconds: float, seed: int, channels: int = 2) -> np.ndarray:
    """``[T, C]`` a melody-ish tone with noise at SR."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f = 220.0 * (1 + seed % 3)
    x = 0.3 * np.sin(2 * np.pi * f * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t)) + 0.02 * rng.standard_normal(len(t))
    return np.stack([x, 0.8 * x][:channels], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def static_run(tmp_path_factory, synth_corpus) -> Path:
    return tiny_run(tmp_path_factory, synth_corpus)


@pytest.fixture(scope="module")
def quadrant_run(static_run, tmp_path_factory) -> Path:
    """A quadrant run with the ``classes`` head (4 logits): the tiny static run's backbone with a 4-way head."""
    run = tmp_path_factory.mktemp("quadrant_run") / "run"
    shutil.copytree(static_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["mode"] = "quadrant"
    cfg["loss"]["quadrant"] = "classes"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    for which in ("best", "last"):
        weights = checkpoint_paths(run, which)[0]
        with safe_open(str(weights), framework="pt") as fh:
            meta = dict(fh.metadata())
        t = load_file(str(weights))
        g = np.random.default_rng(0)
        t["head.weight"] = t["head.weight"].new_tensor(g.normal(0, 0.5, (4, t["head.weight"].shape[1])))
        t["head.bias"] = t["head.bias"].new_tensor(g.normal(0, 0.5, 4))
        meta[CHECKSUM_KEY] = tensors_sha256(t)  # new head: the stored checksum must follow
        save_file(t, str(weights), metadata=meta)
    return run


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("songs")
    out = []
    for i, secs in enumerate((7.3, 2.0, 11.0)):
        p = d / f"song{i}.wav"
        sf.write(p, _song(secs, i), SR)
        out.append(p)
    return out


# --- Python API ------------------------------------------------------------------------------


def test_import_deam_mamba_does_not_import_torch():
    code = "import sys, deam_mamba; print('torch' in sys.modules); deam_mamba.load; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_api_predict_file_and_array_agree_with_the_predictor(static_run, songs):
    model = deam_mamba.load(static_run)
    assert isinstance(model, deam_mamba.EmotionModel) and model.mode == "static"
    p = model.predict(songs[0])
    assert isinstance(p, deam_mamba.SongPrediction)
    ref = Predictor.from_run(static_run).predict_file(songs[0])
    assert (p.valence, p.arousal, p.quadrant) == (ref.valence, ref.arousal, ref.quadrant)
    np.testing.assert_array_equal(p.curve_valence, ref.curve_valence)
    assert 1.0 <= p.valence <= 9.0 and p.song_scale == "1-9" and 1 <= p.quadrant <= 4
    assert len(p.curve_times_s) == len(p.curve_arousal) == int(np.ceil(7.3 * 2))
    wave = _song(7.3, 0)  # [T, C] at SR, the file's samples (float32 -> PCM_16 quantises: compare loosely)
    q = model.predict(wave.T, sr=SR)  # [C, T] resampled to the run's rate
    assert q.source == "<array>" and abs(q.valence - p.valence) < 1e-3 and abs(q.arousal - p.arousal) < 1e-3
    mono = model.predict(wave.mean(axis=1), sr=SR)  # [T]
    assert abs(mono.valence - q.valence) < 1e-5
    at_rate = model.predict(np.zeros(model.sample_rate * 3, np.float32), sr=model.sample_rate)
    assert np.isfinite(at_rate.valence)


def test_api_array_errors(static_run):
    model = deam_mamba.load(static_run)
    with pytest.raises(DeamError, match="sample rate"):
        model.predict(np.zeros(1000, np.float32))
    with pytest.raises(DeamError, match=r"\[T, C\]"):
        model.predict(np.zeros((5000, 2), np.float32), sr=SR)
    with pytest.raises(DeamError, match="NaN"):
        model.predict(np.full(1000, np.nan, np.float32), sr=SR)
    with pytest.raises(DeamError, match="empty"):
        model.predict(np.zeros(0, np.float32), sr=SR)


def test_api_embed_shapes_and_song_mean(static_run, songs):
    model = deam_mamba.load(static_run)
    e = model.embed(songs[2])
    assert e.chunks.ndim == 2 and e.song.shape == (e.chunks.shape[1],) and e.dim == e.chunks.shape[1]
    assert e.chunks.shape[0] == len(e.chunk_starts_s) == 4  # 11 s, 3 s chunks: 0, 3, 6 and a tail at 8 s
    np.testing.assert_allclose(e.chunk_starts_s, [0.0, 3.0, 6.0, 8.0])
    np.testing.assert_allclose(e.song, e.chunks.mean(axis=0), rtol=1e-6)
    assert e.chunk_seconds == 3.0 and np.isfinite(e.chunks).all()
    # the embeddings are what the head sees: head(chunk embeddings) == the model's chunk outputs
    feats = model.predictor.features(model._wave(songs[2], None)[0])
    _, outs = model.predictor.chunk_embeddings(feats)
    head = model.predictor.model.forward_head
    import torch

    np.testing.assert_allclose(head(torch.from_numpy(e.chunks)).detach().numpy(), outs, atol=1e-5)


# --- embed command -------------------------------------------------------------------------


def test_embed_cli_writes_npz_with_names_shapes_and_skips(static_run, songs, tmp_path, capsys):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all")
    out = tmp_path / "emb.npz"
    rc = main(["embed", str(static_run), str(songs[0]), str(songs[2]), str(bad), str(tmp_path / "nope.wav"),
               "--out", str(out)])
    assert rc == 0
    z = np.load(out)
    assert list(z["files"]) == [str(songs[0]), str(songs[2])]
    d = z["song"].shape[1]
    assert z["song"].shape == (2, d) and z["chunks"].shape == (len(z["chunk_file"]), d)
    assert list(z["chunk_file"]) == [0, 0, 0, 1, 1, 1, 1]  # 7.3 s: 0, 3, 4 (tail on the 0.5 s grid); 11 s: 0, 3, 6, 8
    np.testing.assert_allclose(z["chunk_start_s"], [0.0, 3.0, 4.0, 0.0, 3.0, 6.0, 8.0])
    np.testing.assert_allclose(z["song"][1], z["chunks"][3:].mean(axis=0), rtol=1e-6)
    assert float(z["chunk_seconds"]) == 3.0 and sorted(z["skipped_files"]) == sorted([str(bad),
                                                                                      str(tmp_path / "nope.wav")])
    assert "skipped" in capsys.readouterr().err
    assert main(["embed", str(static_run), str(songs[1]), "--out", str(out)]) == 2  # exists, no --force
    assert main(["embed", str(static_run), str(songs[1]), "--out", str(out), "--force"]) == 0
    assert list(np.load(out)["files"]) == [str(songs[1])]
    assert main(["embed", str(static_run), str(songs[1]), "--out", str(tmp_path / "x.csv")]) == 2
    assert main(["embed", str(static_run), str(bad), "--out", str(tmp_path / "none.npz")]) == 1
    assert not (tmp_path / "none.npz").exists()


# --- ONNX --------------------------------------------------------------------------------


def _max_diff(a, b) -> float:
    diffs = [0.0]
    for p, q in zip(a.predictions, b.predictions, strict=True):
        diffs += [abs(p.valence - q.valence), abs(p.arousal - q.arousal),
                  float(np.abs(p.curve_valence - q.curve_valence).max()),
                  float(np.abs(p.curve_arousal - q.curve_arousal).max())]
        assert p.quadrant == q.quadrant and p.song_scale == q.song_scale
    return max(diffs)


@pytest.mark.parametrize("kind", ["static", "quadrant"])
def test_onnx_export_matches_pytorch(kind, static_run, quadrant_run, songs, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    run = static_run if kind == "static" else quadrant_run
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(run), "--onnx", str(onnx_path)]) == 0
    assert "exported" in capsys.readouterr().out
    torch_res = predict_paths(run, songs, progress=False)
    onnx_res = predict_paths(run, songs, progress=False, backend="onnx", onnx=onnx_path)
    assert len(onnx_res.predictions) == 3 and onnx_res.mode == kind
    assert _max_diff(torch_res, onnx_res) <= 1e-3  # 1-9 scale (static) or probabilities (quadrant)
    if kind == "quadrant":
        assert onnx_res.predictions[0].p_valence_positive is not None
    # chunk embeddings agree too (one ONNX pass gives outputs and embeddings); batch sizes 1 and 16
    from deam_mamba.inference.export import onnx_predictor

    po, pt = onnx_predictor(run, onnx_path, batch_size=1), Predictor.from_run(run)
    feats = pt.features(np.asarray(sf.read(songs[2], dtype="float32")[0].T))
    (eo, ro), (et, rt) = po.chunk_embeddings(feats), pt.chunk_embeddings(feats)
    assert np.abs(eo - et).max() < 1e-4 and np.abs(ro - rt).max() < 1e-4
    # the CLI path
    assert main(["predict", str(run), str(songs[1]), "--backend", "onnx", "--onnx", str(onnx_path)]) == 0
    assert str(songs[1]) in capsys.readouterr().out
    assert main(["export", str(run), "--onnx", str(onnx_path)]) == 2  # exists, no --force


def test_onnx_refuses_a_file_from_another_run_config(static_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from deam_mamba.inference.export import export_onnx, onnx_predictor

    onnx_path = tmp_path / "m.onnx"
    info = export_onnx(static_run, onnx_path)
    assert info["mode"] == "static" and json.loads(info["config"])["mode"] == "static"
    with pytest.raises(OutputExistsError):
        export_onnx(static_run, onnx_path)
    other = tmp_path / "other"
    shutil.copytree(static_run, other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["chunks"]["chunk_seconds"] = 2.0
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match="export it again"):
        onnx_predictor(other, onnx_path)
    with pytest.raises(DeamError, match="not found"):
        onnx_predictor(static_run, tmp_path / "missing.onnx")
    with pytest.raises(DeamError, match=".onnx"):
        export_onnx(static_run, tmp_path / "m.bin")
