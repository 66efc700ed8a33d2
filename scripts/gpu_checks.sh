#!/usr/bin/env bash
# The GPU figures of the README ("GPU" under Benchmarks, the CNN rows of the real-music table), in one run on a
# machine with a CUDA GPU:
#   1. training throughput, mambavision_audio vs ResNet-18, float32 and bf16 autocast (bench/bench_models.py)
#   2. the cost of a distillation step (deam-mamba pretrain, MusiCNN teacher, 400 steps on the 4Q audio)
#   3. the 4Q artist-disjoint 5-fold cross-validation of ResNet-18, EfficientNet-B0 and the from-scratch
#      mambavision_audio with configs/real_4q.yaml, the three at once on the one GPU
# Usage: bash scripts/gpu_checks.sh PATH/TO/4q [OUT_DIR]       (needs `make musicnn` for step 2)
# Then, on any machine: bench/bench_real_4q.py --crossval resnet18_gpu=OUT_DIR/cv_resnet18 ... adds the rows.
set -euo pipefail
ROOT=${1:?usage: gpu_checks.sh PATH/TO/4q [OUT_DIR]}
OUT=${2:-runs/gpu_checks}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
cli() { "$PY" -m deam_mamba.cli "$@"; }
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_checks.sh: torch sees no CUDA GPU here')"

"$PY" bench/bench_models.py --device cuda --batch 64 --out "$OUT/models_cuda_fp32.json"
"$PY" bench/bench_models.py --device cuda --batch 64 --bf16 --out "$OUT/models_cuda_bf16.json"

AUDIO=$(find "$ROOT" -type d -name MER_audio_taffc_dataset | head -1)
[ -n "$AUDIO" ] || { echo "gpu_checks.sh: no MER_audio_taffc_dataset/ under $ROOT" >&2; exit 1; }
cli pretrain --data "$AUDIO" --out "$OUT/pretrain_cost" data.cache="$OUT/cache_pretrain" pretrain.objective=distill \
    train.max_steps=400 train.device=cuda > "$OUT/pretrain_cost.log" 2>&1

cli prepare --data "$ROOT" --cache "$OUT/cache_4q" --no-progress
pids=()
for m in resnet18 efficientnet_b0 mambavision_audio; do
  OMP_NUM_THREADS=3 cli crossval --config configs/real_4q.yaml --out "$OUT/cv_$m" \
      data.root="$ROOT" data.cache="$OUT/cache_4q" model.name=$m 'model.kwargs={}' train.device=cuda \
      train.threads=3 data.loader_workers=2 > "$OUT/cv_$m.log" 2>&1 &
  pids+=("$!:$m")
done
failed=0
for p in "${pids[@]}"; do
  wait "${p%%:*}" || { echo "gpu_checks.sh: crossval of ${p#*:} failed, see $OUT/cv_${p#*:}.log" >&2; failed=1; }
done
echo "gpu_checks.sh: results in $OUT"
exit $failed
