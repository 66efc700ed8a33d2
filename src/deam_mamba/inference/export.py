"""ONNX export of a run's network and an ONNX Runtime chunk model for :class:`Predictor`.

``export_onnx(RUN_DIR, "model.onnx")`` writes the network that maps a batch of normalised log-mel chunks
``chunks [B, 1, n_mels, chunk_frames]`` (dynamic ``B``; ``chunk_frames`` fixed by the run) to
``outputs [B, O]`` (the model's raw outputs, as ``model(x)``) and ``embeddings [B, D]`` (``forward_features``).
Feature extraction, normalisation, chunking and pooling stay the Python code of the predictor, so only the
network runs in ONNX Runtime. The selective scan is exported through its ``ref`` backend (a loop over the
window's tokens, unrolled by the tracer; the window length is fixed by the architecture), so the graph has
only standard ONNX ops.

What the predictor needs is stored in the file's ``metadata_props``: the run config (JSON) and its digest,
the normalisation statistics, mode, quadrant head, chunk frames, the checkpoint (``which``, ``step``).
``predict --backend onnx`` checks the digest against ``RUN_DIR/config.yaml``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deam_mamba.config import Config, config_to_dict
from deam_mamba.core.errors import CheckpointError, DeamError, OutputExistsError
from deam_mamba.core.io import atomic_path
from deam_mamba.features.logmel import NormStats
from deam_mamba.inference.predictor import Predictor
from deam_mamba.runs.checkpoint import load_pool, pool_path
from deam_mamba.runs.run import load_run, read_run_config

log = logging.getLogger(__name__)

ONNX_FORMAT = "deam-mamba-onnx/1"
OPSET = 17
INPUT, OUTPUTS, EMBEDDINGS = "chunks", "outputs", "embeddings"


def config_digest(cfg: Config) -> str:
    """sha1 of a run config's canonical JSON: ties an exported file to the run it came from."""
    return hashlib.sha1(json.dumps(config_to_dict(cfg), sort_keys=True).encode()).hexdigest()


class _ExportWrapper(nn.Module):
    """``chunks -> (outputs, embeddings)`` in one graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.model.forward_features(x)
        return self.model.forward_head(f), f


def export_onnx(run_dir: str | Path, out: str | Path, which: str = "best", force: bool = False,
                opset: int = OPSET) -> dict[str, Any]:
    """Export ``run_dir``'s ``which`` checkpoint to ``out`` (atomic; an existing file only with ``force``).
    Returns the stored metadata plus ``path``."""
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise DeamError(f"--onnx {out}: give a file name ending in .onnx")
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists; pass --force to overwrite it or choose another file")
    run = load_run(run_dir, which=which, device="cpu")
    model = run.model.eval()
    if hasattr(model, "set_scan_backend"):  # the loop backend traces to plain ONNX ops (fast/cuda do not)
        model.set_scan_backend("ref")
    pred = Predictor.for_config(model, run.config, run.norm_stats, device="cpu", batch_size=1)
    example = torch.zeros(2, 1, int(run.config.features.n_mels), pred.chunk_frames)
    meta = {
        "format": ONNX_FORMAT,
        "run_dir": str(Path(run_dir).resolve()),
        "which": which,
        "step": str(run.step),
        "mode": run.config.mode,
        "pooling": run.config.model.pooling,
        "quadrant_head": run.config.loss.quadrant,
        "model_name": run.config.model.name,
        "n_mels": str(run.config.features.n_mels),
        "chunk_frames": str(pred.chunk_frames),
        "config": json.dumps(config_to_dict(run.config), sort_keys=True),
        "config_digest": config_digest(run.config),
        "norm_stats": json.dumps(run.norm_stats.to_dict() if run.norm_stats is not None else None),
    }
    import onnx  # imported lazily: only export needs it

    wrapper = _ExportWrapper(model).eval()  # eval() explicitly: export restores the wrapper's (train) mode
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints from shapes (fixed by the run)
        torch.onnx.export(wrapper, (example,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=[INPUT], output_names=[OUTPUTS, EMBEDDINGS],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUTS: {0: "batch"}, EMBEDDINGS: {0: "batch"}})
        proto = onnx.load(str(tmp))
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))
    model.eval()
    return {**meta, "path": str(out)}


class OnnxChunkModel:
    """An exported network in ONNX Runtime (CPU) behind the predictor's chunk-model interface."""

    def __init__(self, path: str | Path, threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise DeamError(f"ONNX model {path} not found; write it with `deam-mamba export RUN_DIR --onnx {path}`")
        import onnxruntime as ort  # imported lazily: only the onnx backend needs it

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own error types for corrupt files
            raise DeamError(f"cannot load ONNX model {path}: {exc}") from exc
        self.path = path
        self.meta: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.meta.get("format") != ONNX_FORMAT:
            raise DeamError(f"{path} was not written by `deam-mamba export` (no {ONNX_FORMAT} metadata)")

    def embed_and_predict(self, chunks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``chunks [B, 1, n_mels, frames]`` -> ``(embeddings [B, D], outputs [B, O])`` float32 tensors."""
        x = np.ascontiguousarray(chunks.detach().cpu().numpy(), dtype=np.float32)
        out, emb = self.session.run([OUTPUTS, EMBEDDINGS], {INPUT: x})
        return torch.from_numpy(emb), torch.from_numpy(out)

    def __call__(self, chunks: torch.Tensor) -> torch.Tensor:
        """``chunks`` -> ``outputs [B, O]`` (the graph computes the embeddings on the way in any case)."""
        return self.embed_and_predict(chunks)[1]


def onnx_predictor(run_dir: str | Path, onnx_path: str | Path | None = None, batch_size: int = 16,
                   hop_seconds: float | None = None) -> Predictor:
    """The predictor of ``run_dir`` with its network in ONNX Runtime (default file ``RUN_DIR/model.onnx``).

    The file must come from this run's config (digest check); the normalisation statistics come from the
    file, the song-level head (attention or linear pooling, if any) from the run folder."""
    run_dir = Path(run_dir)
    chunk_model = OnnxChunkModel(onnx_path if onnx_path is not None else run_dir / "model.onnx")
    meta = chunk_model.meta
    cfg = read_run_config(run_dir)
    if meta.get("config_digest") != config_digest(cfg):
        raise CheckpointError(f"{chunk_model.path} was exported from another run config than {run_dir}/config.yaml; "
                              f"export it again: deam-mamba export {run_dir} --onnx {chunk_model.path} --force")
    norm = json.loads(meta.get("norm_stats", "null"))
    pool = None
    if cfg.model.pooling != "mean":
        pool = load_pool(pool_path(run_dir, int(meta["step"])), cfg.model.pooling)[0]
    pred = Predictor.for_config(chunk_model, cfg, NormStats.from_dict(norm) if norm else None, device="cpu",
                                batch_size=batch_size, pool=pool, hop_seconds=hop_seconds)
    if pred.chunk_frames != int(meta["chunk_frames"]):
        raise CheckpointError(f"{chunk_model.path} expects chunks of {meta['chunk_frames']} frames, the run "
                              f"{pred.chunk_frames}; export it again with --force")
    pred.run_dir = str(run_dir)
    return pred


__all__ = ["OnnxChunkModel", "config_digest", "export_onnx", "onnx_predictor"]
