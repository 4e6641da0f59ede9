"""Collect fine-tuning results into tables laid out like BioBERT's Tables 4-6, in markdown and as a bar chart.

    python finetune/summarize.py RUNS_DIR [--out summary.md] [--plot summary.png] \
        [--label base=runs/base,bio=runs/bio]

Every results.json under RUNS_DIR counts once: a run_task run (its `test` scores), a protocol.py run (mean ±
sample std over seeds, or over folds for one-seed GAD/EU-ADR) or a crossval.py run (mean ± std over folds);
the sub-runs inside a protocol or crossval folder are its parts, not results of their own. As in the paper,
rows are a dataset's metrics (P/R/F for NER and RE, strict/lenient accuracy and MRR for BioASQ factoid) and
columns are models, the best of each row in bold, with an average over datasets per table. BioASQ yes/no
(accuracy, macro F1, and the majority-class baseline's accuracy, `Acc base`) and list questions (mean
precision, recall, F1), from BioBERT's BioASQ follow-up, get QA tables of their own. A model is named by
`--label NAME=DIR` (every result under DIR; issue 7 compares Base and Bio this way) or else by its
`init_from` folder (a trailing `hf/` skipped). Two results for the same dataset and model: an aggregate
(protocol / crossval) wins over a single run, then the newer file; the choice is listed under the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biobert.errors import UserError, exit_on_user_error  # noqa: E402

# The tables' rows (the paper's order and names) come from the task registry: a registered task with a
# `table` has a row there, the folds of a dataset share their dataset's.
from finetune.tasks.registry import summary_rows  # noqa: E402

METRICS = {
    "ner": [("P", "precision"), ("R", "recall"), ("F", "f1")],
    "re": [("P", "precision"), ("R", "recall"), ("F", "f1")],
    "qa": [("S", "strict_acc"), ("L", "lenient_acc"), ("M", "mrr")],
    "qa_yesno": [("Acc", "accuracy"), ("MaF1", "macro_f1"), ("Acc base", "baseline_accuracy")],
    "qa_list": [("P", "mean_precision"), ("R", "mean_recall"), ("F", "mean_f1")],
}
TITLES = {
    "ner": "NER (entity-level, test)",
    "re": "RE (test)",
    "qa": "QA: BioASQ factoid (test)",
    "qa_yesno": "QA: BioASQ yes/no (test)",
    "qa_list": "QA: BioASQ list (test)",
}
NOT_RANKED = {"baseline_accuracy"}  # a property of the test set, not of a model: never in bold
PLOT_METRIC = {"ner": "f1", "re": "f1", "qa": "strict_acc", "qa_yesno": "macro_f1", "qa_list": "mean_f1"}


def kind_of() -> dict[str, str]:
    """Row key -> its table, for every registered task that has a row."""
    return {task: kind for kind, rows in summary_rows().items() for task, _ in rows}


@dataclass
class Entry:
    task: str
    kind: str
    model: str
    mean: dict
    std: dict  # None values where there is a single run
    runs: int
    what: str  # "run_task", "protocol paper, 3 seeds", "crossval, 10 folds", ...
    path: Path
    aggregate: bool


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir")
    parser.add_argument("--out", default="", help="also write the markdown here")
    parser.add_argument("--plot", default="", help="grouped bar chart (PNG) of F1 / strict accuracy")
    parser.add_argument("--label", default="", help="NAME=DIR,...: results under DIR are model NAME")
    args = parser.parse_args(argv)
    labels = []
    for item in [x for x in args.label.split(",") if x.strip()]:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"--label {item!r}: expected NAME=DIR, e.g. --label base=runs/base,bio=runs/bio")
        path = Path(folder) if Path(folder).exists() else Path(args.runs_dir) / folder
        labels.append((name, path.resolve()))
    args.label = labels
    if not Path(args.runs_dir).is_dir():
        raise UserError(f"{args.runs_dir}: no such directory of runs")
    return args


def model_name(init_from: str, path: Path, labels: list[tuple[str, Path]]) -> str:
    resolved = path.resolve()
    for name, folder in labels:
        if resolved.is_relative_to(folder):
            return name
    p = Path(init_from.rstrip("/")) if init_from else Path("unknown")
    while p.name in ("hf", "export") and p.parent != p:
        p = p.parent
    return p.name or init_from


def _init_from_of_crossval(folder: Path) -> str:
    for fold in sorted(folder.glob("fold_*/results.json")):
        return json.loads(fold.read_text()).get("init_from", "")
    record = json.loads((folder / "crossval.json").read_text()) if (folder / "crossval.json").is_file() else {}
    return ((record.get("run_task") or {}).get("run") or {}).get("init_from", "")


def read_entry(path: Path, labels: list[tuple[str, Path]]) -> Entry | str:
    """The entry of one results.json, or why it has none."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable ({e})"
    task = data.get("task", "")
    tables = kind_of()
    kind = tables.get(task, "")  # the table: BioASQ yes/no and list are kind "qa" with tables of their own
    if task not in tables:
        return f"task {task!r} has no row in the paper's tables" + (
            " (one fold; the paper's number is the mean over all folds)" if task.rpartition("_")[0] in tables else ""
        )
    if "protocol" in data or "folds" in data:
        n = len(data.get("seeds") or []) if data.get("std_over") == "seeds" else len(data.get("folds") or {})
        unit = "seed" if data.get("std_over") == "seeds" else "fold"
        what = (
            f"protocol {data['protocol']}, {n} {unit}{'s' if n != 1 else ''}"
            if "protocol" in data
            else f"crossval, {n} folds"
        )
        what += "" if data.get("complete", True) else " (not all folds)"
        init_from = data.get("init_from") or _init_from_of_crossval(path.parent)
        std = {k: v for k, v in (data.get("std") or {}).items()}
        return Entry(task, kind, model_name(init_from, path, labels), data["mean"], std, max(n, 1), what, path, True)
    scores = (data.get("scores") or {}).get("test")
    if not scores:
        return "no test scores (a selection or devel-only run)"
    mean = {k: v for k, v in scores.items() if isinstance(v, (int, float))}
    return Entry(task, kind, model_name(data.get("init_from", ""), path, labels), mean, {}, 1, "run_task", path, False)


def collect(runs_dir: Path, labels: list[tuple[str, Path]]) -> tuple[list[Entry], list[str]]:
    """One entry per (dataset, model), and notes on every results.json that was left out and why."""
    found = sorted(runs_dir.rglob("results.json"), key=lambda p: (len(p.parts), str(p)))
    owners: list[Path] = []  # folders whose sub-runs are parts of one aggregate result
    entries: dict[tuple[str, str], Entry] = {}
    notes = []
    for owner in sorted({p.parent for name in ("protocol.json", "crossval.json") for p in runs_dir.rglob(name)}):
        if not (owner / "results.json").is_file():
            notes.append(f"{owner}: protocol/crossval run without results.json yet (unfinished): left out")
        owners.append(owner)
    for path in found:
        if any(path.parent != o and path.parent.is_relative_to(o) for o in owners):
            continue
        entry = read_entry(path, labels)
        if isinstance(entry, str):
            notes.append(f"{path}: {entry}: left out")
            continue
        if entry.aggregate:
            owners.append(path.parent)
        key = (entry.task, entry.model)
        old = entries.get(key)
        if old is not None:
            newer = (entry.aggregate, entry.path.stat().st_mtime) > (old.aggregate, old.path.stat().st_mtime)
            keep, drop = (entry, old) if newer else (old, entry)
            notes.append(f"{drop.path}: {keep.model} / {keep.task} also in {keep.path}, which is shown")
            entry = keep
        entries[key] = entry
    return list(entries.values()), notes


def _cell(entry: Entry | None, key: str) -> tuple[str, float | None]:
    if entry is None or key not in entry.mean:
        return "–", None
    value, std = entry.mean[key], entry.std.get(key)
    return (f"{value:.2f} ± {std:.2f}" if std is not None else f"{value:.2f}"), value


def table(kind: str, entries: list[Entry], models: list[str]) -> tuple[str, list[dict]]:
    """Markdown rows (dataset, metric) x models, best per row in bold, and the same as records."""
    by_key = {(e.task, e.model): e for e in entries if e.kind == kind}
    rows = [(task, name) for task, name in summary_rows()[kind] if any(t == task for t, _ in by_key)]
    lines = [
        f"### {TITLES[kind]}",
        "",
        "| Dataset | Metric | " + " | ".join(models) + " |",
        "|---|---|" + "---:|" * len(models),
    ]
    records = []

    def add(name: str, short: str, cells: list[tuple[str, float | None]], bold: bool = True) -> None:
        values = [v for _, v in cells if v is not None]
        best = max(values) if len(values) > 1 and bold else None
        text = [f"**{t}**" if v is not None and v == best else t for t, v in cells]
        lines.append(f"| {name} | {short} | " + " | ".join(text) + " |")
        records.append({"dataset": name, "metric": short, **{m: v for m, (_, v) in zip(models, cells)}})

    for task, name in rows:
        for short, key in METRICS[kind]:
            add(name, short, [_cell(by_key.get((task, m)), key) for m in models], bold=key not in NOT_RANKED)
    partial = False
    for short, key in METRICS[kind]:
        cells = []
        for m in models:
            values = [by_key[t, m].mean[key] for t, _ in rows if (t, m) in by_key and key in by_key[t, m].mean]
            partial |= 0 < len(values) < len(rows)
            mean = sum(values) / len(values) if values else None
            cells.append((f"{mean:.2f}" + ("*" if len(values) < len(rows) else ""), mean) if values else ("–", None))
        add("Average", short, cells, bold=not partial and key not in NOT_RANKED)  # partial: different datasets
    if partial:
        lines += ["", "\\* averaged over the datasets this model has, not all rows."]
    return "\n".join(lines), records


def markdown(entries: list[Entry], notes: list[str], models: list[str], root: Path) -> tuple[str, dict]:
    parts, records = ["## Fine-tuning results", ""], {}
    for kind in summary_rows():
        if any(e.kind == kind for e in entries):
            text, records[kind] = table(kind, entries, models)
            parts += [text, ""]
    parts += ["Mean ± sample standard deviation where a result has several seeds or folds. Sources:", ""]
    parts += [
        f"- {e.model} / {e.task}: {e.what} (`{e.path.relative_to(root)}`)"
        for e in sorted(entries, key=lambda e: str(e.path))
    ]
    if notes:
        parts += ["", "Left out:", ""] + [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n", records


def plot(entries: list[Entry], models: list[str], path: Path) -> None:
    """Grouped bars: one group per dataset, one bar per model, error bars where there is a std."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install -r requirements.txt") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {(e.task, e.model): e for e in entries}
    groups = [
        (task, name, kind)
        for kind, rows in summary_rows().items()
        for task, name in rows
        if any((task, m) in by_key for m in models)
    ]
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 2), 4.5))
    for i, m in enumerate(models):
        bars, errs = [], []
        for g, (task, _, kind) in enumerate(groups):
            e = by_key.get((task, m))
            if e is not None and PLOT_METRIC[kind] in e.mean:
                bars.append((g - 0.4 + width * (i + 0.5), e.mean[PLOT_METRIC[kind]]))
                if e.std.get(PLOT_METRIC[kind]) is not None:
                    errs.append((*bars[-1], e.std[PLOT_METRIC[kind]]))
        ax.bar([x for x, _ in bars], [y for _, y in bars], width, label=m)
        if errs:
            x, y, err = zip(*errs)
            ax.errorbar(x, y, yerr=err, fmt="none", ecolor="black", capsize=3)
    ax.set_xticks(range(len(groups)), [name for _, name, _ in groups], rotation=30, ha="right")
    ax.set_ylabel("F1 (NER, RE, QA list) / strict acc. (factoid) / macro F1 (yes/no), %")
    ax.set_ylim(0, 100)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    entries, notes = collect(Path(args.runs_dir), args.label)
    if not entries:
        raise UserError(
            f"{args.runs_dir}: no results.json with test scores of a task in the paper's tables"
            + "".join(f"\n  {n}" for n in notes)
        )
    named = [name for name, _ in args.label]
    models = [m for m in named if any(e.model == m for e in entries)]
    models += sorted({e.model for e in entries} - set(models))
    text, records = markdown(entries, notes, models, Path(args.runs_dir))
    print(text, end="", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    if args.plot:
        plot(entries, models, Path(args.plot))
    return {
        "markdown": text,
        "tables": records,
        "models": models,
        "notes": notes,
        "entries": [{"task": e.task, "model": e.model, "what": e.what, "path": str(e.path)} for e in entries],
    }


if __name__ == "__main__":
    main()
