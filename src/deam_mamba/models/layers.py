"""Small layers MambaVision needs: the transformer MLP, stochastic depth (drop path), truncated-normal init.

Written here so building a MambaVision does not import timm (and through it torchvision: ~5 s of a cold
``predict``). Parameter names match timm's ``Mlp`` (``fc1``, ``fc2``), so official checkpoints and runs
trained before load unchanged; ``tests/test_layers.py`` checks all three against timm's as the reference.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


@torch.no_grad()
def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> Tensor:
    """Fill ``tensor`` in place from N(mean, std²) truncated to ``[a, b]`` (absolute bounds), by the inverse CDF:
    uniform draws between the bounds' CDF values mapped through ``erfinv``. The draws of timm's
    ``trunc_normal_`` (so a seed gives the initial weights it gave); torch's own (2.14) rejection-samples and
    cost ~0.5 s of every model construction, i.e. of every cold ``predict``."""
    def cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    lo, hi = cdf((a - mean) / std), cdf((b - mean) / std)
    tensor.uniform_(2 * lo - 1, 2 * hi - 1)
    tensor.erfinv_()
    tensor.mul_(std * math.sqrt(2.0))
    tensor.add_(mean)
    return tensor.clamp_(min=a, max=b)


class Mlp(nn.Module):
    """``fc1 -> act -> dropout -> fc2 -> dropout`` on ``[..., in_features]`` -> ``[..., out_features]``."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0, bias: bool = True):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False) -> Tensor:
    """Stochastic depth on a residual branch ``x [B, ...]``: in training, each sample's branch is zeroed with
    probability ``drop_prob`` and the kept ones are scaled by ``1 / (1 - drop_prob)`` (expectation unchanged);
    in eval (or ``drop_prob == 0``) ``x`` is returned as is."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    if keep > 0.0:
        mask.div_(keep)
    return x * mask


class DropPath(nn.Module):
    """:func:`drop_path` as a module (active in ``train()`` mode only)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


__all__ = ["DropPath", "Mlp", "drop_path", "trunc_normal_"]
