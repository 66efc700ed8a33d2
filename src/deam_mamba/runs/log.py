"""The run folder's bookkeeping: resolved config, meta.json, log.csv, TensorBoard, summary.

Only rank 0 writes (``enabled=False`` on the others). ``log.csv`` is rewritten atomically from
the history kept in the checkpoint state, so a resumed run never duplicates or loses rows, and
TensorBoard events past the resumed step are purged (``SummaryWriter(purge_step=...)``).
"""
from __future__ import annotations

import csv
import importlib.metadata as md
import io
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deam_mamba.config import Config, dump_config
from deam_mamba.core.io import atomic_write_json, atomic_write_text
from deam_mamba.runs.paths import stored_config

log = logging.getLogger(__name__)


def git_commit() -> str | None:
    """Commit of the source tree the package runs from (``+dirty`` if modified), or None."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape the numbers."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("deam-mamba", "torch", "timm", "numpy", "librosa", "soundfile", "safetensors", "scikit-learn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


class RunLog:
    """Writes ``config.yaml``, ``meta.json``, ``log.csv``, ``tb/`` and ``train_summary.json``."""

    def __init__(self, run_dir: Path, cfg: Config, enabled: bool, resume_step: int | None = None,
                 argv: list[str] | None = None, extra: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cmd = list(argv if argv is not None else sys.argv)
        meta_path = self.run_dir / "meta.json"
        if resume_step is not None and meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            meta.setdefault("resumed", []).append({"time_utc": now, "from_step": resume_step, "command": cmd,
                                                   "git_commit": git_commit()})
        else:
            stored_cfg, run_paths = stored_config(cfg, self.run_dir)  # portable paths (deam_mamba.runs.paths)
            meta = {"start_time_utc": now, "command": cmd, "git_commit": git_commit(), "seed": cfg.train.seed,
                    "mode": cfg.mode, "versions": library_versions(), "run_paths": run_paths, **(extra or {})}
            atomic_write_json(meta_path, meta)  # first: its run_paths say how config.yaml's paths are meant
            atomic_write_text(self.run_dir / "config.yaml", dump_config(stored_cfg))
        atomic_write_json(meta_path, meta)
        from torch.utils.tensorboard import SummaryWriter  # lazy: TensorBoard only for training

        self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=resume_step or None)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def epoch(self, row: dict[str, float], history: list[dict[str, float]]) -> None:
        """Log one validation row to TensorBoard and rewrite ``log.csv`` from ``history``."""
        if not self.enabled:
            return
        self.scalars({("val/" + k[4:] if k.startswith("val_") else "epoch/" + k): v
                      for k, v in row.items() if k not in ("epoch", "step")}, int(row["step"]))
        self.writer.flush()
        atomic_write_text(self.run_dir / "log.csv", history_csv(history))

    def finish(self, best: dict[str, float], last: dict[str, float], seconds: float, state: dict[str, Any]) -> None:
        if not self.enabled:
            return
        atomic_write_json(self.run_dir / "train_summary.json", {
            "best": best, "last": last, "step": state["step"], "epochs": state["epoch"],
            "stopped_early": state["stopped_early"], "seconds_this_session": round(seconds, 2),
        })
        if self.writer is not None:
            self.writer.close()


def history_csv(history: list[dict[str, float]]) -> str:
    """CSV text of the per-epoch rows (columns: epoch, step, lr, train_loss, then val metrics)."""
    cols: list[str] = []
    for row in history:
        cols += [k for k in row if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()
