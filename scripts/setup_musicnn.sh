#!/usr/bin/env bash
# One-time, OPTIONAL set-up of the MusiCNN teacher (issue 15): convert the official musicnn weights to PyTorch.
#
#   bash scripts/setup_musicnn.sh [OUT_DIR]      (default OUT_DIR: $XDG_CACHE_HOME/deam_mamba/teachers)
#   make musicnn [MUSICNN_DIR=OUT_DIR]
#
# 1. A SEPARATE venv ($TEACHER_VENV, default .teacher-venv; never the project's .venv) gets, from the package
#    registry: tensorflow-cpu 2.21.0 (CPU only; `tensorflow` where no -cpu wheel exists), tf-keras 2.21.0 (the
#    tf.compat.v1.layers that musicnn's graph code uses), safetensors, and musicnn 0.1.0 --no-deps (its metadata
#    pins numpy<1.17; the wheel holds the MSD/MTT MusiCNN TF1 checkpoints, ISC licence). ~1.6 GB, about a minute.
#    Installed once (a stamp file records it).
# 2. scripts/convert_musicnn.py (run by that venv) writes OUT_DIR/musicnn_{msd,mtt}.safetensors with our PyTorch
#    parameter names and metadata, and a TensorFlow reference output on a fixed input.
# 3. scripts/check_musicnn.py (run by the project's python, $CHECK_PYTHON, if it exists) compares the PyTorch port
#    with that reference and fails if they differ by more than 1e-4.
# Nothing in `make test` / `make demo` needs this; `deam_mamba.models.musicnn.load_musicnn` says to run it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TEACHER_VENV="${TEACHER_VENV:-.teacher-venv}"
CHECK_PYTHON="${CHECK_PYTHON:-.venv/bin/python}"
OUT_ARGS=()
[[ $# -ge 1 && -n "$1" ]] && OUT_ARGS=("$1")

TPY="$TEACHER_VENV/bin/python"
STAMP="$TEACHER_VENV/.musicnn-installed"
if [[ ! -f "$STAMP" ]]; then
  test -x "$TPY" || "$PYTHON" -m venv "$TEACHER_VENV"
  "$TPY" -m pip install -q --upgrade pip
  "$TPY" -m pip install -q tensorflow-cpu==2.21.0 || "$TPY" -m pip install -q tensorflow==2.21.0
  "$TPY" -m pip install -q --no-deps tf-keras==2.21.0 musicnn==0.1.0
  "$TPY" -m pip install -q safetensors==0.8.0
  touch "$STAMP"
fi
echo "teacher venv: $TEACHER_VENV ($(du -sh "$TEACHER_VENV" | cut -f1))"

TF_CPP_MIN_LOG_LEVEL=2 TF_USE_LEGACY_KERAS=1 PYTHONWARNINGS=ignore "$TPY" scripts/convert_musicnn.py "${OUT_ARGS[@]}"

if [[ -x "$CHECK_PYTHON" ]]; then
  PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" "$CHECK_PYTHON" scripts/check_musicnn.py "${OUT_ARGS[@]}"
else
  echo "($CHECK_PYTHON not found: skipped the PyTorch-vs-TensorFlow check; run scripts/check_musicnn.py later)"
fi
