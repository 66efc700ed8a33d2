"""Song-level heads over chunk embeddings: :class:`AttentionPool` (``model.pooling: attention``) and
:class:`LinearSongHead` (``model.pooling: linear``).

A song is a bag of chunks. Mean pooling (the default) averages the chunk predictions. Attention
pooling learns, per chunk embedding ``f_i = model.forward_features(chunk_i)`` ``[D]``, a score
``s_i = w2 . tanh(W1 LayerNorm(f_i))``; the song output is ``head(sum_i softmax(s)_i f_i)`` with
padded chunks masked out of the softmax (weight exactly 0). The linear song head describes a song by
the mean and standard deviation of its chunk embeddings ``[2 D]``, standardises them and applies one
affine map: a regularised linear model (logistic regression for quadrants, ridge for values) fitted on
the frozen backbone. Both are fitted by :mod:`deam_mamba.train.pool` and stored by
:mod:`deam_mamba.runs.checkpoint`; both map ``(emb [B, N, D], mask [B, N])`` to ``(outputs [B, O],
chunk weights [B, N])``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from deam_mamba.core.errors import ConfigError


class AttentionPool(nn.Module):
    """Attention (MIL) pooling: ``emb [B, N, D]``, ``mask [B, N]`` -> ``([B, O], weights [B, N])``."""

    kind = "attention"

    def __init__(self, dim: int, num_outputs: int = 2, hidden: int = 64):
        super().__init__()
        self.dim, self.num_outputs, self.hidden = int(dim), int(num_outputs), int(hidden)
        self.score = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.score[-1].weight)  # uniform weights at start: attention == mean pooling
        nn.init.zeros_(self.score[-1].bias)
        self.head = nn.Linear(dim, num_outputs)

    def weights(self, emb: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax weights ``[B, N]`` over each bag's valid chunks (masked chunks get exactly 0)."""
        s = self.score(emb).squeeze(-1)  # [B, N]
        if mask is not None:
            mask = mask.bool()
            if not bool(mask.any(dim=1).all()):
                raise ValueError("every bag needs at least one valid (unmasked) chunk")
            s = s.masked_fill(~mask, float("-inf"))
        return torch.softmax(s, dim=1)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights(emb, mask)
        pooled = torch.einsum("bn,bnd->bd", w, emb)
        return self.head(pooled), w

    def init_head_from(self, forward_head: Any) -> None:
        """Copy an affine ``forward_head: [B, D] -> [B, O]`` (the backbone's head) into ``self.head``."""
        with torch.no_grad():
            dev = self.head.weight.device
            eye = torch.eye(self.dim, device=dev)
            zero = torch.zeros(1, self.dim, device=dev)
            b = forward_head(zero).float().reshape(-1)
            w = (forward_head(eye).float() - b).T  # [O, D]
            probe = torch.randn(3, self.dim, generator=torch.Generator().manual_seed(0)).to(dev)
            if w.shape != self.head.weight.shape or not torch.allclose(
                    forward_head(probe).float(), probe @ w.T + b, atol=1e-4, rtol=1e-3):
                raise ConfigError("model.pooling=attention needs a model whose forward_head is one linear layer")
            self.head.weight.copy_(w)
            self.head.bias.copy_(b)


def song_statistics(emb: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [B, 2 D] = (mean, population std) over each bag's valid chunks, weights [B, N])`` of
    ``emb [B, N, D]`` (``mask [B, N]``; ``None``: every chunk is valid). The weights are the uniform
    ``1 / n_valid`` of the mean (0 on padding)."""
    valid = torch.ones(emb.shape[:2], dtype=torch.bool, device=emb.device) if mask is None else mask.bool()
    if not bool(valid.any(dim=1).all()):
        raise ValueError("every bag needs at least one valid (unmasked) chunk")
    w = valid.to(emb.dtype) / valid.sum(dim=1, keepdim=True).to(emb.dtype)  # [B, N]
    mean = torch.einsum("bn,bnd->bd", w, emb)
    var = torch.einsum("bn,bnd->bd", w, (emb - mean[:, None]) ** 2)
    return torch.cat([mean, var.clamp_min(0).sqrt()], dim=1), w


class LinearSongHead(nn.Module):
    """A linear model on song statistics: ``emb [B, N, D]``, ``mask [B, N]`` -> ``([B, O], weights [B, N])``.

    ``out = ((song_statistics(emb) - center) / scale) @ weight.T + bias`` with ``center, scale [2 D]`` (the
    training songs' StandardScaler) and ``weight [O, 2 D]``, ``bias [O]``. ``task`` says what ``out`` is, in the
    chunk head's own format so the predictor reads both alike: ``classes`` = logits of Q1..Q4, ``axes`` = logits
    of (valence positive, arousal high), ``values`` = (valence, arousal) on the model's ``(y - 5) / 4`` scale.
    """

    kind = "linear"
    TASKS = ("classes", "axes", "values")

    def __init__(self, dim: int, num_outputs: int, task: str):
        super().__init__()
        if task not in self.TASKS:
            raise ValueError(f"unknown linear head task {task!r}: expected one of {self.TASKS}")
        self.dim, self.num_outputs, self.task = int(dim), int(num_outputs), task
        self.register_buffer("center", torch.zeros(2 * self.dim))
        self.register_buffer("scale", torch.ones(2 * self.dim))
        self.head = nn.Linear(2 * self.dim, self.num_outputs)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        feats, w = song_statistics(emb, mask)
        return self.head((feats - self.center) / self.scale), w


def pad_bags(bags: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of ``[N_i, D]`` -> ``(emb [B, max N, D] zero-padded, mask [B, max N] bool)``."""
    n = max(int(b.shape[0]) for b in bags)
    emb = bags[0].new_zeros((len(bags), n, bags[0].shape[1]))
    mask = torch.zeros((len(bags), n), dtype=torch.bool)
    for i, b in enumerate(bags):
        emb[i, :b.shape[0]] = b
        mask[i, :b.shape[0]] = True
    return emb, mask
