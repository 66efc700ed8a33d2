"""Optimiser, weight averaging and learning-rate schedule of the training loop.

* :func:`make_optimizer`: AdamW, no weight decay on biases and norms;
* :func:`make_ema`: optional exponential moving average of the weights (``optim.ema_decay``);
* :func:`lr_at`: linear warm-up then cosine decay, a pure function of the step.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from deam_mamba.config import Config, OptimConfig
from deam_mamba.models.finetune import head_prefixes


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and other 1-d parameters; frozen parameters left out.

    With ``optim.backbone_lr_scale != 1`` the backbone (everything but the head) gets its own groups whose
    ``lr_scale`` is that factor: the loop sets each group's rate to ``lr_at(...) * group["lr_scale"]``.
    """
    o = cfg.optim
    scale = float(o.backbone_lr_scale)
    heads = head_prefixes(model) if scale != 1.0 else ()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((bool(heads) and not name.startswith(heads), p.ndim >= 2), []).append(p)
    out = [{"params": ps, "weight_decay": o.weight_decay if decay else 0.0, "lr_scale": scale if backbone else 1.0,
            "name": ("backbone" if backbone else "head" if heads else "all") + ("" if decay else "_no_decay")}
           for (backbone, decay), ps in sorted(groups.items(), key=lambda kv: (not kv[0][1], kv[0][0]))]
    return torch.optim.AdamW(out, lr=o.lr, betas=(o.beta1, o.beta2))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's rate to ``lr`` times its ``lr_scale`` (1 unless the backbone has its own rate)."""
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s parameters and buffers (BatchNorm statistics
    included), or None when ``decay`` is 0. After each optimiser step ``ema.update_parameters(model)``
    sets ``avg = decay * avg + (1 - decay) * w`` (the first update copies ``w``)."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def warmup_steps(cfg: OptimConfig, steps_per_epoch: int | None = None) -> int:
    """Warm-up length in steps: ``warmup_epochs * steps_per_epoch`` when ``warmup_epochs`` is set, else
    ``warmup_steps``."""
    if cfg.warmup_epochs is not None and steps_per_epoch:
        return int(round(float(cfg.warmup_epochs) * steps_per_epoch))
    return int(cfg.warmup_steps)


def lr_at(step: int, cfg: OptimConfig, total_steps: int, steps_per_epoch: int | None = None) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of a run of ``total_steps`` steps.

    Steps ``0 .. W-1`` (``W``: :func:`warmup_steps`) ramp linearly from ``lr / W`` to ``lr``; then the
    rate follows half a cosine from ``lr`` down to ``lr * min_lr_ratio`` at ``total_steps``
    (and stays there if training runs longer).
    """
    base = cfg.lr
    floor = base * cfg.min_lr_ratio
    warm = max(0, min(warmup_steps(cfg, steps_per_epoch), total_steps))
    if step < warm:
        return base * (step + 1) / warm
    decay = max(1, total_steps - warm)
    t = min(1.0, (step - warm) / decay)
    return floor + 0.5 * (base - floor) * (1.0 + math.cos(math.pi * t))
