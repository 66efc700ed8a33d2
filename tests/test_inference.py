"""Song-level inference: chunking, pooling, 2 Hz curves, files/folders, corrupt files, output formats."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from deam_mamba.config import FeatureConfig
from deam_mamba.core.errors import DeamError, OutputExistsError
from deam_mamba.core.scales import DYNAMIC, STATIC
from deam_mamba.features.chunks import chunk_starts, make_chunks
from deam_mamba.features.logmel import NormStats
from deam_mamba.inference.files import collect_audio_files, predict_files, write_predictions
from deam_mamba.inference.predictor import Predictor, dynamic_curve

N_MELS = 64


class MeanModel(torch.nn.Module):
    """Fake static model: output = (mean of the chunk, mean of its first half) -> known numbers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, M, F] -> [B, 2]
        half = x.shape[-1] // 2
        return torch.stack([x.mean(dim=(1, 2, 3)), x[..., :half].mean(dim=(1, 2, 3))], dim=1)


def _predictor(mode: str = "static", hop: float | None = None, norm: NormStats | None = None, k: int = 0):
    cfg = FeatureConfig(n_mels=N_MELS)
    model: torch.nn.Module = MeanModel()
    if mode == "dynamic":
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2 * k))
        model(torch.zeros(1, 1, N_MELS, 300))
    return Predictor(model, cfg, norm, mode=mode, chunk_seconds=3.0, hop_seconds=hop, batch_size=4)


def _tone(seconds: float, sr: int = 44_100, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t)) + 0.01 * rng.standard_normal(len(t))
    return np.stack([x] * channels, axis=1).astype(np.float32)


# --- chunking -----------------------------------------------------------------------------


def test_chunk_starts_cover_the_tail_and_pad_short_songs():
    assert list(chunk_starts(1000, 300, 300)) == [0, 300, 600, 700]
    assert list(chunk_starts(900, 300, 300)) == [0, 300, 600]
    assert list(chunk_starts(120, 300, 150)) == [0]
    assert list(chunk_starts(1037, 300, 300, align_frames=50)) == [0, 300, 600, 700]  # 0.5 s grid
    assert list(chunk_starts(920, 300, 300, align_frames=50)) == [0, 300, 600]  # aligned tail adds nothing
    feats = torch.arange(64 * 120, dtype=torch.float32).reshape(64, 120)
    chunks, starts, valid = make_chunks(feats, 300, 150)
    assert chunks.shape == (1, 1, 64, 300) and valid.tolist() == [120]
    torch.testing.assert_close(chunks[0, 0, :, :120], feats)
    assert torch.all(chunks[0, 0, :, 120:] == 0)


def test_make_chunks_slices_match_the_features():
    feats = torch.randn(64, 1000)
    chunks, starts, _ = make_chunks(feats, 300, 250)
    for c, s in zip(chunks, starts):
        torch.testing.assert_close(c[0], feats[:, s:s + 300])


# --- pooling and curves -------------------------------------------------------------------


def test_static_song_value_is_the_mean_of_chunk_predictions_on_1_to_9():
    pred = _predictor(hop=1.5)
    feats = torch.randn(N_MELS, 1001, generator=torch.Generator().manual_seed(0)) * 0.1
    out = pred.predict_features(feats)
    chunks, _, _ = make_chunks(feats, 300, 150, align_frames=50)
    expect = MeanModel()(chunks).double().numpy() * 4 + 5
    assert out.n_chunks == len(chunks)
    assert out.valence == pytest.approx(expect[:, 0].mean(), abs=1e-5)
    assert out.arousal == pytest.approx(expect[:, 1].mean(), abs=1e-5)
    assert out.song_scale == out.curve_scale == STATIC.name
    assert out.duration_s == pytest.approx(10.0)
    np.testing.assert_allclose(out.curve_times_s, np.arange(0, 10.0, 0.5))
    # the curve passes through each chunk's value at the chunk centre
    centres = [1.5, 3.0, 4.5, 6.0, 7.5, 8.5]  # starts 0, 1.5, ... 6 s + a tail chunk at 7.0 s (0.5 s grid)
    got = out.curve_valence[np.isin(out.curve_times_s, centres)]
    np.testing.assert_allclose(got, expect[:, 0], atol=1e-5)


def test_static_curve_interpolates_linearly_between_chunks():
    pred = _predictor(hop=3.0)
    # feature level rises by 0.25 per chunk -> chunk means 0, .25, .5 -> valence 5, 6, 7 at centres 1.5, 4.5, 7.5
    feats = torch.cat([torch.full((N_MELS, 300), 0.25 * i) for i in range(3)], dim=1)
    out = pred.predict_features(feats)
    np.testing.assert_allclose(np.interp([3.0, 6.0], out.curve_times_s, out.curve_valence), [5.5, 6.5], atol=1e-5)
    assert out.curve_valence[0] == pytest.approx(5.0) and out.curve_valence[-1] == pytest.approx(7.0)
    assert out.flags == []  # on the scale: nothing clipped


def test_dynamic_curve_averages_overlapping_chunks_on_the_2hz_grid():
    g = lambda t: np.stack([np.sin(t / 3.0), np.cos(t / 5.0)], axis=-1) * 0.8  # noqa: E731
    k, starts = 6, np.array([0.0, 1.5, 3.0, 4.5, 6.0])
    raw = np.stack([g(s + np.arange(k) / 2.0).reshape(-1) for s in starts])  # interleaved (v, a) pairs
    grid = np.arange(0, 9.0, 0.5)
    curve = dynamic_curve(raw, starts, 3.0, grid)
    np.testing.assert_allclose(curve, g(grid), atol=1e-12)
    # disagreeing overlaps are averaged
    raw2 = raw.copy()
    raw2[1] += 0.2  # chunk 1 covers 1.5..4.0 s; overlaps with chunks 0 (to 2.5 s) and 2 (from 3.0 s)
    c2 = dynamic_curve(raw2, starts, 3.0, grid)
    i = int(2.0 * 2)  # t = 2.0 s: covered by chunks 0 and 1
    np.testing.assert_allclose(c2[i], g(np.array(2.0)) + 0.1, atol=1e-12)


def test_dynamic_predictor_reports_the_pm1_scale():
    pred = _predictor(mode="dynamic", k=6)
    out = pred.predict_features(torch.randn(N_MELS, 701))
    assert out.song_scale == out.curve_scale == DYNAMIC.name
    assert len(out.curve_times_s) == 14 and np.all(np.isfinite(out.curve_valence))
    assert out.valence == pytest.approx(out.curve_valence.mean())


def test_norm_stats_are_applied_before_the_model():
    norm = NormStats(mean=np.full(N_MELS, -40.0), std=np.full(N_MELS, 10.0))
    pred = _predictor(norm=norm)
    feats_db = torch.full((N_MELS, 400), -30.0)
    x = pred.normalise(feats_db)
    torch.testing.assert_close(x, torch.ones(N_MELS, 400))


# --- files, folders, corrupt input, outputs -----------------------------------------------


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    sf.write(d / "a.wav", _tone(7.0), 44_100)
    sub = d / "sub" / "deeper"
    sub.mkdir(parents=True)
    sf.write(sub / "b.flac", _tone(4.0, sr=22_050, channels=1, seed=1), 22_050)
    sf.write(d / "short.ogg", _tone(1.2, sr=48_000, seed=2), 48_000, format="OGG")
    (d / "broken.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00 this is not an mp3 stream" * 10)
    (d / "notes.txt").write_text("not audio")
    return d


def test_collect_audio_files_recurses_and_reports_missing(audio_dir, tmp_path):
    files, missing = collect_audio_files([audio_dir, audio_dir / "a.wav", tmp_path / "nope.wav", tmp_path])
    names = sorted(f.name for f in files)
    assert names == ["a.wav", "b.flac", "broken.mp3", "short.ogg"]  # a.wav once, notes.txt ignored
    reasons = {m["path"]: m["reason"] for m in missing}
    assert "no such file" in reasons[str(tmp_path / "nope.wav")]
    assert "no audio files" in reasons[str(tmp_path)]


def test_predict_files_skips_corrupt_and_pads_short_files(audio_dir):
    pred = _predictor(hop=1.5)
    files, _ = collect_audio_files([audio_dir])
    res = predict_files(pred, files, progress=False)
    got = {p.source.split("/")[-1]: p for p in res.predictions}
    assert sorted(got) == ["a.wav", "b.flac", "short.ogg"]
    assert [s["path"].split("/")[-1] for s in res.skipped] == ["broken.mp3"] and res.skipped[0]["reason"]
    short = got["short.ogg"]  # 1.2 s < one 3 s chunk: padded, one chunk, 3 curve points
    assert short.n_chunks == 1 and short.duration_s == pytest.approx(1.2, abs=0.01)
    assert len(short.curve_times_s) == 3
    a = got["a.wav"]
    assert a.duration_s == pytest.approx(7.0, abs=0.01) and a.n_chunks == 4  # starts 0, 1.5, 3, 4 s
    assert len(a.curve_times_s) == 14
    for p in got.values():
        assert np.isfinite([p.valence, p.arousal]).all()


def test_a_few_samples_of_audio_still_predict(tmp_path):
    sf.write(tmp_path / "blip.wav", _tone(0.01, sr=16_000, channels=1), 16_000)
    out = _predictor().predict_file(tmp_path / "blip.wav")
    assert out.n_chunks == 1 and len(out.curve_times_s) == 1 and np.isfinite(out.valence)


def test_outputs_csv_and_json_and_refuse_to_overwrite(audio_dir, tmp_path):
    pred = _predictor(hop=1.5)
    files, _ = collect_audio_files([audio_dir])
    res = predict_files(pred, files, progress=False)
    js = write_predictions(res, tmp_path / "p.json")
    doc = json.loads(js.read_text())
    assert doc["song_scale"] == doc["curve_scale"] == STATIC.name and doc["curve_hz"] == 2.0
    assert len(doc["predictions"]) == 3 and doc["skipped"][0]["path"].endswith("broken.mp3")
    rec = doc["predictions"][0]
    assert len(rec["curve_times_s"]) == len(rec["curve_valence"]) == len(rec["curve_arousal"])
    cs = write_predictions(res, tmp_path / "p.csv")
    rows = list(csv.DictReader(cs.open()))
    assert len(rows) == 4 and rows[-1]["skipped_reason"] and rows[-1]["valence"] == ""
    assert float(rows[0]["valence"]) == pytest.approx(rec["valence"], abs=1e-4)
    assert len(rows[0]["curve_valence"].split(";")) == len(rec["curve_valence"])
    before = js.read_bytes()
    with pytest.raises(OutputExistsError, match="--force"):
        write_predictions(res, js)
    assert js.read_bytes() == before
    write_predictions(res, js, force=True)
    with pytest.raises(DeamError, match="csv or .json"):
        write_predictions(res, tmp_path / "p.txt")


def test_batch_size_does_not_change_predictions():
    feats = torch.randn(N_MELS, 2345, generator=torch.Generator().manual_seed(1))
    a = _predictor(hop=1.0).predict_features(feats)
    p1 = _predictor(hop=1.0)
    p1.batch_size = 1
    b = p1.predict_features(feats)
    assert a.n_chunks == b.n_chunks == 21
    np.testing.assert_allclose(a.curve_valence, b.curve_valence, atol=1e-6)
    assert a.arousal == pytest.approx(b.arousal, abs=1e-6)
