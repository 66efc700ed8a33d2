"""MambaVision building blocks, with the official parameter names (NVlabs/MambaVision, ``mamba_vision.py``).

Written from the paper and the official code's structure; nothing here imports ``mamba_ssm``: the selective
scan comes from :mod:`deam_mamba.models.scan` (``ref``/``fast``/``cuda``/``auto``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deam_mamba.models.layers import DropPath, Mlp
from deam_mamba.models.scan import resolve_backend, selective_scan_fn


def window_partition(x: Tensor, window: int) -> Tensor:
    """``[B, C, H, W]`` (H, W multiples of ``window``) -> windows of tokens ``[B * nH * nW, window**2, C]``."""
    B, C, H, W = x.shape
    x = x.view(B, C, H // window, window, W // window, window)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, window * window, C)


def window_reverse(windows: Tensor, window: int, H: int, W: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``[B * nH * nW, window**2, C]`` -> ``[B, C, H, W]``."""
    nh, nw = H // window, W // window
    C = windows.shape[-1]
    x = windows.reshape(-1, nh, nw, window, window, C)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(-1, C, H, W)


class PatchEmbed(nn.Module):
    """Conv stem: ``stem_stride`` / 2 stride-2 3x3 convs (4 -> two, as official), BN, ReLU. ``[B, in_chans, H, W]
    -> [B, dim, H / stride, W / stride]`` (rounded up)."""

    def __init__(self, in_chans: int = 3, in_dim: int = 64, dim: int = 96, stem_stride: int = 4):
        super().__init__()
        n = int(math.log2(stem_stride))
        if 2 ** n != stem_stride or n < 2:
            raise ValueError(f"stem_stride must be a power of two >= 4, got {stem_stride}")
        self.proj = nn.Identity()
        chans = [in_chans] + [in_dim] * (n - 1) + [dim]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out, eps=1e-4), nn.ReLU()]
        self.conv_down = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_down(self.proj(x))


class Downsample(nn.Module):
    """Stride-2 3x3 conv doubling the channels: ``[B, C, H, W] -> [B, 2C, ceil(H/2), ceil(W/2)]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Sequential(nn.Conv2d(dim, 2 * dim, 3, 2, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.reduction(x)


class ConvBlock(nn.Module):
    """Residual block: conv3x3-BN-GELU(tanh)-conv3x3-BN (optional layer scale ``gamma``), ``[B, C, H, W]``."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale: float | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm1 = nn.BatchNorm2d(dim, eps=1e-5)
        self.act1 = nn.GELU(approximate="tanh")
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm2 = nn.BatchNorm2d(dim, eps=1e-5)
        self.layer_scale = isinstance(layer_scale, (int, float)) and not isinstance(layer_scale, bool)
        if self.layer_scale:
            self.gamma = nn.Parameter(layer_scale * torch.ones(dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.layer_scale:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)


class MambaVisionMixer(nn.Module):
    """MambaVision's token mixer on ``[B, L, dim]``. After ``in_proj`` one half of the channels goes through a
    depthwise conv, SiLU and the selective scan; the other half through a depthwise conv and SiLU only (no
    gating); the halves are concatenated and projected back. ``d_inner = expand * dim``, halves ``d_inner / 2``.
    """

    def __init__(self, d_model: int, d_state: int = 8, d_conv: int = 3, expand: int = 1,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, scan_backend: str = "auto"):
        super().__init__()
        resolve_backend(scan_backend)  # validates the name
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = int(expand * d_model)
        half = self.d_inner // 2
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(d_model, self.d_inner, bias=False)
        self.x_proj = nn.Linear(half, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, half, bias=True)
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(half) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():  # inverse softplus, as Mamba (the model-level init then resets it, as official)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(half, 1))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(half))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # the official code passes bias=conv_bias//2, i.e. no bias
        self.conv1d_x = nn.Conv1d(half, half, d_conv, groups=half, bias=False, padding="same")
        self.conv1d_z = nn.Conv1d(half, half, d_conv, groups=half, bias=False, padding="same")

    def extra_repr(self) -> str:
        dev = self.A_log.device
        return f"d_state={self.d_state}, scan_backend={self.scan_backend}->{resolve_backend(self.scan_backend, dev)}"

    def forward(self, hidden: Tensor) -> Tensor:
        """``[B, L, dim] -> [B, L, dim]``."""
        xz = self.in_proj(hidden).transpose(1, 2)  # [B, d_inner, L]
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d_x(x))
        z = F.silu(self.conv1d_z(z))
        x_dbl = self.x_proj(x.transpose(1, 2))  # [B, L, r + 2N]
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        # as official: dt_proj adds its bias, and the scan adds it again as delta_bias
        dt = self.dt_proj(dt).transpose(1, 2)  # [B, half, L]
        A = -torch.exp(self.A_log.float())
        y = selective_scan_fn(x.contiguous(), dt.contiguous(), A, Bm.transpose(1, 2).contiguous(),
                              Cm.transpose(1, 2).contiguous(), self.D.float(), z=None,
                              delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                              backend=self.scan_backend)
        y = torch.cat([y.to(z.dtype), z], dim=1).transpose(1, 2)  # [B, L, d_inner]
        return self.out_proj(y)


class Attention(nn.Module):
    """Multi-head self-attention over ``[B, N, dim]`` tokens (scaled dot product, optional q/k LayerNorm)."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_norm: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        p = self.attn_drop.p if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class Block(nn.Module):
    """Pre-norm residual block: mixer (MambaVision mixer or attention), then MLP; optional layer scale."""

    def __init__(self, dim: int, num_heads: int, attention: bool, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_scale: bool | None = False, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale: float | None = None, scan_backend: str = "auto"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        if attention:
            self.mixer: nn.Module = Attention(dim, num_heads, qkv_bias, bool(qk_scale), attn_drop, drop)
        else:
            self.mixer = MambaVisionMixer(dim, d_state=8, d_conv=3, expand=1, scan_backend=scan_backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        use_ls = isinstance(layer_scale, (int, float)) and not isinstance(layer_scale, bool)
        self.gamma_1 = nn.Parameter(layer_scale * torch.ones(dim)) if use_ls else 1.0
        self.gamma_2 = nn.Parameter(layer_scale * torch.ones(dim)) if use_ls else 1.0

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.gamma_1 * self.mixer(self.norm1(x)))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


def attention_block_ids(depth: int) -> list[int]:
    """Indices of the blocks of a stage that use attention: the second half (the middle one stays Mamba)."""
    return list(range(depth // 2 + 1, depth)) if depth % 2 else list(range(depth // 2, depth))


class MambaVisionLayer(nn.Module):
    """One stage: conv blocks (``conv=True``) or windowed Mamba/attention blocks, then optional downsampling.

    Mamba/attention stages zero-pad the map on the right/bottom to a multiple of ``window_size``, run the blocks
    on the windows' tokens, and crop back, so any ``H, W`` works.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, conv: bool = False,
                 downsample: bool = True, mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale=None,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float | list[float] = 0.0,
                 layer_scale: float | None = None, layer_scale_conv: float | None = None,
                 scan_backend: str = "auto"):
        super().__init__()
        dps = drop_path if isinstance(drop_path, list) else [drop_path] * depth
        self.conv = conv
        self.transformer_block = not conv
        if conv:
            self.blocks = nn.ModuleList([ConvBlock(dim, dps[i], layer_scale_conv) for i in range(depth)])
        else:
            attn = set(attention_block_ids(depth))
            self.blocks = nn.ModuleList([
                Block(dim, num_heads, i in attn, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop, dps[i],
                      layer_scale, scan_backend) for i in range(depth)])
        self.downsample = Downsample(dim) if downsample else None
        self.window_size = window_size

    def forward(self, x: Tensor) -> Tensor:
        """``[B, dim, H, W] -> [B, dim, H, W]`` (or ``[B, 2 dim, ceil(H/2), ceil(W/2)]`` with downsampling)."""
        if self.conv:
            for blk in self.blocks:
                x = blk(x)
        else:
            H, W = x.shape[-2:]
            ws = self.window_size
            pad_b, pad_r = (-H) % ws, (-W) % ws
            if pad_b or pad_r:
                x = F.pad(x, (0, pad_r, 0, pad_b))
            Hp, Wp = x.shape[-2:]
            t = window_partition(x, ws)
            for blk in self.blocks:
                t = blk(t)
            x = window_reverse(t, ws, Hp, Wp)
            if pad_b or pad_r:
                x = x[:, :, :H, :W].contiguous()
        return x if self.downsample is None else self.downsample(x)
