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


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and other 1-d parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    o = cfg.optim
    return torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=o.lr, betas=(o.beta1, o.beta2))


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s parameters and buffers (BatchNorm statistics
    included), or None when ``decay`` is 0. After each optimiser step ``ema.update_parameters(model)``
    sets ``avg = decay * avg + (1 - decay) * w`` (the first update copies ``w``)."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of a run of ``total_steps`` steps.

    Steps ``0 .. warmup_steps-1`` ramp linearly from ``lr / warmup_steps`` to ``lr``; then the
    rate follows half a cosine from ``lr`` down to ``lr * min_lr_ratio`` at ``total_steps``
    (and stays there if training runs longer).
    """
    base = cfg.lr
    floor = base * cfg.min_lr_ratio
    warm = max(0, min(cfg.warmup_steps, total_steps))
    if step < warm:
        return base * (step + 1) / warm
    decay = max(1, total_steps - warm)
    t = min(1.0, (step - warm) / decay)
    return floor + 0.5 * (base - floor) * (1.0 + math.cos(math.pi * t))
