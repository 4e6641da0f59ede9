#!/usr/bin/env bash
# One-GPU throughput benchmark: BERT-base pre-training (seq 128 and 512, bf16, our DeepSpeed path) and
# fine-tuning, MFU and the projected BioBERT wall time. Unattended; finishes within 8 minutes.
#
#   bash bench/gpu.sh                 # GPU 0; results in bench/results/gpu_<device>.json
#   GPU=3 bash bench/gpu.sh           # another GPU
#   bash bench/gpu.sh --no-compile    # extra flags go to bench/gpu_pretrain.py (see --help)
#
# Needs the project's environment with the CUDA build of torch (`make test` on the GPU machine sets up .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "bench/gpu.sh: no NVIDIA GPU found (nvidia-smi). Run this on a GPU machine;" \
       "to check the script on a CPU use: $PY bench/gpu_pretrain.py --dry_run" >&2
  exit 2
fi
export CUDA_VISIBLE_DEVICES=${GPU:-0}
export TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader -i "${CUDA_VISIBLE_DEVICES%%,*}" || true
# gpu_pretrain.py stops starting configurations after --budget_s (420 s) and writes its results after
# each one; the hard limit below only guards against a hung process.
exec timeout --signal=TERM --kill-after=10 470 "$PY" bench/gpu_pretrain.py "$@"
