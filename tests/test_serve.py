"""``deam-mamba serve``: the JSON API (FastAPI's TestClient) on a tiny trained run, bad uploads, temp files, CLI."""
from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _inference_helpers import tiny_run

from deam_mamba.cli import main
from deam_mamba.core.scales import quadrant_of

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from deam_mamba.inference.predictor import Predictor  # noqa: E402
from deam_mamba.serve.app import create_app, upload_name, upload_suffix  # noqa: E402

LIMIT = 200_000  # bytes: a 4 s mono 16 kHz PCM16 WAV (128 kB) fits, 300 kB does not


def wav_bytes(seconds: float = 4.0, sr: int = 16_000, freq: float = 440.0, seed: int = 0) -> bytes:
    """A mono PCM16 WAV of a modulated tone plus a little noise, in memory."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    x = x + 0.01 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _strict(text: str) -> dict:
    def refuse(name: str) -> float:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, synth_corpus: Path) -> Path:
    return tiny_run(tmp_path_factory, synth_corpus, "static")


@pytest.fixture(scope="module")
def predictor(run_dir: Path) -> Predictor:
    return Predictor.from_run(run_dir)


@pytest.fixture()
def served(predictor: Predictor, tmp_path: Path):
    uploads = tmp_path / "uploads"
    with TestClient(create_app(predictor, max_upload_bytes=LIMIT, upload_dir=uploads)) as client:
        yield client, uploads


def test_health_describes_the_model(served, run_dir):
    client, _ = served
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["run_dir"] == str(run_dir) and h["model"] == "mambavision_tiny"
    assert (h["mode"], h["song_scale"], h["value_range"], h["midpoint"]) == ("static", "1-9", [1.0, 9.0], 5.0)
    assert h["chunk_seconds"] == 3.0 and h["curve_hz"] == 2.0 and h["max_upload_bytes"] == LIMIT


def test_a_good_wav_gets_its_prediction_on_the_1_to_9_scale(served, predictor, tmp_path):
    client, uploads = served
    data = wav_bytes()
    r = client.post("/api/predict", files={"file": ("my song.wav", data, "audio/wav")})
    assert r.status_code == 200, r.text
    d = _strict(r.text)
    assert d["source"] == "my song.wav" and d["song_scale"] == "1-9" and d["curve_scale"] == "1-9"
    assert 1.0 <= d["valence"] <= 9.0 and 1.0 <= d["arousal"] <= 9.0
    assert d["quadrant"] == f"Q{quadrant_of(d['valence'], d['arousal'], 5.0)}"
    assert d["duration_s"] == pytest.approx(4.0) and len(d["curve_times_s"]) == 8 == len(d["curve_valence"])
    assert d["size_bytes"] == len(data) and d["mode"] == "static" and d["predict_s"] > 0 and d["queue_s"] >= 0
    # the same numbers as predicting the file directly
    (tmp_path / "same.wav").write_bytes(data)
    direct = predictor.predict_file(tmp_path / "same.wav").to_dict()
    for k in ("valence", "arousal", "duration_s", "n_chunks", "curve_valence", "curve_arousal", "quadrant"):
        assert d[k] == direct[k], k
    assert list(uploads.iterdir()) == []


def test_bad_uploads_get_a_4xx_with_a_reason_and_leave_nothing_behind(served):
    client, uploads = served
    r = client.post("/api/predict", files={"file": ("empty.wav", b"", "audio/wav")})
    assert r.status_code == 400 and "empty.wav is empty" in r.json()["detail"]
    for name in ("notes.txt", "fake.wav", "noext"):
        r = client.post("/api/predict", files={"file": (name, b"this is not audio at all\n" * 40, "text/plain")})
        assert r.status_code == 415, (name, r.text)
        detail = r.json()["detail"]
        assert detail.startswith(f"cannot decode audio file {name}: ") and str(uploads) not in detail
    r = client.post("/api/predict", data={"other": "x"})
    assert r.status_code == 400 and "field named 'file'" in r.json()["detail"]
    assert list(uploads.iterdir()) == []
    # the server still answers
    assert client.get("/api/health").status_code == 200
    assert client.post("/api/predict", files={"file": ("ok.wav", wav_bytes(2.0), "audio/wav")}).status_code == 200
    assert list(uploads.iterdir()) == []


def test_too_large_uploads_get_413_with_or_without_a_content_length(served):
    client, uploads = served
    big = wav_bytes(10.0)  # 320 kB > LIMIT
    r = client.post("/api/predict", files={"file": ("big.wav", big, "audio/wav")})
    assert r.status_code == 413 and "--max-upload-mb" in r.json()["detail"]
    # a chunked body (no Content-Length) is cut off once it passes the limit
    boundary = "deamboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode() + big + f"\r\n--{boundary}--\r\n".encode()

    def chunks():
        for i in range(0, len(body), 16_384):
            yield body[i:i + 16_384]

    r = client.post("/api/predict", content=chunks(),
                    headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    # a file just over the limit inside a body within the multipart slack is refused by its own size
    over = wav_bytes(LIMIT / 32_000 + 0.5)
    assert LIMIT < len(over) < LIMIT + 60_000
    assert client.post("/api/predict", files={"file": ("over.wav", over, "audio/wav")}).status_code == 413
    assert list(uploads.iterdir()) == []
    assert client.post("/api/predict", files={"file": ("ok.wav", wav_bytes(2.0), "audio/wav")}).status_code == 200


def test_a_body_without_length_is_cut_off_at_the_limit_not_read_to_its_end(predictor, tmp_path):
    """Straight ASGI (the TestClient reads a whole body first): an endless chunked upload gets its 413 once it
    passes the limit plus the multipart slack, and the rest is never read."""
    import asyncio

    from deam_mamba.serve.app import MULTIPART_SLACK_BYTES

    app = create_app(predictor, max_upload_bytes=LIMIT, upload_dir=tmp_path / "up")
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()
    pulled, sent = 0, []

    async def receive() -> dict:
        nonlocal pulled
        chunk = head if pulled == 0 else b"\0" * 16_384
        pulled += len(chunk)
        if pulled > 50 * LIMIT:
            raise AssertionError("the whole endless body was read")
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/predict", "raw_path": b"/api/predict", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert LIMIT < pulled <= LIMIT + MULTIPART_SLACK_BYTES + 16_384
    assert list((tmp_path / "up").iterdir()) == []


def test_page_and_openapi(served):
    client, _ = served
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'id="file"' in html and "/api/predict" in html and "<svg" in html
    assert "http://" not in html and "https://" not in html  # nothing from the network: works offline
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "/api/health" in spec["paths"]


def test_upload_names_and_suffixes():
    assert upload_name("C:\\music\\a b.mp3") == "a b.mp3" and upload_name("../../etc/x.wav") == "x.wav"
    assert upload_name(None) == "upload" and upload_name("") == "upload"
    assert upload_suffix("song.MP3") == ".mp3" and upload_suffix("x") == ".bin" and upload_suffix("a.w$v") == ".bin"


def test_the_upload_folder_of_the_app_is_removed_at_shutdown(predictor):
    app = create_app(predictor, max_upload_bytes=LIMIT)
    folder = app.state.upload_dir
    with TestClient(app) as client:
        assert folder.is_dir()
        assert client.post("/api/predict", files={"file": ("a.wav", wav_bytes(1.0), "audio/wav")}).status_code == 200
    assert not folder.exists()


def test_cli_serve_errors_are_one_line(tmp_path, run_dir, capsys):
    assert main(["serve", str(tmp_path / "nope"), "--port", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(run_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err and "Traceback" not in err
    assert main(["serve", str(run_dir), "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be > 0" in capsys.readouterr().err


@pytest.mark.parametrize("mode,scale,lo,hi", [("static", "1-9", 1.0, 9.0), ("quadrant", "P(", 0.0, 1.0),
                                              ("dynamic", "[-1, 1]", -1.0, 1.0)])
def test_health_gives_the_value_range_of_each_run_mode(mode, scale, lo, hi):
    """The page draws its plane and curves on ``value_range``: the scale of what each kind of run predicts."""
    import torch

    from deam_mamba.config import FeatureConfig
    from deam_mamba.serve.app import model_info

    pred = Predictor(torch.nn.Identity(), FeatureConfig(n_mels=64), None, mode=mode, chunk_seconds=2.0)
    info = model_info(pred, "best", 1000)
    assert info["song_scale"].startswith(scale) and info["value_range"] == [lo, hi]
    assert info["midpoint"] == (lo + hi) / 2 and info["mode"] == mode and info["model"] is None
