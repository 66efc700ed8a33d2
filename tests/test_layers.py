"""Our Mlp / DropPath / trunc-normal init against timm's, our mel filters against librosa's (the references),
and a predict path free of heavy optional libraries."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from deam_mamba.models.layers import DropPath, Mlp, drop_path, trunc_normal_

timm_layers = pytest.importorskip("timm.layers")


def test_mlp_same_keys_and_outputs_as_timm():
    ours = Mlp(in_features=12, hidden_features=48, act_layer=nn.GELU, drop=0.1)
    ref = timm_layers.Mlp(in_features=12, hidden_features=48, act_layer=nn.GELU, drop=0.1)
    assert list(ours.state_dict()) == list(ref.state_dict())  # fc1.weight, fc1.bias, fc2.weight, fc2.bias
    ours.load_state_dict(ref.state_dict())
    ours.eval(), ref.eval()
    x = torch.randn(3, 7, 12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)
    ours.train(), ref.train()  # same dropout draws from the same seed
    torch.manual_seed(5)
    a = ours(x)
    torch.manual_seed(5)
    torch.testing.assert_close(a, ref(x), rtol=0, atol=0)


def test_drop_path_eval_identity_and_train_matches_timm():
    x = torch.randn(64, 5, 6, generator=torch.Generator().manual_seed(1))
    ours, ref = DropPath(0.3), timm_layers.DropPath(0.3)
    ours.eval()
    assert ours(x) is x
    ours.train(), ref.train()
    torch.manual_seed(3)
    a = ours(x)
    torch.manual_seed(3)
    torch.testing.assert_close(a, ref(x), rtol=0, atol=0)
    assert drop_path(x, 0.0, training=True) is x


def test_drop_path_drops_whole_samples_with_right_scaling_and_expectation():
    torch.manual_seed(0)
    x = torch.ones(20000, 3, 4)
    y = DropPath(0.25).train()(x)
    per_sample = y.reshape(len(y), -1)
    kept = per_sample[:, 0] != 0
    torch.testing.assert_close(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.75))  # scaled as a whole
    assert torch.all(per_sample[~kept] == 0)  # dropped samples zero as a whole
    assert abs(kept.float().mean().item() - 0.75) < 0.015
    assert abs(y.mean().item() - 1.0) < 0.02  # expectation unchanged


def test_trunc_normal_init_matches_timm():
    """Our inverse-CDF truncated normal draws what timm's draws from the same seed (absolute cut-offs a, b)."""
    for kw in (dict(std=0.02), dict(mean=0.1, std=1.0, a=-1.5, b=2.0)):
        x, y = torch.empty(300, 70), torch.empty(300, 70)
        torch.manual_seed(7)
        trunc_normal_(x, **kw)
        torch.manual_seed(7)
        timm_layers.trunc_normal_(y, **kw)
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    z = trunc_normal_(torch.empty(200_000), std=1.0, a=-1.5, b=2.0)
    assert z.min() >= -1.5 and z.max() <= 2.0 and abs(z.mean().item() - 0.083) < 0.01  # E = 0.083 for these bounds


def test_predict_path_imports_no_heavy_optional_library():
    """Importing the CLI and the predict stage, building a MambaVision and the log-mel pulls in none of timm,
    torchvision, matplotlib, librosa, scipy, sklearn, onnxruntime (they cost seconds of a cold ``predict``)."""
    code = ("import sys; import deam_mamba.cli, deam_mamba.inference.files, deam_mamba.inference.api, "
            "deam_mamba.runs.run; from deam_mamba.models import create_model; create_model('mambavision_tiny'); "
            "from deam_mamba.features.logmel import LogMel; LogMel(); "
            "bad = [m for m in ('timm', 'torchvision', 'matplotlib', 'librosa', 'sklearn', 'scipy', 'onnxruntime', "
            "'onnx') "
            "if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported eagerly: {out.stdout.strip()}"


@pytest.mark.parametrize("kw", [dict(), dict(n_mels=64, fmax=None), dict(n_mels=96, fmin=30.0, fmax=7000.0),
                                dict(sample_rate=22050, n_fft=2048, hop_length=512, n_mels=128, fmax=None)])
def test_mel_filters_equal_librosa(kw):
    librosa = pytest.importorskip("librosa")
    from deam_mamba.config import FeatureConfig
    from deam_mamba.features.logmel import hz_to_mel, mel_filters, mel_to_hz

    cfg = FeatureConfig(**kw)
    ref = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    ours = mel_filters(cfg)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-9)
    f = np.array([0.0, 500.0, 1000.0, 3000.0, 8000.0])
    np.testing.assert_allclose(hz_to_mel(f), librosa.hz_to_mel(f), rtol=1e-12)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, rtol=1e-12, atol=1e-9)
