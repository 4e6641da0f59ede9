"""The learning curve's execution (bench/learning_curve.py): its runs in order, cheapest point first, one at a
time or several one-thread runs at once, each by the orchestrators' skip / resume / restart policy; a run that
fails is recorded and the others go on.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path

from learning_curve_plan import estimate_cpu
from reproduce_progress import hms

from biobert.errors import UserError


def execute(run: dict, job, keep_checkpoints: bool = False) -> dict:
    """One run by the orchestrators' skip / resume / restart policy (checkpoint.run_or_resume)."""
    from biobert import checkpoint
    from finetune import run_task

    run_dir = Path(run["run_dir"])
    state = checkpoint.run_or_resume(run_dir)
    if state == "done":
        return {}
    resumed_from = checkpoint.latest_tag(run_dir) if state == "resume" else None
    t = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    run_task.run(job.with_(run_dir=str(run_dir), resume=state == "resume"))
    gc.collect()  # the run's model and engine, before the next run builds its own
    if not keep_checkpoints:
        shutil.rmtree(checkpoint.checkpoint_dir(run_dir), ignore_errors=True)
    end = resource.getrusage(resource.RUSAGE_SELF)
    cpu = end.ru_utime + end.ru_stime - usage.ru_utime - usage.ru_stime
    rec = {"run_dir": str(run_dir), "kind": run["kind"], "units": run["units"], "wall_s": time.time() - t, "cpu_s": cpu}
    # a resumed run's time is only its last part (the rest died with the process): kept, named, never a rate
    return {**rec, "resumed_from": resumed_from} if resumed_from else rec


def _execute_star(item: tuple) -> dict:
    """execute(), with a failure returned as a record instead of raised: one run that fails (a damaged
    checkpoint, a bad file) does not stop the others; run_all says which failed and why at the end."""
    try:
        return execute(*item)
    except Exception as e:  # noqa: BLE001 -- any failure of one run is reported, with its traceback
        return {"failed": item[0]["run_dir"], "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}


class Failures:
    """The runs that failed in one invocation. MAX_IN_A_ROW failures with no run finishing between them is a
    cause common to every run (a missing model, a full disk): stop there rather than fail all of them."""

    MAX_IN_A_ROW = 3

    def __init__(self, path: Path):
        self.path, self.runs, self.in_a_row = path, [], 0

    def add(self, rec: dict) -> None:
        if "failed" not in rec:
            if rec:  # a run finished here (a skipped, already finished one says nothing either way)
                self.in_a_row = 0
            return
        self.runs.append(rec)
        self.in_a_row += 1
        with self.path.open("a") as fh:
            fh.write(json.dumps({**rec, "date": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        print(f"run {rec['failed']} FAILED: {rec['error']}\n{rec['traceback']}", file=sys.stderr, flush=True)
        if self.in_a_row >= self.MAX_IN_A_ROW:
            raise UserError(
                f"{self.in_a_row} runs in a row failed, the last {rec['failed']}: {rec['error']}; "
                f"stopped (a cause common to every run?); every failure is in {self.path}"
            )

    def check(self, total: int) -> None:
        if self.runs:
            first = self.runs[0]
            raise UserError(
                f"{len(self.runs)} of {total} runs failed, e.g. {first['failed']}: {first['error']} (each, with its "
                f"traceback, in {self.path}); the others finished and the report was written. Fix the cause and "
                "run the same command again: finished runs are skipped"
            )


def run_order(plan: dict) -> list[dict]:
    """The runs cheapest point first: every dataset's smallest fraction for seed 1, its models side by side,
    then seed 2, ..., then the next fraction; a run stopped early has whole paired low-resource points."""
    task_i = {d["task"]: i for i, d in enumerate(plan["datasets"])}
    model_i = {m: i for i, m in enumerate(plan["models"])}
    return sorted(plan["runs"], key=lambda r: (r["fraction"], r["seed"], task_i[r["task"]], model_i[r["model"]]))


def run_all(
    plan: dict, jobs: dict, work_dir: str, workers: int, keep_checkpoints: bool = False, finished=None
) -> Failures:
    """Every run of the plan not finished yet (run_order), one at a time or `workers` one-thread runs at once;
    each finished run's time goes to WORK_DIR/timings.jsonl, each failed one to failures.jsonl, and each
    finished one's timing record to `finished` (the curve's ledger) when given."""
    items = [
        (
            r,
            jobs[r["task"]].with_(
                seed=r["seed"], epochs=r["epochs"], data_dir=r["data_dir"], init_from=plan["models"][r["model"]]
            ),
            keep_checkpoints,
        )
        for r in run_order(plan)
    ]
    ledger = Path(work_dir) / "timings.jsonl"
    t0, total = time.time(), len(items)
    failures = Failures(Path(work_dir) / "failures.jsonl")

    def note(i: int, rec: dict) -> None:
        failures.add(rec)
        if rec and "failed" not in rec:
            with ledger.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
            if finished is not None:
                finished(rec)
        left = estimate_cpu(plan, work_dir, workers)
        print(f"[{i}/{total}] elapsed {hms(time.time() - t0)} | ETA {hms(left['wall_s'])}", flush=True)

    if workers <= 1:
        for i, item in enumerate(items, 1):
            note(i, _execute_star(item))
        return failures
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(workers,)) as pool:
        for i, rec in enumerate(pool.imap_unordered(_execute_star, items), 1):
            note(i, rec)
    return failures


def _worker_init(workers: int) -> None:
    """A worker's share of the cores (the engine keeps it: two workers x all cores oversubscribe them, about 2x
    slower a step here)."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
