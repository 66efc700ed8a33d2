"""Checkpoints: atomic save, exact resume, and :func:`load_run` for inference.

Layout of ``RUN_DIR/checkpoints/``::

    step00000120.safetensors   model weights (+ metadata: config, feature config, norm stats)
    step00000120.state.pt      optimiser, step, epoch, data position, RNG states, early stopping
    last.json                  pointer to the newest complete pair
    best.json                  pointer to the pair with the best validation metric (+ metrics)

Each file is written atomically (``deam_mamba.core.io.atomic_path``) and the pointer is written
last, so a process killed at any moment (even SIGKILL) leaves the previous pointer on a
complete pair. Files no pointer refers to are removed after each save.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deam_mamba.config import Config, config_from_dict, config_to_dict
from deam_mamba.core.errors import CheckpointError
from deam_mamba.core.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
POINTERS = ("last", "best")


# --- RNG state (kept as plain tensors/tuples so the state file loads with weights_only) ---


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU + every CUDA device)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- save ---------------------------------------------------------------------------------


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    state: dict[str, Any],
    *,
    step: int,
    meta: dict[str, str],
    best_metrics: dict[str, float] | None = None,
) -> Path:
    """Write weights + state for ``step``, point ``last`` (and ``best`` if ``best_metrics``) at it.

    ``model`` is the unwrapped module (no DDP prefix). ``meta`` holds JSON strings stored in the
    safetensors header (``config``, ``feature_config``, ``norm_stats``, ``mode``). Returns the
    weights path.
    """
    from safetensors.torch import save_file

    ckpt = Path(run_dir) / CKPT_DIR
    ckpt.mkdir(parents=True, exist_ok=True)
    stem = f"step{step:08d}"
    weights, state_file = ckpt / f"{stem}.safetensors", ckpt / f"{stem}.state.pt"
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={**meta, "step": str(step)})
    with atomic_path(state_file) as tmp:
        torch.save(state, tmp)
    pointer = {"step": step, "weights": weights.name, "state": state_file.name}
    if best_metrics is not None:
        atomic_write_json(ckpt / "best.json", {**pointer, "metrics": best_metrics})
    atomic_write_json(ckpt / "last.json", pointer)
    _prune(ckpt)
    return weights


def _prune(ckpt: Path) -> None:
    keep = set()
    for name in POINTERS:
        p = _read_pointer(ckpt, name, missing_ok=True)
        if p:
            keep |= {p["weights"], p["state"]}
    for f in list(ckpt.glob("step*.safetensors")) + list(ckpt.glob("step*.state.pt")):
        if f.name not in keep:
            f.unlink(missing_ok=True)
    for f in ckpt.glob("pool_step*.safetensors"):  # attention pools of weights no longer kept
        if f.name[len("pool_"):] not in keep:
            f.unlink(missing_ok=True)


def _read_pointer(ckpt: Path, which: str, missing_ok: bool = False) -> dict[str, Any] | None:
    path = ckpt / f"{which}.json"
    if not path.is_file():
        if missing_ok:
            return None
        raise CheckpointError(
            f"no '{which}' checkpoint in {ckpt} (is this a run folder written by `deam-mamba train`?)"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint pointer {path} is unreadable: {exc}") from exc


# --- load ---------------------------------------------------------------------------------


def checkpoint_paths(run_dir: str | Path, which: str = "last") -> tuple[Path, Path, dict[str, Any]]:
    """(weights path, state path, pointer dict) of the ``which`` ('last'/'best') checkpoint."""
    if which not in POINTERS:
        raise CheckpointError(f"which must be one of {POINTERS}, got {which!r}")
    ckpt = Path(run_dir) / CKPT_DIR
    p = _read_pointer(ckpt, which)
    weights, state = ckpt / p["weights"], ckpt / p["state"]
    for f in (weights, state):
        if not f.is_file():
            raise CheckpointError(f"checkpoint file {f} named by {ckpt / (which + '.json')} is missing")
    return weights, state, p


def load_weights(model: nn.Module, weights: Path) -> dict[str, str]:
    """Load safetensors ``weights`` into ``model`` (strict); returns the stored metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights))
        with safe_open(str(weights), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"cannot read weights {weights}: {exc}") from exc
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    shape = [k for k in own if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)]
    if missing or unexpected or shape:
        raise CheckpointError(
            f"weights {weights} do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"other shapes {shape[:5]} (was the run trained with another model config?)"
        )
    model.load_state_dict(tensors, strict=True)
    return meta


def load_state(state: Path) -> dict[str, Any]:
    """The resume state written by :func:`save_checkpoint`."""
    try:
        return torch.load(state, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated/corrupt pickle raises several error types
        raise CheckpointError(f"cannot read training state {state}: {exc}") from exc


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved config saved in ``RUN_DIR/config.yaml``."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {run_dir} is not a training run folder")
    return config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def checkpoint_meta(cfg: Config, norm_stats: Any | None) -> dict[str, str]:
    """String metadata stored inside every weights file (self-describing checkpoints)."""
    return {
        "format": "deam-mamba/1",
        "mode": cfg.mode,
        "config": json.dumps(config_to_dict(cfg)),
        "feature_config": json.dumps(config_to_dict(cfg.features)),
        "norm_stats": json.dumps(norm_stats.to_dict() if norm_stats is not None else None),
    }


# --- the inference-facing API ---------------------------------------------------------------


@dataclass
class LoadedRun:
    """A trained run ready for inference (see :func:`load_run`).

    ``model`` maps normalised log-mel chunks ``[B, 1, n_mels, frames]`` (``norm_stats`` applied)
    to ``[B, 2]`` static outputs on the normalised scale ``(y - 5) / 4`` (``mode == "static"``) or
    ``[B, 2 * K]`` dynamic outputs on [-1, 1] (``mode == "dynamic"``, ``K`` 2 Hz points per
    chunk at ``start + k / 2`` s, valence/arousal interleaved: ``out.view(B, K, 2)``).
    ``best_metrics`` are the validation metrics of the ``best`` checkpoint (names carry the
    scale: ``_1to9`` or ``_pm1``).
    """

    model: nn.Module
    config: Config
    norm_stats: Any | None
    feature_config: Any
    mode: str
    step: int
    best_metrics: dict[str, float]
    run_dir: Path
    pool: nn.Module | None = None  # fitted AttentionPool when config.model.pooling == "attention"
    pooling: str = "mean"


def dyn_points_per_chunk(chunk_seconds: float) -> int:
    """K: the 2 Hz dynamic annotation points a chunk of ``chunk_seconds`` holds (at start + k/2 s)."""
    return max(1, int(round(chunk_seconds * 2.0)))


def num_outputs(cfg: Config) -> int:
    """Model output size: 2 (static valence, arousal) or 2*K (dynamic, K points per chunk)."""
    return 2 if cfg.mode == "static" else 2 * dyn_points_per_chunk(cfg.chunks.chunk_seconds)


def build_model(cfg: Config) -> nn.Module:
    """The network a run of ``cfg`` trains (output size from the mode)."""
    from deam_mamba.models import create_model

    kwargs = dict(cfg.model.kwargs)
    kwargs["num_classes"] = num_outputs(cfg)
    return create_model(cfg.model.name, **kwargs)


def load_run(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu") -> LoadedRun:
    """Load a training run for inference: model in eval mode plus everything to feed it.

    ``which`` is ``"best"`` (best validation metric) or ``"last"``. Raises
    :class:`CheckpointError` with an actionable message if the folder is not a finished run.
    """
    from deam_mamba.features import NormStats

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    cfg = read_run_config(run_dir)
    weights, _, pointer = checkpoint_paths(run_dir, which)
    model = build_model(cfg)
    meta = load_weights(model, weights)
    norm = json.loads(meta.get("norm_stats", "null"))
    model.to(device).eval()
    pool = None
    if cfg.model.pooling == "attention":
        from deam_mamba.pooling import load_pool, pool_path

        pool = load_pool(pool_path(run_dir, int(pointer["step"])))[0].to(device)
    return LoadedRun(
        model=model,
        config=cfg,
        norm_stats=NormStats.from_dict(norm) if norm else None,
        feature_config=cfg.features,
        mode=cfg.mode,
        step=int(pointer["step"]),
        best_metrics=dict(pointer.get("metrics", {})),
        run_dir=run_dir,
        pool=pool,
        pooling=cfg.model.pooling,
    )


__all__ = [
    "LoadedRun", "load_run", "build_model", "save_checkpoint", "checkpoint_paths", "load_weights",
    "load_state", "read_run_config", "checkpoint_meta", "rng_state", "set_rng_state",
]
