"""Learning-rate schedule: linear warm-up then cosine decay, a pure function of the step."""
from __future__ import annotations

import math

from deam_mamba.config import OptimConfig


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
