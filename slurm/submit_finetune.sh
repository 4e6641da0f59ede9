#!/usr/bin/env bash
# Submit one fine-tuning array task per line of LIST (`TASK SEED [flags]`) and a summary job that runs when
# all of them succeeded.
#
#   slurm/submit_finetune.sh finetune/lists/paper.txt runs/ft --data_dir datasets --init_from runs/biobert_phase2/hf
#
# Run it from the repository root. BIOBERT_SBATCH_ARGS holds extra sbatch options for both jobs (partition,
# account, GPUs, e.g. "-p gpu -A proj"); BIOBERT_FT_MAX_PARALLEL=K runs at most K array tasks at once
# (--array=...%K). Prints "array=<job id>" and "summary=<job id>".
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 2 ]] || { echo "usage: $0 LIST RUNS_DIR [finetune/run_task.py flags for every line]" >&2; exit 2; }
list=$1 runs=$2
shift 2
[[ -f $list ]] || { echo "error: $list: no such file" >&2; exit 2; }
n=$(grep -c -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$list" || true)
((n > 0)) || { echo "error: $list has no 'TASK SEED [flags]' lines" >&2; exit 2; }
range=0-$((n - 1))${BIOBERT_FT_MAX_PARALLEL:+%$BIOBERT_FT_MAX_PARALLEL}
mkdir -p "$runs"
# shellcheck disable=SC2086  # BIOBERT_SBATCH_ARGS is a list of options
array=$(sbatch --parsable ${BIOBERT_SBATCH_ARGS:-} --array="$range" slurm/finetune.sbatch "$list" "$runs" "$@")
array=${array%%;*}
summary=$(sbatch --parsable ${BIOBERT_SBATCH_ARGS:-} --dependency=afterok:"$array" --kill-on-invalid-dep=yes \
    slurm/finetune_summary.sbatch "$runs")
summary=${summary%%;*}
echo "array=$array"
echo "summary=$summary"
