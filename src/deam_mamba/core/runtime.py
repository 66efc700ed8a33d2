"""Process-wide tuning of glibc's allocator for tensor workloads.

glibc's ``malloc`` serves blocks above a dynamic threshold (128 kB to 32 MB) with fresh ``mmap``
pages and hands freed memory back to the kernel (``munmap`` / heap trimming). A training step
allocates and frees many tensors of several MB, so every step faults the same memory in again,
page by page. On our 2-core VM a minor fault costs a few microseconds: one ``mambavision_audio``
training step at batch 32 took 140 000 faults, 0.66 s, against 0.43 s (1.5x faster, no faults)
with the settings below; the ``fast`` selective scan at length 1024 swung from 6 to 26 ms per
forward + backward with the fault count (``bench/bench_scan.py`` measures it both ways).

:func:`tune_malloc` keeps freed memory in the process instead, as PyTorch's CUDA caching allocator
or jemalloc/tcmalloc (``LD_PRELOAD``) would: resident memory then stays near the peak of the run
rather than falling between steps. The CLI calls it at start, in the main process and in worker
processes; library users may call it themselves. ``DEAM_MAMBA_MALLOC_TUNE=0`` turns it off.
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

ENV = "DEAM_MAMBA_MALLOC_TUNE"
# mallopt parameter numbers, from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and are reused after free
TRIM_THRESHOLD = (1 << 31) - 1  # never give the top of the heap back while under 2 GiB free
ARENA_MAX = 1  # one arena: memory freed by torch's worker threads is reused by all threads

_state: dict[str, bool] = {}


def _libc() -> ctypes.CDLL | None:
    if not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError as exc:  # pragma: no cover - glibc without the usual soname
        log.debug("glibc not loadable (%s)", exc)
        return None


def release_free_memory() -> None:
    """Give the free memory that :func:`tune_malloc` keeps back to the kernel (``malloc_trim``).

    Call it before forking worker processes: a child inherits the parent's whole heap, so a big
    kept heap makes every ``fork`` copy more page tables and the child copy-on-write the pages it
    reuses. A no-op where the C library is not glibc.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def tune_malloc() -> bool:
    """Apply the settings above once per process; True if they are in effect.

    A no-op returning False where the C library is not glibc (macOS, musl), or when
    ``DEAM_MAMBA_MALLOC_TUNE=0``.
    """
    if "tuned" in _state:
        return _state["tuned"]
    tuned = False
    if os.environ.get(ENV, "1").strip() in ("0", "false", "no", "off"):
        log.debug("%s=0: glibc malloc left as it is", ENV)
    elif (libc := _libc()) is not None:
        mallopt = libc.mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        ok = [mallopt(p, v) for p, v in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                          (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_ARENA_MAX, ARENA_MAX))]
        tuned = all(r == 1 for r in ok)
        if not tuned:
            log.debug("mallopt refused some settings (%s)", ok)
    _state["tuned"] = tuned
    return tuned
