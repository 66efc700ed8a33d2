"""ONNX Runtime vs PyTorch on CPU: seconds per song of ``predict`` (same songs, same process, side by side).

Writes ``bench/results/onnx.json``. A run folder of configs/demo.yaml's model (``mambavision_audio``,
random weights: speed does not depend on them; ``--run-dir`` takes a trained run) is exported with
``deam-mamba export``'s library call; then for ``--songs`` synthetic 45 s stereo 44.1 kHz WAVs, interleaved
rounds time (a) the whole ``predict_file`` with each backend and (b) the network alone on the song's chunks
(``Predictor.predict_chunks``), best of ``--repeats``. Also recorded: the largest difference between the two
backends' song values and curves, the export time, the ONNX file size, threads and the load average.

    .venv/bin/python bench/bench_onnx.py [--run-dir RUN] [--songs 3] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cold_start import make_run, write_song  # noqa: E402  (sibling bench script)

from deam_mamba.core.runtime import tune_malloc  # noqa: E402
from deam_mamba.data.audio import load_audio  # noqa: E402
from deam_mamba.features.chunks import chunk_layout  # noqa: E402
from deam_mamba.inference.export import export_onnx, onnx_predictor  # noqa: E402
from deam_mamba.inference.predictor import Predictor  # noqa: E402

MALLOC_TUNED = tune_malloc()
OUT = Path(__file__).resolve().parent / "results" / "onnx.json"


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--model", default="mambavision_audio")
    ap.add_argument("--songs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = Path(a.run_dir) if a.run_dir else make_run(tmp / "run", a.model)
        songs = []
        for i in range(a.songs):
            songs.append(tmp / f"song{i}.wav")
            write_song(songs[-1])
        onnx_path = tmp / "model.onnx"
        t0 = time.perf_counter()
        info = export_onnx(run, onnx_path)
        export_s = time.perf_counter() - t0
        pt, po = Predictor.from_run(run), onnx_predictor(run, onnx_path)
        per: dict[str, list[float]] = {"torch_predict": [], "onnx_predict": [], "torch_net": [], "onnx_net": []}
        diffs = []
        for song in songs:
            wave = load_audio(song, target_sr=pt.sample_rate)
            feats = pt.features(wave)
            starts = chunk_layout(int(feats.shape[-1]), pt.chunk_frames, pt.hop_frames, pt.align_frames)[0]
            for name, p in (("torch", pt), ("onnx", po)):  # side by side, alternating
                per[f"{name}_predict"].append(_best(lambda p=p: p.predict_file(song), a.repeats))
                per[f"{name}_net"].append(_best(lambda p=p: p.predict_chunks(feats, starts), a.repeats))
            r_t, r_o = pt.predict_file(song), po.predict_file(song)
            diffs.append(max(abs(r_t.valence - r_o.valence), abs(r_t.arousal - r_o.arousal),
                             float(np.abs(r_t.curve_valence - r_o.curve_valence).max()),
                             float(np.abs(r_t.curve_arousal - r_o.curve_arousal).max())))
        size_mb = onnx_path.stat().st_size / 1e6
        n_chunks = len(starts)
    mean = {k: round(float(np.mean(v)), 4) for k, v in per.items()}
    import onnxruntime

    res = {
        "what": "CPU seconds per 45 s song (best of repeats, mean over songs): whole predict_file and the network "
                "alone, PyTorch vs ONNX Runtime, same songs and process",
        "model": info["model_name"], "mode": info["mode"], "chunks_per_song": n_chunks,
        "chunk_input": [1, int(info["n_mels"]), int(info["chunk_frames"])], "songs": a.songs,
        "repeats": a.repeats, "seconds_per_song": mean,
        "onnx_over_torch_predict": round(mean["onnx_predict"] / mean["torch_predict"], 3),
        "onnx_over_torch_net": round(mean["onnx_net"] / mean["torch_net"], 3),
        "max_abs_diff_song_and_curves": float(max(diffs)), "diff_scale": "1-9" if info["mode"] == "static" else "",
        "export_s": round(export_s, 2), "onnx_mb": round(size_mb, 2),
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "torch_threads": torch.get_num_threads(),
        "load_average_1min_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(), "malloc_tuned": MALLOC_TUNED,
        "machine": f"{platform.processor() or platform.machine()}; shared with other jobs while measured",
        "command": " ".join(["bench/bench_onnx.py"] + sys.argv[1:]), "unix_time": int(time.time()),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
