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

import learning_curve_stats as st

LABELS = {"base": "Base", "bio": "Bio"}
DELTA = "Bio − Base"


def _run_score(run: dict) -> tuple[float, str | None] | None:
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
    return float(scores["f1"]), constant


def _counts(run: dict) -> object:
    from finetune.tasks.registry import get_task

    path = Path(run["run_dir"]) / "predictions_test.txt"
    if run["kind"] == "ner":
        return st.ner_counts(path)
    return st.re_counts(path, get_task(run["task"]).dataset.negative)[0]


def collect(plan: dict, n_boot: int = 2000) -> dict:
    out = {}
    for d in plan["datasets"]:
        fractions, pool = {}, {}
        for f in d["fractions"]:
            runs = [r for r in plan["runs"] if r["task"] == d["task"] and r["fraction"] == f]
            scores = {m: {} for m in LABELS}
            constant = {m: {} for m in LABELS}
            for r in runs:
                got = _run_score(r)
                if got is not None:
                    scores[r["model"]][r["seed"]] = got[0]
                    if got[1]:
                        constant[r["model"]][r["seed"]] = got[1]
            pair = st.paired(scores["base"], scores["bio"])
            all_constant = bool(pair["seeds"]) and all(
                s in constant["base"] and s in constant["bio"] for s in pair["seeds"]
            )
            entry = {
                "n_train": runs[0]["n_train"],
                "epochs": runs[0]["epochs"],
                "steps": runs[0]["steps"],
                "scores": scores,
                "constant": {m: v for m, v in constant.items() if v},
                "paired": pair,
                "verdict": "no verdict (constant classifiers)" if all_constant else st.verdict(pair),
            }
            if f >= 1 and pair["seeds"]:
                by = {(r["model"], r["seed"]): r for r in runs}
                base = [_counts(by["base", s]) for s in pair["seeds"]]
                bio = [_counts(by["bio", s]) for s in pair["seeds"]]
                entry["bootstrap"] = st.paired_bootstrap(base, bio, n_boot=n_boot)
                entry["bootstrap"]["verdict"] = st.verdict(entry["bootstrap"])
            fractions[f"{f:g}"] = entry
            pool[f] = (scores["base"], scores["bio"])
        pooled = st.pooled(pool)
        out[d["task"]] = {
            "name": d["name"],
            "kind": d["kind"],
            "n_train": d["n_train"],
            "fractions": fractions,
            "pooled": pooled,
            "verdict": st.verdict(pooled),
        }
    return out


def _band(values: list[float]) -> tuple[float, float]:
    ci = st.t_interval(values)
    return ci["mean"], (ci["hi"] - ci["mean"]) if ci["hi"] is not None else 0.0


def plot(results: dict, path: Path) -> None:
    """F1 vs training fraction (log x), Base and Bio, mean over seeds with its 95% t-band; a panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, r in zip(axes.flat, results.values()):
        for model, color in (("base", "tab:blue"), ("bio", "tab:red")):
            xs, means, halves = [], [], []
            for f, e in r["fractions"].items():
                vals = list(e["scores"][model].values())
                if vals:
                    m, h = _band(vals)
                    xs.append(float(f))
                    means.append(m)
                    halves.append(h)
            if xs:
                ax.plot(xs, means, "o-", color=color, label=LABELS[model])
                lo = [max(0.0, m - h) for m, h in zip(means, halves)]  # F1 lives in [0, 100]
                hi = [min(100.0, m + h) for m, h in zip(means, halves)]
                ax.fill_between(xs, lo, hi, color=color, alpha=0.2)
        ax.set_xscale("log")
        ticks = [float(f) for f in r["fractions"]]
        ax.set_xticks(ticks, [f"{t:.0%}" for t in ticks])
        ax.minorticks_off()
        ax.set_title(f"{r['name']}: {r['verdict']}", fontsize=10)
        ax.set_xlabel("fraction of training sentences")
        ax.set_ylabel("test F1")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ci(x: dict) -> str:
    if x.get("mean") is None:
        return "–"
    if x.get("lo") is None:
        return f"{x['mean']:+.2f} (one seed: no interval)"
    return f"{x['mean']:+.2f} [{x['lo']:+.2f}, {x['hi']:+.2f}]"


def _mean(values: dict) -> str:
    return f"{statistics.fmean(values.values()):.2f}" if values else "–"


def markdown(plan: dict, results: dict, png: str) -> list[str]:
    cfg = plan["config"]
    out = [
        "## Learning curve: Bio − Base with little labelled data",
        "",
        f"Base `{plan['base_model']}`, Bio `{plan['bio_model']}`; seeds {list(cfg['seeds'])}. Seed s draws one "
        f"subset of each training set (fractions nest) and both models train on it; epochs max({cfg['epochs']:g}, "
        f"ceil({cfg['min_steps']} steps / steps per epoch)); trained on train, scored on test. "
        f"{DELTA}: mean over seeds with a 95% t-interval of the paired differences; pooled: each seed's mean "
        "difference over the fractions, then the t-interval over seeds; at 100%, also a paired bootstrap "
        f"({cfg['n_boot']} resamples of the test sentences). A difference counts only when its interval "
        "excludes 0.",
        "",
        f"| Dataset | Fraction | Train | Steps | Base F1 | Bio F1 | {DELTA} [95% CI] | Verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results.values():
        for f, e in r["fractions"].items():
            out.append(
                f"| {r['name']} | {float(f):.0%} | {e['n_train']:,} | {e['steps']:,} | {_mean(e['scores']['base'])} "
                f"| {_mean(e['scores']['bio'])} | {_ci(e['paired'])} | {e['verdict']} |"
            )
            if "bootstrap" in e:
                out.append(
                    f"| {r['name']} | 100%, bootstrap | | | | | {_ci(e['bootstrap'])} | {e['bootstrap']['verdict']} |"
                )
    out += ["", "Per dataset, pooled over its fractions:", ""]
    for r in results.values():
        out.append(f"- **{r['name']}: effect {r['verdict']}** ({DELTA} {_ci(r['pooled'])} F1)")
    for r in results.values():
        for f, e in r["fractions"].items():
            for m, seeds in e["constant"].items():
                out.append(
                    f"- **{r['name']} at {float(f):.0%}: {LABELS[m]} was a constant classifier** in "
                    f"{len(seeds)} of {len(e['scores'][m])} runs ({'; '.join(sorted(set(seeds.values())))}); "
                    "its F1 says nothing about the encoder."
                )
    return [*out, "", f"![F1 vs training fraction]({png})", ""]


def write_report(plan: dict, report_dir: Path) -> dict:
    results = collect(plan, plan["config"].get("n_boot", 2000))
    png = report_dir / "learning_curve.png"
    plot(results, png)
    lines = markdown(plan, results, png.name)
    (report_dir / "learning_curve.md").write_text("\n".join(lines), encoding="utf-8")
    data = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "plan": {k: v for k, v in plan.items() if k != "runs"},
        "runs_planned": len(plan["runs"]),
        "runs_finished": sum((Path(r["run_dir"]) / "results.json").is_file() for r in plan["runs"]),
        "results": results,
    }
    (report_dir / "results").mkdir(parents=True, exist_ok=True)
    (report_dir / "results" / "learning_curve.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {report_dir / 'learning_curve.md'}, {png} and {report_dir / 'results' / 'learning_curve.json'}")
    return data
