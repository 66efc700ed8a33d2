"""The ``embed`` command: per-song and per-chunk embeddings (``forward_features``) of audio files, as ``.npz``.

The file holds (``S`` songs, ``M`` chunks over all songs, ``D`` embedding size):

* ``files [S]`` (str), ``song [S, D]`` float32 (mean of each song's chunk rows),
* ``chunks [M, D]`` float32, ``chunk_file [M]`` int (row of ``files``), ``chunk_start_s [M]`` float64 seconds,
* ``chunk_seconds`` (scalar), ``run_dir`` (str), ``skipped_files [K]`` / ``skipped_reasons [K]`` (str).
"""
from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from deam_mamba.core.errors import AudioDecodeError
from deam_mamba.core.io import atomic_write_bytes
from deam_mamba.inference.api import Embedding, load
from deam_mamba.inference.files import check_output_path, collect_audio_files

log = logging.getLogger(__name__)

NPZ = (".npz",)  # the one output format of `embed`


@dataclass
class EmbeddingRun:
    """All files of one ``embed`` call: their embeddings and the files that could not be read."""

    embeddings: list[Embedding] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    run_dir: str | None = None
    chunk_seconds: float = 0.0


def embed_paths(run_dir: str | Path, inputs: Sequence[str | Path], which: str = "best", device: str = "cpu",
                batch_size: int = 16, hop_seconds: float | None = None, progress: bool = True) -> EmbeddingRun:
    """Load the run, expand the inputs (files and folders), embed every readable file."""
    files, missing = collect_audio_files(inputs)
    for m in missing:
        log.warning("skipping %s: %s", m["path"], m["reason"])
    model = load(run_dir, which=which, device=device, batch_size=batch_size, hop_seconds=hop_seconds)
    result = EmbeddingRun(run_dir=str(run_dir), chunk_seconds=model.chunk_seconds, skipped=list(missing))
    for path in tqdm(files, desc="embed", unit="file", disable=not progress):
        try:
            result.embeddings.append(model.embed(path))
        except AudioDecodeError as exc:
            log.warning("skipping %s: %s", path, exc.reason)
            result.skipped.append({"path": str(path), "reason": exc.reason})
    return result


def write_embeddings(result: EmbeddingRun, out: str | Path, force: bool = False) -> Path:
    """Write the ``.npz`` described in the module docstring atomically."""
    out = check_output_path(out, force, NPZ)
    embs = result.embeddings
    dim = embs[0].dim if embs else 0
    buf = io.BytesIO()
    np.savez(
        buf,
        files=np.array([e.source for e in embs], dtype=str),
        song=np.stack([e.song for e in embs]).astype(np.float32) if embs else np.zeros((0, dim), np.float32),
        chunks=(np.concatenate([e.chunks for e in embs]).astype(np.float32) if embs
                else np.zeros((0, dim), np.float32)),
        chunk_file=np.concatenate([np.full(len(e.chunks), i, dtype=np.int64) for i, e in enumerate(embs)])
        if embs else np.zeros(0, np.int64),
        chunk_start_s=np.concatenate([e.chunk_starts_s for e in embs]) if embs else np.zeros(0),
        chunk_seconds=np.float64(result.chunk_seconds),
        run_dir=np.array(result.run_dir or ""),
        skipped_files=np.array([s["path"] for s in result.skipped], dtype=str),
        skipped_reasons=np.array([s["reason"] for s in result.skipped], dtype=str),
    )
    atomic_write_bytes(out, buf.getvalue())
    return out
