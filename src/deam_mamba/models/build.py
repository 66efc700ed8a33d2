"""The network a run trains, from its config: output size follows the mode (static or dynamic)."""
from __future__ import annotations

from torch import nn

from deam_mamba.config import Config
from deam_mamba.models.registry import create_model


def dyn_points_per_chunk(chunk_seconds: float) -> int:
    """K: the 2 Hz dynamic annotation points a chunk of ``chunk_seconds`` holds (at start + k/2 s)."""
    return max(1, int(round(chunk_seconds * 2.0)))


def num_outputs(cfg: Config) -> int:
    """Model output size: 2 (static valence, arousal), 2*K (dynamic, K points per chunk), or for quadrant
    runs 2 (``loss.quadrant=axes``: valence-positive and arousal-high logits) / 4 (``classes``: Q1..Q4)."""
    if cfg.mode == "dynamic":
        return 2 * dyn_points_per_chunk(cfg.chunks.chunk_seconds)
    if cfg.mode == "quadrant" and cfg.loss.quadrant == "classes":
        return 4
    return 2


def build_model(cfg: Config) -> nn.Module:
    """The network a run of ``cfg`` trains (``cfg.model.name`` from the registry, output size from the mode)."""
    kwargs = dict(cfg.model.kwargs)
    kwargs["num_classes"] = num_outputs(cfg)
    return create_model(cfg.model.name, **kwargs)
