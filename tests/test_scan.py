"""Selective scan: fast (parallel) == ref (sequential), forward and gradients; dispatch."""
from __future__ import annotations

import pytest
import torch

from deam_mamba.models import scan
from deam_mamba.models.scan import (
    _reverse_scan_,
    _scan_,
    resolve_backend,
    selective_scan_fast,
    selective_scan_fn,
    selective_scan_ref,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one thread is faster, and immune to a machine shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inputs(dtype, L, bc, batch=2, dim=6, n=4, seed=0, delta_scale=0.5):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    shapes = {"fixed": (dim, n), "variable": (batch, n, L), "grouped": (batch, 2, n, L)}[bc]
    return dict(u=r(batch, dim, L), delta=r(batch, dim, L, scale=delta_scale),
                A=(-torch.rand(dim, n, generator=g, dtype=dtype) * 3).requires_grad_(),
                B=r(*shapes), C=r(*shapes), D=r(dim), z=r(batch, dim, L), delta_bias=r(dim))


def _run(fn, inp, softplus=True):
    out, last = fn(**inp, delta_softplus=softplus, return_last_state=True)
    w = torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out)  # a non-trivial upstream grad
    loss = (out * w).sum() + last.sum()
    names = list(inp)
    grads = torch.autograd.grad(loss, [inp[k] for k in names])
    return {"out": out, "last": last, **{f"grad_{k}": gr for k, gr in zip(names, grads)}}


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-11)])
@pytest.mark.parametrize("L", [1, 37, 64, 131])
@pytest.mark.parametrize("bc", ["fixed", "variable", "grouped"])
def test_fast_equals_ref_forward_and_grads(dtype, tol, L, bc):
    inp = _inputs(dtype, L, bc, seed=L)
    ref = _run(selective_scan_ref, inp)
    fast = _run(selective_scan_fast, inp)
    for key in ref:
        assert fast[key].dtype == ref[key].dtype == dtype, key
        scale = ref[key].abs().max().clamp_min(1.0)
        torch.testing.assert_close(fast[key] / scale, ref[key] / scale, rtol=0, atol=tol, msg=key)


def test_fast_equals_ref_without_optional_args_long_sequence():
    """No D / z / bias / softplus, L over two chunk levels (64 * 64 + 5)."""
    g = torch.Generator().manual_seed(1)
    b, d, n, L = 1, 2, 3, 64 * 64 + 5
    u, delta = torch.randn(b, d, L, generator=g), torch.rand(b, d, L, generator=g) * 0.1
    A, B, C = -torch.rand(d, n, generator=g), torch.randn(b, n, L, generator=g), torch.randn(b, n, L, generator=g)
    torch.testing.assert_close(selective_scan_fast(u, delta, A, B, C), selective_scan_ref(u, delta, A, B, C),
                               rtol=1e-4, atol=1e-4)


def test_fast_no_overflow_on_strong_decay():
    """Large |delta * A| (decay factors down to exp(-400)) must not overflow: results stay finite and equal."""
    inp = _inputs(torch.float32, 100, "variable", delta_scale=1.0)
    with torch.no_grad():
        inp["delta"].mul_(0).add_(40.0)  # softplus(40 + bias) ~ 40; A down to -3 -> exp(-120) per step
    ref, fast = _run(selective_scan_ref, inp), _run(selective_scan_fast, inp)
    for key in ref:
        assert torch.isfinite(fast[key]).all(), key
        torch.testing.assert_close(fast[key], ref[key], rtol=1e-4, atol=1e-4, msg=key)


def test_low_precision_inputs_return_input_dtype():
    inp = {k: v.detach().to(torch.bfloat16) for k, v in _inputs(torch.float32, 20, "variable").items()}
    out = selective_scan_fast(**inp, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    ref = selective_scan_ref(**inp, delta_softplus=True)
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


class _LinearScan(torch.autograd.Function):
    """The chunked scan primitives as one autograd op, to check them as an adjoint pair:
    ``h[t] = a[t] h[t-1] + x[t]`` by ``_scan_``; its backward ``g[t] = dL/dh[t] + a[t+1] g[t+1]`` by
    ``_reverse_scan_``, ``dL/dx = g``, ``dL/da[t] = g[t] h[t-1]``."""

    @staticmethod
    def forward(ctx, a, x):
        L = x.shape[0]
        a = a.contiguous()
        h = _scan_(a.view(L, -1), x.reshape(L, -1).clone()).view(x.shape)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, gh):
        a, h = ctx.saved_tensors
        L = a.shape[0]
        g = _reverse_scan_(a.view(L, -1), gh.reshape(L, -1).clone()).view(a.shape)
        ga = torch.zeros_like(g)
        ga[1:] = g[1:] * h[:-1]
        return ga, g


linear_scan = _LinearScan.apply


def test_linear_scan_matches_loop_and_gradcheck():
    g = torch.Generator().manual_seed(3)
    for L in (5, 70, 1000):  # sequential (under 3 chunks); whole chunks; chunks and a leftover tail
        a = torch.rand(L, 3, 2, generator=g, dtype=torch.float64)
        x = torch.randn(L, 3, 2, generator=g, dtype=torch.float64)
        h, hs = torch.zeros(3, 2, dtype=torch.float64), []
        for t in range(L):
            h = a[t] * h + x[t]
            hs.append(h)
        torch.testing.assert_close(linear_scan(a, x), torch.stack(hs))
    for L in (9, 40):
        assert torch.autograd.gradcheck(linear_scan, (torch.rand(L, 2, dtype=torch.float64, requires_grad=True),
                                                      torch.randn(L, 2, dtype=torch.float64, requires_grad=True)))


def test_dispatch_and_backend_names(monkeypatch):
    assert resolve_backend("auto", "cpu") == "fast"
    assert resolve_backend("ref") == "ref"
    with pytest.raises(ValueError, match="unknown scan backend"):
        resolve_backend("triton")
    inp = {k: v.detach() for k, v in _inputs(torch.float32, 9, "variable").items()}
    torch.testing.assert_close(selective_scan_fn(**inp, backend="auto"), selective_scan_fast(**inp))
    monkeypatch.setattr(scan, "_cuda_selective_scan_fn", None)
    assert resolve_backend("auto", "cuda") == "fast"  # no mamba_ssm: fall back
    with pytest.raises(RuntimeError, match="mamba_ssm"):
        selective_scan_fn(**inp, backend="cuda")
    monkeypatch.setattr(scan, "_cuda_selective_scan_fn", lambda *a, **k: "kernel")
    assert resolve_backend("auto", "cuda") == "cuda"
    assert resolve_backend("auto", "cpu") == "fast"
