"""Tiny trained runs shared by the inference/evaluate/compare tests (trained once per session).

A run is trained through the real engine (``configs/test_tiny.yaml``: ``mambavision_tiny``, 64 mels,
2 s chunks) for one epoch on the ``synth_corpus`` fixture with the official 2015 split (the full
songs 2001.. are the test songs). The module-level memo makes every test file reuse the same runs.
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "test_tiny.yaml"

_MEMO: dict[tuple, Path] = {}


def tiny_overrides(corpus: Path, cache: Path, mode: str = "static", model: str = "mambavision_tiny") -> list[str]:
    return [f"data.root={corpus}", f"data.cache={cache}", "data.split=official2015", f"mode={mode}",
            f"model.name={model}", "train.epochs=1", "train.progress=false",
            "chunks.chunk_seconds=3.0", "chunks.hop_seconds=3.0", "chunks.eval_hop_seconds=3.0"]


def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = ("cache",)
    if key not in _MEMO:
        _MEMO[key] = tmp_path_factory.mktemp("tiny_cache") / "cache"
    return _MEMO[key]


def tiny_run(tmp_path_factory: pytest.TempPathFactory, corpus: Path, mode: str = "static") -> Path:
    """Path of a finished 1-epoch run of ``mode`` on ``corpus`` (trained on first use)."""
    from deam_mamba.config import load_config
    from deam_mamba.train.loop import train

    key = (str(corpus), mode)
    if key not in _MEMO:
        cfg = load_config(TINY_CONFIG, tiny_overrides(corpus, shared_cache(tmp_path_factory), mode))
        run_dir = tmp_path_factory.mktemp(f"tiny_run_{mode}") / "run"
        train(cfg, run_dir)
        _MEMO[key] = run_dir
    return _MEMO[key]
