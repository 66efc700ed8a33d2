#!/usr/bin/env bash
# `make bench`: every benchmark in bench/, one after the other (each writes bench/results/<topic>.json).
# Pass --quick through BENCH_ARGS for a smoke run: make bench BENCH_ARGS=--quick
set -euo pipefail
PY=${PY:-.venv/bin/python}
for b in audio features cache metrics scan models inference synth serve; do
  echo "[bench] $b"
  "$PY" "bench/bench_$b.py" ${BENCH_ARGS:-}
done
