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
  * ``fast`` -- pure torch, no Python loop over time: the per-step decays ``a = exp(delta*A)`` and inputs
    are formed in parallel, then the linear recurrence ``h[t] = a[t] h[t-1] + x[t]`` is solved by a chunked
    parallel prefix scan (doubling within chunks of 64, recursive carry across chunks). It only ever
    multiplies decays together (never divides by them or exponentiates sums), so it cannot overflow where
    the sequential loop does not. Its backward is the same scan run in reverse (custom autograd Function).
  * ``cuda`` -- mamba_ssm's kernel, used only if ``mamba_ssm`` imports (optional dependency).
  * ``auto`` -- ``cuda`` for CUDA tensors when available, else ``fast``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # optional: CUDA-only package, never required
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan_fn
except Exception:  # ImportError, or a broken CUDA build raising at import
    _cuda_selective_scan_fn = None

BACKENDS = ("auto", "fast", "ref", "cuda")
CHUNK = 64


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


# ---------------------------------------------------------------- linear recurrence, parallel
def _scan_inplace(a: Tensor, b: Tensor) -> Tensor:
    """Solve ``h[t] = a[t] h[t-1] + b[t]`` (``h[-1] = 0``) along the last dim; consumes ``a`` and ``b``.

    Within chunks of ``CHUNK`` steps: Hillis-Steele doubling; across chunks: the same scan applied
    recursively to the chunk-end values, then one broadcast to add the carried state.
    """
    L = b.shape[-1]
    if L <= CHUNK:
        k = 1
        while k < L:
            b[..., k:] += a[..., k:] * b[..., :-k]
            if 2 * k < L:
                a[..., k:] = a[..., k:] * a[..., :-k]
            k *= 2
        return b
    nc = -(-L // CHUNK)
    pad = nc * CHUNK - L
    if pad:
        a = F.pad(a, (0, pad), value=1.0)
        b = F.pad(b, (0, pad))
    a = a.reshape(*a.shape[:-1], nc, CHUNK)
    b = b.reshape(*b.shape[:-1], nc, CHUNK)
    k = 1
    while k < CHUNK:  # local scans; a becomes the cumulative decay from chunk start
        b[..., k:] += a[..., k:] * b[..., :-k]
        a[..., k:] = a[..., k:] * a[..., :-k]
        k *= 2
    ends = _scan_inplace(a[..., -1].clone(), b[..., -1].clone())  # state at every chunk end
    b[..., 1:, :] += a[..., 1:, :] * ends[..., :-1, None]
    return b.reshape(*b.shape[:-2], nc * CHUNK)[..., :L]


class _LinearScan(torch.autograd.Function):
    """``h = scan(a, x)`` with ``h[t] = a[t] h[t-1] + x[t]`` along the last dim; backward is a reverse scan."""

    @staticmethod
    def forward(ctx, a: Tensor, x: Tensor) -> Tensor:
        h = _scan_inplace(a.clone(), x.clone())
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, gh: Tensor):
        a, h = ctx.saved_tensors
        # g[t] = gh[t] + a[t+1] g[t+1]: a forward scan on the time-reversed sequences
        a_next = torch.zeros_like(a)
        a_next[..., :-1] = a[..., 1:]
        g = _scan_inplace(a_next.flip(-1), gh.flip(-1).contiguous()).flip(-1)
        ga = torch.zeros_like(g)
        ga[..., 1:] = g[..., 1:] * h[..., :-1]
        return ga, g


def linear_scan(a: Tensor, x: Tensor) -> Tensor:
    """Parallel solution of ``h[t] = a[t] h[t-1] + x[t]`` (``h[-1] = 0``) along the last dim, with autograd."""
    return _LinearScan.apply(a, x)


def selective_scan_fast(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False):
    """Parallel pure-torch selective scan; same signature, semantics and result as :func:`selective_scan_ref`."""
    dtype_in = u.dtype
    u, delta, cd = _prepare(u, delta, delta_bias, delta_softplus)
    A = A.to(cd)
    Bx, Cx = _expand_bc(B, A.shape[0], cd), _expand_bc(C, A.shape[0], cd)
    # [B, D, N, L] layout: time last, so the scan runs over contiguous memory
    a = torch.exp(delta[:, :, None, :] * A[None, :, :, None])
    x = (delta * u)[:, :, None, :] * Bx.transpose(2, 3)
    h = linear_scan(a, x.expand_as(a))
    y = (h * Cx.transpose(2, 3)).sum(2)
    out = _finish(y, u, D, z, dtype_in)
    if return_last_state:
        return out, h[..., -1] if h.shape[-1] else h.new_zeros(h.shape[:-1])
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
