"""MP3 writing of the synthetic corpus: CBR 44.1 kHz stereo, exact length and alignment on decode."""
from __future__ import annotations

import json
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from deam_mamba.synth import mp3

pytestmark = pytest.mark.skipif(mp3.lameenc is None, reason="lameenc not installed")


def _test_signal(n: int) -> np.ndarray:
    """``[n, 2]`` float32: two tones and a little seeded noise, different per channel."""
    t = np.arange(n) / mp3.SAMPLE_RATE
    rng = np.random.default_rng(0)
    left = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.01 * rng.standard_normal(n)
    right = 0.2 * np.sin(2 * np.pi * 660.0 * t + 1.0) + 0.01 * rng.standard_normal(n)
    return np.stack([left, right], axis=1).astype(np.float32)


def _frame_headers(stream: bytes) -> list[bytes]:
    out, off = [], 0
    while off < len(stream):
        out.append(stream[off : off + 4])
        off += mp3._frame_bytes(stream[off : off + 4])
    return out


@pytest.mark.parametrize("n", [44_100 * 3 + 17, 1152 * 40 - 576])
def test_decodes_to_exact_length_aligned(tmp_path: Path, n: int) -> None:
    x = _test_signal(n)
    path = tmp_path / "x.mp3"
    mp3.write_mp3(path, x)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.format, info.frames) == (44_100, 2, "MP3", n)
    y, sr = sf.read(str(path), dtype="float32")
    z, _ = librosa.load(str(path), sr=None, mono=False)
    assert sr == 44_100 and y.shape == (n, 2) and z.shape == (2, n)
    np.testing.assert_array_equal(y.T, z)
    # aligned: lag 0 fits far better than the 1 105-sample delay of an untagged stream
    err0 = float(np.mean((y[2000:-2000] - x[2000:-2000]) ** 2))
    err_shift = float(np.mean((y[3105:-2000] - x[2000:-3105]) ** 2))
    assert err0 < 0.01 * float(np.mean(x**2)) and err_shift > 10 * err0


def test_constant_bitrate_and_lame_tag() -> None:
    data = mp3.encode_mp3(_test_signal(44_100))
    headers = _frame_headers(data)
    assert {h[2] >> 4 for h in headers} == {9}  # 128 kbit/s in every frame, the Info frame too
    assert data[36:40] == b"Info" and data[156:165] == b"LAME3.100"
    assert mp3.count_frames(data) == len(headers)
    with pytest.raises(ValueError, match="not an MPEG-1 Layer III"):
        mp3.count_frames(b"\x00" * 500)
    with pytest.raises(ValueError, match="stereo"):
        mp3.encode_mp3(np.zeros((100, 1), np.float32))


def test_same_input_same_bytes() -> None:
    x = _test_signal(30_000)
    assert mp3.encode_mp3(x) == mp3.encode_mp3(x.copy())


def test_fallback_without_lameenc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mp3, "lameenc", None)
    mp3.write_mp3(tmp_path / "f.mp3", _test_signal(22_050))
    assert sf.info(str(tmp_path / "f.mp3")).frames == 22_050


def test_corpus_files_have_their_full_length(synth_corpus: Path) -> None:
    """Every song decodes to its rendered length (2 x round(duration x 22 050) samples at 44.1 kHz)."""
    durations = json.loads((synth_corpus / "synth_info.json").read_text())["durations_s"]
    for sid, dur in durations.items():
        info = sf.info(str(synth_corpus / "DEAM_audio/MEMD_audio" / f"{sid}.mp3"))
        assert info.frames == 2 * round(dur * 22_050), sid
