"""Load test of ``deam-mamba serve`` on loopback: N requests from C concurrent clients, nothing may be lost.

Starts ``deam-mamba serve RUN --port 0`` in a subprocess, sends one warm-up request, then ``--requests``
``POST /api/predict`` of the same ``--seconds`` s synthetic WAV (stereo, 44.1 kHz, 16 bit: decode and resampling
are part of every request) from ``--clients`` threads, each with its own HTTP connection. Records throughput
(answered requests per wall second), client-side latency p50/p95/max, the server's own prediction time per
request, failed (non-200 or transport error) and lost (sent, never answered) requests, and the machine's load
average. The server predicts one request at a time, so latency under C clients is about C times the service
time: the point is that requests queue and none is lost.

Without ``--run`` the model is ``configs/demo.yaml``'s ``mambavision_audio`` (5.3 M parameters, 4 s chunks every
2 s) with random weights and mean pooling (speed does not depend on the weights), written as a run folder in a
temporary directory.

    .venv/bin/python bench/bench_serve.py [--run RUN_DIR] [--requests 200] [--clients 8] [--quick]

Writes ``bench/results/serve.json`` and ``serve.md``.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from deam_mamba.core.io import atomic_write_json, atomic_write_text

OUT = REPO / "bench" / "results" / "serve.json"


def random_run(folder: Path) -> Path:
    """A run folder of ``configs/demo.yaml`` (mean pooling) with random weights; returns its path."""
    import torch

    from deam_mamba.config import load_config, save_config
    from deam_mamba.models.build import build_model
    from deam_mamba.runs.checkpoint import checkpoint_meta, save_checkpoint

    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / "demo.yaml", ["model.pooling=mean", "train.device=cpu"])
    run = folder / "run"
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    save_checkpoint(run, build_model(cfg).eval(), {}, step=0, meta=checkpoint_meta(cfg, None), best_metrics={})
    return run


def song_wav(seconds: float, sr: int = 44_100) -> bytes:
    """A stereo 16-bit WAV of a few chords with a tremolo, in memory."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (220, 277, 330, 440)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    x = x + 0.01 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, np.stack([x, 0.9 * x], axis=1).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def start_server(run: Path, timeout_s: float = 180.0) -> tuple[subprocess.Popen, str]:
    """``deam-mamba serve RUN --port 0`` in a subprocess; returns it and its URL once /api/health answers."""
    import httpx

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "deam_mamba.cli", "serve", str(run), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if " on http://" in line:
            url = line.split(" on ", 1)[1].split(" ", 1)[0]
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "api/health", timeout=2).status_code == 200:
                        return proc, url
                except httpx.HTTPError:
                    time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start")


def load_test(url: str, data: bytes, requests: int, clients: int) -> dict:
    """Send ``requests`` POSTs from ``clients`` threads; per-request latency, status and server time."""
    import httpx

    todo: queue.Queue[int] = queue.Queue()
    for i in range(requests):
        todo.put(i)
    results: list[dict] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=600.0) as http:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                t0 = time.perf_counter()
                row = {"i": i, "status": None, "error": None, "server_s": None}
                try:
                    r = http.post(url + "api/predict", files={"file": (f"song{i}.wav", data, "audio/wav")})
                    row["status"] = r.status_code
                    if r.status_code == 200:
                        row["server_s"] = r.json()["predict_s"]
                except httpx.HTTPError as exc:
                    row["error"] = f"{type(exc).__name__}: {exc}"
                row["latency_s"] = time.perf_counter() - t0
                with lock:
                    results.append(row)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["status"] == 200]
    lat = np.array([r["latency_s"] for r in ok]) if ok else np.array([np.nan])
    server = np.array([r["server_s"] for r in ok]) if ok else np.array([np.nan])
    return {
        "requests": requests, "clients": clients, "answered_200": len(ok),
        "failed": sum(1 for r in results if r["status"] != 200),
        "lost": requests - len(results),
        "failures": [r for r in results if r["status"] != 200][:10],
        "wall_s": round(wall, 2), "throughput_req_per_s": round(len(ok) / wall, 3),
        "latency_s": {"p50": round(float(np.percentile(lat, 50)), 3), "p95": round(float(np.percentile(lat, 95)), 3),
                      "max": round(float(lat.max()), 3), "mean": round(float(lat.mean()), 3)},
        "server_predict_s": {"p50": round(float(np.percentile(server, 50)), 3),
                             "p95": round(float(np.percentile(server, 95)), 3)},
    }


def markdown(doc: dict) -> str:
    r = doc["result"]
    return "\n".join([
        "# `deam-mamba serve` under load (loopback)",
        "",
        f"{doc['what']}. Measured {doc['date']} on {doc['machine']}.",
        "",
        "| requests | clients | answered 200 | failed | lost | throughput (req/s) | latency p50 / p95 / max (s) "
        "| server predict p50 (s) | load avg 1 min (start / end) |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---|",
        f"| {r['requests']} | {r['clients']} | {r['answered_200']} | {r['failed']} | {r['lost']} "
        f"| {r['throughput_req_per_s']} | {r['latency_s']['p50']} / {r['latency_s']['p95']} / {r['latency_s']['max']} "
        f"| {r['server_predict_s']['p50']} | {doc['load_average_1min_start']} / {doc['load_average_1min_end']} |",
        "",
        f"Command: `{doc['command']}`. The server predicts one request at a time (one worker thread, torch on "
        f"{doc['torch_threads']} threads), so with {r['clients']} clients each request waits for the ones ahead "
        "of it: latency is about the number of clients times the service time, and nothing is dropped.",
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="run folder to serve (default: demo config, random weights)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the uploaded song")
    ap.add_argument("--quick", action="store_true", help="20 requests (a smoke run; results not written)")
    a = ap.parse_args()
    requests = 20 if a.quick else a.requests
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(a.run) if a.run else random_run(Path(tmp))
        data = song_wav(a.seconds)
        proc, url = start_server(run)
        try:
            import httpx

            warm = httpx.post(url + "api/predict", files={"file": ("warm.wav", data, "audio/wav")}, timeout=600)
            assert warm.status_code == 200, warm.text
            info = httpx.get(url + "api/health").json()
            load0 = os.getloadavg()[0]
            result = load_test(url, data, requests, a.clients)
            load1 = os.getloadavg()[0]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    doc = {
        "what": (f"{requests} POST /api/predict of a {a.seconds:g} s stereo 44.1 kHz 16-bit WAV "
                 f"({len(data) / 1e6:.2f} MB, {warm.json()['n_chunks']} chunks) from {a.clients} concurrent clients, "
                 f"model {info['model']} "
                 f"({'random weights' if not a.run else a.run}), {info['chunk_seconds']:g} s chunks every "
                 f"{info['hop_seconds']:g} s, CPU"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python bench/bench_serve.py" + (" --quick" if a.quick else ""),
        "chunks_per_request": warm.json()["n_chunks"],
        "result": result,
        "load_average_1min_start": round(load0, 2), "load_average_1min_end": round(load1, 2),
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs",
    }
    print(markdown(doc))
    if not a.quick:
        atomic_write_json(OUT, doc)
        atomic_write_text(OUT.with_suffix(".md"), markdown(doc))
        print(f"wrote {OUT} and {OUT.with_suffix('.md')}")
    if result["failed"] or result["lost"]:
        raise SystemExit(f"{result['failed']} failed and {result['lost']} lost requests")


if __name__ == "__main__":
    main()
