"""Selective scan: ``fast`` (parallel, pure torch) vs ``ref`` (sequential loop), forward + backward on CPU.

Usage: .venv/bin/python bench/bench_scan.py [--quick] [--length 1024]
Writes bench/results/scan.json. Both backends run interleaved in one process, so the ratio holds even on a
machine shared with other jobs (absolute times do not).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from deam_mamba.core.runtime import tune_malloc
from deam_mamba.models.scan import selective_scan_fast, selective_scan_ref

MALLOC_TUNED = tune_malloc()  # before any tensor work: glibc keeps freed memory (DEAM_MAMBA_MALLOC_TUNE=0: off)


def make_inputs(batch: int, dim: int, state: int, length: int, seed: int = 0) -> dict:
    """MambaVision-shaped inputs: variable B/C ``[batch, state, length]``, softplus(delta + bias)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).requires_grad_()  # noqa: E731
    return dict(u=r(batch, dim, length), delta=r(batch, dim, length),
                A=(-torch.exp(torch.log(torch.arange(1, state + 1.0))).repeat(dim, 1)).requires_grad_(),
                B=r(batch, state, length), C=r(batch, state, length), D=r(dim), delta_bias=r(dim))


def step(fn, inp: dict) -> float:
    """Seconds for one forward + backward."""
    for v in inp.values():
        v.grad = None
    t = time.perf_counter()
    fn(**inp, delta_softplus=True).square().mean().backward()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--state", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scan.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 2 if args.quick else 4
    inp = make_inputs(args.batch, args.dim, args.state, args.length)

    # correctness on these very inputs (forward and every gradient)
    res = {}
    for name, fn in (("ref", selective_scan_ref), ("fast", selective_scan_fast)):
        out = fn(**inp, delta_softplus=True)
        grads = torch.autograd.grad(out.square().mean(), list(inp.values()))
        res[name] = [out.detach()] + list(grads)
    max_rel_err = max(((f - r).abs().max() / r.abs().max().clamp_min(1e-12)).item()
                      for f, r in zip(res["fast"], res["ref"]))

    step(selective_scan_fast, inp)  # warm-up
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"ref": [], "fast": []}
    for _ in range(rounds):  # interleaved: both see the same machine load
        times["ref"].append(step(selective_scan_ref, inp))
        times["fast"].append(statistics.median(step(selective_scan_fast, inp) for _ in range(5)))
    ref_s, fast_s = statistics.median(times["ref"]), statistics.median(times["fast"])
    result = {
        "benchmark": "selective scan forward+backward, CPU, float32",
        "shape": dict(batch=args.batch, dim=args.dim, state=args.state, length=args.length, B_C="variable"),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.processor() or
        platform.machine(), "rounds": rounds,
        "ref_seconds_median": ref_s, "fast_seconds_median": fast_s,
        "speedup_fast_over_ref": ref_s / fast_s, "goal_speedup": 20.0,
        "max_relative_error_fast_vs_ref": max_rel_err,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "note": "ref and fast interleaved in one run; the machine was shared with other jobs, so absolute "
                "seconds are noisy while the ratio is measured side by side.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result["malloc_tuned"] = MALLOC_TUNED
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
