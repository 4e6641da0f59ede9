# Helpers sourced by slurm/*.sbatch (bash). No settings live here: every job reads its settings from
# environment variables and its own arguments. Slurm copies a batch script into its spool directory, so
# the scripts find this file through BIOBERT_REPO (default: the directory sbatch was called from).

biobert_log() { echo "[$(date +%H:%M:%S) ${SLURM_JOB_NAME:-job} ${SLURM_JOB_ID:-}] $*" >&2; }
biobert_die() { biobert_log "error: $*"; exit "${BIOBERT_DIE_STATUS:-2}"; }

# cd into the repository and choose the interpreter: BIOBERT_PYTHON, else the repository's .venv, else python3.
biobert_init() {
    REPO=${BIOBERT_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
    [[ -f $REPO/pretrain/run.py ]] || biobert_die "BIOBERT_REPO=$REPO is not the biobert repository (no " \
        "pretrain/run.py); submit from the repository root or export BIOBERT_REPO"
    cd "$REPO" || biobert_die "cannot cd to $REPO"
    if [[ -n ${BIOBERT_PYTHON:-} ]]; then
        PY=$BIOBERT_PYTHON
    elif [[ -x $REPO/.venv/bin/python ]]; then
        PY=$REPO/.venv/bin/python
        export PATH="$REPO/.venv/bin:$PATH"
    else
        PY=python3
    fi
    export PYTHONUNBUFFERED=1
    RESTART=${SLURM_RESTART_COUNT:-0}
}

biobert_require_file() {  # NAME PATH
    [[ -n $2 ]] || biobert_die "$1 is not set"
    [[ -f $2 ]] || biobert_die "$1=$2: no such file (relative paths are taken from $PWD)"
}

# The value of `--flag VALUE` / `--flag=VALUE` in the remaining arguments ("" if absent; the last one wins).
biobert_arg() {
    local flag=$1 value="" prev=""
    shift
    for a in "$@"; do
        [[ $prev == "$flag" ]] && value=$a
        [[ $a == "$flag="* ]] && value=${a#"$flag="}
        prev=$a
    done
    printf '%s' "$value"
}

# Tasks on this node, from SLURM_NTASKS_PER_NODE or the first group of SLURM_TASKS_PER_NODE ("8(x4),4").
biobert_tasks_per_node() {
    if [[ -n ${SLURM_NTASKS_PER_NODE:-} ]]; then
        echo "$SLURM_NTASKS_PER_NODE"
    else
        local t=${SLURM_TASKS_PER_NODE:-1}
        echo "${t%%[(,]*}"
    fi
}

# On GPU nodes, one task per GPU: more tasks than visible GPUs would put two ranks on one device.
# The GPUs are those in CUDA_VISIBLE_DEVICES (set by Slurm's gres), else those `nvidia-smi -L` lists;
# with neither (CPU runs, CI) there is nothing to check.
biobert_check_gpus() {
    local tasks gpus="" source
    tasks=$(biobert_tasks_per_node)
    if [[ -n ${CUDA_VISIBLE_DEVICES:-} && ${CUDA_VISIBLE_DEVICES} != NoDevFiles ]]; then
        gpus=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)
        source="CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"
    elif command -v nvidia-smi >/dev/null 2>&1; then
        gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
        source="nvidia-smi -L"
    fi
    if [[ -z $gpus ]]; then
        biobert_log "no GPUs visible (no CUDA_VISIBLE_DEVICES, no nvidia-smi): $tasks CPU task(s) per node"
        return 0
    fi
    if ((tasks > gpus)); then
        biobert_die "$tasks tasks per node but only $gpus GPU(s) on $(hostname) ($source): request as many" \
            "GPUs as tasks, e.g. --ntasks-per-node=$gpus --gpus-per-node=$gpus"
    fi
    ((tasks < gpus)) && biobert_log "warning: $tasks task(s) per node use $gpus visible GPU(s); $((gpus - tasks)) idle"
    biobert_log "$tasks task(s) per node, $gpus GPU(s) per node ($source)"
}

# MASTER_ADDR = first host of the allocation, MASTER_PORT derived from the job id (the same rule as
# biobert/dist.py). BIOBERT_MASTER_ADDR / BIOBERT_MASTER_PORT override them (a plain MASTER_ADDR left in
# the submitting shell is ignored on purpose: it is usually stale).
biobert_rendezvous() {
    local first
    first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" 2>/dev/null | head -n 1)
    [[ -n $first ]] || first=${SLURMD_NODENAME:-$(hostname)}
    export MASTER_ADDR=${BIOBERT_MASTER_ADDR:-$first}
    export MASTER_PORT=${BIOBERT_MASTER_PORT:-$((20000 + SLURM_JOB_ID % 12000))}
    unset RANK LOCAL_RANK WORLD_SIZE LOCAL_WORLD_SIZE NODE_RANK  # per task, from SLURM_* (biobert/dist.py)
    biobert_log "rendezvous MASTER_ADDR=$MASTER_ADDR MASTER_PORT=$MASTER_PORT, timeout" \
        "${BIOBERT_RDZV_TIMEOUT:-600} s; $SLURM_NNODES node(s): $SLURM_JOB_NODELIST, $SLURM_NTASKS task(s)"
}

# After a training step (srun) ended with status $1: 0 = done; 75 = preempted after a checkpoint, so requeue
# this job (it resumes from run_dir/checkpoints/latest); anything else is a failure, explained if possible.
biobert_finish() {
    local rc=$1 logs=$2
    if ((rc == 0)); then
        biobert_log "finished (restart $RESTART)"
        exit 0
    fi
    if ((rc == 75)); then
        local max=${BIOBERT_MAX_REQUEUES:-50}
        if ((RESTART >= max)); then
            biobert_die "preempted again after $RESTART requeues (BIOBERT_MAX_REQUEUES=$max); resubmit the same" \
                "command to continue from the latest checkpoint"
        fi
        # An array task must name itself as ARRAYJOB_INDEX: the last task's own SLURM_JOB_ID equals the array's
        # id, and `scontrol requeue <array id>` would requeue (kill) every running sibling too.
        local me=$SLURM_JOB_ID
        [[ -n ${SLURM_ARRAY_TASK_ID:-} ]] && me=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
        biobert_log "preempted: checkpoint written, requeueing job $me (restart $((RESTART + 1)))"
        if scontrol requeue "$me"; then
            sleep 10  # slurmctld ends this script right away; the job restarts after its requeue delay
            exit 0
        fi
        BIOBERT_DIE_STATUS=75 biobert_die "scontrol requeue $me failed (requeue disabled on this" \
            "cluster?); resubmit the same command: it resumes from the latest checkpoint"
    fi
    if grep -qs "rendezvous MASTER_ADDR" $logs; then
        biobert_log "error: the rendezvous failed at $MASTER_ADDR:$MASTER_PORT; the ranks said:"
        grep -hs "rendezvous MASTER_ADDR" $logs | sort -u | head -n 8 >&2
    else
        biobert_log "error: a task failed with status $rc; last lines of each rank's log:"
        for f in $logs; do [[ -f $f ]] && { echo "== $f" >&2; tail -n 5 "$f" >&2; }; done
    fi
    exit "$rc"
}

# Settings of a pre-training job -> RUN_DIR and the array `args` for pretrain/run.py: BIOBERT_DS_CONFIG
# (required), BIOBERT_RUN_CONFIG (optional), the run directory (--run_dir argument > BIOBERT_RUN_DIR >
# run_dir in the run config), --resume when the run directory holds a checkpoint, then the job's arguments.
biobert_pretrain_args() {
    local DS_CONFIG RUN_CONFIG
    DS_CONFIG=${BIOBERT_DS_CONFIG:-}
    RUN_CONFIG=${BIOBERT_RUN_CONFIG:-}
    biobert_require_file BIOBERT_DS_CONFIG "$DS_CONFIG"
    [[ -z $RUN_CONFIG ]] || biobert_require_file BIOBERT_RUN_CONFIG "$RUN_CONFIG"
    RUN_DIR=$(biobert_arg --run_dir "$@")
    RUN_DIR=${RUN_DIR:-${BIOBERT_RUN_DIR:-}}
    if [[ -z $RUN_DIR && -n $RUN_CONFIG ]]; then
        RUN_DIR=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("run_dir", ""))' "$RUN_CONFIG") ||
            biobert_die "BIOBERT_RUN_CONFIG=$RUN_CONFIG is not valid JSON"
    fi
    [[ -n $RUN_DIR ]] || biobert_die "no run directory: set BIOBERT_RUN_DIR, pass --run_dir, or put run_dir in" \
        "BIOBERT_RUN_CONFIG"

    args=(--deepspeed_config "$DS_CONFIG")
    [[ -n $RUN_CONFIG ]] && args+=(--config "$RUN_CONFIG")
    [[ -n $(biobert_arg --run_dir "$@") ]] || args+=(--run_dir "$RUN_DIR")
    if [[ -f $RUN_DIR/checkpoints/latest ]]; then
        args+=(--resume)  # a requeued (or resubmitted) job continues its run exactly
        biobert_log "resuming $RUN_DIR from $(cat "$RUN_DIR/checkpoints/latest") (restart $RESTART)"
    fi
    args+=("$@")
}
