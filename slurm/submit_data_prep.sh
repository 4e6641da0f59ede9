#!/usr/bin/env bash
# Submit a data_prep array of N parts and the merge job that runs once all parts succeeded.
#
#   slurm/submit_data_prep.sh 64 --input pubmed/baseline pubmed/updatefiles --vocab models/bert-base-cased \
#       --out shards/pubmed_pmc_128 --seq_len 128
#
# Run it from the repository root. BIOBERT_SBATCH_ARGS holds extra sbatch options for both jobs (partition,
# account, time, e.g. "-p cpu -A proj"); BIOBERT_MERGE_DEPENDENCY=afterany merges even when a part failed
# (the merge then reports what is missing). Prints "array=<job id>" and "merge=<job id>".
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 2 && $1 =~ ^[0-9]+$ && $1 -ge 1 ]] || { echo "usage: $0 PARTS data_prep-flags... (with --out OUT)" >&2; exit 2; }
parts=$1
shift
source slurm/lib.sh
out=$(biobert_arg --out "$@")
[[ -n $out ]] || { echo "error: pass --out OUT (shared by all parts, merged at the end)" >&2; exit 2; }
# shellcheck disable=SC2086  # BIOBERT_SBATCH_ARGS is a list of options
array=$(sbatch --parsable ${BIOBERT_SBATCH_ARGS:-} --array=0-$((parts - 1)) slurm/data_prep.sbatch "$@")
array=${array%%;*}
merge=$(sbatch --parsable ${BIOBERT_SBATCH_ARGS:-} --dependency="${BIOBERT_MERGE_DEPENDENCY:-afterok}:$array" \
    --kill-on-invalid-dep=yes slurm/data_prep_merge.sbatch "$out")
merge=${merge%%;*}
echo "array=$array"
echo "merge=$merge"
