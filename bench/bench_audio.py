"""Benchmark ``deam_mamba.data.audio.load_audio`` against ``librosa.load`` side by side.

Generates a few 45 s 44.1 kHz stereo MP3s (DEAM's common format) in a temp dir, decodes each
with both functions in interleaved rounds (so machine load hits both alike), checks the samples
agree, and writes ``bench/results/audio.json`` with per-call medians and their ratio.

    .venv/bin/python bench/bench_audio.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from deam_mamba.core.io import atomic_write_json
from deam_mamba.core.runtime import tune_malloc
from deam_mamba.data.audio import load_audio

MALLOC_TUNED = tune_malloc()  # before any tensor work: glibc keeps freed memory (DEAM_MAMBA_MALLOC_TUNE=0: off)

RESULTS = Path(__file__).resolve().parent / "results" / "audio.json"


def make_mp3s(folder: Path, n: int, seconds: float, sr: int = 44100) -> list[Path]:
    """``n`` stereo MP3s of music-like noise + tones (seeded)."""
    rng = np.random.default_rng(0)
    paths = []
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        f0 = 110.0 * (1 + i)
        left = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.2 * np.sin(2 * np.pi * 3.01 * f0 * t)
        right = 0.3 * np.sin(2 * np.pi * 1.5 * f0 * t + 0.3)
        x = np.stack([left, right], axis=1) + 0.05 * rng.standard_normal((t.size, 2))
        env = 0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t)[:, None]
        path = folder / f"{i + 2}.mp3"
        sf.write(str(path), (x * env).astype(np.float32), sr, format="MP3")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 files x 3 rounds (default 4 x 7)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    n_files, rounds = (2, 3) if args.quick else (4, 7)
    seconds, target_sr = 45.0, 16_000

    import librosa

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_mp3s(Path(tmp), n_files, seconds)
        load_audio(paths[0]), librosa.load(str(paths[0]), sr=target_sr, mono=True)  # warm-up (imports, caches)
        times: dict[str, list[float]] = {"load_audio": [], "librosa_load": []}
        max_abs_diff, len_equal = 0.0, True
        for r in range(rounds):
            order = ("load_audio", "librosa_load") if r % 2 == 0 else ("librosa_load", "load_audio")
            for path in paths:
                out = {}
                for name in order:
                    t0 = time.perf_counter()
                    if name == "load_audio":
                        out[name] = load_audio(path, target_sr=target_sr, mono=True)[0]
                    else:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            out[name] = librosa.load(str(path), sr=target_sr, mono=True)[0]
                    times[name].append(time.perf_counter() - t0)
                a, b = out["load_audio"], out["librosa_load"]
                len_equal &= a.shape == b.shape
                max_abs_diff = max(max_abs_diff, float(np.max(np.abs(a - b))) if a.shape == b.shape else np.inf)

        # WaveDataset's default "start" crop of a long (2015-style) song decodes only a prefix.
        long_path = make_mp3s(Path(tmp), 1, 120.0 if args.quick else 240.0)[0]
        prefix_times: dict[str, list[float]] = {"full_then_crop": [], "prefix_45s": []}
        n_crop = int(45.0 * target_sr)
        for _ in range(3):
            t0 = time.perf_counter()
            full = load_audio(long_path, target_sr=target_sr)[:, :n_crop]
            prefix_times["full_then_crop"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            head = load_audio(long_path, target_sr=target_sr, duration=45.25)[:, :n_crop]
            prefix_times["prefix_45s"].append(time.perf_counter() - t0)
        prefix_equal = bool(np.array_equal(full, head))

    med = {k: statistics.median(v) for k, v in times.items()}
    pmed = {k: statistics.median(v) for k, v in prefix_times.items()}
    result = {
        "what": "decode 45 s 44.1 kHz stereo MP3 -> 16 kHz mono float32; median seconds per file",
        "command": "python bench/bench_audio.py" + (" --quick" if args.quick else ""),
        "files": n_files, "rounds": rounds, "seconds_per_file": seconds,
        "median_s": {k: round(v, 5) for k, v in med.items()},
        "min_s": {k: round(min(v), 5) for k, v in times.items()},
        "ratio_load_audio_over_librosa": round(med["load_audio"] / med["librosa_load"], 4),
        "max_abs_diff": max_abs_diff,
        "same_length": bool(len_equal),
        "long_song_s": 120.0 if args.quick else 240.0,
        "long_song_median_s": {k: round(v, 5) for k, v in pmed.items()},
        "ratio_prefix_over_full_decode": round(pmed["prefix_45s"] / pmed["full_then_crop"], 4),
        "prefix_bit_identical_to_full_crop": prefix_equal,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "soundfile": sf.__version__,
                     "libsndfile": sf.__libsndfile_version__, "librosa": librosa.__version__},
        "note": "2 shared CPU cores; timings noisy, the ratio is taken from interleaved runs in one process",
    }
    result["malloc_tuned"] = MALLOC_TUNED
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0 if len_equal and max_abs_diff <= 1e-3 and prefix_equal else 1


if __name__ == "__main__":
    sys.exit(main())
