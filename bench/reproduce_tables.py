"""The fine-tuning protocol's tables in bench/reproduce.md: scores collected from each run's results.json, Bio - Base
per seed, finetune/summarize.py's tables with a Bio - Base column, the per-dataset bar plot and the
constant-classifier notes (bench/reproduce_report.py writes the rest of the report).

Scores come from each fine-tuning run's own results.json (`seed_<n>/`, or `fold_<kk>/seed_<n>/` for GAD and
EU-ADR), so a stopped plan still reports what finished. Per seed, a fold-split dataset's score is the mean
over its folds; Bio - Base is computed per seed (same seed, same data order, same folds) and reported as
the mean and sample standard deviation (n - 1) of those paired differences.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from finetune.summarize import METRICS, PLOT_METRIC, Entry, table
from finetune.tasks.registry import summary_rows

DATASETS = summary_rows()  # the paper's tables: table -> [(task, row name)] in its order

NAMES = {task: name for rows in DATASETS.values() for task, name in rows}
LABELS = {"base": "Base", "bio": "Bio"}
DELTA = "Bio − Base"
METRIC_NAME = {"f1": "F1", "strict_acc": "strict accuracy"}


def _leaf(run_dir: Path, fold: int | None, seed: int) -> dict | None:
    path = run_dir / (f"fold_{fold:02d}" if fold else "") / f"seed_{seed}" / "results.json"
    if not path.is_file():
        return None
    scores = json.loads(path.read_text()).get("scores", {}).get("test") or {}
    return {k: v for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _constant(score: dict) -> str | None:
    """ "positive" / "negative" when a binary run predicted that class for every test example (its F1 is then
    the class rate's, whatever the encoder), else None; multi-class scores carry no tn and are not judged."""
    if not {"tp", "fp", "tn", "fn"} <= set(score):
        return None
    if score["tn"] == 0 and score["fn"] == 0:
        return "positive"
    if score["tp"] == 0 and score["fp"] == 0:
        return "negative"
    return None


def _mean_std(per_seed: dict[int, dict], keys: list[str]) -> dict:
    keys = [k for k in keys if per_seed and all(k in v for v in per_seed.values())]
    values = {k: [v[k] for v in per_seed.values()] for k in keys}
    return {
        "n": len(per_seed),
        "mean": {k: statistics.fmean(v) for k, v in values.items()},
        "std": {k: statistics.stdev(v) if len(v) > 1 else None for k, v in values.items()},
    }


def collect(plan: dict) -> tuple[dict, int, int]:
    """({task: per-model and Bio - Base scores}, finished runs, planned runs)."""
    out, finished, planned = {}, 0, 0
    order = {task: i for i, task in enumerate(NAMES)}  # the paper's: NER, RE, QA
    every = sorted(plan["groups"] + plan.get("earlier_groups", []), key=lambda g: order.get(g["task"], len(order)))
    for task in dict.fromkeys(g["task"] for g in every):
        groups = [g for g in every if g["task"] == task]
        kind, folds = groups[0]["kind"], groups[0]["folds"] or [None]
        keys = [key for _, key in METRICS[kind]]
        leaves = {}
        for g in groups:
            leaves[g["model"]] = {
                s: {f: sc for f in folds if (sc := _leaf(Path(g["run_dir"]), f, s)) is not None} for s in plan["seeds"]
            }
            planned += len(plan["seeds"]) * len(folds)
            finished += sum(len(v) for v in leaves[g["model"]].values())
        entry = {"kind": kind, "name": NAMES.get(task, task), "folds": groups[0]["folds"], "models": {}}
        for model, by_seed in leaves.items():
            per_seed = {
                s: {k: statistics.fmean(f[k] for f in fs.values()) for k in keys if all(k in f for f in fs.values())}
                for s, fs in by_seed.items()
                if fs
            }
            runs = [f for fs in by_seed.values() for f in fs.values()]
            entry["models"][model] = {
                "run_dir": next(g["run_dir"] for g in groups if g["model"] == model),
                "per_seed": per_seed,
                "folds_per_seed": {s: len(fs) for s, fs in by_seed.items()},
                "constant_runs": {
                    "runs": len(runs),
                    **{c: sum(_constant(f) == c for f in runs) for c in ("positive", "negative")},
                },
                **_mean_std(per_seed, keys),
            }
        if {"base", "bio"} <= set(leaves):
            diffs = {}
            for s in plan["seeds"]:
                common = sorted(set(leaves["base"][s]) & set(leaves["bio"][s]), key=lambda f: f or 0)
                if common:
                    diffs[s] = {
                        k: statistics.fmean(leaves["bio"][s][f][k] - leaves["base"][s][f][k] for f in common)
                        for k in keys
                        if all(k in leaves[m][s][f] for m in ("base", "bio") for f in common)
                    }
            entry["delta"] = {"per_seed": diffs, **_mean_std(diffs, keys)}
        out[task] = entry
    return out, finished, planned


def _fmt(mean: float | None, std: float | None, sign: str = "") -> str:
    if mean is None:
        return "–"
    return f"{mean:{sign}.2f}" + (f" ± {std:.2f}" if std is not None else "")


def tables(results: dict) -> list[str]:
    """summarize.table per kind, with the Bio - Base column appended to its rows."""
    parts = []
    for kind in DATASETS:
        mine = {t: r for t, r in results.items() if r["kind"] == kind}
        entries = [
            Entry(t, kind, LABELS[m], r["mean"], r["std"], r["n"], f"{r['n']} seeds", Path(r["run_dir"]), True)
            for t, res in mine.items()
            for m, r in res["models"].items()
            if r["n"]
        ]
        if not entries:
            continue
        models = [LABELS[m] for m in ("base", "bio") if any(e.model == LABELS[m] for e in entries)]
        text, records = table(kind, entries, models)
        deltas = {}
        for short, key in METRICS[kind]:
            done = [r["delta"] for r in mine.values() if r.get("delta") and key in r["delta"]["mean"]]
            for r in mine.values():
                if r.get("delta") and key in r["delta"]["mean"]:
                    deltas[r["name"], short] = (r["delta"]["mean"][key], r["delta"]["std"][key])
            if done:
                deltas["Average", short] = (statistics.fmean(d["mean"][key] for d in done), None)
        lines = text.split("\n")
        rows = [i for i, line in enumerate(lines) if line.startswith("|")]
        if len(rows) - 2 == len(records):
            lines[rows[0]] += f" {DELTA} |"
            lines[rows[1]] += "---:|"
            for i, rec in zip(rows[2:], records):
                lines[i] += f" {_fmt(*deltas.get((rec['dataset'], rec['metric']), (None, None)), sign='+')} |"
        else:
            lines.append(f"\n({DELTA}: the table's layout was not recognised; the differences are in reproduce.json)")
        folded = [r["name"] for r in mine.values() if r["folds"]]
        lines += [
            "",
            f"Mean ± sample std over seeds; {DELTA}: mean ± std of the per-seed differences"
            + (f"; {', '.join(folded)}: each seed's score is the mean over its folds" if folded else "")
            + ". Average row of "
            + DELTA
            + ": the mean of the datasets' differences.",
        ]
        parts += ["\n".join(lines), ""]
    return parts


def plot_delta(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (r["name"], r["delta"]["mean"][PLOT_METRIC[r["kind"]]], r["delta"]["std"].get(PLOT_METRIC[r["kind"]]))
        for r in results.values()
        if r.get("delta") and PLOT_METRIC[r["kind"]] in r["delta"]["mean"]
    ]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) + 2), 4))
    if rows:
        x = range(len(rows))
        ax.bar(
            x,
            [d for _, d, _ in rows],
            color=["tab:green" if d > 0 else "tab:red" for _, d, _ in rows],
            yerr=[s or 0 for _, _, s in rows],
            capsize=4,
        )
        ax.set_xticks(list(x), [n for n, _, _ in rows], rotation=30, ha="right")
    else:
        ax.text(0.5, 0.5, "no dataset has results for both models yet", ha="center", transform=ax.transAxes)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(f"{DELTA}, points (F1; BioASQ: strict acc.)")
    ax.set_title(f"{DELTA} per dataset, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def constant_notes(results: dict) -> list[str]:
    """A sentence per dataset where runs predicted one class for every test example."""
    out = []
    for r in results.values():
        const = {m: v["constant_runs"] for m, v in r["models"].items() if v.get("constant_runs")}
        flagged = {m: c for m, c in const.items() if c["positive"] + c["negative"]}
        if flagged:
            said = "; ".join(
                f"{LABELS[m]} in {c['positive'] + c['negative']} of {c['runs']} runs" for m, c in flagged.items()
            )
            every = all(c["positive"] + c["negative"] == c["runs"] for c in const.values()) and len(const) > 1
            out.append(
                f"**{r['name']}: a constant classifier.** Runs predicted one class for every test example "
                f"({said}); such a run's F1 is the class rate's, whatever the encoder learnt"
                + (", so this dataset's Bio − Base says nothing at this budget." if every else ".")
            )
    return out
