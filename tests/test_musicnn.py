"""MusiCNN port: shapes, the converter's TF -> PyTorch name mapping, musicnn's log-mel patches, the weights file.

No TensorFlow and no downloaded weights: the TF checkpoint is faked with arrays of its real shapes (as listed by
``tf.train.list_variables`` on the musicnn 0.1.0 MSD_musicnn checkpoint). The numerical check against TensorFlow
is ``scripts/check_musicnn.py``, run by ``make musicnn``.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from deam_mamba.core.errors import CheckpointError
from deam_mamba.models import musicnn as mn

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("convert_musicnn", REPO / "scripts" / "convert_musicnn.py")
conv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv)

TF_SHAPES = {  # MSD_musicnn / MTT_musicnn variables (optimiser slots aside)
    "conv2d/kernel": (7, 38, 1, 204), "conv2d_1/kernel": (7, 67, 1, 204), "conv2d_2/kernel": (128, 1, 1, 51),
    "conv2d_3/kernel": (64, 1, 1, 51), "conv2d_4/kernel": (32, 1, 1, 51), "conv2d_5/kernel": (7, 561, 1, 64),
    "conv2d_6/kernel": (7, 64, 1, 64), "conv2d_7/kernel": (7, 64, 1, 64),
    "dense/kernel": (1506, 200), "dense_1/kernel": (200, 50),
    **{f"conv2d{s}/bias": (n,) for s, n in [("", 204), ("_1", 204), ("_2", 51), ("_3", 51), ("_4", 51),
                                               ("_5", 64), ("_6", 64), ("_7", 64)]},
    "dense/bias": (200,), "dense_1/bias": (50,),
    **{f"batch_normalization{'_' + str(i) if i else ''}/{p}": (n,)
       for i, n in enumerate([1, 204, 204, 51, 51, 51, 64, 64, 64, 1506, 200])
       for p in ("gamma", "beta", "moving_mean", "moving_variance")},
}


def fake_checkpoint(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {k: rng.standard_normal(s).astype(np.float32) * 0.1 for k, s in TF_SHAPES.items()}
    for k in out:
        if k.endswith("moving_variance"):
            out[k] = np.abs(out[k]) + 0.5
    out["conv2d/kernel/Adam"] = np.zeros(TF_SHAPES["conv2d/kernel"], np.float32)  # optimiser slots: ignored
    out["beta1_power"] = np.float32(0.9)
    return out


def test_shapes_and_any_length():
    model = mn.MusiCNN()
    x = torch.rand(2, mn.N_MELS, mn.PATCH_FRAMES) * 4
    with torch.no_grad():
        emb = model.forward_features(x)
        tags = model.forward_head(emb)
        assert model.midend_features(x).shape == (2, 753, mn.PATCH_FRAMES)
        assert model(torch.rand(1, mn.N_MELS, 40)).shape == (1, 50)
    assert emb.shape == (2, 200) and tags.shape == (2, 50)
    assert torch.isfinite(emb).all() and ((tags > 0) & (tags < 1)).all()
    with pytest.raises(ValueError, match=r"\[B, 96, T\]"):
        model(torch.rand(2, 64, 187))


def test_converter_names_load_strictly_and_layouts():
    fake = fake_checkpoint()
    mapped = conv.tf_to_torch(fake)
    model = mn.MusiCNN()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in mapped.items()}, strict=True)
    sd = model.state_dict()
    # layouts: conv2d [kt, kf, in, out] -> [out, in, kt, kf]; full-width conv -> Conv1d [out, C, k]; dense -> .T
    assert torch.equal(sd["timbral.1.conv.weight"][5, 0, 2, 60], torch.tensor(fake["conv2d_1/kernel"][2, 60, 0, 5]))
    assert torch.equal(sd["temporal.0.conv.weight"][7, 0, 100, 0], torch.tensor(fake["conv2d_2/kernel"][100, 0, 0, 7]))
    assert torch.equal(sd["midend.0.conv.weight"][3, 500, 6], torch.tensor(fake["conv2d_5/kernel"][6, 500, 0, 3]))
    assert torch.equal(sd["head.weight"], torch.from_numpy(fake["dense_1/kernel"].T))
    bn9_var = fake["batch_normalization_9/moving_variance"]
    assert torch.equal(sd["backend.pool_bn.running_var"], torch.from_numpy(bn9_var))
    del fake["batch_normalization_10/gamma"]
    with pytest.raises(KeyError, match="batch_normalization_10/gamma"):
        conv.tf_to_torch(fake)


def test_converter_constants_agree_with_module():
    assert conv.FORMAT == mn.FORMAT
    assert conv.ARCHITECTURE == json.loads(mn.architecture_json(mn.MusiCNNConfig()))
    assert conv.FEATURES == mn.FEATURE_SETTINGS
    assert conv.default_out_dir() == mn.default_teacher_dir()
    assert conv.reference_input().shape == (4, mn.N_MELS, mn.PATCH_FRAMES)


def _librosa_musicnn(y: np.ndarray) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=256, n_mels=96, pad_mode="reflect")
    return np.log10(10000 * mel.astype(np.float16).astype(np.float32) + 1)


def test_logmel_matches_librosa_on_a_tone():
    t = np.arange(int(2.5 * mn.SAMPLE_RATE)) / mn.SAMPLE_RATE
    y = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t) * (t > 1)).astype(np.float32)
    ours = mn.musicnn_logmel(y).numpy()
    ref = _librosa_musicnn(y)
    assert ours.shape == ref.shape == (96, 1 + len(y) // 256)
    assert ours.max() > 2.0  # the tone is there
    np.testing.assert_allclose(ours, ref, atol=5e-4, rtol=0)


def test_patches():
    y = np.random.default_rng(1).standard_normal(7 * mn.SAMPLE_RATE).astype(np.float32) * 0.1
    mel = mn.musicnn_logmel(y)  # 438 frames -> 2 whole patches of 187
    patches = mn.musicnn_patches(y)
    assert patches.shape == (2, 96, 187)
    assert torch.equal(patches[1], mel[:, 187:374])
    assert mn.musicnn_patches(y, hop_frames=100).shape == (3, 96, 187)
    short = mn.musicnn_patches(y[: mn.SAMPLE_RATE])  # 63 frames, repeated to fill one patch
    assert short.shape == (1, 96, 187)
    assert torch.equal(short[0, :, 63:126], short[0, :, :63])
    with pytest.raises(ValueError, match="mono"):
        mn.musicnn_logmel(np.zeros((2, 16000), np.float32))


def test_load_musicnn_roundtrip_and_refusals(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="make musicnn") as info:
        mn.load_musicnn()
    assert "\n" not in str(info.value) and "musicnn_msd.safetensors" in str(info.value)

    mapped = conv.tf_to_torch(fake_checkpoint())
    tags = [f"t{i}" for i in range(50)]
    path = tmp_path / "m.safetensors"
    save_file(mapped, str(path), metadata=conv.build_metadata("msd", tags))
    model = mn.load_musicnn(path)
    assert model.tags == tags and model.meta["licence"].startswith("ISC")
    assert torch.equal(model.state_dict()["backend.dense.bias"],
                       torch.from_numpy(mapped["backend.dense.bias"]))

    del mapped["head.bias"]
    save_file(mapped, str(path), metadata=conv.build_metadata("msd", tags))
    with pytest.raises(CheckpointError, match="head.bias.*make musicnn"):
        mn.load_musicnn(path)
    save_file(mapped, str(path), metadata={"format": "something else"})
    with pytest.raises(CheckpointError, match="not a converted MusiCNN.*make musicnn"):
        mn.load_musicnn(path)
    path.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot read.*make musicnn"):
        mn.load_musicnn(path)
