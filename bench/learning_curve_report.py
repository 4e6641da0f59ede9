"""The learning curve's report: scores collected from the finished runs, Bio − Base per fraction and pooled
per dataset with 95% intervals (learning_curve_stats), a paired bootstrap over test sentences at 100%,
constant classifiers named, one plot, a markdown section and results/learning_curve.json.

Honesty rules, as bench/reproduce.md's: a difference counts only when its interval excludes 0; a run that
predicted one class for every test example (RE) or no entity at all (NER) is named, and a fraction where
every run of both models did so has no verdict.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import learning_curve_plan as lcp
import learning_curve_stats as st
from learning_curve_plot import plot
from learning_curve_text import bios, budget_pairs, markdown, summary


def run_score(run: dict) -> tuple[float, str | None] | None:
    """(test F1, why the run is a constant classifier or None) of a finished run, else None."""
    path = Path(run["run_dir"]) / "results.json"
    if not path.is_file():
        return None
    scores = json.loads(path.read_text())["scores"]["test"]
    constant = None
    if run["kind"] == "ner" and scores.get("predicted_entities") == 0:
        constant = "no entity predicted"
    preds = Path(run["run_dir"]) / "predictions_test.txt"
    if run["kind"] == "re" and preds.is_file():
        _, labels = st.re_counts(preds, negative="")
        if len(set(labels)) == 1:
            constant = f"class {labels[0]} for every example"
    elif (record := _record(run)) is not None:  # restored from the ledger: its predictions stayed where it ran
        constant = record.get("constant")
    return float(scores["f1"]), constant


def run_steps(run: dict) -> int | None:
    """Optimizer steps a finished run took (its windows, not the plan's sentences, count), else None."""
    path = Path(run["run_dir"]) / "results.json"
    return json.loads(path.read_text()).get("steps") if path.is_file() else None


def _record(run: dict) -> dict | None:
    """A run restored from the curve's ledger (learning_curve_ledger.py): what its predictions said."""
    path = Path(run["run_dir"]) / "ledger.json"
    return json.loads(path.read_text()) if path.is_file() else None


def predicted_classes(run: dict) -> tuple[list[str], list[str]] | None:
    """(classes a finished multi-class RE run predicted, all its classes), from results.json's per-class counts."""
    path = Path(run["run_dir"]) / "results.json"
    per_class = json.loads(path.read_text())["scores"]["test"].get("per_class") if path.is_file() else None
    record = _record(run) if not per_class else None
    if record and record.get("classes"):  # restored from a report snapshot that named the classes predicted
        return sorted(record["predicted_classes"]), sorted(record["classes"])
    if not per_class or len(per_class) < 2:
        return None
    return sorted(c for c, v in per_class.items() if v.get("predicted", 0) > 0), sorted(per_class)


def _classes_note(name: str, fraction: str, runs: list[dict]) -> str | None:
    """A point whose runs, all together, never predicted some relation classes: its micro-F1 is that of the few
    classes learnt at this size (ChemProt's small fractions learn CPR:4 alone), which the reader should know."""
    got = [x for x in map(predicted_classes, runs) if x is not None]
    if not got:
        return None
    every = got[0][1]
    union = sorted(set().union(*(set(p) for p, _ in got)))
    if len(union) == len(every):
        return None
    return (
        f"- **{name} at {float(fraction):.0%}: the {len(got)} runs predicted {len(union)} of the {len(every)} "
        f"relation classes** ({', '.join(union) or 'none'}; never {', '.join(c for c in every if c not in union)}); "
        f"the micro-F1 over all {len(every)} is that of the classes learnt at this size."
    )


def _counts(run: dict) -> object:
    from finetune.tasks.registry import get_task

    path = Path(run["run_dir"]) / "predictions_test.txt"
    if not path.is_file() and (record := _record(run)) and record.get("counts"):
        from learning_curve_ledger import dense

        return dense(record["counts"])
    if run["kind"] == "ner":
        return st.ner_counts(path)
    return st.re_counts(path, get_task(run["task"]).dataset.negative)[0]


def collect(plan: dict, n_boot: int = 2000) -> dict:
    """Per dataset and fraction: every model's test F1 per seed and constant runs; per Bio, its paired difference
    from Base (and at 100% the paired bootstrap), pooled over the fractions, and the verdicts."""
    names = ["base", *bios(plan)]
    out = {}
    for d in plan["datasets"]:
        fractions, pool = {}, {b: {} for b in names[1:]}
        for f in d["fractions"]:
            runs = [r for r in plan["runs"] if r["task"] == d["task"] and r["fraction"] == f]
            scores = {m: {} for m in names}
            constant = {m: {} for m in names}
            for r in runs:
                got = run_score(r)
                if got is not None:
                    scores[r["model"]][r["seed"]] = got[0]
                    if got[1]:
                        constant[r["model"]][r["seed"]] = got[1]
            entry = {
                "n_train": runs[0]["n_train"],
                "epochs": runs[0]["epochs"],
                "steps": runs[0]["steps"],  # planned
                "steps_taken": sorted({n for r in runs if (n := run_steps(r)) is not None}),
                "scores": scores,
                "constant": {m: v for m, v in constant.items() if v},
                "classes_note": _classes_note(d["name"], f"{f:g}", runs),
                "paired": {},
                "verdict": {},
            }
            by = {(r["model"], r["seed"]): r for r in runs}
            for b in names[1:]:
                pair = st.paired(scores["base"], scores[b])
                entry["paired"][b] = pair
                entry["verdict"][b] = _point_verdict(pair, constant, "base", b)
                if f >= 1 and pair["seeds"]:
                    base = [_counts(by["base", s]) for s in pair["seeds"]]
                    bio = [_counts(by[b, s]) for s in pair["seeds"]]
                    boot = st.paired_bootstrap(base, bio, n_boot=n_boot)
                    entry.setdefault("bootstrap", {})[b] = {**boot, "verdict": st.verdict(boot)}
                pool[b][f] = (scores["base"], scores[b], entry["verdict"][b] == st.CONSTANT)
            fractions[f"{f:g}"] = entry
        pooled = {b: _pool(pool[b]) for b in names[1:]}
        out[d["task"]] = {
            "name": d["name"],
            "kind": d["kind"],
            "n_train": d["n_train"],
            "fractions": fractions,
            "pooled": {b: p for b, (p, _) in pooled.items()},
            "verdict": {b: v for b, (_, v) in pooled.items()},
            "budgets": _budgets(plan, fractions),
        }
    return out


def _point_verdict(pair: dict, constant: dict, a: str, b: str) -> str:
    """A point's verdict: no verdict when every paired run of both models was a constant classifier (their F1
    says nothing about the encoders), else the interval's."""
    seeds = pair["seeds"]
    if seeds and all(s in constant.get(a, {}) and s in constant.get(b, {}) for s in seeds):
        return st.CONSTANT
    return st.verdict(pair)


def _pool(points: dict[float, tuple[dict, dict, bool]]) -> tuple[dict, str]:
    """(pooled difference, its verdict) over a dataset's fractions, leaving out the points where both models
    were constant classifiers (a 0 there would pull the mean toward no effect); no verdict when only those
    points have paired runs."""
    informative = {f: (x, y) for f, (x, y, const) in points.items() if not const}
    pooled = st.pooled(informative)
    if not pooled["seeds"] and any(const and set(x) & set(y) for x, y, const in points.values()):
        return pooled, st.CONSTANT
    return pooled, st.verdict(pooled)


def _budgets(plan: dict, fractions: dict) -> dict:
    """The larger budget's Bio against the smaller one's, paired over seeds per fraction and pooled: what more
    pre-training on the same corpus changed."""
    out = {}
    for small, large in budget_pairs(plan):
        pool, points = {}, {}
        for f, e in fractions.items():
            pair = st.paired(e["scores"][small], e["scores"][large])
            points[f] = {**pair, "verdict": _point_verdict(pair, e.get("constant", {}), small, large)}
            pool[float(f)] = (e["scores"][small], e["scores"][large], points[f]["verdict"] == st.CONSTANT)
        pooled, verdict = _pool(pool)
        out[f"{large}-{small}"] = {"pair": [small, large], "fractions": points, "pooled": pooled, "verdict": verdict}
    return out


def cost(plan: dict, measured: dict) -> dict:
    """The whole plan's CPU-hours at the rates measured so far: its finished runs' CPU time (`measured`, from
    learning_curve_plan.measured) plus the estimate of the rest, against the budget it was sized to; the CPU of
    timed runs the plan no longer has is kept apart."""
    work = plan["config"]["work_dir"]
    done = sum(m["cpu_s"] for m in measured.values()) / 3600
    other = lcp.outside_plan(work, plan)
    left = lcp.estimate_cpu(plan, work, plan["config"].get("workers") or 1)
    untimed = lcp.untimed(plan, work)  # restored from a report snapshot that kept no run's time: priced, not measured
    return {
        "cpu_h_finished_runs": done,
        "runs_finished_untimed": untimed["runs"],
        "cpu_h_finished_untimed_estimate": untimed["cpu_h"],
        "cpu_h_remaining_estimate": left["cpu_h"],
        "cpu_h_plan_estimate": done + untimed["cpu_h"] + left["cpu_h"],
        "budget_cpu_h": plan["config"].get("budget_cpu_h"),
        "runs_left": left["runs_left"],
        "cpu_s_per_unit": left["cpu_s_per_unit"],
        "cpu_h_left_by_point": left["cpu_h_by_point"],
        "runs_outside_plan": other["runs"],  # timed runs set aside (their steps changed): spent, not in the plan
        "cpu_h_outside_plan": other["cpu_s"] / 3600,
    }


def write_report(plan: dict, report_dir: Path) -> dict:
    results = collect(plan, plan["config"].get("n_boot", 2000))
    finished = sum((Path(r["run_dir"]) / "results.json").is_file() for r in plan["runs"])
    png = report_dir / "learning_curve.png"
    plot(results, png)
    lines = markdown(plan, results, png.name, finished)
    (report_dir / "learning_curve.md").write_text("\n".join(lines), encoding="utf-8")
    data = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "plan": {k: v for k, v in plan.items() if k != "runs"},
        "runs_planned": len(plan["runs"]),
        "runs_finished": finished,
        "measured": (measured := lcp.measured(plan["config"]["work_dir"], plan)),
        "cost": cost(plan, measured),
        "results": results,
        "summary": summary(plan, results, finished),
    }
    (report_dir / "results").mkdir(parents=True, exist_ok=True)
    (report_dir / "results" / "learning_curve.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {report_dir / 'learning_curve.md'}, {png} and {report_dir / 'results' / 'learning_curve.json'}")
    import learning_curve_ledger

    if (path := learning_curve_ledger.path_for(plan["config"].get("ledger", ""), report_dir)) is not None:
        print(f"{path}: {learning_curve_ledger.update(plan, path)} finished runs of this curve in its ledger")
    return data
