"""Training throughput: mambavision_audio vs timm ResNet-18 on the same [B, 1, 128, 500] batch, and the
achieved FLOP/s (fwd+bwd FLOPs counted by torch.utils.flop_counter) as a fraction of the device's float32
matmul peak, measured in the same run. CPU by default; ``--device cuda`` times the same steps on a GPU
(synchronised; ``--bf16``: bf16 autocast, the peak then measured in bf16 too).

Usage: .venv/bin/python bench/bench_models.py [--quick] [--models mambavision_audio resnet18]
                                               [--override '{"dim": 32}'] [--threads N] [--device cuda [--bf16]]
Writes bench/results/models.json (``--out`` for another file). Models and the matmul peak are measured
interleaved, round by round, so the ratios hold on a machine shared with other jobs (absolute numbers do not).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from deam_mamba.core.runtime import tune_malloc
from deam_mamba.models.registry import create_model

MALLOC_TUNED = tune_malloc()  # before any tensor work: glibc keeps freed memory (DEAM_MAMBA_MALLOC_TUNE=0: off)


def matmul_gflops(n: int = 2048, reps: int = 3, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Best ``n x n`` matmul rate of ``reps`` tries on ``device`` in ``dtype``, GFLOP/s."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn) -> float:
    """Wall seconds of ``fn()``, GPU work included (synchronised before and after)."""
    _sync()
    t = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t


class Trainer:
    """One model, its optimiser and one fixed batch; ``step()`` = forward, MSE, backward, AdamW update."""

    def __init__(self, name: str, x: torch.Tensor, y: torch.Tensor, bf16: bool = False, **overrides):
        torch.manual_seed(0)
        self.name = name
        self.model = create_model(name, **overrides).to(x.device).train()
        self.params = sum(p.numel() for p in self.model.parameters())
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.x, self.y, self.bf16 = x, y, bf16

    def loss(self) -> torch.Tensor:
        with torch.autocast(self.x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            pred = self.model(self.x)
        return torch.nn.functional.mse_loss(pred.float(), self.y)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.loss().backward()
        self.opt.step()

    def flops(self) -> int:
        """FLOPs of one forward + backward (matmul/conv/attention ops; elementwise work is not counted)."""
        with FlopCounterMode(display=False) as fc:
            self.loss().backward()
        self.model.zero_grad(set_to_none=True)
        return fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 steps")
    ap.add_argument("--models", nargs="+", default=["mambavision_audio", "resnet18"])
    ap.add_argument("--override", default="{}", help="JSON overrides for the first model")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (the matmul peak in bf16 too)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "models.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: torch sees no CUDA device here; run without --device for the CPU numbers")
    rounds, steps = (2, 2) if args.quick else (4, 3)
    if args.device != "cpu":
        steps *= 5  # GPU steps are short: more of them per round
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(args.batch, 1, 128, 500, generator=g), torch.rand(args.batch, 2, generator=g) * 8 + 1
    x, y = x.to(args.device), y.to(args.device)
    overrides = json.loads(args.override)
    trainers = [Trainer(n, x, y, args.bf16, **(overrides if i == 0 else {})) for i, n in enumerate(args.models)]
    peak_dtype = torch.bfloat16 if args.bf16 else torch.float32
    peak_n = 8192 if args.device != "cpu" else 2048
    flops = {t.name: t.flops() for t in trainers}
    for t in trainers:  # warm-up
        t.step()
    per_step: dict[str, list[float]] = {t.name: [] for t in trainers}
    peaks: list[float] = []
    load_before = os.getloadavg()
    for _ in range(rounds):
        peaks.append(matmul_gflops(peak_n, device=args.device, dtype=peak_dtype))
        for t in trainers:
            per_step[t.name].append(statistics.median(_timed(t.step) for _ in range(steps)))
    peak = statistics.median(peaks)
    models = {}
    for t in trainers:
        sec = statistics.median(per_step[t.name])
        models[t.name] = dict(params=t.params, seconds_per_step=sec, samples_per_s=args.batch / sec,
                              gflop_per_step_fwd_bwd=flops[t.name] / 1e9,
                              achieved_gflop_per_s=flops[t.name] / sec / 1e9,
                              fraction_of_matmul_peak=flops[t.name] / sec / 1e9 / peak,
                              config=t.model.config)
    first, base = args.models[0], args.models[-1]
    device = torch.cuda.get_device_name(args.device) if args.device != "cpu" else "CPU"
    precision = "bf16 autocast" if args.bf16 else "float32"
    result = {
        "benchmark": f"{device} training step (fwd + MSE + bwd + AdamW), batch [{args.batch}, 1, 128, 500] "
                     f"{precision}",
        "device": args.device, "precision": precision,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "rounds": rounds, "steps_per_round": steps,
        "matmul_peak_gflop_per_s": peak, "matmul_peak_per_round": peaks,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "models": models,
        f"samples_per_s_ratio_{first}_over_{base}": models[first]["samples_per_s"] / models[base]["samples_per_s"],
        "goals": {"samples_per_s_ratio": ">= 1", "fraction_of_matmul_peak": ">= 0.30"},
        "note": "models and the matmul peak are measured interleaved round by round in one run; on a shared CPU "
                "(see load averages) absolute numbers are noisy. Peak: the best of 3 square matmuls "
                f"({peak_n}^2, {peak_dtype}) on the same device.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result["malloc_tuned"] = MALLOC_TUNED
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "models"}, indent=2))
    for name, m in models.items():
        print(f"{name:20s} {m['params'] / 1e6:6.2f} M params  {m['samples_per_s']:7.2f} samples/s  "
              f"{m['gflop_per_step_fwd_bwd']:7.1f} GFLOP/step  {m['fraction_of_matmul_peak']:.1%} of peak")


if __name__ == "__main__":
    main()
