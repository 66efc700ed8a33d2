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

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from deam_mamba.config import Config, config_to_dict
from deam_mamba.core.errors import CheckpointError
from deam_mamba.core.io import atomic_path, atomic_write_json, to_json
from deam_mamba.models.heads import AttentionPool, LinearSongHead

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
POINTERS = ("last", "best")
POOL_PREFIX = "pool_"  # pool_stepNNNNNNNN.safetensors belongs to stepNNNNNNNN.safetensors
POOL_FORMAT = "deam-mamba-pool/1"
CHECKSUM_KEY = "weights_sha256"  # safetensors metadata: sha256 of the tensors (see tensors_sha256)


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hex sha256 over the tensors in sorted name order: for each, its name, dtype, shape and raw bytes.

    Independent of the order safetensors lays tensors out in the file, so it can be computed before
    saving and again after loading."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_WARNED_NO_CHECKSUM: set[str] = set()


def verify_checksum(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """Compare the tensors loaded from ``path`` with the checksum stored at save time.

    A mismatch raises :class:`CheckpointError` naming the file; files written before checksums existed
    load with one warning per process."""
    stored = meta.get(CHECKSUM_KEY)
    if stored is None:
        if not _WARNED_NO_CHECKSUM:
            log.warning("%s has no weights checksum (written by an older deam-mamba): loaded unverified", path)
        _WARNED_NO_CHECKSUM.add(str(path))
        return
    if tensors_sha256(tensors) != stored:
        raise CheckpointError(f"checkpoint {path} is corrupt (checksum mismatch): re-train or restore it")


def _stem(step: int) -> str:
    return f"step{step:08d}"


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
    ckpt = Path(run_dir) / CKPT_DIR
    ckpt.mkdir(parents=True, exist_ok=True)
    stem = _stem(step)
    weights, state_file = ckpt / f"{stem}.safetensors", ckpt / f"{stem}.state.pt"
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={**meta, "step": str(step), CHECKSUM_KEY: tensors_sha256(tensors)})
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
    for f in ckpt.glob(f"{POOL_PREFIX}step*.safetensors"):  # attention pools of weights no longer kept
        if f.name[len(POOL_PREFIX):] not in keep:
            f.unlink(missing_ok=True)


def _read_pointer(ckpt: Path, which: str, missing_ok: bool = False) -> dict[str, Any] | None:
    path = ckpt / f"{which}.json"
    if not path.is_file():
        if missing_ok:
            return None
        raise CheckpointError(
            f"no '{which}' checkpoint in {ckpt} (is this a run folder written by `deam-mamba train`? A run whose "
            "validation never scored has no 'best': use --which last)"
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


def read_weights(path: Path, what: str = "weights") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file, its checksum verified (:func:`verify_checksum`);
    :class:`CheckpointError` naming ``what`` and the file if it cannot be read."""
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"cannot read {what} {path}: {exc}") from None
    verify_checksum(path, tensors, meta)
    return tensors, meta


def load_weights(model: nn.Module, weights: Path) -> dict[str, str]:
    """Load safetensors ``weights`` into ``model`` (strict); returns the stored metadata."""
    tensors, meta = read_weights(weights)
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
    except Exception as exc:  # a truncated/corrupt/foreign pickle raises several error types
        # torch's own message advises weights_only=False, i.e. running the file's code: never pass that on
        raise CheckpointError(f"cannot read training state {state} ({type(exc).__name__}): it is damaged or was not "
                              "written by deam-mamba, and it is never unpickled as code; resume from an intact run "
                              "or start a new one") from None


def checkpoint_meta(cfg: Config, norm_stats: Any | None) -> dict[str, str]:
    """String metadata stored inside every weights file (self-describing checkpoints)."""
    return {
        "format": "deam-mamba/1",
        "mode": cfg.mode,
        "config": json.dumps(config_to_dict(cfg)),
        "feature_config": json.dumps(config_to_dict(cfg.features)),
        "norm_stats": json.dumps(norm_stats.to_dict() if norm_stats is not None else None),
    }


# --- song-level heads (attention pool, linear head), fitted per backbone step -------------------


SongHead = AttentionPool | LinearSongHead


def pool_path(run_dir: str | Path, step: int) -> Path:
    """The song-level head fitted on the backbone of ``step``: ``checkpoints/pool_stepNNNNNNNN.safetensors``."""
    return Path(run_dir) / CKPT_DIR / f"{POOL_PREFIX}{_stem(step)}.safetensors"


def save_pool(path: Path, pool: SongHead, meta: dict[str, Any]) -> None:
    """Atomically write the head's tensors and JSON metadata (``kind``, ``dim``, its shape, metrics...)."""
    shape = {"hidden": pool.hidden} if isinstance(pool, AttentionPool) else {"task": pool.task}
    info = {"format": POOL_FORMAT, "kind": pool.kind, "dim": pool.dim, "num_outputs": pool.num_outputs, **shape,
            **meta}
    tensors = {k: v.detach().cpu().contiguous() for k, v in pool.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"pool": to_json(info, indent=None),
                                               CHECKSUM_KEY: tensors_sha256(tensors)})


def load_pool(path: Path, kind: str = "attention") -> tuple[SongHead, dict[str, Any]]:
    """Inverse of :func:`save_pool` for a head of ``kind`` (the run's ``model.pooling``);
    :class:`CheckpointError` if missing, unreadable or of another kind."""
    what = f"{kind} pooling head"
    if not path.is_file():
        raise CheckpointError(f"{what} {path} is missing: the run's config says model.pooling={kind}; finish "
                              "training with `deam-mamba train --resume RUN_DIR` (it fits the head for the best "
                              "checkpoint), or use --which best")
    tensors, meta = read_weights(path, what)
    try:
        info = json.loads(meta["pool"])
        found = info.get("kind", "attention")  # heads saved before linear heads existed are attention pools
        if found != kind:
            raise CheckpointError(f"{path} is a {found!r} pooling head, but the run's config says "
                                  f"model.pooling={kind}; refit it with `deam-mamba train --resume RUN_DIR`")
        if kind == "attention":
            pool: SongHead = AttentionPool(info["dim"], info["num_outputs"], hidden=info["hidden"])
        else:
            pool = LinearSongHead(info["dim"], info["num_outputs"], task=info["task"])
        pool.load_state_dict(tensors, strict=True)
    except CheckpointError:
        raise
    except Exception as exc:  # wrong tensors
        raise CheckpointError(f"cannot read {what} {path}: {exc}") from exc
    return pool.eval(), info
