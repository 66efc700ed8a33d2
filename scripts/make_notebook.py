"""Write MambaVisionModel.ipynb (no outputs) from the cells below: `python scripts/make_notebook.py`.

The notebook is thin over the package: each code cell makes a handful of library calls. It is
parameterised by environment variables so tests can run it with nbclient on a tiny corpus.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS: list[tuple[str, str]] = [
    ("md", """# MambaVision for music emotion (DEAM valence / arousal)

End to end, thin over the `deam_mamba` package: **data** (DEAM, or a synthetic DEAM-shaped corpus)
→ **features** (log-mel) → **feature cache** → **model** (MambaVision) → **training** → **evaluation**
→ **plots** → **prediction** on an audio file, with a ridge-regression baseline for reference.

Scales: static song labels (valence/arousal means) are on **1–9**; DEAM's dynamic 2 Hz annotations
are on **[-1, 1]**. Every number below says which scale it is on.

Parameters (environment variables, all optional):

| variable | default | meaning |
|---|---|---|
| `DEAM_ROOT` | unset | a DEAM copy (Kaggle layout); unset: a synthetic corpus is generated |
| `DEAM_NB_SONGS` / `DEAM_NB_SECONDS` | 60 / 45 | size of the synthetic corpus |
| `DEAM_NB_CONFIG` | `configs/demo.yaml` | training config |
| `DEAM_NB_MODEL` | `mambavision_audio` | registered model name |
| `DEAM_NB_EPOCHS` | 3 | training epochs |
| `DEAM_NB_OVERRIDES` | empty | extra `key=value` config overrides, space-separated (applied last; the notebook sets `optim.ema_decay=0` before them) |
| `DEAM_NB_WORKDIR` | `notebook_out` | where corpus, cache and run go |"""),
    ("code", """import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from deam_mamba.core.runtime import tune_malloc

tune_malloc()  # glibc keeps freed memory: ~1.5x faster CPU training steps here (see deam_mamba.core.runtime)
WORK = Path(os.environ.get("DEAM_NB_WORKDIR", "notebook_out")).absolute()
SONGS = int(os.environ.get("DEAM_NB_SONGS", "60"))
SECONDS = float(os.environ.get("DEAM_NB_SECONDS", "45"))
CONFIG = os.environ.get("DEAM_NB_CONFIG", "configs/demo.yaml")
MODEL = os.environ.get("DEAM_NB_MODEL", "mambavision_audio")
EPOCHS = int(os.environ.get("DEAM_NB_EPOCHS", "3"))
EXTRA = os.environ.get("DEAM_NB_OVERRIDES", "").split()
WORK.mkdir(parents=True, exist_ok=True)
print(f"work dir {WORK}; model {MODEL}, {EPOCHS} epoch(s), config {CONFIG}")"""),
    ("md", """## 1. Data

`DEAMHandler` finds the audio folder and the annotation CSVs anywhere under the root, parses the
static (1–9) and dynamic ([-1, 1]) labels and lists any problem it met (missing audio, bad labels) in
`handler.problems` instead of dropping songs silently. Without `DEAM_ROOT`, `synthesize` writes a
DEAM-shaped corpus (same folders, CSV quirks and MP3s) whose music expresses hidden valence/arousal
trajectories."""),
    ("code", """from deam_mamba.data.deam import DEAMHandler
from deam_mamba.synth.corpus import synthesize

root = os.environ.get("DEAM_ROOT")
if not root:
    corpus = WORK / "corpus"
    root = corpus if corpus.exists() else synthesize(corpus, songs=SONGS, seconds=SECONDS, seed=0)
handler = DEAMHandler(root)
print(f"{len(handler.ids)} songs, {len(handler.problems)} problem(s)")
handler.summary()"""),
    ("md", """## 2. Features

The training config fixes the log-mel settings (16 kHz, 128 mel bands up to 8 kHz, 10 ms hop by
default). `LogMel` computes exactly librosa's log-mel in torch. Below: the first song."""),
    ("code", """from deam_mamba.config import load_config
from deam_mamba.features.logmel import LogMel

# optim.ema_decay=0: the demo config's weight average (0.99) spans ~100 steps, more than a few short
# epochs here have, so the notebook trains raw weights; DEAM_NB_OVERRIDES="optim.ema_decay=0.99" puts it back
cfg = load_config(CONFIG, [f"data.root={root}", f"data.cache={WORK / 'cache'}", f"model.name={MODEL}",
                           f"train.epochs={EPOCHS}", "optim.ema_decay=0", *EXTRA])
fc = cfg.features
sid = handler.ids[0]
wave = handler.load_wave(sid, target_sr=fc.sample_rate)  # [1, T] float32
mel = LogMel(fc)(torch.from_numpy(wave))[0]  # [n_mels, frames], dB
fig, ax = plt.subplots(figsize=(10, 3))
im = ax.imshow(mel.numpy(), origin="lower", aspect="auto", cmap="magma",
               extent=[0, mel.shape[1] / fc.frames_per_second, 0, fc.n_mels])
ax.set(title=f"song {sid}: log-mel (dB); static labels {handler.static_labels(sid)}",
       xlabel="time (s)", ylabel="mel band")
fig.colorbar(im, ax=ax)
plt.show()"""),
    ("md", """## 3. Feature cache

Every song is decoded and featurised once (in parallel) into float16 arrays keyed by the feature
settings; training then reads chunks from memory-mapped arrays. Re-running only processes new or
changed songs."""),
    ("code", """from deam_mamba.features.prepare import build_cache

t0 = time.perf_counter()
cache_summary = build_cache(handler, cfg.data.cache, fc, workers=cfg.data.prepare_workers)
print(f"cache ready in {time.perf_counter() - t0:.1f} s")
cache_summary"""),
    ("md", """## 4. Model

`build_model(cfg)` creates the registered model (`create_model(name)`) with the output size the mode
needs (2 for static valence/arousal). Input: one log-mel chunk `[B, 1, n_mels, frames]`."""),
    ("code", """from deam_mamba.models.build import build_model

model = build_model(cfg)
frames = int(round(cfg.chunks.chunk_seconds * fc.frames_per_second))
x = torch.randn(2, 1, fc.n_mels, frames)
n_params = sum(p.numel() for p in model.parameters())
print(f"{cfg.model.name}: {n_params / 1e6:.3f} M parameters; {tuple(x.shape)} -> {tuple(model(x).shape)}")"""),
    ("md", """## 5. Training

`train(cfg, run_dir)` trains on chunks (targets normalised as (y − 5) / 4), validates at song level
by pooling chunk predictions, keeps the best checkpoint by validation CCC and writes `log.csv`,
TensorBoard scalars and resumable checkpoints. A run folder that already exists is resumed."""),
    ("code", """from deam_mamba.train.loop import train

run_dir = WORK / f"run_{cfg.model.name}"
t0 = time.perf_counter()
result = train(cfg, run_dir, resume=(run_dir / "config.yaml").exists())
print(f"trained {result.epoch} epoch(s), {result.step} steps in {time.perf_counter() - t0:.1f} s")
result.best_metrics"""),
    ("md", """## 6. Evaluation on held-out songs

`evaluate_run` reloads the best checkpoint, predicts every test song from the same cache (chunks
pooled per song) and computes MSE, RMSE, MAE, Pearson r, CCC and R² per dimension on the 1–9 scale,
with bootstrap 95% intervals; it writes `metrics.json`, `report.md` and plots into `RUN/eval`."""),
    ("code", """from deam_mamba.evaluation.evaluate import evaluate_run, summary_lines

metrics = evaluate_run(run_dir, split="test", bootstrap=200, progress=False)
print("\\n".join(summary_lines(metrics)))"""),
    ("md", """## 7. Plots

Learning curves from the training log, predicted vs true per dimension, the valence–arousal plane,
and for a few songs the predicted 2 Hz curve against the dynamic annotations."""),
    ("code", """from IPython.display import Image, display

for key in ("learning_curves", "scatter", "va_plane", "dynamic_curves"):
    if key in metrics["paths"]:
        display(Image(filename=metrics["paths"][key]))"""),
    ("md", """## 8. Baseline: ridge regression on mel statistics

A non-deep reference on the same split and features: per-band mean/std of the log-mel, ridge
regression fitted on the training songs (1–9 scale)."""),
    ("code", """from deam_mamba.experiments.compare import ridge_row

ridge = ridge_row(cfg, bootstrap=200)
deep = metrics["static"]
for dim in ("valence", "arousal"):
    print(f"{dim:8s} CCC  {cfg.model.name}: {deep[dim]['ccc']['value']:.3f}   ridge: {ridge[dim + '_ccc']:.3f}"
          f"   (scale {deep['scale']})")"""),
    ("md", """## 9. Predict on any audio file

`Predictor` runs the whole path on raw audio of any length and format: decode → log-mel → the run's
normalisation → chunks → model → song value (mean over chunks, 1–9) and a 2 Hz curve."""),
    ("code", """from deam_mamba.inference.predictor import Predictor

predictor = Predictor.from_run(run_dir)
song = handler.ids[-1]
p = predictor.predict_file(handler.audio_path(song))
print(f"song {song}: valence {p.valence:.2f}, arousal {p.arousal:.2f} (scale {p.song_scale}); "
      f"truth {handler.static_labels(song)}")
fig, ax = plt.subplots(figsize=(10, 2.5))
ax.plot(p.curve_times_s, p.curve_valence, label="valence")
ax.plot(p.curve_times_s, p.curve_arousal, label="arousal")
ax.set(xlabel="time (s)", ylabel=f"prediction ({p.curve_scale})", title="2 Hz curve")
ax.legend()
plt.show()"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "MambaVisionModel.ipynb"
    nb = build()
    nbformat.validate(nb)
    nbformat.write(nb, str(out))
    print(f"wrote {out} ({len(nb.cells)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
