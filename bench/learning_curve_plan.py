"""The learning curve's cost and guards: CPU seconds per unit measured from a work dir's finished runs, the
estimate of the runs left, and the checks that keep one curve's runs comparable (the same weights under a
model's name, the same run settings).

Split from learning_curve.py, which plans, runs and reports; reproduce_curve.py and learning_curve_report.py
read the estimate and the measured rates from here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from reproduce_progress import RUN_OVERHEAD_S

from biobert.errors import UserError

# CPU time per wall second of one fine-tuning run on the 2 shared cores (bench/reproduce_protocol/results/
# reproduce.json, its recorded stages: NER 1.68, RE 1.28); a one-thread worker of several keeps its core busy
# (measured in results/learning_curve.json, "measured": CPU over wall seconds).
CPU_PER_WALL = {"ner": 1.7, "re": 1.3}
# CPU seconds per unit (reproduce_progress's units: training WordPieces x epochs + test WordPieces / 3) of a
# curve run beyond its fixed RUN_OVERHEAD_S, measured on this machine's curve runs (bfloat16 autocast, two
# one-thread workers, evaluation batched by length): bench/results/learning_curve.json, "cost" ->
# "cpu_s_per_unit", over its first 145 timed runs (112 NER; 33 RE, GAD and ChemProt). A work dir's own finished
# runs replace these (rates()).
CURVE_CPU_S_PER_UNIT = {"ner": 1.17e-3, "re": 0.67e-3}


# a model given by its weights' sha256 alone (--bio NAME=sha256:HEX): its finished runs (restored from the
# ledger) are reported, and its other runs wait until a directory with those weights is given
SHA_PREFIX = "sha256:"


def sha_only(model: str | Path) -> bool:
    return str(model).startswith(SHA_PREFIX)


def weights_sha256(model_dir: str | Path) -> str:
    """The sha256 of a model directory's weights file: a Bio re-trained under the same name is not the model its
    finished runs fine-tuned."""
    from biobert.files import file_sha256

    if sha_only(model_dir):
        sha = str(model_dir)[len(SHA_PREFIX) :].lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise UserError(f"{model_dir}: expected sha256: and the 64 hex digits of the model's weights file")
        return sha

    for name in ("model.safetensors", "pytorch_model.bin"):
        if (Path(model_dir) / name).is_file():
            return file_sha256(Path(model_dir) / name)
    raise UserError(f"{model_dir}: no model.safetensors or pytorch_model.bin; expected a Hugging Face BERT directory")


def check_models(plan: dict, old: dict) -> None:
    """Refuse to mix runs of different weights under one model name (this work dir's earlier plan.json)."""
    for name, sha in plan["fingerprints"].items():
        before = old.get("fingerprints", {}).get(name)
        if before and before != sha:
            raise UserError(
                f"{plan['config']['work_dir']}: model '{name}' ({plan['models'][name]}) has other weights than the "
                f"model its finished runs fine-tuned (sha256 {before[:12]} -> {sha[:12]}); give it another name "
                "(--bio NAME=PATH), use a new --work_dir, or delete its runs (runs/*/*/*/" + name + ")"
            )


# what a finished run's result depends on besides its model, data subset, seed and step count (checked run by
# run, check_runs): a curve's runs must share them
RUN_SETTINGS = ("ft_args", "dtype", "device", "data_root")


def check_settings(plan: dict, old: dict) -> None:
    """Refuse to mix runs of other settings into this work dir's curve (its earlier plan.json), and finished
    runs trained for other step counts than this plan's (check_runs)."""
    check_runs(plan)
    if not old.get("config"):
        return
    mine = {**plan["config"], "dtype": plan["dtype"]}
    theirs = {**old["config"], "dtype": old.get("dtype", old["config"].get("dtype", "float32"))}
    diff = [k for k in RUN_SETTINGS if json.dumps(mine.get(k)) != json.dumps(theirs.get(k))]
    if diff:
        raise UserError(
            f"{plan['config']['work_dir']} holds runs with other settings ({', '.join(diff)}: "
            f"{[theirs.get(k) for k in diff]} -> {[mine.get(k) for k in diff]}); use a new --work_dir or the "
            "original settings"
        )


def check_runs(plan: dict) -> None:
    """Every finished run (its results.json) and every interrupted one (its latest checkpoint's run_config.json)
    trained for the epochs this plan gives it: --epochs, --min_steps and --task_min_steps decide them, and a run of
    other ones is another experiment (an interrupted one would resume under another learning-rate schedule). Epochs,
    not steps, are compared: the plan counts a training set's steps from its sentences, the run from its windows (a
    sentence longer than the model's length is split into overlapping windows), so at the same epochs a run may take
    a few more steps than planned (BC5CDR at 100%: 288 for 286) and is still this plan's run."""
    other = []
    for r in plan["runs"]:
        run_dir = Path(r["run_dir"])
        path = run_dir / "results.json"
        if path.is_file():
            got = json.loads(path.read_text())
            epochs = float(got.get("epochs", 0))
            if epochs != float(r["epochs"]):
                other.append(
                    f"{run_dir} ({got.get('steps')} steps of {epochs:g} epochs, planned "
                    f"{r['steps']} of {r['epochs']:g})"
                )
            continue
        latest = run_dir / "checkpoints" / "latest"
        config = run_dir / "checkpoints" / latest.read_text().strip() / "run_config.json" if latest.is_file() else None
        if config is not None and config.is_file():
            epochs = json.loads(config.read_text()).get("run", {}).get("epochs")
            if epochs is not None and float(epochs) != float(r["epochs"]):
                other.append(f"{config.parent} (an interrupted run of {epochs:g} epochs, planned {r['epochs']:g})")
    if other:
        raise UserError(
            f"{len(other)} run(s) trained for other epochs than this plan's --epochs / --min_steps / "
            f"--task_min_steps give them, e.g. {other[0]}; use the original settings, a new --work_dir, or delete "
            "those runs' folders to run them again"
        )


def _timings(work_dir: str | Path) -> list[dict]:
    """The work dir's timed runs, whole runs only: a run resumed from a checkpoint ("resumed_from") timed only
    its last part, so it counts as untimed (priced at the measured rates), not as a fast run."""
    path = Path(work_dir) / "timings.jsonl"
    got = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    return [x for x in got if times_whole_run(x)]


def times_whole_run(rec: dict | None) -> bool:
    """Whether a timing record times a whole run (not no record, nor a resumed run's last part)."""
    return bool(rec) and not rec.get("resumed_from")


def rates(work_dir: str | Path) -> dict[str, float]:
    """CPU seconds per unit: this work dir's finished runs (the fixed cost of each set apart), else the
    measured priors (CURVE_CPU_S_PER_UNIT)."""
    return _rates(_timings(work_dir))


def _rates(done: list[dict]) -> dict[str, float]:
    out = {}
    for kind in ("ner", "re"):
        mine = [r for r in done if r["kind"] == kind]
        units = sum(r["units"] for r in mine)
        cpu = sum(max(0.05 * r["cpu_s"], r["cpu_s"] - RUN_OVERHEAD_S) for r in mine)
        out[kind] = cpu / units if units else CURVE_CPU_S_PER_UNIT[kind]
    return out


def measured(work_dir: str | Path, plan: dict | None = None) -> dict:
    """The work dir's finished runs per kind: count, CPU and wall seconds, CPU seconds per unit (for the report).
    With `plan`, only its runs are counted (outside_plan: the others); the rates still use every timed run."""
    done = _timings(work_dir)
    r = _rates(done)
    if plan is not None:
        done = [x for x in done if _key(x) in {_key(p) for p in plan["runs"]}]
    out = {}
    for kind in ("ner", "re"):
        mine = [x for x in done if x["kind"] == kind]
        if mine:
            out[kind] = {
                "runs": len(mine),
                "cpu_s": sum(x["cpu_s"] for x in mine),
                "wall_s": sum(x["wall_s"] for x in mine),
                "cpu_s_per_unit": r[kind],
            }
    return out


def _key(run: dict) -> tuple[str, float]:
    # a run of the plan: its folder and its units (steps x tokens), which a change of its steps changes
    return run["run_dir"], round(float(run["units"]), 3)


def outside_plan(work_dir: str | Path, plan: dict) -> dict:
    """Timed runs the plan no longer has (set aside when a dataset's steps changed, in the same folder or
    another): their count and CPU."""
    ours = {_key(p) for p in plan["runs"]}
    other = [x for x in _timings(work_dir) if _key(x) not in ours]
    return {"runs": len(other), "cpu_s": sum(x["cpu_s"] for x in other)}


def untimed(plan: dict, work_dir: str | Path) -> dict:
    """Finished runs of the plan with no measured time (restored from the ledger's entries of a report snapshot,
    which kept only each point's totals): their count and their CPU-hours at the measured rates."""
    r = rates(work_dir)
    timed = {_key(x) for x in _timings(work_dir)}
    runs = [x for x in plan["runs"] if (Path(x["run_dir"]) / "results.json").is_file() and _key(x) not in timed]
    return {"runs": len(runs), "cpu_h": sum(RUN_OVERHEAD_S + r[x["kind"]] * x["units"] for x in runs) / 3600}


def estimate_cpu(plan: dict, work_dir: str | Path, workers: int = 1) -> dict:
    """CPU-hours and wall seconds of the runs not finished yet, on this machine: one run at a time on all
    cores, or `workers` one-thread runs at once."""
    r = rates(work_dir)
    cores = os.cpu_count() or 1
    todo = [x for x in plan["runs"] if not (Path(x["run_dir"]) / "results.json").is_file()]
    cpu = {k: sum(RUN_OVERHEAD_S + r[k] * x["units"] for x in todo if x["kind"] == k) for k in r}
    busy = {k: CPU_PER_WALL[k] if workers <= 1 else min(workers, cores) * 0.99 for k in r}
    by_point: dict[str, float] = {}  # where the CPU goes: what to shrink when a plan is over its budget
    for x in todo:
        key = f"{x['task']} {x['fraction']:g}"
        by_point[key] = by_point.get(key, 0.0) + (RUN_OVERHEAD_S + r[x["kind"]] * x["units"]) / 3600
    return {
        "runs_left": len(todo),
        "cpu_h_by_point": by_point,
        "wall_s": sum(cpu[k] / busy[k] for k in cpu),
        "cpu_h": sum(cpu.values()) / 3600,
        "cpu_s_per_unit": r,
        "workers": workers,
    }
