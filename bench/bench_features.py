"""Torch log-mel (``deam_mamba.features.logmel.LogMel``) vs librosa, measured side by side in one run.

Cases, per 45 s clip at 16 kHz (n_fft 1024, hop 160, 128 mels, top_db 80):
  librosa_1      librosa.feature.melspectrogram + power_to_db, one clip
  torch_1        LogMel, one clip (blocked CPU path, torch's default threads)
  torch_1_one_thread  the same with torch.set_num_threads(1) (as in prepare's workers)
  torch_8        LogMel on a [8, 1, T] batch, time per clip
  naive_stft_8   one torch.stft over the whole [8, T] batch + mel matmul, time per clip (the
                 memory-bound way LogMel avoids)
  cuda_1/cuda_8  LogMel on the GPU when one is present (synchronised)
Rounds interleave the cases in blocks (A A A A, B B B B, ..., then again) so load from other
processes hits all of them alike; the first call of each block is not timed (BLAS/OpenMP threads
of the previous case may still be spinning). Medians over all timed calls are reported, and
ratios are of those medians.

    .venv/bin/python bench/bench_features.py [--quick] [--out bench/results/features.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from deam_mamba.config import FeatureConfig
from deam_mamba.core.runtime import tune_malloc
from deam_mamba.features.logmel import LogMel

MALLOC_TUNED = tune_malloc()  # before any tensor work: glibc keeps freed memory (DEAM_MAMBA_MALLOC_TUNE=0: off)


def music_like(seconds: float, sr: int, seed: int) -> np.ndarray:
    """``[T]`` float32: harmonic glide + noise, amplitude-modulated (a stand-in for a song)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110.0 * (1.0 + 0.5 * np.sin(2 * np.pi * 0.05 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    return (0.1 * y + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def timed(fn: Callable[[], object], sync: bool = False) -> float:
    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "features.json"))
    args = ap.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    reps = 2 if args.quick else 4
    import librosa

    cfg = FeatureConfig()
    clips = np.stack([music_like(45.0, cfg.sample_rate, s) for s in range(8)])  # [8, T]
    one = torch.from_numpy(clips[0])
    batch = torch.from_numpy(clips)[:, None, :]  # [8, 1, T]
    lm = LogMel(cfg)
    fb = lm.mel_fb
    window = lm.window

    def run_librosa() -> np.ndarray:
        mel = librosa.feature.melspectrogram(
            y=clips[0], sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
            fmin=cfg.fmin, fmax=cfg.fmax, center=True, pad_mode=cfg.pad_mode,
        )
        return librosa.power_to_db(mel, ref=1.0, amin=cfg.amin, top_db=cfg.top_db)

    def run_naive8() -> torch.Tensor:
        spec = torch.stft(batch[:, 0], cfg.n_fft, cfg.hop_length, window=window, center=True,
                          pad_mode=cfg.pad_mode, return_complex=True)
        return torch.log10(torch.matmul(fb, spec.abs() ** 2).clamp(min=cfg.amin)) * 10

    threads = torch.get_num_threads()

    def run_torch_single_thread() -> torch.Tensor:
        torch.set_num_threads(1)
        try:
            return lm(one)
        finally:
            torch.set_num_threads(threads)

    cases: dict[str, tuple[Callable[[], object], int, bool]] = {
        "librosa_1": (run_librosa, 1, False),
        "torch_1": (lambda: lm(one), 1, False),
        "torch_1_one_thread": (run_torch_single_thread, 1, False),
        "torch_8": (lambda: lm(batch), 8, False),
        "naive_stft_8": (run_naive8, 8, False),
    }
    gpu = torch.cuda.is_available()
    if gpu:
        lm_gpu = LogMel(cfg).cuda()
        one_gpu, batch_gpu = one.cuda(), batch.cuda()
        cases["cuda_1"] = (lambda: lm_gpu(one_gpu), 1, True)
        cases["cuda_8"] = (lambda: lm_gpu(batch_gpu), 8, True)

    with torch.inference_mode():
        ref = run_librosa()
        got = lm(one).numpy()
        max_abs_db = float(np.abs(got - ref).max())
        for fn, _, sync in cases.values():  # warm-up (FFT plans, allocator, librosa caches)
            timed(fn, sync)
            timed(fn, sync)
        per_clip: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(rounds):
            for name, (fn, n, sync) in cases.items():
                timed(fn, sync)  # first call of a block: thread pools of the previous case may still spin
                for _ in range(reps):
                    per_clip[name].append(timed(fn, sync) / n)

    med = {k: statistics.median(v) * 1000 for k, v in per_clip.items()}
    result = {
        "benchmark": "features: torch LogMel vs librosa, per 45 s clip",
        "command": "python bench/bench_features.py" + (" --quick" if args.quick else ""),
        "settings": cfg.to_dict(),
        "rounds": rounds, "timed_calls_per_block": reps,
        "ms_per_clip_median": {k: round(v, 3) for k, v in med.items()},
        "ms_per_clip_min": {k: round(min(v) * 1000, 3) for k, v in per_clip.items()},
        "ratios": {
            "librosa_over_torch_1": round(med["librosa_1"] / med["torch_1"], 3),
            "librosa_over_torch_8_per_clip": round(med["librosa_1"] / med["torch_8"], 3),
            "librosa_over_torch_1_one_thread": round(med["librosa_1"] / med["torch_1_one_thread"], 3),
            "torch_8_per_clip_over_torch_1": round(med["torch_8"] / med["torch_1"], 3),
            "naive_stft_8_per_clip_over_torch_8_per_clip": round(med["naive_stft_8"] / med["torch_8"], 3),
        },
        "goals": {"librosa_over_torch_1 >= 2.5": med["librosa_1"] / med["torch_1"] >= 2.5,
                  "torch_8_per_clip_over_torch_1 <= 1.0 (+5% noise)": med["torch_8"] / med["torch_1"] <= 1.05},
        "max_abs_diff_db_vs_librosa": max_abs_db,
        "machine": {
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if gpu else None,
            "load_average_at_end": os.getloadavg(),
            "note": "shared machine: other engineers' jobs ran at the same time; rounds are interleaved "
                    "so the ratios are fair, absolute times are noisy",
        },
    }
    if gpu:
        result["ratios"]["torch_1_over_cuda_1"] = round(med["torch_1"] / med["cuda_1"], 1)
        result["ratios"]["torch_8_over_cuda_8_per_clip"] = round(med["torch_8"] / med["cuda_8"], 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result["malloc_tuned"] = MALLOC_TUNED
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"ms_per_clip_median": result["ms_per_clip_median"], "ratios": result["ratios"]}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
