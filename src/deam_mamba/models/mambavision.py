"""The MambaVision backbone (Hatamizadeh & Kautz, CVPR 2025) in pure PyTorch, official-compatible names.

``[B, in_chans, H, W]`` -> conv stem (stride 4) -> stage 0, 1: residual conv blocks -> stages 2, 3: windowed
MambaVision-mixer blocks, then self-attention blocks in the second half of each stage -> BatchNorm -> global
average pool -> ``[B, num_features]`` (``forward_features``) -> linear head (``forward_head``). A stride-2 conv
doubles the channels between stages. Any ``H, W`` works (stages pad to the window size and crop back).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from deam_mamba.models.blocks import MambaVisionLayer, MambaVisionMixer, PatchEmbed
from deam_mamba.models.layers import trunc_normal_
from deam_mamba.models.scan import resolve_backend


class MambaVision(nn.Module):
    """MambaVision; constructor arguments mirror the official class (plus ``scan_backend`` and ``stem_stride``).

    Args:
        dim: channels of stage 0 (doubled at every stage). in_dim: channels inside the stem.
        depths / num_heads / window_size: per stage (4 values each).
        mlp_ratio, qkv_bias, qk_scale (q/k LayerNorm if truthy, as official), drop_rate, attn_drop_rate.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        layer_scale / layer_scale_conv: init value of the per-channel residual scales (None: off).
        scan_backend: ``auto`` | ``fast`` | ``ref`` | ``cuda`` (see :mod:`deam_mamba.models.scan`).
        stem_stride: total stride of the stem (4 = official; 8 adds one more stride-2 conv).
    """

    def __init__(self, dim: int, in_dim: int, depths, window_size, mlp_ratio: float, num_heads,
                 drop_path_rate: float = 0.2, in_chans: int = 3, num_classes: int = 1000, qkv_bias: bool = True,
                 qk_scale=None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 layer_scale: float | None = None, layer_scale_conv: float | None = None,
                 scan_backend: str = "auto", stem_stride: int = 4, **kwargs):
        super().__init__()
        kwargs.pop("resolution", None)  # accepted and ignored, as by the official class
        if kwargs:
            raise TypeError(f"unexpected MambaVision arguments: {sorted(kwargs)}")
        depths, num_heads, window_size = list(depths), list(num_heads), list(window_size)
        if not len(depths) == len(num_heads) == len(window_size) == 4:
            raise ValueError("depths, num_heads and window_size need 4 values each (one per stage)")
        resolve_backend(scan_backend)
        self.config = dict(dim=dim, in_dim=in_dim, depths=depths, window_size=window_size, mlp_ratio=mlp_ratio,
                           num_heads=num_heads, drop_path_rate=drop_path_rate, in_chans=in_chans,
                           num_classes=num_classes, qkv_bias=qkv_bias, qk_scale=qk_scale, drop_rate=drop_rate,
                           attn_drop_rate=attn_drop_rate, layer_scale=layer_scale,
                           layer_scale_conv=layer_scale_conv, scan_backend=scan_backend, stem_stride=stem_stride)
        self.num_classes = num_classes
        self.num_features = int(dim * 2 ** (len(depths) - 1))
        self.patch_embed = PatchEmbed(in_chans=in_chans, in_dim=in_dim, dim=dim, stem_stride=stem_stride)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.levels = nn.ModuleList()
        for i, depth in enumerate(depths):
            self.levels.append(MambaVisionLayer(
                dim=int(dim * 2 ** i), depth=depth, num_heads=num_heads[i], window_size=window_size[i],
                conv=i < 2, downsample=i < 3, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])],
                layer_scale=layer_scale, layer_scale_conv=layer_scale_conv, scan_backend=scan_backend))
        self.norm = nn.BatchNorm2d(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """As official: truncated-normal linears (all of them, dt_proj included), unit norms."""
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)  # cut at +-2 (absolute), as timm's
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def scan_backend(self) -> str:
        return self.config["scan_backend"]

    def set_scan_backend(self, name: str) -> None:
        """Switch every mixer to scan backend ``name`` (weights unchanged)."""
        resolve_backend(name)
        self.config["scan_backend"] = name
        for m in self.modules():
            if isinstance(m, MambaVisionMixer):
                m.scan_backend = name

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh (re-initialised) head with ``num_classes`` outputs."""
        self.num_classes = self.config["num_classes"] = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head.apply(self._init_weights)

    def no_weight_decay(self) -> set[str]:
        """Names of parameters usually excluded from weight decay (SSM A_log/D, layer scales, norms, biases)."""
        return {n for n, p in self.named_parameters()
                if p.ndim <= 1 or n.endswith(("A_log", "gamma", "gamma_1", "gamma_2"))}

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, in_chans, H, W] -> [B, num_features]`` pooled embedding."""
        x = self.patch_embed(x)
        for level in self.levels:
            x = level(x)
        return torch.flatten(self.avgpool(self.norm(x)), 1)

    def forward_head(self, f: Tensor) -> Tensor:
        """``[B, num_features] -> [B, num_classes]``."""
        return self.head(f)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
