"""Cold start of ``deam-mamba predict``: wall time and peak memory of a fresh process on one 45 s song.

Writes ``bench/results/cold_start.json`` (and ``cold_start.md``). Each repeat is a new
``python -m deam_mamba.cli predict RUN_DIR song.wav`` subprocess (nothing cached in the process: imports,
weights, feature pipeline, prediction); the median of ``--repeats`` and the peak RSS (the child's
``ru_maxrss``) are reported, beside the import time of ``deam_mamba.cli`` and of ``torch`` alone (fresh
processes too) and the machine's load average (the machine may be shared: high load inflates times).

RUN_DIR: ``--run-dir`` (a trained run), else a run folder written here with the real checkpoint writer for
``--model`` (default ``mambavision_audio``, the configs/demo.yaml model, random weights: the speed does not
depend on them) with configs/demo.yaml's features and chunking. The song is a synthetic 45 s stereo
44.1 kHz WAV.

    .venv/bin/python bench/bench_cold_start.py [--run-dir RUN] [--model mambavision_tiny] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "cold_start.json"
HEAVY = ("timm", "torchvision", "matplotlib", "librosa", "sklearn", "onnxruntime", "pandas", "scipy")


def write_song(path: Path, seconds: float = 45.0, sr: int = 44_100) -> None:
    """A synthetic 45 s stereo chord with a slow tremolo and noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (220, 277, 330, 440)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    x = x + 0.01 * rng.standard_normal(len(t))
    sf.write(path, np.stack([x, 0.9 * x], axis=1).astype(np.float32), sr)


def make_run(run_dir: Path, model: str) -> Path:
    """A run folder (config.yaml + best/last checkpoint) of configs/demo.yaml with ``model``, untrained."""
    from deam_mamba.config import load_config, save_config
    from deam_mamba.features.logmel import NormStats
    from deam_mamba.models.build import build_model
    from deam_mamba.runs.checkpoint import checkpoint_meta, save_checkpoint

    cfg = load_config(REPO / "configs" / "demo.yaml", [f"model.name={model}", "model.kwargs={}", "model.pooling=mean"])
    run_dir.mkdir(parents=True)
    save_config(cfg, run_dir / "config.yaml")
    n = cfg.features.n_mels
    norm = NormStats(mean=np.full(n, -40.0), std=np.full(n, 20.0), count=1)
    net = build_model(cfg).eval()
    save_checkpoint(run_dir, net, {}, step=0, meta=checkpoint_meta(cfg, norm), best_metrics={"val_ccc_mean": 0.0})
    return run_dir


def _child(cmd: list[str], src: Path = REPO / "src") -> tuple[float, float, str, float]:
    """``(wall s, peak RSS MiB, stdout, CPU s = user + system)`` of one fresh process running the package in ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src), TQDM_DISABLE="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err}")
    return wall, usage.ru_maxrss / 1024.0, out, usage.ru_utime + usage.ru_stime  # ru_maxrss: KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--model", default="mambavision_audio")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--baseline-src", default=None, metavar="SRC",
                    help="also time `predict` with the package in SRC (e.g. a checkout before this change), "
                         "interleaved with ours")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        song = tmp / "song.wav"
        write_song(song)
        run = Path(a.run_dir) if a.run_dir else make_run(tmp / "run", a.model)
        load_start = os.getloadavg()
        predict = [py, "-m", "deam_mamba.cli", "predict", str(run), str(song)]
        imports = {
            "torch": [py, "-c", "import torch"],
            "deam_mamba.cli": [py, "-c", "import deam_mamba.cli"],
            "deam_mamba.cli+predict_stage": [py, "-c", "import deam_mamba.cli, deam_mamba.inference.files"],
        }
        rows: dict[str, list[tuple[float, float, str, float]]] = {k: [] for k in ["predict", *imports]}
        if a.baseline_src:
            rows["baseline_predict"] = []
        for _ in range(a.repeats):  # interleaved rounds: a load spike hits every measurement alike
            rows["predict"].append(_child(predict))
            if a.baseline_src:
                rows["baseline_predict"].append(_child(predict, Path(a.baseline_src)))
            for k, cmd in imports.items():
                rows[k].append(_child(cmd))
        heavy = _child([py, "-c", "import sys, deam_mamba.cli, deam_mamba.inference.files, deam_mamba.runs.run; "
                                  f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"])[2].strip()
        load_end = os.getloadavg()
        import yaml

        from deam_mamba.config import config_from_dict  # the run's model, for the record

        cfg = config_from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    med = {k: round(statistics.median(r[0] for r in v), 3) for k, v in rows.items()}
    res = {
        "what": "wall seconds of fresh processes (median of repeats) and peak RSS of `deam-mamba predict RUN song.wav`"
                " on a synthetic 45 s stereo 44.1 kHz WAV",
        "run": {"model": cfg.model.name, "n_mels": cfg.features.n_mels, "chunk_seconds": cfg.chunks.chunk_seconds,
                "given_run_dir": a.run_dir is not None},
        "repeats": a.repeats,
        "predict_wall_s_median": med["predict"],
        "predict_wall_s_all": [round(r[0], 3) for r in rows["predict"]],
        "predict_cpu_s_median": round(statistics.median(r[3] for r in rows["predict"]), 3),
        "predict_peak_rss_mib": round(max(r[1] for r in rows["predict"]), 1),
        "import_cpu_s_median": {k: round(statistics.median(r[3] for r in rows[k]), 3) for k in imports},
        "import_wall_s_median": {k: med[k] for k in imports},
        "predict_minus_cli_import_s": round(med["predict"] - med["deam_mamba.cli+predict_stage"], 3),
        **({"baseline_src": a.baseline_src, "baseline_predict_wall_s_median": med["baseline_predict"],
            "baseline_predict_cpu_s_median": round(statistics.median(r[3] for r in rows["baseline_predict"]), 3),
            "baseline_predict_peak_rss_mib": round(max(r[1] for r in rows["baseline_predict"]), 1),
            "predict_wall_over_baseline": round(med["predict"] / med["baseline_predict"], 3)}
           if a.baseline_src else {}),
        "heavy_modules_loaded_by_predict_stage": heavy.split(",") if heavy else [],
        "goal_predict_wall_s": 4.0,
        "load_average_1min_start_end": [round(load_start[0], 2), round(load_end[0], 2)],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": f"{platform.processor() or platform.machine()}; shared with other jobs while measured",
        "command": " ".join(["bench/bench_cold_start.py"] + sys.argv[1:]),
        "unix_time": int(time.time()),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    md = Path(a.out).with_suffix(".md")
    md.write_text(
        "# Cold start of `deam-mamba predict` (one 45 s song)\n\n"
        f"Model `{cfg.model.name}`, median of {a.repeats} fresh processes, load average (1 min) "
        f"{res['load_average_1min_start_end'][0]} -> {res['load_average_1min_start_end'][1]} on {os.cpu_count()} "
        "CPUs (shared machine).\n\n"
        "| what | wall s | CPU s |\n|---|---|---|\n"
        f"| `deam-mamba predict RUN song.wav` | {med['predict']} | {res['predict_cpu_s_median']} |\n"
        + (f"| same, package from {a.baseline_src} | {med['baseline_predict']} | "
           f"{res['baseline_predict_cpu_s_median']} |\n" if a.baseline_src else "")
        + f"| `import torch` | {med['torch']} | {res['import_cpu_s_median']['torch']} |\n"
        f"| `import deam_mamba.cli` | {med['deam_mamba.cli']} | {res['import_cpu_s_median']['deam_mamba.cli']} |\n"
        f"| `import deam_mamba.cli, deam_mamba.inference.files` | {med['deam_mamba.cli+predict_stage']} | "
        f"{res['import_cpu_s_median']['deam_mamba.cli+predict_stage']} |\n\n"
        f"Peak RSS of predict: {res['predict_peak_rss_mib']} MiB. Heavy optional modules loaded on the predict "
        f"path: {res['heavy_modules_loaded_by_predict_stage'] or 'none'}. Goal: < 4 s wall "
        "(issue 14 measured 10.8 s before timm/torchvision left the path).\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
