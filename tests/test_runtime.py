"""deam_mamba.core.runtime.tune_malloc: glibc keeps freed memory, so re-allocating a big block costs no page faults."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

_PROBE = r"""
import json, resource, sys
import numpy as np
from deam_mamba.core.runtime import tune_malloc
tuned = tune_malloc() if sys.argv[1] == "tune" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(4 << 20)  # 32 MB: above glibc's default mmap threshold, so untuned it is mmapped and unmapped
f0 = faults()
for _ in range(5):
    np.ones(4 << 20)  # allocate, touch every page, free
print(json.dumps({"tuned": tuned, "faults_per_alloc": (faults() - f0) / 5, "again": tune_malloc() == tuned}))
"""


def _probe(mode: str, env: dict[str, str] | None = None) -> dict:
    run_env = {**os.environ, **(env or {})}
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env=run_env, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"), reason="glibc only")
def test_tune_malloc_removes_page_faults_of_reallocation() -> None:
    base = _probe("plain")
    tuned = _probe("tune", {"DEAM_MAMBA_MALLOC_TUNE": "1"})
    assert tuned["tuned"] and tuned["again"]
    # untuned, the 32 MB are faulted in again each time (8192 pages of 4 kB; fewer where numpy gets huge pages)
    assert base["faults_per_alloc"] > 200
    assert tuned["faults_per_alloc"] < base["faults_per_alloc"] / 20  # served from the kept heap


def test_tune_malloc_can_be_turned_off() -> None:
    off = _probe("tune", {"DEAM_MAMBA_MALLOC_TUNE": "0"})
    assert off["tuned"] is False and off["again"]
