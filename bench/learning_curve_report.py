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
import statistics
from pathlib import Path

import learning_curve_plan as lcp
import learning_curve_stats as st
from learning_curve_plot import plot


def label(name: str) -> str:
    """Base, Bio, or a named Bio: bio_10M -> "Bio 10M"."""
    if name == "base":
        return "Base"
    return "Bio" if name == "bio" else "Bio " + name.removeprefix("bio_").removeprefix("bio")


def delta(name: str) -> str:
    return f"{label(name)} − Base"


def bios(plan: dict) -> list[str]:
    """The curve's Bio models in plan order (a plan of one Bio before named Bios: just "bio")."""
    return [m for m in plan.get("models", {"base": 0, "bio": 0}) if m != "base"]


def _tokens(name: str) -> float | None:
    """A budget-named Bio's pre-training tokens (bio_10.0M -> 1.0e7), else None."""
    body = name.removeprefix("bio_")
    try:
        return float(body[:-1]) * 1e6 if body.endswith("M") else float(body)
    except ValueError:
        return None


def budget_pairs(plan: dict) -> list[tuple[str, str]]:
    """(smaller, larger) for each pair of consecutive pre-training budgets among the curve's Bios (named by
    their tokens, on the same corpus: bio_2.0M and bio_10.0M, not bio_2.0M_pubmed_only)."""
    sized = sorted((t, b) for b in bios(plan) if (t := _tokens(b)) is not None)
    return [(a, b) for (_, a), (_, b) in zip(sized, sized[1:])]


def budget_delta(pair: tuple[str, str]) -> str:
    return f"{label(pair[1])} − {label(pair[0])}"


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
                "steps": runs[0]["steps"],
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


def _ci(x: dict) -> str:
    if x.get("mean") is None:
        return "–"
    if x.get("lo") is None:
        return f"{x['mean']:+.2f} (one seed: no interval)"
    return f"{x['mean']:+.2f} [{x['lo']:+.2f}, {x['hi']:+.2f}]"


def _mean(values: dict, seeds: list) -> str:
    """A model's mean F1 over the seeds of the pair it is compared in (the ones the difference is over)."""
    got = [values[s] if s in values else values[str(s)] for s in seeds]
    return f"{statistics.fmean(got):.2f}" if got else "–"


def summary(plan: dict, results: dict, finished: int) -> list[str]:
    """What the curve says, per Bio, in sentences built from the verdicts (a difference counts only beyond
    its interval)."""
    out = []
    planned = len(plan["runs"])
    state = f"{finished} of {planned} runs finished" + ("" if finished == planned else ", curve unfinished")
    for b in bios(plan):
        said = {v: [] for v in GROUPS}
        for r in results.values():
            said[_group(r["pooled"][b], r["verdict"][b])].append(_pooled_text(r["name"], r["pooled"][b]))
        points = [
            e["verdict"][b]
            for r in results.values()
            for e in r["fractions"].values()
            if e["paired"][b]["n"] >= 2 and e["verdict"][b] in st.VERDICTS
        ]
        text = f"**Learning curve, {delta(b)}** ({state}): pooled over each dataset's fractions, the effect is "
        text += _verdicts(said)
        text += (
            f" Point by point (dataset x fraction, at least 2 seeds, constant classifiers left out): shown at "
            f"{points.count('shown')} of {len(points)}, reversed at {points.count('reversed')}."
        )
        out.append(text)
    for pair in budget_pairs(plan):
        out.append(_budget_summary(pair, results))
    return out


# a dataset's pooled result is grouped by its verdict; "no data": no seed has paired runs yet
GROUPS = (*st.VERDICTS, st.PENDING, st.CONSTANT, "no data")


def _group(pooled: dict, verdict: str) -> str:
    return "no data" if not pooled["seeds"] and verdict != st.CONSTANT else verdict


def _said(what: str, verdict: str) -> str:
    """ "effect shown", "gain not shown", "effect pending"; a verdict that is not about the effect as it is."""
    return f"{what} {verdict}" if verdict in (*st.VERDICTS, st.PENDING) else verdict


def _pooled_text(name: str, p: dict) -> str:
    if not p["seeds"]:
        return name
    where = ", ".join(f"{f:.0%}" for f in p["fractions"])
    return f"{name} {_ci(p)} at {where} over {p['n']} seed{'s' if p['n'] != 1 else ''}"


def _budget_summary(pair: tuple[str, str], results: dict) -> str:
    key = f"{pair[1]}-{pair[0]}"
    said = {v: [] for v in GROUPS}
    for r in results.values():
        b = r["budgets"][key]
        said[_group(b["pooled"], b["verdict"])].append(_pooled_text(r["name"], b["pooled"]))
    return (
        f"**More pre-training, {budget_delta(pair)}** (the same corpus, {_tokens(pair[1]) / _tokens(pair[0]):g}x "
        "the tokens): pooled over each dataset's fractions, a gain is " + _verdicts(said)
    )


def _verdicts(said: dict[str, list[str]]) -> str:
    """ "**shown on k of n datasets** (...), not shown on ... and reversed on ... ." over the datasets with a
    verdict, then those without one: constant classifiers, one seed so far, no paired runs yet."""
    judged = sum(len(said[v]) for v in st.VERDICTS)
    text = (
        f"**shown on {len(said['shown'])} of {judged} datasets**"
        + (f" ({'; '.join(said['shown'])})" if said["shown"] else "")
        + f", not shown on {len(said['not shown'])}"
        + (f" ({'; '.join(said['not shown'])})" if said["not shown"] else "")
        + f" and reversed on {len(said['reversed'])}"
        + (f" ({'; '.join(said['reversed'])})" if said["reversed"] else "")
        + "."
    )
    if said[st.CONSTANT]:
        text += f" No verdict on {', '.join(said[st.CONSTANT])}: every paired run of both models predicted one class."
    if said[st.PENDING]:
        text += f" One seed so far, no interval: {'; '.join(said[st.PENDING])}."
    return text + (f" No paired runs yet: {', '.join(said['no data'])}." if said["no data"] else "")


def markdown(plan: dict, results: dict, png: str, finished: int | None = None) -> list[str]:
    cfg = plan["config"]
    names = bios(plan)
    models = plan.get("models", {"base": plan["base_model"], "bio": plan["bio_model"]})
    out = [
        "## Learning curve: Bio − Base with little labelled data",
        "",
        "; ".join(f"{label(m)} `{p}`" for m, p in models.items())
        + f"; seeds {list(cfg['seeds'])}. Seed s draws one subset of each training set (fractions nest) and every "
        f"model trains on it; epochs max({cfg['epochs']:g}, ceil({cfg['min_steps']} steps / steps per epoch))"
        + "".join(
            f"; {d['name']}: at least {cfg['task_min_steps'][d['task']]} steps (fewer left every model a constant "
            "classifier)"
            for d in plan["datasets"]
            if d["task"] in (cfg.get("task_min_steps") or {})
        )
        + "; "
        "trained on train, scored on test. Bio − Base: mean over seeds with a 95% t-interval of the paired "
        "differences (the F1 columns: each model's mean over the same seeds); pooled: each seed's mean difference "
        "over the fractions, then the t-interval over seeds; at "
        f"100%, also a paired bootstrap ({cfg['n_boot']} resamples of the test sentences). A difference counts "
        "only when its interval excludes 0. Pooled over the fractions finished for the most seeds while the "
        "curve is unfinished (every seed then averages the same fractions).",
        "",
    ]
    if finished is not None:
        out += [p + "\n" for p in summary(plan, results, finished)]
    for b in names:
        out += [
            f"### {label(b)}" if len(names) > 1 else "",
            "",
            f"| Dataset | Fraction | Train | Steps | Seeds | Base F1 | {label(b)} F1 | {delta(b)} [95% CI] | Verdict |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in results.values():
            for f, e in r["fractions"].items():
                seeds = len(e["paired"][b]["seeds"])
                out.append(
                    f"| {r['name']} | {float(f):.0%} | {e['n_train']:,} | {e['steps']:,} | {seeds} of "
                    f"{len(cfg['seeds'])} | {_mean(e['scores']['base'], e['paired'][b]['seeds'])} | "
                    f"{_mean(e['scores'][b], e['paired'][b]['seeds'])} | "
                    f"{_ci(e['paired'][b])} | {e['verdict'][b] if seeds else '–'} |"
                )
                if b in e.get("bootstrap", {}):
                    boot = e["bootstrap"][b]
                    out.append(f"| {r['name']} | 100%, bootstrap | | | | | | {_ci(boot)} | {boot['verdict']} |")
        out += ["", "Per dataset, pooled over its fractions:", ""]
        for r in results.values():
            out.append(f"- **{r['name']}: {_said('effect', r['verdict'][b])}** ({delta(b)} {_ci(r['pooled'][b])} F1)")
        out.append("")
    for pair in budget_pairs(plan):
        key = f"{pair[1]}-{pair[0]}"
        out += [
            f"### {budget_delta(pair)}: more pre-training on the same corpus",
            "",
            f"| Dataset | Fraction | Seeds | {label(pair[0])} F1 | {label(pair[1])} F1 | {budget_delta(pair)} [95% CI] "
            "| Verdict |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in results.values():
            for f, p in r["budgets"][key]["fractions"].items():
                e = r["fractions"][f]
                out.append(
                    f"| {r['name']} | {float(f):.0%} | {p['n']} of {len(cfg['seeds'])} | "
                    f"{_mean(e['scores'][pair[0]], p['seeds'])} | {_mean(e['scores'][pair[1]], p['seeds'])} | "
                    f"{_ci(p)} | "
                    f"{p['verdict'] if p['n'] else '–'} |"
                )
        out += ["", "Per dataset, pooled over its fractions:", ""]
        for r in results.values():
            b = r["budgets"][key]
            out.append(f"- **{r['name']}: {_said('gain', b['verdict'])}** ({budget_delta(pair)} {_ci(b['pooled'])} F1)")
        out.append("")
    for r in results.values():
        for f, e in r["fractions"].items():
            for m, seeds in e["constant"].items():
                out.append(
                    f"- **{r['name']} at {float(f):.0%}: {label(m)} was a constant classifier** in "
                    f"{len(seeds)} of {len(e['scores'][m])} runs ({'; '.join(sorted(set(seeds.values())))}); "
                    "its F1 says nothing about the encoder."
                )
            if e.get("classes_note"):
                out.append(e["classes_note"])
    return [*out, "", f"![F1 vs training fraction]({png})", ""]


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
