"""Fine-tuning helpers: which parameters are the head, loading a pretrained backbone, freezing early stages.

The run-folder side (which checkpoint of a run, checking its architecture) is in
:mod:`deam_mamba.train.finetune`; this module works on tensors and modules only.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from deam_mamba.core.errors import CheckpointError, ConfigError
from deam_mamba.models.mambavision import MambaVision
from deam_mamba.models.pretrain import BACKBONE_PREFIX

log = logging.getLogger(__name__)


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Name prefixes of the output head's tensors (``head.`` for MambaVision, timm's classifier for baselines)."""
    if isinstance(model, MambaVision):
        return ("head.",)
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "get_classifier"):
        clf = inner.get_classifier()
        names = [n for n, m in inner.named_modules() if m is clf and n]
        return tuple(f"model.{n}." for n in names) or ("model.head.",)
    return ("head.",)


def is_head(name: str, prefixes: tuple[str, ...]) -> bool:
    return name.startswith(prefixes)


@dataclass
class InitReport:
    """What :func:`load_backbone_tensors` did: names loaded, and the model's/the file's names left out (why)."""

    loaded: list[str] = field(default_factory=list)
    kept_new: list[str] = field(default_factory=list)  # model tensors left at their fresh init (head, no match)
    unused: list[str] = field(default_factory=list)  # file tensors that fit nothing (decoder, mask token, ...)
    shape_mismatch: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.loaded)} tensors loaded, {len(self.kept_new)} left at their fresh init (head or no "
                f"match), {len(self.unused)} of the file unused, {len(self.shape_mismatch)} skipped for shape")


def backbone_tensors(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """A pretraining checkpoint's backbone tensors without their ``backbone.`` prefix; other files unchanged."""
    if any(k.startswith(BACKBONE_PREFIX) for k in tensors):
        return {k[len(BACKBONE_PREFIX):]: v for k, v in tensors.items() if k.startswith(BACKBONE_PREFIX)}
    return dict(tensors)


def load_backbone_tensors(model: nn.Module, tensors: dict[str, Tensor], source: str = "weights") -> InitReport:
    """Copy ``tensors`` into ``model`` where name and shape match, never into the head.

    Raises :class:`CheckpointError` when nothing matches (another architecture, or not a backbone at all).
    """
    file_names = list(tensors)
    tensors = backbone_tensors(tensors)
    heads = head_prefixes(model)
    own = model.state_dict()
    rep = InitReport()
    new_state = {}
    for name, t in own.items():
        src = tensors.get(name)
        if is_head(name, heads) or src is None:
            rep.kept_new.append(name)
        elif tuple(src.shape) != tuple(t.shape):
            rep.shape_mismatch.append(name)
            rep.kept_new.append(name)
        else:
            new_state[name] = src.to(dtype=t.dtype)
            rep.loaded.append(name)
    done = set(rep.loaded)
    rep.unused = [k for k in file_names if k.removeprefix(BACKBONE_PREFIX) not in done]
    if not rep.loaded:
        raise CheckpointError(f"no tensor of {source} fits the model (by name and shape): is it a checkpoint of "
                              f"the same model? (file has e.g. {list(tensors)[:3]}, model has {list(own)[:3]})")
    with torch.no_grad():
        for name, t in new_state.items():
            own[name].copy_(t)
    if rep.shape_mismatch:
        log.warning("init from %s: %d tensors have other shapes and stay fresh: %s", source,
                    len(rep.shape_mismatch), rep.shape_mismatch[:5])
    return rep


def frozen_modules(model: nn.Module, n_stages: int) -> list[nn.Module]:
    """The stem and the first ``n_stages`` stages of a MambaVision (empty for 0)."""
    if n_stages <= 0:
        return []
    if not isinstance(model, MambaVision):
        raise ConfigError(f"model.freeze_stages needs a mambavision_* model, got {type(model).__name__}")
    return [model.patch_embed, *list(model.levels)[:n_stages]]


def freeze_stages(model: nn.Module, n_stages: int) -> int:
    """Turn off gradients of the stem + first ``n_stages`` stages; returns the number of frozen parameters.

    Their BatchNorm statistics are frozen too, by :func:`keep_frozen_eval` after every ``model.train()``.
    """
    n = 0
    for m in frozen_modules(model, n_stages):
        for p in m.parameters():
            p.requires_grad_(False)
            n += p.numel()
    return n


def keep_frozen_eval(model: nn.Module, n_stages: int) -> None:
    """Put the frozen modules in eval mode (BatchNorm uses, and stops updating, its running statistics)."""
    for m in frozen_modules(model, n_stages):
        m.eval()
