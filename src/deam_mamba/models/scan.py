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
    all steps at once (time-major ``[L, N, B, D]``), then the linear recurrence ``h[t] = a[t] h[t-1] + x[t]`` is
    solved chunk-parallel: chunks of ~sqrt(L/3) steps scan together, a sequential carry crosses the chunks and
    is decayed back into them (~3 sqrt(L) vectorised in-place ops instead of L autograd steps). It only
    multiplies decays together (never divides by them or exponentiates sums), so it cannot overflow where the
    sequential loop does not. Its backward is written out (the same scan in reverse, then every input's
    gradient) in a custom autograd Function.
  * ``cuda`` -- mamba_ssm's kernel, used only if ``mamba_ssm`` imports (optional dependency).
  * ``auto`` -- ``cuda`` for CUDA tensors when available, else ``fast``.
"""
from __future__ import annotations

import math
from collections.abc import Callable

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
def _chunk_len(L: int) -> int:
    """Steps per chunk: about sqrt(L / 3) balances the ~3 T in-chunk ops against the L / T cross-chunk ones."""
    return max(4, round(math.sqrt(L / 3)))


def _scan_(a: Tensor, h: Tensor) -> Tensor:
    """Solve ``h[t] = a[t] h[t-1] + x[t]`` (``h[-1] = 0``) along dim 0 of contiguous ``[L, M]`` tensors, in place on
    ``h`` (which holds ``x`` on entry); ``a`` is read only.

    Chunks of ``T ~ sqrt(L/3)`` steps: (1) every chunk scans its own steps, all chunks at once; (2) the chunk-end
    states are carried across chunks with each chunk's decay product; (3) the carry entering each chunk is decayed
    step by step into it and added. About ``3 T + L / T`` vectorised in-place ops, no ``[L, M]`` temporary, and only
    products of decays (never divisions or exponentiated sums), so nothing can overflow.
    """
    L = h.shape[0]
    T = _chunk_len(L)
    nc = L // T
    if nc < 3:
        for t in range(1, L):
            h[t].addcmul_(a[t], h[t - 1])
        return h
    main = nc * T
    a_t, h_t = a[:main].unflatten(0, (nc, T)).unbind(1), h[:main].unflatten(0, (nc, T)).unbind(1)  # [nc, M] each
    for t in range(1, T):  # (1)
        h_t[t].addcmul_(a_t[t], h_t[t - 1])
    prod = a[T:main].unflatten(0, (nc - 1, T)).prod(dim=1)  # decay across chunks 1..nc-1
    end = h_t[-1]
    for c in range(1, nc):  # (2)
        end[c].addcmul_(prod[c - 1], end[c - 1])
    carry = end[:-1].clone()  # (3) true state entering chunks 1..nc-1
    for t in range(T - 1):
        carry.mul_(a_t[t][1:])
        h_t[t][1:].add_(carry)
    for t in range(main, L):  # the tail that does not fill a chunk
        h[t].addcmul_(a[t], h[t - 1])
    return h


def _reverse_scan_(a: Tensor, g: Tensor) -> Tensor:
    """Solve ``g[t] = a[t+1] g[t+1] + y[t]`` (``g[L] = 0``) along dim 0, in place on ``g`` (holding ``y``): the
    adjoint of :func:`_scan_`, chunked the same way from the end (the leftover steps are at the start)."""
    L, M = g.shape
    T = _chunk_len(L)
    nc = L // T
    if nc < 3:
        for t in range(L - 2, -1, -1):
            g[t].addcmul_(a[t + 1], g[t + 1])
        return g
    off = L - nc * T  # chunks cover [off, L)
    g_t = g[off:].unflatten(0, (nc, T)).unbind(1)
    nxt = a[off + 1:]  # nxt[c * T + t] = a at the step after (chunk c, position t)
    nxt_in = nxt.as_strided((nc, T - 1, M), (T * M, M, 1)).unbind(1)  # links inside each chunk
    nxt_all = nxt.as_strided((nc - 1, T, M), (T * M, M, 1))  # chunks 0..nc-2, including the link to the next one
    for t in range(T - 2, -1, -1):
        g_t[t].addcmul_(nxt_in[t], g_t[t + 1])
    prod = nxt_all.prod(dim=1)
    start = g_t[0]
    for c in range(nc - 2, -1, -1):
        start[c].addcmul_(prod[c], start[c + 1])
    carry = start[1:].clone()  # true value at the start of chunks 1..nc-1, carried backwards into 0..nc-2
    nxt_t = nxt_all.unbind(1)
    for t in range(T - 1, 0, -1):
        carry.mul_(nxt_t[t])
        g_t[t][:-1].add_(carry)
    for t in range(off - 1, -1, -1):
        g[t].addcmul_(a[t + 1], g[t + 1])
    return g


# ---------------------------------------------------------------- the fast selective scan
# Layout: time-major, state before batch and channel: ``[L, N, B, D]``. Every time step is one contiguous block
# (for the scan), and every elementwise op runs over a contiguous innermost ``D`` (so it vectorises; an innermost
# ``N`` of 8-16 does not). Sums over ``N`` are ``N`` accumulating ops, sums over ``L`` and ``B`` one matrix-vector
# product: both far faster on CPU than torch's reductions over outer dimensions.
def _sum_state(x: Tensor, w: Tensor) -> Tensor:
    """``sum_n x[:, n] * w[:, n]`` for ``x [L, N, B, D]`` and ``w`` broadcastable to it: ``[L, B, D]``."""
    out = torch.mul(x[:, 0], w[:, 0])
    for n in range(1, x.shape[1]):
        out.addcmul_(x[:, n], w[:, n])
    return out


def _sum_time_batch(x: Tensor) -> Tensor:
    """``[L, N, B, D] -> [N, D]``, summed over time and batch."""
    L, N, B, D = x.shape
    return (x.new_ones(1, L) @ x.reshape(L, -1)).view(N, B, D).sum(1)


def _sum_to(x: Tensor, shape: torch.Size) -> Tensor:
    """Gradient of a broadcast: ``x [L, N, B, D]`` summed down to ``shape``."""
    if shape[0] == 1 and shape[2] == 1 and shape[1:] != x.shape[1:]:  # [1, N, 1, D]: fixed over time and batch
        return _sum_time_batch(x)[None, :, None, :]
    return x.sum_to_size(shape)


class _SelectiveScan(torch.autograd.Function):
    """The scan core, time-major: ``u, delta: [L, B, D]``, ``At: [N, D]`` (A transposed), ``Bt, Ct`` broadcastable
    to ``[L, N, B, D]``. Returns ``y [L, B, D]`` (``sum_n C h``) and the last state ``[N, B, D]``. The backward is
    written out (adjoint scan, then every input's gradient), so autograd keeps no ``[L, N, B, D]`` temporaries."""

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, At: Tensor, Bt: Tensor, Ct: Tensor):
        L, Bsz, D = u.shape
        shape = (L, At.shape[0], Bsz, D)
        a = torch.mul(delta[:, None], At[None, :, None, :], out=u.new_empty(shape)).exp_()  # per-step decay
        h = torch.mul((delta * u)[:, None], Bt, out=u.new_empty(shape))  # per-step input delta u B
        if L:
            _scan_(a.view(L, -1), h.view(L, -1))
        ctx.save_for_backward(u, delta, At, Bt, Ct, a, h)
        last = h[-1].clone() if L else h.new_zeros(a.shape[1:])
        return _sum_state(h, Ct) if L else u.new_zeros(u.shape), last

    @staticmethod
    def backward(ctx, gy: Tensor, glast: Tensor | None):
        u, delta, At, Bt, Ct, a, h = ctx.saved_tensors
        L = u.shape[0]
        gy = gy.contiguous()
        g = torch.mul(gy[:, None], Ct, out=torch.empty_like(h))  # dL/dh from y
        if glast is not None and L:
            g[-1] += glast
        gCt = _sum_to(h * gy[:, None], Ct.shape)
        if L:
            _reverse_scan_(a.view(L, -1), g.view(L, -1))  # now g = dL/dx, x = delta u B
        du = delta * u
        gdu = _sum_state(g, Bt)
        gBt = _sum_to(g * du[:, None], Bt.shape)
        if L:  # dL/d(delta A)[t] = g[t] h[t-1] a[t], in place on g
            g[0].zero_()
            g[1:].mul_(h[:-1]).mul_(a[1:])
        gdelta = _sum_state(g, At[None, :, None, :].expand(1, -1, 1, -1)).add_(gdu * u)
        gAt = _sum_time_batch(g.mul_(delta[:, None]))
        return gdu * delta, gdelta, gAt, gBt, gCt


def _time_major_bc(M: Tensor, dim: int, cd: torch.dtype) -> Tensor:
    """B or C as a tensor broadcastable to ``[L, N, B, D]``."""
    M = M.to(cd)
    if M.dim() == 2:  # [D, N]
        return M.t()[None, :, None, :]
    if M.dim() == 3:  # [B, N, L]
        return M.permute(2, 1, 0).contiguous()[..., None]
    if M.dim() == 4:  # [B, G, N, L]
        groups = M.shape[1]
        if dim % groups:
            raise ValueError(f"channels {dim} not divisible by groups {groups}")
        return M.permute(3, 2, 0, 1).repeat_interleave(dim // groups, dim=3)
    raise ValueError(f"B/C must have 2, 3 or 4 dims, got shape {tuple(M.shape)}")


def selective_scan_fast(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False):
    """Chunked pure-torch selective scan; same signature, semantics and result as :func:`selective_scan_ref`."""
    dtype_in = u.dtype
    u, delta, cd = _prepare(u, delta, delta_bias, delta_softplus)
    A = A.to(cd)
    dim = A.shape[0]
    y, last = _SelectiveScan.apply(u.permute(2, 0, 1).contiguous(), delta.permute(2, 0, 1).contiguous(),
                                   A.t().contiguous(), _time_major_bc(B, dim, cd), _time_major_bc(C, dim, cd))
    out = _finish(y.permute(1, 2, 0), u, D, z, dtype_in)
    return (out, last.permute(1, 2, 0)) if return_last_state else out


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
