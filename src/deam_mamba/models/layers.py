"""Small layers MambaVision needs: the transformer MLP and stochastic depth (drop path).

Written here so building a MambaVision does not import timm (and through it torchvision: ~5 s of a cold
``predict``). Parameter names match timm's ``Mlp`` (``fc1``, ``fc2``), so official checkpoints and runs
trained before load unchanged; ``tests/test_layers.py`` checks both against timm's as the reference.
"""
from __future__ import annotations

from torch import Tensor, nn


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


__all__ = ["DropPath", "Mlp", "drop_path"]
