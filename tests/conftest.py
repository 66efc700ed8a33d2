"""Shared fixtures. The synthetic corpus is built once per test session (see ``synth_corpus``)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

from deam_mamba.core.runtime import tune_malloc

tune_malloc()  # as the CLI does: glibc keeps freed memory (faster tensor work; tests/test_runtime.py checks it)


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a tiny seeded synthetic DEAM corpus, built once per session (~10 s on 2 cores).

    16 excerpts of ~20 s (ids 2..1009, DEAM gaps included) + 3 full songs of ~27-53 s
    (ids 2001..2003): dynamic labels exist (from 15 s), official2015 and random splits are
    non-empty. Read-only for tests: copy it before changing anything.
    """
    from deam_mamba.synth.corpus import synthesize

    root = tmp_path_factory.mktemp("synth") / "deam"
    return synthesize(root, songs=16, seconds=20.0, full_songs=3, seed=0, workers=2, progress=False)
