#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded synthetic corpus.
#   synthesize a DEAM-shaped corpus -> prepare the feature cache -> train the audio MambaVision
#   -> evaluate on held-out songs (report + plots) -> ridge baseline on the same split for reference.
# Every stage is resumable: an existing corpus/cache is reused, a killed training resumes.
set -euo pipefail
OUT=${1:-demo_out}
PY=${PY:-.venv/bin/python}
SONGS=${DEMO_SONGS:-200}
SEED=${DEMO_SEED:-0}
mkdir -p "$OUT"
cli() { "$PY" -m deam_mamba.cli "$@"; }
t0=$(date +%s)
stamp() { echo "[demo] $(( $(date +%s) - t0 )) s: $*"; }

if [ ! -d "$OUT/corpus" ]; then
  stamp "synthesizing $SONGS songs into $OUT/corpus"
  cli synth --out "$OUT/corpus" --songs "$SONGS" --seed "$SEED"
else
  stamp "reusing corpus $OUT/corpus"
fi

stamp "preparing the feature cache $OUT/cache"
cli prepare --data "$OUT/corpus" --cache "$OUT/cache"

RUN="$OUT/run"
if [ -f "$RUN/config.yaml" ]; then
  stamp "resuming training in $RUN"
  cli train --resume "$RUN"
else
  stamp "training (configs/demo.yaml) into $RUN"
  cli train --config configs/demo.yaml --run-dir "$RUN" data.root="$OUT/corpus" data.cache="$OUT/cache"
fi

stamp "evaluating on the held-out test songs"
cli evaluate "$RUN" --split test --ridge

stamp "done: report in $RUN/eval/report.md, model vs ridge in $RUN/eval/comparison.md"
