"""Training losses on the training scale: weighted MSE + (1 - CCC), masked for dynamic targets.

Static targets are song means on 1-9 trained as ``(y - 5) / 4`` (:func:`deam_mamba.core.scales.normalise_static`);
dynamic targets are DEAM's 2 Hz annotations on [-1, 1], used as they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from deam_mamba.config import Config
from deam_mamba.core.errors import ConfigError, LabelError


def _flat_rows(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None):
    """``[..., D]`` tensors (+ optional row mask ``[...]``) -> ``([M, D], [M, D])`` valid rows."""
    if pred.shape != target.shape:
        raise LabelError(f"shape mismatch: pred has shape {tuple(pred.shape)}, target {tuple(target.shape)}")
    d = pred.shape[-1]
    p, t = pred.reshape(-1, d), target.reshape(-1, d)
    if mask is not None:
        if tuple(mask.shape) != tuple(pred.shape[:-1]):
            raise LabelError(f"mask shape {tuple(mask.shape)} must be {tuple(pred.shape[:-1])}")
        m = mask.reshape(-1).bool()
        p, t = p[m], t[m]
    return p, t


def ccc_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8,
) -> torch.Tensor:
    """Differentiable ``1 - CCC`` per dimension, averaged over dimensions (scalar in [0, 2]).

    ``pred, target: [N, D]`` (or ``[B, K, D]`` with a row ``mask [B, K]`` selecting valid
    steps). Population moments over the valid rows; ``eps`` keeps a batch with zero variance
    finite. Scale-invariant in the sense that it works on normalised or label-scale targets.
    """
    p, t = _flat_rows(pred, target, mask)
    if p.shape[0] == 0:
        return pred.sum() * 0.0 + 1.0
    mp, mt = p.mean(0), t.mean(0)
    vp, vt = p.var(0, unbiased=False), t.var(0, unbiased=False)
    cov = ((p - mp) * (t - mt)).mean(0)
    c = 2.0 * cov / (vp + vt + (mp - mt) ** 2 + eps)
    return (1.0 - c).mean()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over valid elements. ``pred, target: [..., D]``; ``mask``: ``[...]`` (rows)
    or ``[..., D]`` (elements), bool. Masked-out targets may be NaN (padding): they are replaced
    before the subtraction, so they poison neither the loss nor its gradient. No valid element ->
    a zero that still has a graph.
    """
    if pred.shape != target.shape:
        raise LabelError(f"shape mismatch: pred has shape {tuple(pred.shape)}, target {tuple(target.shape)}")
    if mask is None:
        return ((pred - target) ** 2).mean()
    m = mask.bool()
    if m.shape == pred.shape[:-1]:
        m = m.unsqueeze(-1).expand_as(pred)
    elif m.shape != pred.shape:
        raise LabelError(
            f"mask shape {tuple(mask.shape)} must be {tuple(pred.shape[:-1])} or {tuple(pred.shape)}"
        )
    safe_t = torch.where(m, target, pred.detach())
    sq = torch.where(m, (pred - safe_t) ** 2, torch.zeros_like(pred))
    n = m.sum()
    return sq.sum() / n.clamp(min=1)


def quadrant_loss(logits: torch.Tensor, quadrant: torch.Tensor, head: str = "axes", smoothing: float = 0.0
                  ) -> torch.Tensor:
    """Loss of quadrant logits against quadrants 1..4 (``[B]`` int64).

    ``head="axes"``: ``logits [B, 2]`` = (valence positive, arousal high), binary cross-entropy on each axis,
    averaged; ``head="classes"``: ``logits [B, 4]`` = Q1..Q4, cross-entropy. ``smoothing`` moves targets
    towards 0.5 (axes) or the uniform distribution (classes)."""
    q = quadrant.long()
    if head == "classes":
        return F.cross_entropy(logits, q - 1, label_smoothing=float(smoothing))
    target = torch.stack([(q == 1) | (q == 4), (q == 1) | (q == 2)], dim=1).to(logits.dtype)
    target = target * (1.0 - 2.0 * smoothing) + smoothing
    return F.binary_cross_entropy_with_logits(logits, target)


def compute_loss(cfg: Config, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The run's loss on the training scale: static, ``label_scale().to_unit(y)`` (``(y - 5) / 4`` on 1-9) with
    weighted MSE + (1 - CCC); dynamic, [-1, 1] with the same, masked; quadrant, :func:`quadrant_loss`."""
    out = out.float()
    if cfg.mode == "quadrant":
        return quadrant_loss(out, batch["y_quad"], cfg.loss.quadrant, cfg.loss.label_smoothing)
    w_mse, w_ccc = cfg.loss.weights()
    if cfg.mode == "static":
        pred, target, mask = out, cfg.label_scale().to_unit(batch["y"].float()), None
    else:
        k = batch["y_dyn"].shape[1]
        if out.shape[1] != 2 * k:
            raise ConfigError(f"dynamic mode: the model gives {out.shape[1]} outputs but chunks hold {k} "
                              f"annotation points ({2 * k} outputs needed)")
        pred, target, mask = out.view(out.shape[0], k, 2), batch["y_dyn"].float(), batch["y_dyn_mask"].bool()
    loss = out.new_zeros(())
    if w_mse:
        loss = loss + w_mse * masked_mse(pred, target, mask)
    if w_ccc:
        loss = loss + w_ccc * ccc_loss(pred, target, mask)
    return loss
