#!/usr/bin/env bash
# One-GPU throughput benchmark: BERT-base pre-training at BioBERT's per-GPU batches (seq 128 x 128, seq 512 x 32)
# on the default path against the baseline commit's path, compiled vs eager, fp16 (V100 profile) vs bf16 with a
# forced overflow, fine-tuning, larger micro-batches, CUDA graphs, FusedAdam: tokens/s, MFU, memory, kernel
# launches and host reads per step, the projected BioBERT wall time. Unattended; finishes within 8 minutes.
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
# The "before" configurations run the baseline commit's library under this harness (default: the commit before
# the device-bound step); BASELINE=none skips them.
BASELINE=${BASELINE:-534785f}
base_args=()
if [[ $BASELINE != none ]]; then
  if [[ ! -d bench/.baseline/biobert ]] && git rev-parse --verify -q "$BASELINE^{commit}" >/dev/null 2>&1; then
    mkdir -p bench/.baseline && git archive "$BASELINE" | tar -x -C bench/.baseline
  fi
  [[ -d bench/.baseline/biobert ]] && base_args=(--baseline_src bench/.baseline) \
    || echo "bench/gpu.sh: no bench/.baseline and no git history: the 'before' rows are skipped" >&2
fi
export CUDA_VISIBLE_DEVICES=${GPU:-0}
export TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader -i "${CUDA_VISIBLE_DEVICES%%,*}" || true
# gpu_pretrain.py stops starting configurations after --budget_s (420 s) and writes its results after
# each one; the hard limit below only guards against a hung process.
exec timeout --signal=TERM --kill-after=10 470 "$PY" bench/gpu_pretrain.py "${base_args[@]}" "$@"
