"""Song-level prediction speed on CPU: where the time goes, and batched vs one-chunk-at-a-time.

Writes ``bench/results/inference.json``. For a 45 s stereo 44.1 kHz MP3 and ``mambavision_audio``
(random weights; speed does not depend on them) with the default features (16 kHz, 128 mels) and
5 s chunks every 2.5 s, it times side by side in one run: decode + resample, log-mel, the model
over all chunks with ``batch_size`` 16 vs 1, and the whole ``predict_file``. Reports seconds per
song, the real-time factor (audio seconds per compute second) and the batched/unbatched ratio.
The machine may be shared with other work: compare the ratios, not the absolute times.

    .venv/bin/python bench/bench_inference.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from deam_mamba.config import FeatureConfig
from deam_mamba.core.runtime import tune_malloc
from deam_mamba.data.audio import load_audio
from deam_mamba.features.chunks import chunk_layout
from deam_mamba.inference.predictor import Predictor
from deam_mamba.models.registry import create_model

MALLOC_TUNED = tune_malloc()  # before any tensor work: glibc keeps freed memory (DEAM_MAMBA_MALLOC_TUNE=0: off)

OUT = Path(__file__).resolve().parent / "results" / "inference.json"


def _song(path: Path, seconds: float = 45.0, sr: int = 44_100) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (220, 277, 330, 440)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    x = x + 0.01 * rng.standard_normal(len(t))
    sf.write(path, np.stack([x, x * 0.9], axis=1).astype(np.float32), sr, format="MP3")


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args()
    repeats = 2 if args.quick else 5
    torch.manual_seed(0)
    cfg = FeatureConfig()
    model = create_model("mambavision_audio", num_classes=2).eval()
    pred16 = Predictor(model, cfg, None, chunk_seconds=5.0, hop_seconds=2.5, batch_size=16)
    pred1 = Predictor(model, cfg, None, chunk_seconds=5.0, hop_seconds=2.5, batch_size=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "song.mp3"
        _song(path)
        wave = load_audio(path, target_sr=cfg.sample_rate)
        seconds = wave.shape[-1] / cfg.sample_rate
        feats = pred16.features(wave)
        starts, _ = chunk_layout(int(feats.shape[-1]), pred16.chunk_frames, pred16.hop_frames, pred16.align_frames)
        pred16.predict_file(path)  # warm-up
        stages = {
            "decode": lambda: load_audio(path, target_sr=cfg.sample_rate),
            "mel": lambda: pred16.features(wave),
            "b16": lambda: pred16.predict_chunks(feats, starts),
            "b1": lambda: pred1.predict_chunks(feats, starts),
            "total": lambda: pred16.predict_file(path),
        }
        # interleaved rounds (every stage once per round), best per stage: load from other jobs
        # hits all stages alike instead of whichever happened to run during a busy spell
        times: dict[str, list[float]] = {k: [] for k in stages}
        for _ in range(repeats):
            for k, fn in stages.items():
                times[k].append(_best(fn, 1))
        t_decode, t_mel, t_b16, t_b1, t_total = (min(times[k]) for k in stages)
    res = {
        "what": "predict one 45 s stereo 44.1 kHz MP3 with mambavision_audio on CPU (best of repeats)",
        "audio_seconds": round(seconds, 2),
        "n_chunks": len(starts),
        "chunk_seconds": 5.0, "hop_seconds": 2.5,
        "params": int(sum(p.numel() for p in model.parameters())),
        "seconds": {"decode_resample": round(t_decode, 4), "logmel_normalise": round(t_mel, 4),
                    "model_batch16": round(t_b16, 4), "model_batch1": round(t_b1, 4),
                    "predict_file_total": round(t_total, 4)},
        "real_time_factor": round(seconds / t_total, 1),
        "ratio_batch1_over_batch16": round(t_b1 / t_b16, 2),
        "model_share_of_total": round(t_b16 / t_total, 3),
        "repeats": repeats,
        "load_average_1min_at_end": round(__import__("os").getloadavg()[0], 2),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}; shared with other engineers' jobs while measured",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    res["malloc_tuned"] = MALLOC_TUNED
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
