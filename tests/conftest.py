"""Shared fixtures. The synthetic corpus is built once per test session (see ``synth_corpus``)."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
