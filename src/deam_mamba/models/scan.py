"""Selective scan (the Mamba S6 recurrence) with mamba_ssm's ``selective_scan_fn`` signature.

For every batch ``b``, channel ``d`` and state ``n``::

    delta = softplus(delta + delta_bias)            # if delta_softplus (bias optional)
    h[t]  = exp(delta[t] * A[d, n]) * h[t-1] + delta[t] * B[t, n] * u[t]
    y[t]  = sum_n C[t, n] * h[t] + D[d] * u[t]
    out   = y * silu(z)                              # if z is given

Shapes: ``u, delta, z: [B, D, L]``; ``A: [D, N]``; ``B, C: [D, N]`` (fixed), ``[B, N, L]`` (variable,
as MambaVision uses) or ``[B, G, N, L]`` (grouped, ``D % G == 0``); ``D: [D]``; ``delta_bias: [D]``.
Returns ``out [B, D, L]`` in ``u``'s dtype (and ``last_state [B, D, N]`` if ``return_last_state``).
Arithmetic runs in float32 (float64 stays float64).

Backends:
  * ``ref``  -- a sequential loop over time: the readable definition.
  * ``fast`` -- pure torch: the per-step decays ``a = exp(delta*A)`` and inputs ``delta*B*u`` are formed for
    all steps at once (time-major ``[L, B, D, N]``), then the linear recurrence ``h[t] = a[t] h[t-1] + x[t]`` is
    solved chunk-parallel: chunks of ~sqrt(L) steps advance together, then a sequential carry crosses the
    chunks (~3 sqrt(L) vectorised in-place ops instead of L autograd steps). It only multiplies decays
    together (never divides by them or exponentiates sums), so it cannot overflow where the sequential loop
    does not. Its backward is the same scan run in reverse (a custom autograd Function).
  * ``cuda`` -- mamba_ssm's kernel, used only if ``mamba_ssm`` imports (optional dependency).
  * ``auto`` -- ``cuda`` for CUDA tensors when available, else ``fast``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # optional: CUDA-only package, never required
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan_fn
except Exception:  # ImportError, or a broken CUDA build raising at import
    _cuda_selective_scan_fn = None

BACKENDS = ("auto", "fast", "ref", "cuda")


def cuda_available() -> bool:
    """True when mamba_ssm's CUDA kernel imported."""
    return _cuda_selective_scan_fn is not None


def resolve_backend(name: str, device: torch.device | str | None = None) -> str:
    """The concrete backend (``fast``/``ref``/``cuda``) that ``name`` means for tensors on ``device``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown scan backend {name!r}; choose one of {BACKENDS}")
    if name != "auto":
        return name
    on_cuda = device is not None and torch.device(device).type == "cuda"
    return "cuda" if on_cuda and cuda_available() else "fast"


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _prepare(u: Tensor, delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool):
    cd = _compute_dtype(u.dtype)
    u, delta = u.to(cd), delta.to(cd)
    if delta_bias is not None:
        delta = delta + delta_bias.to(cd)[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, cd


def _expand_bc(M: Tensor, dim: int, cd: torch.dtype) -> Tensor:
    """B or C as a tensor broadcastable to ``[B, D, L, N]``."""
    M = M.to(cd)
    if M.dim() == 2:  # [D, N] fixed over time and batch
        return M[None, :, None, :]
    if M.dim() == 3:  # [B, N, L]
        return M.transpose(1, 2)[:, None]
    if M.dim() == 4:  # [B, G, N, L] -> [B, D, L, N]
        groups = M.shape[1]
        if dim % groups:
            raise ValueError(f"channels {dim} not divisible by groups {groups}")
        return M.transpose(2, 3).repeat_interleave(dim // groups, dim=1)
    raise ValueError(f"B/C must have 2, 3 or 4 dims, got shape {tuple(M.shape)}")


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype_in: torch.dtype) -> Tensor:
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype_in)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """Sequential reference: one loop step per time step (see the module docstring)."""
    dtype_in = u.dtype
    u, delta, cd = _prepare(u, delta, delta_bias, delta_softplus)
    A = A.to(cd)
    Bx, Cx = _expand_bc(B, A.shape[0], cd), _expand_bc(C, A.shape[0], cd)
    h = u.new_zeros(u.shape[0], A.shape[0], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        dt = delta[:, :, t, None]  # [B, D, 1]
        b_t = Bx[:, :, t] if Bx.shape[2] > 1 else Bx[:, :, 0]
        c_t = Cx[:, :, t] if Cx.shape[2] > 1 else Cx[:, :, 0]
        h = torch.exp(dt * A) * h + dt * b_t * u[:, :, t, None]
        ys.append((h * c_t).sum(-1))
    y = torch.stack(ys, dim=2) if ys else u.new_zeros(u.shape)
    out = _finish(y, u, D, z, dtype_in)
    return (out, h) if return_last_state else out


# ---------------------------------------------------------------- linear recurrence, chunked
def _scan_time_major(a: Tensor, h: Tensor) -> Tensor:
    """Solve ``h[t] = a[t] h[t-1] + x[t]`` (``h[-1] = 0``) along dim 0 of ``[L, M]`` tensors, in place on ``h``
    (which holds ``x`` on entry). ``a`` is read only.

    Time-major layout keeps every step a contiguous block. Chunks of ``T ~ sqrt(L)`` steps: all chunks advance
    together through their ``T`` positions (also accumulating each chunk's decay product), then the chunk-end
    states are carried sequentially across the ``L / T`` chunks, and one broadcast adds the carry to every step.
    About ``3 sqrt(L)`` vectorised ops in all, and only products of decays: nothing can overflow.
    """
    L, M = h.shape
    if L <= 32:
        for t in range(1, L):
            h[t].addcmul_(a[t], h[t - 1])
        return h
    T = math.isqrt(L - 1) + 1
    nc = -(-L // T)
    pad = nc * T - L
    if pad:
        a = torch.cat([a, a.new_ones(pad, M)])
        h = torch.cat([h, h.new_zeros(pad, M)])
    a3, h3 = a.view(nc, T, M), h.view(nc, T, M)
    P = torch.empty_like(a3)  # decay from the chunk start (inclusive) to each position
    P[:, 0] = a3[:, 0]
    for t in range(1, T):
        h3[:, t].addcmul_(a3[:, t], h3[:, t - 1])
        torch.mul(P[:, t - 1], a3[:, t], out=P[:, t])
    for c in range(1, nc):  # true state at every chunk end
        h3[c, -1].addcmul_(P[c, -1], h3[c - 1, -1])
    h3[1:, :-1].addcmul_(P[1:, :-1], h3[:-1, -1:])
    return h[:L] if pad else h


def _reverse_scan_time_major(a: Tensor, g: Tensor) -> Tensor:
    """Solve ``g[t] = a[t+1] g[t+1] + y[t]`` (``g[L] = 0``) along dim 0, in place on ``g`` (holding ``y``): the
    adjoint of :func:`_scan_time_major`, chunked the same way, run from the end."""
    L, M = g.shape
    if L <= 32:
        for t in range(L - 2, -1, -1):
            g[t].addcmul_(a[t + 1], g[t + 1])
        return g
    T = math.isqrt(L - 1) + 1
    nc = -(-L // T)
    pad = nc * T - L
    an = torch.cat([a[1:], a.new_ones(pad + 1, M)])  # an[t] = a[t+1]
    if pad:
        g = torch.cat([g, g.new_zeros(pad, M)])
    a3, g3 = an.view(nc, T, M), g.view(nc, T, M)
    P = torch.empty_like(a3)  # decay from each position to the start of the next chunk
    P[:, -1] = a3[:, -1]
    for t in range(T - 2, -1, -1):
        g3[:, t].addcmul_(a3[:, t], g3[:, t + 1])
        torch.mul(P[:, t + 1], a3[:, t], out=P[:, t])
    for c in range(nc - 2, -1, -1):  # true value at every chunk start
        g3[c, 0].addcmul_(P[c, 0], g3[c + 1, 0])
    g3[:-1, 1:].addcmul_(P[:-1, 1:], g3[1:, :1])
    return g[:L] if pad else g


class _LinearScan(torch.autograd.Function):
    """``h = scan(a, x)``, ``h[t] = a[t] h[t-1] + x[t]`` along dim 0; the backward is the same scan in reverse:
    ``g[t] = dL/dh[t] + a[t+1] g[t+1]``, ``dL/dx = g``, ``dL/da[t] = g[t] h[t-1]``."""

    @staticmethod
    def forward(ctx, a: Tensor, x: Tensor) -> Tensor:
        shape = x.shape
        a2 = a.reshape(shape[0], -1)
        h = _scan_time_major(a2, x.reshape(shape[0], -1).clone()).view(shape)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, gh: Tensor):
        a, h = ctx.saved_tensors
        L = a.shape[0]
        g = _reverse_scan_time_major(a.reshape(L, -1), gh.reshape(L, -1).clone()).view(a.shape)
        ga = torch.empty_like(g)
        ga[0] = 0
        torch.mul(g[1:], h[:-1], out=ga[1:])
        return ga, g


def linear_scan(a: Tensor, x: Tensor) -> Tensor:
    """Solution of ``h[t] = a[t] h[t-1] + x[t]`` (``h[-1] = 0``) along dim 0 (time-major), with autograd."""
    return _LinearScan.apply(a, x)


def _time_major_bc(M: Tensor, dim: int, cd: torch.dtype) -> Tensor:
    """B or C as a tensor broadcastable to ``[L, B, D, N]``."""
    M = M.to(cd)
    if M.dim() == 2:  # [D, N]
        return M[None, None]
    if M.dim() == 3:  # [B, N, L]
        return M.permute(2, 0, 1).contiguous()[:, :, None, :]
    if M.dim() == 4:  # [B, G, N, L]
        groups = M.shape[1]
        if dim % groups:
            raise ValueError(f"channels {dim} not divisible by groups {groups}")
        return M.permute(3, 0, 1, 2).repeat_interleave(dim // groups, dim=2)
    raise ValueError(f"B/C must have 2, 3 or 4 dims, got shape {tuple(M.shape)}")


def selective_scan_fast(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False):
    """Chunked pure-torch selective scan; same signature, semantics and result as :func:`selective_scan_ref`."""
    dtype_in = u.dtype
    u, delta, cd = _prepare(u, delta, delta_bias, delta_softplus)
    A = A.to(cd)
    dim = A.shape[0]
    # time-major [L, B, D, N]: each time step is one contiguous block for the scan
    delta_t = delta.permute(2, 0, 1).contiguous()
    a = torch.exp(delta_t[..., None] * A)
    du = (delta_t * u.permute(2, 0, 1))[..., None]  # [L, B, D, 1]
    Bt, Ct = _time_major_bc(B, dim, cd), _time_major_bc(C, dim, cd)
    # outer products and N-reductions as (batched) matmuls: no [L, B, D, N] temporaries in their backward
    x = torch.matmul(du, Bt) if B.dim() == 3 else du * Bt
    h = linear_scan(a, x.expand_as(a))
    y = torch.matmul(h, Ct.transpose(-1, -2)).squeeze(-1) if C.dim() == 3 else (h * Ct).sum(-1)
    y = y.permute(1, 2, 0)  # [B, D, L]
    out = _finish(y, u, D, z, dtype_in)
    if return_last_state:
        return out, h[-1] if h.shape[0] else h.new_zeros(h.shape[1:])
    return out


def selective_scan_cuda(*args, **kwargs):
    """mamba_ssm's CUDA kernel (raises if mamba_ssm is not installed)."""
    if _cuda_selective_scan_fn is None:
        raise RuntimeError("scan backend 'cuda' needs mamba_ssm (pip install mamba-ssm on a CUDA machine)")
    return _cuda_selective_scan_fn(*args, **kwargs)


_IMPLS: dict[str, Callable] = {"ref": selective_scan_ref, "fast": selective_scan_fast, "cuda": selective_scan_cuda}


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, backend: str = "auto"):
    """Dispatch to a backend by name (``auto`` picks ``cuda`` for CUDA tensors when available, else ``fast``)."""
    impl = _IMPLS[resolve_backend(backend, u.device)]
    return impl(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                return_last_state=return_last_state)
