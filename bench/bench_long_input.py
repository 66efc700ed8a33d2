"""Whole-song inputs as ONE sequence: time and peak memory of mambavision_audio vs vit_audio at 30 s, 2 min, 10 min.

Issue #15: does the MambaVision model's cost grow linearly with the input length, against a ViT of similar size
(timm ``vit_tiny_patch16_224`` with ``dynamic_img_size``: global self-attention over all 16 x 16 patches)?

Every (model, length, mode) is measured in a FRESH subprocess of this script, so its peak memory is its own:
  * ``infer``: ``torch.inference_mode`` forward of one log-mel ``[1, 1, 128, 100 * seconds]`` (100 frames/s):
    one warm-up, then the median of ``--repeats`` timed forwards; a warm-up longer than ``--long-s`` is itself
    the one timed run (no repeats: minutes each, and the 2 s pass below already did the one-time work).
  * ``train``: forward + MSE + backward (no optimiser step) in train mode, same warm-up/repeat rule.
Peak memory, CPU: after the model build and one pass on a 2 s input (pages in library code, one-time init) the
child hands its free heap back (``malloc_trim``), resets the kernel's resident-memory high-water mark
(``echo 5 > /proc/self/clear_refs``; Linux >= 4.0) and notes its RSS; the peak is ``VmHWM`` (/proc/self/status)
after the runs minus that RSS: the input, the activations and the allocator's slack, not torch or the weights.
(``getrusage(RUSAGE_SELF).ru_maxrss`` is not used there: it also carries the parent's peak RSS over fork + exec,
~100 MiB above the child's own.) Without the reset (not permitted) it is ru_maxrss minus ru_maxrss after the
build, an underestimate when the imports peaked higher; the JSON says which (``cpu_hwm_reset``).
Peak memory, CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` after the model build and the
input copy (activations only, the allocator's cache excluded).
A run over ``--max-seconds-per-run`` (warm-up + repeats; SIGALRM in the child, a kill if stuck) or over
``--max-memory-gib`` (CPU: the child's ``RLIMIT_AS`` is its size after the model build + that much, so the
shared machine never meets the OOM killer) is recorded as that outcome; the bench never stops on it.
Models interleave per length (MambaVision, ViT, MambaVision, ...), so a load change hits both alike.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_long_input.py --threads 1
        [--lengths 30 120 600] [--train-lengths 30 120] [--device cpu|cuda] [--max-seconds-per-run 900]
        [--models mambavision_audio vit_audio] [--out bench/results/long_input.json]

Writes ``--out`` (JSON) and the same name with ``.md`` (table).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "long_input.json"
FRAMES_PER_S = 100
N_MELS = 128
MiB = 1024.0 ** 2
PRIME_FRAMES = 200  # 2 s: the short pass before the baseline is taken
STARTUP_ALLOWANCE_S = 120.0  # imports + model build + the 2 s pass, on top of --max-seconds-per-run


# ----------------------------------------------------------------------------------------------- child process
def _token_hooks(model) -> tuple[dict, list]:
    """Forward pre-hooks that record the sequence lengths each stage sees (first forward only)."""
    shapes: dict[str, object] = {}
    handles = []
    if hasattr(model, "levels"):  # MambaVision: map size per stage; windows x tokens/window in Mamba stages
        for i, level in enumerate(model.levels):
            def pre(mod, args, i=i):
                _, c, h, w = args[0].shape
                entry = {"map_hw": [h, w], "channels": c}
                if not mod.conv:
                    ws = mod.window_size
                    hp, wp = h + (-h) % ws, w + (-w) % ws
                    entry.update(padded_hw=[hp, wp], windows=(hp // ws) * (wp // ws), tokens_per_window=ws * ws,
                                 note="Mamba scan and attention run inside each window of tokens_per_window")
                shapes.setdefault(f"stage{i}", entry)
            handles.append(level.register_forward_pre_hook(pre))
    else:  # timm ViT: the token sequence entering the transformer blocks
        vit = model.model

        def pre_vit(mod, args):
            shapes.setdefault("transformer_tokens", int(args[0].shape[1]))
            shapes.setdefault("embed_dim", int(args[0].shape[2]))
        handles.append(vit.blocks[0].register_forward_pre_hook(pre_vit))
        shapes["patch_size"] = list(vit.patch_embed.patch_size)
        shapes["fused_attn"] = bool(getattr(vit.blocks[0].attn, "fused_attn", False))
        shapes["note"] = "global self-attention over all tokens (+1 class token) in each of the blocks"
    return shapes, handles


def _proc_status_bytes(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` in bytes (None where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return None


def _ru_maxrss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0  # bytes (Linux reports KiB)


def _reset_peak_rss() -> tuple[bool, float]:
    """Free heap back to the kernel, reset the peak-RSS mark; ``(reset done, baseline bytes)``.

    Baseline: the current RSS after a reset, else ``ru_maxrss`` so far (the mark cannot be lowered)."""
    from deam_mamba.core.runtime import release_free_memory

    release_free_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False, _ru_maxrss()
    rss = _proc_status_bytes("VmRSS")
    return (True, rss) if rss is not None else (False, _ru_maxrss())


def _peak_rss(reset: bool) -> float:
    """Peak RSS in bytes since :func:`_reset_peak_rss`: ``VmHWM`` after a reset (``ru_maxrss`` also holds the
    peak RSS of the parent at fork time, carried over the exec, which the reset does not lower), else
    ``ru_maxrss``."""
    hwm = _proc_status_bytes("VmHWM") if reset else None
    return hwm if hwm is not None else _ru_maxrss()


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def child(model_name: str, seconds: float, mode: str, device: str, threads: int | None, repeats: int,
          long_s: float, max_memory_gib: float = 0.0, max_seconds: float = 0.0) -> dict:
    """One measurement in this (fresh) process; returns a JSON-able dict."""
    import torch

    from deam_mamba.core.runtime import tune_malloc
    from deam_mamba.models.registry import create_model

    malloc_tuned = tune_malloc()  # as the CLI does before any tensor work
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(model_name).to(device)
    model.train(mode == "train")
    params = sum(p.numel() for p in model.parameters())
    frames = int(round(FRAMES_PER_S * seconds))
    _limit_memory(max_memory_gib)
    if max_seconds > 0:  # SIGALRM -> RunTimeout between two torch ops (the parent kills a stuck process later)
        signal.setitimer(signal.ITIMER_REAL, max_seconds)
    y = torch.zeros(1, 2, device=device)

    def step() -> None:
        if mode == "train":
            model.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(x), y).backward()
        else:
            with torch.inference_mode():
                model(x)

    # a short-input pass first: pages in the kernels' library code and does one-time init, which would
    # otherwise count as ~100 MiB of "activation" memory whatever the length
    x = torch.randn(1, 1, N_MELS, PRIME_FRAMES, device=device)
    step()
    model.zero_grad(set_to_none=True)
    hwm_reset, base_rss = _reset_peak_rss()
    x = torch.randn(1, 1, N_MELS, frames, generator=torch.Generator().manual_seed(0)).to(device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()

    shapes, handles = _token_hooks(model)
    t0 = time.perf_counter()
    step()
    _sync(device)
    warm = time.perf_counter() - t0
    for h in handles:
        h.remove()
    times = [warm] if warm > long_s else []
    for _ in range(0 if times else repeats):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    signal.setitimer(signal.ITIMER_REAL, 0)
    peak_rss = _peak_rss(hwm_reset)
    out = dict(status="ok", model=model_name, seconds=seconds, frames=frames, mode=mode, device=device,
               params=params, threads=torch.get_num_threads(), warmup_s=warm,
               warmup_is_the_timed_run=warm > long_s, times_s=times,
               median_s=statistics.median(times), input_mib=x.numel() * 4 / MiB, shapes=shapes,
               malloc_tuned=malloc_tuned, cpu_hwm_reset=hwm_reset, cpu_rss_after_build_mib=base_rss / MiB,
               cpu_peak_rss_mib=peak_rss / MiB, cpu_peak_rss_minus_build_mib=(peak_rss - base_rss) / MiB)
    if cuda:
        out.update(cuda_peak_allocated_minus_base_mib=(torch.cuda.max_memory_allocated() - base_cuda) / MiB,
                   cuda_device=torch.cuda.get_device_name())
    out["peak_mib"] = out["cuda_peak_allocated_minus_base_mib" if cuda else "cpu_peak_rss_minus_build_mib"]
    return out


def _limit_memory(extra_gib: float) -> None:
    """Cap this process's address space at its current size + ``extra_gib`` (``RLIMIT_AS``): a run needing more
    fails with an allocation error here instead of pushing the shared machine into the OOM killer."""
    size = _proc_status_bytes("VmSize")
    if extra_gib > 0 and size is not None:
        lim = int(size + extra_gib * 1024 ** 3)
        resource.setrlimit(resource.RLIMIT_AS, (lim, resource.getrlimit(resource.RLIMIT_AS)[1]))


class RunTimeout(Exception):
    """The measurement ran past ``--max-seconds-per-run``."""


def _alarm(signum, frame) -> None:
    raise RunTimeout


def _child_main(a: argparse.Namespace) -> None:
    signal.signal(signal.SIGALRM, _alarm)
    try:
        res = child(a.child[0], float(a.child[1]), a.child[2], a.device, a.threads, a.repeats, a.long_s,
                    0.0 if a.device.startswith("cuda") else a.max_memory_gib, a.max_seconds_per_run)
    except RunTimeout:
        res = dict(status="timeout", error=f"measurement stopped after --max-seconds-per-run "
                                           f"{a.max_seconds_per_run:g} s (warm-up and repeats together)")
    except (RuntimeError, MemoryError) as err:  # allocator failures: CPU "can't allocate", CUDA OutOfMemoryError
        msg = str(err).splitlines()[0][:300]
        oom = isinstance(err, MemoryError) or "allocate" in msg or "out of memory" in msg.lower()
        res = dict(status="out_of_memory" if oom else "error", error=msg)
    print("RESULT " + json.dumps(res), flush=True)


# ---------------------------------------------------------------------------------------------- parent process
def run_one(model: str, seconds: float, mode: str, a: argparse.Namespace) -> dict:
    """Measure one (model, length, mode) in a fresh subprocess; never raises for a failed run."""
    cmd = [sys.executable, __file__, "--child", model, str(seconds), mode, "--device", a.device,
           "--repeats", str(a.repeats), "--long-s", str(a.long_s), "--max-memory-gib", str(a.max_memory_gib),
           "--max-seconds-per-run", str(a.max_seconds_per_run)]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=a.max_seconds_per_run + STARTUP_ALLOWANCE_S)
    except subprocess.TimeoutExpired:
        res = dict(status="timeout", error=f"process killed after --max-seconds-per-run {a.max_seconds_per_run:g}"
                                           f" + {STARTUP_ALLOWANCE_S:g} s for start-up")
    else:
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if lines:
            res = json.loads(lines[-1][len("RESULT "):])
        else:  # killed by the kernel (e.g. SIGKILL from the OOM killer) or crashed before reporting
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
            res = dict(status="out_of_memory" if proc.returncode in (-9, 137) else "error",
                       error=f"exit code {proc.returncode}: {tail}")
    res.update(model=model, seconds=seconds, mode=mode, process_wall_s=time.perf_counter() - t0)
    line = (f"{mode:5s} {model:18s} {seconds:7.0f} s  " +
            (f"{res['median_s']:9.3f} s  {res['peak_mib']:9.1f} MiB" if res["status"] == "ok" else res["status"]))
    print(line, flush=True)
    return res


def sdpa_cpu_kernel() -> str:
    """The aten op that ``F.scaled_dot_product_attention`` dispatches to for a float32 CPU call like timm's."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    q = torch.randn(1, 3, 256, 64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    names = {e.key for e in prof.key_averages() if "attention" in e.key or "flash" in e.key}
    return ", ".join(sorted(names))


def _get(rows: list[dict], model: str, seconds: float, mode: str) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["seconds"] == seconds and r["mode"] == mode), None)


def summarise(rows: list[dict], models: list[str], lengths: list[float], mode: str) -> dict:
    """Ratios first/second model per length and growth per model from the shortest to the longest length."""
    first, second = models[0], models[-1]
    ratios, growth = {}, {}
    for s in lengths:
        a, b = _get(rows, first, s, mode), _get(rows, second, s, mode)
        if a and b and a["status"] == b["status"] == "ok":
            ratios[f"{s:g}"] = dict(time=a["median_s"] / b["median_s"],
                                    memory=a["peak_mib"] / b["peak_mib"] if b["peak_mib"] > 0 else None)
    lo, hi = min(lengths), max(lengths)
    for m in models:
        a, b = _get(rows, m, lo, mode), _get(rows, m, hi, mode)
        if a and b and a["status"] == b["status"] == "ok" and hi > lo:
            g_t = b["median_s"] / a["median_s"]
            g_m = b["peak_mib"] / a["peak_mib"] if a["peak_mib"] > 0 else None
            growth[m] = dict(from_s=lo, to_s=hi, length_factor=hi / lo, time=g_t, memory=g_m,
                             time_exponent=math.log(g_t) / math.log(hi / lo),
                             memory_exponent=math.log(g_m) / math.log(hi / lo) if g_m else None)
    return {f"ratio_{first}_over_{second}": ratios, "growth": growth}


def _cell(r: dict | None) -> tuple[str, str]:
    if r is None:
        return "-", "-"
    if r["status"] != "ok":
        return r["status"], r["status"]
    n = "warm-up only" if r.get("warmup_is_the_timed_run") else f"{len(r['times_s'])}x"
    return f"{r['median_s']:.3f} ({n})", f"{r['peak_mib']:.0f}"


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _tokens(r: dict | None) -> str:
    if not r or r["status"] != "ok":
        return "-"
    sh = r["shapes"]
    if "transformer_tokens" in sh:
        return f"{sh['transformer_tokens']} tokens, global attention"
    parts = [f"s{i}: {sh[k]['map_hw'][0]}x{sh[k]['map_hw'][1]}" + (
        f" = {sh[k]['windows']} win x {sh[k]['tokens_per_window']} tok" if "windows" in sh[k] else "")
        for i, k in enumerate(sorted(sh))]
    return "; ".join(parts)


def write_md(res: dict, path: Path) -> None:
    rows, models = res["rows"], res["models"]
    first, second = models[0], models[-1]
    mem_what = ("CUDA max_memory_allocated minus allocated after build" if res["device"].startswith("cuda") else
                "CPU peak RSS (VmHWM) of a fresh process minus its RSS after the model build and a 2 s pass (peak mark "
                "reset there)")
    out = [f"# Whole-song input as one sequence: {first} vs {second} ({res['device']})\n",
           f"Input `[1, 1, 128, 100 * seconds]` float32. Time: median seconds of the timed repeats (count in "
           f"brackets) after one warm-up; 'warm-up only': the warm-up took over {res['long_s']:g} s and is the one "
           f"timed run. Memory (MiB): {mem_what}. torch {res['torch']}, "
           f"{res['threads']} thread(s), {res['cpu_count']} CPUs shared with a training job; load average "
           f"(1/5/15 min) {res['load_average_before']} before, {res['load_average_after']} after. "
           f"Command: `{res['command']}`. {res['date_utc']}.\n"]
    for mode in res["modes"]:
        lengths = res["lengths"] if mode == "infer" else res["train_lengths"]
        title = "Inference (forward, inference_mode)" if mode == "infer" else "Training step (forward + MSE + backward)"
        out += [f"\n## {title}\n",
                "| seconds | frames | " + " | ".join(f"{m} s | {m} MiB" for m in models) +
                f" | time ratio {first}/{second} | memory ratio |",
                "|---:|---:|" + "---:|---:|" * len(models) + "---:|---:|"]
        ratios = res["summary"][mode][f"ratio_{first}_over_{second}"]
        for s in lengths:
            cells = [c for m in models for c in _cell(_get(rows, m, s, mode))]
            rt = ratios.get(f"{s:g}")
            out.append(f"| {s:g} | {int(round(s * FRAMES_PER_S))} | " + " | ".join(cells) + " | " +
                       (f"{rt['time']:.3f} | {_num(rt['memory'], '.3f')}" if rt else "- | -") + " |")
        g = res["summary"][mode]["growth"]
        if g:
            out += ["", "| model | length factor | time growth | memory growth | time exponent | memory exponent |",
                    "|---|---:|---:|---:|---:|---:|"]
            for m, v in g.items():
                me = f"{v['memory_exponent']:.2f}" if v["memory_exponent"] is not None else "-"
                out.append(f"| {m} | {v['length_factor']:g}x ({v['from_s']:g} -> {v['to_s']:g} s) | "
                           f"{v['time']:.1f}x | {_num(v['memory'], '.1f')}x | {v['time_exponent']:.2f} | {me} |")
            out.append("\nExponent k in cost ~ length^k (1 = linear, 2 = quadratic), from the two end points.")
    out += ["\n## Sequence lengths (inference, per length)\n", "| seconds | " + " | ".join(models) + " |",
            "|---:|" + "---|" * len(models)]
    for s in res["lengths"]:
        out.append(f"| {s:g} | " + " | ".join(_tokens(_get(rows, m, s, "infer")) for m in models) + " |")
    out += ["", f"SDPA kernel on CPU (profiler, float32 [1, 3, 256, 64]): `{res['sdpa_cpu_kernel']}`.", "",
            *[f"- {n}" for n in res["notes"]], ""]
    path.write_text("\n".join(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mambavision_audio", "vit_audio"])
    ap.add_argument("--lengths", nargs="+", type=float, default=[30.0, 120.0, 600.0], help="seconds (inference)")
    ap.add_argument("--train-lengths", nargs="*", type=float, default=[30.0, 120.0],
                    help="seconds for the training step (none: skip)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each child")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats after the warm-up")
    ap.add_argument("--long-s", type=float, default=30.0, help="a warm-up longer than this: only 1 timed repeat")
    ap.add_argument("--max-seconds-per-run", type=float, default=900.0,
                    help="cap on one measurement (warm-up + repeats, after the model build); over it the run "
                         "is recorded as 'timeout'")
    ap.add_argument("--max-memory-gib", type=float, default=8.0,
                    help="CPU: each child may grow its address space (RLIMIT_AS) by this much after the model "
                         "build; beyond it the run is recorded as out_of_memory. 0: no limit")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "SECONDS", "MODE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child_main(a)
        return
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"error: --device {a.device} but torch.cuda.is_available() is False")
    if a.threads:
        torch.set_num_threads(a.threads)
    sdpa = sdpa_cpu_kernel()
    load_before = [round(v, 2) for v in os.getloadavg()]
    t_start = time.time()
    rows = []
    plan = [(s, "infer") for s in sorted(a.lengths)] + [(s, "train") for s in sorted(a.train_lengths)]
    for s, mode in plan:
        for m in a.models:
            rows.append(run_one(m, s, mode, a))
    load_after = [round(v, 2) for v in os.getloadavg()]
    modes = ["infer"] + (["train"] if a.train_lengths else [])
    res = {
        "benchmark": "whole-song log-mel [1, 1, 128, 100 * seconds] as one sequence: median time and peak memory "
                     "per model and length, one fresh process per measurement",
        "models": a.models, "lengths": sorted(a.lengths), "train_lengths": sorted(a.train_lengths), "modes": modes,
        "device": a.device, "torch": torch.__version__, "threads": a.threads or torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(),
        "machine": f"{platform.processor() or platform.machine()}, shared with a training job",
        "repeats": a.repeats, "long_s": a.long_s, "max_seconds_per_run": a.max_seconds_per_run,
        "max_memory_gib": a.max_memory_gib,
        "memory_measure": ("torch.cuda.max_memory_allocated - memory_allocated after model build and input copy"
                           if a.device.startswith("cuda") else
                           "peak RSS (VmHWM, /proc/self/status) of a fresh child process after the runs minus "
                           "its RSS after the model build, one 2 s pass, malloc_trim and a reset of the peak mark "
                           "(/proc/self/clear_refs 5). Rows with cpu_hwm_reset false: getrusage ru_maxrss minus "
                           "ru_maxrss after the build instead. Counts the input tensor, activations and allocator "
                           "slack, not torch or the weights"),
        "sdpa_cpu_kernel": sdpa,
        "load_average_before": load_before, "load_average_after": load_after,
        "bench_wall_s": round(time.time() - t_start, 1),
        "summary": {mode: summarise(rows, a.models, sorted(a.lengths if mode == "infer" else a.train_lengths), mode)
                    for mode in modes},
        "notes": [
            "mambavision_audio: stem stride 8, conv stages 0-1, Mamba + attention stages 2-3 work inside 4 x 4 "
            "windows (16 tokens each; the map is zero-padded to a multiple of 4 and cropped back), so the "
            "selective scan never sees more than 16 tokens: a longer song adds windows, not scan length. "
            "Any length works.",
            "vit_audio: timm ViT-Tiny/16, dynamic_img_size + dynamic_img_pad (pads the input to a multiple of 16 "
            "and interpolates the position embedding), so any length works; its 12 blocks attend globally over "
            "all (128/16) * ceil(frames/16) patch tokens + 1 class token.",
            "training step = forward + MSE + backward, no optimiser step; models in train mode (BatchNorm "
            "batch statistics, drop-path active for MambaVision).",
        ],
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_start)),
        "command": " ".join(["OMP_NUM_THREADS=" + os.environ["OMP_NUM_THREADS"]] if "OMP_NUM_THREADS" in os.environ
                            else []) + " python bench/" + Path(__file__).name + " " + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    res["command"] = res["command"].strip()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    write_md(res, a.out.with_suffix(".md"))
    print(json.dumps(res["summary"], indent=2))


if __name__ == "__main__":
    main()
