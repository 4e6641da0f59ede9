"""The learning curve's words: model and budget names, the markdown section and the summary sentences, built
from the verdicts bench/learning_curve_report.py collects (a difference counts only beyond its interval)."""

from __future__ import annotations

import statistics

import learning_curve_stats as st


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


def _steps(entry: dict) -> str:
    """Optimizer steps the finished runs took ("286–288" where they differ), else the planned steps. A run
    counts its windows and the plan its sentences, so a long sentence split in two can add a step."""
    taken = entry.get("steps_taken") or [entry["steps"]]
    return f"{taken[0]:,}" if len(taken) == 1 else f"{taken[0]:,}–{taken[-1]:,}"


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
        "trained on train, scored on test. Steps: the optimizer steps the runs took (the plan counts "
        "sentences, a run its windows, so a sentence longer than the model can add a step). Bio − Base: mean "
        "over seeds with a 95% t-interval of the paired "
        "differences (the F1 columns: each model's mean over the same seeds); pooled: each seed's mean difference "
        "over the fractions, then the t-interval over seeds; at "
        f"100%, also a paired bootstrap ({cfg['n_boot']} resamples of the test sentences). A difference counts "
        "only when its interval excludes 0."
        + (
            ""
            if finished == len(plan["runs"])
            else " Pooled over the fractions finished for the most seeds while the curve is unfinished (every "
            "seed then averages the same fractions)."
        ),
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
                    f"| {r['name']} | {float(f):.0%} | {e['n_train']:,} | {_steps(e)} | {seeds} of "
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
