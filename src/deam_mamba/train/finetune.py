"""``model.init=RUN_OR_FILE``: start a training run from pretrained weights (backbone only; the head stays new).

``RUN``: a ``deam-mamba pretrain`` or ``train`` run folder (its ``best`` checkpoint, else ``last``); ``FILE``: a
``.safetensors`` file (e.g. a run's ``checkpoints/stepNNNNNNNN.safetensors``). The architecture recorded with
the weights (the run's ``config.yaml``, or the config in the file's metadata) must match the model being
trained; tensors are then matched by name and shape (:func:`deam_mamba.models.finetune.load_backbone_tensors`).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open
from torch import nn

from deam_mamba.config import Config, config_from_dict
from deam_mamba.core.errors import CheckpointError, ConfigError, DeamError
from deam_mamba.models.finetune import InitReport, load_backbone_tensors
from deam_mamba.models.registry import model_config
from deam_mamba.runs import checkpoint as ck

log = logging.getLogger(__name__)

# constructor arguments that may differ between pretraining and fine-tuning (regularisation, head, kernels)
_FREE_ARGS = ("num_classes", "drop_path_rate", "drop_rate", "attn_drop_rate", "scan_backend")


def resolve_init(source: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """``(weights file, the config dict recorded with it or None)`` for ``model.init``'s value."""
    src = Path(source).expanduser()
    if src.is_dir():
        which = "best" if (src / ck.CKPT_DIR / "best.json").is_file() else "last"
        try:
            weights, _, _ = ck.checkpoint_paths(src, which)
        except CheckpointError as exc:
            raise CheckpointError(f"model.init={src}: not a run folder with checkpoints ({exc})") from None
        cfg_file = src / "config.yaml"
        data = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else None
        return weights, data
    if src.is_file():
        if src.suffix != ".safetensors":
            raise ConfigError(f"model.init={src}: give a run folder or a .safetensors file (for an official "
                              ".pth.tar MambaVision checkpoint use deam_mamba.models.pretrained.load_pretrained)")
        try:
            with safe_open(str(src), framework="pt") as fh:
                meta = dict(fh.metadata() or {})
        except Exception as exc:  # safetensors raises its own error types for junk
            raise CheckpointError(f"model.init={src}: not a readable .safetensors file ({exc})") from None
        return src, json.loads(meta["config"]) if "config" in meta else None
    raise ConfigError(f"model.init={src}: no such run folder or file")


def _arch(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    full = model_config(name, **{k: v for k, v in kwargs.items() if k != "num_classes"})
    return {k: v for k, v in full.items() if k not in _FREE_ARGS}


def check_architecture(cfg: Config, recorded: dict[str, Any] | None, source: Path) -> None:
    """ConfigError when the weights' recorded model (name + shape-giving arguments) is not ``cfg.model``'s;
    a warning when their feature settings differ (the backbone would see other inputs than it learned on)."""
    if recorded is None:
        log.warning("model.init=%s: no config recorded with the weights; matching tensors by name and shape only",
                    source)
        return
    try:
        other = config_from_dict(recorded)
    except DeamError as exc:
        log.warning("model.init=%s: cannot read the recorded config (%s); matching by name and shape only",
                    source, exc)
        return
    mine, theirs = _arch(cfg.model.name, cfg.model.kwargs), _arch(other.model.name, other.model.kwargs)
    if cfg.model.name != other.model.name or mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ConfigError(f"model.init={source}: the weights are of {other.model.name} "
                          f"{ {k: theirs.get(k) for k in diff} }, this run builds {cfg.model.name} "
                          f"{ {k: mine.get(k) for k in diff} }; use the same model.name and model.kwargs")
    if other.features != cfg.features:
        log.warning("model.init=%s: pretrained on other feature settings (%s) than this run's (%s)", source,
                    other.features.key(), cfg.features.key())


def init_model(model: nn.Module, cfg: Config) -> InitReport:
    """Load ``cfg.model.init`` into ``model`` (backbone tensors only); logs how many were loaded/skipped."""
    weights, recorded = resolve_init(cfg.model.init)
    check_architecture(cfg, recorded, Path(cfg.model.init))
    tensors, _ = ck.read_weights(weights, "model.init weights")
    rep = load_backbone_tensors(model, tensors, source=str(weights))
    log.info("model.init=%s (%s): %s", cfg.model.init, weights.name, rep.summary())
    return rep
