"""The learning curve's ledger: every finished run's scores, committed beside the report
(`results/learning_curve_runs.jsonl`), so a curve of many CPU-hours outlives the machine and the work dir it ran
in. A run on a new machine whose ledger entry matches it exactly is restored instead of run again; only what is
left runs.

A ledger entry matches a planned run when all of these are equal (`key`): the dataset, fraction, seed, steps and
epochs, the run settings (dtype, device, run_task flags), the sha256 of the model's weights and the sha256 of the
run's training and test files. A Bio pre-trained again on another machine is restored only where its weights are
bit-identical to the ones the ledger's runs fine-tuned; otherwise its runs run again and the dry run says how
many ledger entries it could not use and why.

An entry holds the run's results.json, what the report reads from its predictions (the constant-classifier
check; at 100 %, the per-sentence counts of the paired bootstrap), and its measured CPU and wall seconds.

    .venv/bin/python bench/learning_curve_ledger.py --import_report bench/results/learning_curve.json \\
        --work_dir runs/learning_curve      # entries from a report snapshot written before the ledger existed
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import json
import sys
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from biobert.errors import UserError, exit_on_user_error  # noqa: E402

LEDGER_NAME = "learning_curve_runs.jsonl"
RECORD = "ledger.json"  # in a run folder: what the report reads when the run's predictions are not there
KEY_FIELDS = (
    *("task", "fraction", "seed", "steps", "epochs"),
    *("dtype", "device", "ft_args", "model_sha256", "data_sha256"),
)


def default_path(report_dir: str | Path) -> Path:
    return Path(report_dir) / "results" / LEDGER_NAME


def path_for(ledger: str, report_dir: str | Path) -> Path | None:
    """The ledger of a curve's --ledger setting: "" is REPORT_DIR/results/learning_curve_runs.jsonl, "none" none."""
    if ledger == "none":
        return None
    return Path(ledger) if ledger else default_path(report_dir)


def data_sha256(run: dict) -> str:
    """One sha256 over the run's training and test files (a subset's sampled training file; the test file it
    links to), so a changed dataset or sampler is another run."""
    return _data_sha256(run["task"], str(run["data_dir"]))


@functools.cache
def _data_sha256(task: str, data_dir: str) -> str:
    # every model of a (dataset, fraction, seed) point reads one folder, and a subset is written once: hashed once
    from biobert.files import file_sha256
    from finetune.tasks.registry import get_task

    files = get_task(task).splits(Path(data_dir))
    parts = [f"{split}:{file_sha256(files[split])}" for split in ("train", "test") if split in files]
    if len(parts) < 2:
        raise UserError(f"{data_dir}: no train and test files for {task}; expected the task's layout")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def key(run: dict, plan: dict, data_sha: str) -> dict:
    """What a finished run's score depends on, for matching: see the module's docstring."""
    return {
        "task": run["task"],
        "fraction": float(run["fraction"]),
        "seed": int(run["seed"]),
        "steps": int(run["steps"]),
        "epochs": float(run["epochs"]),
        "dtype": plan["dtype"],
        "device": plan["config"]["device"],
        "ft_args": list(plan["config"].get("ft_args", [])),
        "model_sha256": plan["fingerprints"][run["model"]],
        "data_sha256": data_sha,
    }


def _key_id(k: dict) -> str:
    return json.dumps([k[f] for f in KEY_FIELDS])


def read(path: str | Path) -> dict[str, dict]:
    """The ledger's entries by key; a line that is not an entry is an error naming the file and line."""
    path = Path(path)
    out: dict[str, dict] = {}
    if not path.is_file():
        return out
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            out[_key_id(entry["key"])] = entry
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(
                f"{path}:{i}: not a ledger entry ({type(e).__name__}: {e}); restore the file from git or delete "
                "that line (its run then runs again)"
            ) from None
    return out


def write(path: str | Path, entries: dict[str, dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    lines = (json.dumps(_with_packed_counts(entries[k]), sort_keys=True) + "\n" for k in sorted(entries))
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(path)


def _with_packed_counts(entry: dict) -> dict:
    """The entry with its counts packed (_pack), whatever form they came in: a record restored from an older
    ledger holds JSON rows, which would otherwise go back into the ledger as they came."""
    if "counts" not in entry or "packed" in entry["counts"]:
        return entry
    return {**entry, "counts": _pack(dense(entry["counts"]))}


def _pack(counts) -> dict:
    """Per-sentence (correct, predicted, gold) counts as little-endian int32, zlib-compressed and base64: a
    100 % NER run's ~5,000 test sentences take ~4 KB, where JSON rows took ~30 KB and 60 such runs pushed the
    committed ledger past 2 MB."""
    import numpy as np

    raw = np.ascontiguousarray(counts, dtype="<i4").tobytes()
    return {"n": len(counts), "packed": base64.b64encode(zlib.compress(raw, 9)).decode("ascii")}


def dense(counts: dict):
    """The (sentences, 3) counts of an entry: packed (_pack), or the JSON rows older ledgers hold (one per
    sentence with a nonzero count)."""
    import numpy as np

    if "packed" in counts:
        raw = zlib.decompress(base64.b64decode(counts["packed"]))
        return np.frombuffer(raw, dtype="<i4").reshape(counts["n"], 3).astype(np.int64)
    out = np.zeros((counts["n"], 3), dtype=np.int64)
    for i, *c in counts["rows"]:
        out[i] = c
    return out


def _timings(work_dir: str | Path) -> dict[tuple[str, float], dict]:
    from learning_curve_plan import _key, _timings

    return {_key(x): x for x in _timings(work_dir)}


def entry_of(run: dict, plan: dict, timing: dict | None) -> dict | None:
    """A finished run's ledger entry, read from its folder (its record when it was itself restored)."""
    import learning_curve_report as lcr
    from learning_curve_plan import times_whole_run

    run_dir = Path(run["run_dir"])
    if not (run_dir / "results.json").is_file():
        return None
    results = json.loads((run_dir / "results.json").read_text())
    record_path = run_dir / RECORD
    if record_path.is_file():  # restored: its entry, with this plan's key (the same values)
        record = json.loads(record_path.read_text())
    else:
        got = lcr.run_score(run)
        record = {"constant": got[1] if got else None}
        if run["fraction"] >= 1 and (run_dir / "predictions_test.txt").is_file():
            record["counts"] = _pack(lcr._counts(run))
        if times_whole_run(timing):
            record["timing"] = {k: timing[k] for k in ("cpu_s", "wall_s", "units")}
    return {
        **{k: v for k, v in record.items() if k not in ("key", "results", "model", "restored_from")},
        "key": key(run, plan, data_sha256(run)),
        "model": run["model"],
        "results": results,
    }


def update(plan: dict, path: str | Path) -> int:
    """Add (or refresh) every finished run of the plan in the ledger at `path`; returns the entries written."""
    if "fingerprints" not in plan:  # a plan that never ran (its models unhashed): nothing finished
        return 0
    entries = read(path)
    timings = _timings(plan["config"]["work_dir"])
    from learning_curve_plan import _key

    n = 0
    for run in plan["runs"]:
        e = entry_of(run, plan, timings.get(_key(run)))
        if e is not None:
            entries[_key_id(e["key"])] = e
            n += 1
    if n:
        write(path, entries)
    return n


def add(plan: dict, path: str | Path, rec: dict) -> None:
    """One run just finished (learning_curve_exec's timing record): its entry joins the ledger at once, so a
    curve stopped at any point (a session that ends, a machine taken back) has every finished run in it."""
    run = next((r for r in plan["runs"] if r["run_dir"] == rec.get("run_dir")), None)
    e = entry_of(run, plan, rec) if run is not None else None
    if e is not None:
        write(path, {**read(path), _key_id(e["key"]): e})


def restore(plan: dict, path: str | Path) -> dict:
    """Every planned run not finished here whose entry the ledger holds gets its folder back (results.json and
    the record the report reads); its timing joins the work dir's timings. Returns the counts, and how many
    entries of the same runs were not used because the model's weights (or the data) differ."""
    entries = read(path)
    if not entries:
        return {"restored": 0, "other_weights": {}, "other_data": 0}
    work_dir = Path(plan["config"]["work_dir"])
    by_run: dict[tuple, list[dict]] = {}
    for e in entries.values():
        k = e["key"]
        by_run.setdefault((k["task"], k["fraction"], k["seed"], k["steps"], e.get("model")), []).append(e)
    restored, other_weights, other_data = 0, {}, 0
    for run in plan["runs"]:
        run_dir = Path(run["run_dir"])
        if (run_dir / "results.json").is_file() or (run_dir / "checkpoints").exists():
            continue
        mine = key(run, plan, data_sha256(run))
        e = entries.get(_key_id(mine))
        if e is None:
            for other in by_run.get((run["task"], float(run["fraction"]), run["seed"], run["steps"], run["model"]), []):
                if other["key"]["model_sha256"] != mine["model_sha256"]:
                    name = f"{run['model']} ({other['key']['model_sha256'][:12]})"
                    other_weights[name] = other_weights.get(name, 0) + 1
                elif other["key"]["data_sha256"] != mine["data_sha256"]:
                    other_data += 1
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {k: v for k, v in e.items() if k != "results"}
        (run_dir / RECORD).write_text(json.dumps({**record, "restored_from": str(path)}, indent=1) + "\n")
        (run_dir / "results.json").write_text(json.dumps(e["results"], indent=1) + "\n")
        if e.get("timing"):
            with (work_dir / "timings.jsonl").open("a") as fh:
                fh.write(json.dumps({**e["timing"], "run_dir": str(run_dir), "kind": run["kind"], "restored": True}))
                fh.write("\n")
        restored += 1
    return {"restored": restored, "other_weights": other_weights, "other_data": other_data}


def print_restore(got: dict, path: str | Path) -> None:
    if got["restored"]:
        print(f"  restored {got['restored']} finished run(s) from the ledger {path}", flush=True)
    for name, n in got["other_weights"].items():
        print(
            f"  ledger {path}: {n} run(s) of {name} fine-tuned other weights than this {name.split()[0]}; "
            "they run again (a Bio pre-trained again matches only when its weights are bit-identical)",
            flush=True,
        )
    if got["other_data"]:
        print(f"  ledger {path}: {got['other_data']} run(s) of other training or test files; they run again")


# ------------------------------------------------------------------------------- entries from a report


def import_report(report: dict, plan: dict) -> dict[str, dict]:
    """Ledger entries for the runs a report snapshot (results/learning_curve.json) scored: its per-seed test F1
    and constant-classifier reasons under its plan's fingerprints, steps and settings; data_sha256 from this
    plan's subsets (the same seeded sampler: learning_curve_subsets.sample_indices). A point whose classes note
    says its runs together predicted one class, none of them constant, gives each run that one class."""
    rp = report["plan"]
    settings = {"dtype": rp["dtype"], "device": rp["config"]["device"], "ft_args": list(rp["config"]["ft_args"])}
    out = {}
    for run in plan["runs"]:
        point = report["results"].get(run["task"], {}).get("fractions", {}).get(f"{run['fraction']:g}")
        if point is None or point["steps"] != run["steps"] or float(point["epochs"]) != float(run["epochs"]):
            continue
        f1 = _by_seed(point["scores"].get(run["model"], {}), run["seed"])
        sha = rp.get("fingerprints", {}).get(run["model"])
        if f1 is None or sha is None or run["fraction"] >= 1:  # 100 %: the bootstrap needs the predictions
            continue
        old_plan = {"dtype": settings["dtype"], "config": settings, "fingerprints": {run["model"]: sha}}
        k = key(run, old_plan, data_sha256(run))
        constant = _by_seed(point.get("constant", {}).get(run["model"], {}), run["seed"])
        scores = {"f1": f1, **({"predicted_entities": 0} if constant == "no entity predicted" else {})}
        classes = _one_class(point)
        out[_key_id(k)] = {
            "key": k,
            "model": run["model"],
            "constant": constant,
            **({"predicted_classes": [classes[0]], "classes": classes[1]} if classes and not constant else {}),
            "results": {"steps": run["steps"], "epochs": run["epochs"], "scores": {"test": scores}},
            "source": f"report of {report['date']} (per-seed test F1; predictions not kept)",
        }
    return out


def _by_seed(values: dict, seed: int):
    return values.get(str(seed), values.get(seed))  # str keys once written as JSON


def _one_class(point: dict) -> tuple[str, list[str]] | None:
    """(the one class, all classes) from a classes note of the form '... predicted 1 of the N relation classes
    (X; never A, B, ...)', when no run of the point was constant."""
    import re

    note = point.get("classes_note") or ""
    m = re.search(r"predicted 1 of the \d+ relation classes\*\* \(([^;]+); never ([^)]+)\)", note)
    if not m or any(point.get("constant", {}).values()):
        return None
    one = m.group(1).strip()
    return one, sorted([one, *(c.strip() for c in m.group(2).split(","))])


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    import learning_curve
    from learning_curve_subsets import prepare_subsets

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--import_report", required=True, help="a report snapshot, results/learning_curve.json")
    p.add_argument("--work_dir", required=True, help="where the subsets are written (their sha256s are the key)")
    p.add_argument("--data_root", default=learning_curve.CurveConfig().data_root)
    p.add_argument("--ledger", default=str(default_path(REPO / "bench")))
    a = p.parse_args(argv)
    report = json.loads(Path(a.import_report).read_text())
    c = report["plan"]["config"]
    cfg = learning_curve.CurveConfig(
        base_model=learning_curve.default_base_model(),
        bios={k: v for k, v in report["plan"]["models"].items() if k != "base"},
        data_root=a.data_root,
        work_dir=a.work_dir,
        datasets=tuple(c["datasets"]),
        ner_fractions=tuple(c["ner_fractions"]),
        re_fractions=tuple(c["re_fractions"]),
        seeds=tuple(c["seeds"]),
        epochs=c["epochs"],
        min_steps=c["min_steps"],
        task_min_steps=c.get("task_min_steps", {}),
        ft_args=tuple(c["ft_args"]),
    )
    plan = learning_curve.build_plan(cfg)
    prepare_subsets(plan, cfg.data_root, cfg.work_dir)
    entries = read(a.ledger)
    new = {k: v for k, v in import_report(report, plan).items() if k not in entries}
    write(a.ledger, {**entries, **new})
    print(f"{a.ledger}: {len(new)} entries from {a.import_report} ({len(entries)} already there)")
    return len(new)


if __name__ == "__main__":
    main()
