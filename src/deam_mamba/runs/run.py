"""A finished run folder, loaded for inference: :func:`load_run` -> :class:`LoadedRun`.

Reads ``RUN_DIR/config.yaml`` (the resolved config), the ``best`` or ``last`` weights named by
the checkpoint pointers (:mod:`deam_mamba.runs.checkpoint`), the training normalisation stored in
the weights' metadata and, for ``model.pooling: attention | linear``, the song head fitted on that backbone.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from deam_mamba.config import Config, FeatureConfig, config_from_dict
from deam_mamba.core.errors import CheckpointError
from deam_mamba.features.logmel import NormStats
from deam_mamba.models.build import build_model
from deam_mamba.runs.checkpoint import checkpoint_paths, load_pool, load_weights, pool_path
from deam_mamba.runs.paths import read_run_config_dict


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved config saved in ``RUN_DIR/config.yaml``, its data paths resolved against the run folder
    (:mod:`deam_mamba.runs.paths`)."""
    return config_from_dict(read_run_config_dict(run_dir))


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
    norm_stats: NormStats | None
    feature_config: FeatureConfig
    mode: str
    step: int
    best_metrics: dict[str, float]
    run_dir: Path
    pool: nn.Module | None = None  # the fitted song-level head when config.model.pooling is not "mean"
    pooling: str = "mean"
    weights: Path | None = None  # the safetensors file the model was loaded from


def load_run(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu") -> LoadedRun:
    """Load a training run for inference: model in eval mode plus everything to feed it.

    ``which`` is ``"best"`` (best validation metric) or ``"last"``. Raises
    :class:`CheckpointError` with an actionable message if the folder is not a finished run.
    """
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
    if cfg.model.pooling != "mean":
        pool = load_pool(pool_path(run_dir, int(pointer["step"])), cfg.model.pooling)[0].to(device)
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
        weights=weights,
    )
