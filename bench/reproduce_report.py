"""The report of bench/reproduce.py, written from the files its stages left in the work dir.

The fine-tuning protocol's scores and tables come from bench/reproduce_tables.py (each run's own results.json,
Bio - Base paired per seed, finetune/summarize.py's tables with a Bio - Base column); the learning curve's
section from bench/learning_curve_report.py. The held-out
masked-LM curve starts at Base's step-0 point, measured here with pre-training's own evaluator.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from reproduce_mlm import (
    budget_curves,
    corpus_name,
    mlm_curve,
    next_budget,
    plot_mlm,
    pretrain_timed,
    untimed_steps,
)
from reproduce_tables import DATASETS, DELTA, METRIC_NAME, collect, constant_notes, plot_delta, tables

from biobert.config import read_json, write_json
from finetune.summarize import PLOT_METRIC


def summary(plan: dict, results: dict, curve: list[dict], measured: dict) -> list[str]:
    """What the numbers say, in sentences built from them (nothing here is a fixed claim)."""
    out = []
    for kind in DATASETS:
        key = PLOT_METRIC[kind]
        rows = [
            (r["name"], r["delta"]["mean"][key], r["delta"]["std"].get(key), r["delta"]["n"])
            for r in results.values()
            if r["kind"] == kind and r.get("delta") and key in r["delta"]["mean"]
        ]
        if not rows:
            continue
        # judged as printed: a difference that rounds to 0.00 is not a positive one
        pos = [f"{n} {d:+.2f}" + (f" ± {s:.2f}" if s is not None else "") for n, d, s, _ in rows if round(d, 2) > 0]
        neg = [f"{n} {d:+.2f}" + (f" ± {s:.2f}" if s is not None else "") for n, d, s, _ in rows if round(d, 2) <= 0]
        clear = [n for n, d, s, k in rows if s is not None and abs(d) > s]
        seeds = "/".join(map(str, sorted({k for *_, k in rows})))
        text = (
            f"**{kind.upper()}** ({METRIC_NAME[key]}, {seeds} seed{'' if seeds == '1' else 's'}): {DELTA} is "
            f"positive on {len(pos)} of {len(rows)} datasets" + (f" ({'; '.join(pos)})" if pos else "")
        )
        text += f" and **not positive on {len(neg)}** ({'; '.join(neg)})." if neg else "."
        if all(s is None for _, _, s, _ in rows):
            text += " With one seed there is no spread over seeds to judge these differences by."
        else:
            text += f" The difference is larger than its standard deviation over seeds on {len(clear)} of them" + (
                f" ({', '.join(clear)})." if clear else "."
            )
        out.append(text)
    out += constant_notes(results)
    if len(curve) > 1:
        first, last = curve[0], curve[-1]
        acc = (
            f", accuracy {first['heldout_mlm_acc']:.3f} -> {last['heldout_mlm_acc']:.3f}"
            if "heldout_mlm_acc" in first and "heldout_mlm_acc" in last
            else ""
        )
        out.append(
            f"Held-out masked-LM loss went from {first['heldout_mlm_loss']:.3f} at step {first['step']} to "
            f"{last['heldout_mlm_loss']:.3f} at step {last['step']} ({last['tokens']:,} tokens){acc}."
        )
        heads = [p for p in curve if p.get("phase") == "heads"]
        if heads:
            out.append(
                f"The first {plan['head_steps']:,} steps ({plan['head_tokens']:,} tokens) trained only the new "
                "masked-LM head, the encoder frozen: the held-out loss reached "
                f"{heads[-1]['heldout_mlm_loss']:.3f} "
                "with Base's encoder unchanged, before any of its weights moved."
            )
    elif not curve and (Path(plan["work_dir"]) / "pretrain" / "metrics.jsonl").is_file():
        out.append(
            "No held-out masked-LM curve: the shards' held-out split holds fewer sequences than one "
            "micro-batch per rank (raise data_prep's --heldout_fraction through --prep_args)."
        )
    base = Path(plan["work_dir"]) / "base_heldout.json"
    if curve and curve[0]["step"] == 0 and base.is_file() and read_json(base).get("new_heads"):
        out.append(
            "Base has no masked-LM head of its own: its step-0 loss is that of the freshly initialised head "
            "pre-training starts from, so part of the drop is the head being learnt, not domain knowledge."
        )
    tokens, paper = plan["pretrain_tokens"] + plan.get("head_tokens", 0), plan["paper"]["tokens"]
    heads = f" and {plan['head_steps']:,} heads-only" if plan.get("head_steps") else ""
    out.append(
        f"Budget: {tokens:,} pre-training tokens ({plan['pretrain_steps']:,} full{heads} steps x "
        f"{plan['tokens_per_step']:,}), {measured['cpu_hours_total']:.2f} CPU-hours measured for the whole plan "
        "so far "
        f"({measured['cpu_hours'].get('pretrain', 0) + measured['cpu_hours'].get('pretrain_heads', 0):.2f} of "
        f"them pre-training{untimed_steps(measured)}; planned estimate "
        f"{plan['est_pretrain_cpu_h']:.2f}). BioBERT pre-trained for {plan['paper']['steps']:,} steps x "
        f"{plan['paper']['tokens_per_step']:,} tokens = {paper:.3g} tokens on {plan['paper']['hardware']}: this "
        f"run is {tokens / paper:.2e} of that (1/{paper / tokens:,.0f}), on a "
        f"{plan['base_config']['num_hidden_layers']}-layer, hidden-{plan['base_config']['hidden_size']} model. "
        "Differences of this size at this budget say how far a small budget moves the needle, not whether "
        "the paper's effect holds at its budget."
    )
    if nxt := next_budget(plan, curve, measured):
        out.append(nxt)
    return out


def machine(plan: dict) -> dict:
    from cpu_info import machine as record

    return {**record(("torch", "deepspeed", "transformers", "numpy", "matplotlib")), "gpus": plan.get("gpus", 0)}


def readme_paragraph(plan: dict, curve: list[dict], findings: list[str]) -> str:
    """One paragraph for the README: the budget, the held-out loss, then what the fine-tuning found."""
    tokens = plan["pretrain_tokens"] + plan.get("head_tokens", 0)
    heads = [p for p in curve if p.get("phase") == "heads"]
    start = heads[-1] if heads else curve[0] if curve else None  # not a freshly initialised head's loss
    loss = (
        f"; held-out masked-LM loss {start['heldout_mlm_loss']:.2f} -> {curve[-1]['heldout_mlm_loss']:.2f}"
        + (" (from the end of the heads-only phase)" if heads else "")
        if start and curve[-1] is not start
        else ""
    )
    base = Path(plan["base_model"]).name  # a package's model/ folder: the package's name
    base = Path(plan["base_model"]).parent.name if base == "model" else base
    return (
        f"Bio = Base ({base}) + {tokens:,} tokens of continued pre-training on {corpus_name(plan)} "
        f"(1/{plan['paper']['tokens'] / tokens:,.0f} of BioBERT's budget){loss}. "
        + " ".join(findings)
        + " Intervals, plots and every run: [bench/reproduce.md](bench/reproduce.md)."
    )


def curve_section(plan: dict, report_dir: Path) -> dict:
    """The learning curve's report (learning_curve.md, its PNG and results/learning_curve.json in report_dir),
    rewritten from the curve's finished runs, when this reproduction ran the curve; {} otherwise."""
    cfg = plan.get("learning_curve") or {}
    path = Path(cfg.get("work_dir", "")) / "plan.json"
    if not cfg or not path.is_file():
        return {}
    import learning_curve_report

    return learning_curve_report.write_report(read_json(path), report_dir)


def gather(plan: dict) -> dict:
    """What the report reads from the reproduction's work dir: fine-tuning scores, the held-out MLM curves (this
    budget's and every budget's), the measured stages, the decontamination counts, the machine."""
    work = Path(plan["work_dir"])
    results, finished, planned = collect(plan)
    timings = read_json(work / "timings.json", "timings") if (work / "timings.json").is_file() else {}
    by_kind: dict[str, float] = {}
    for t in timings.values():
        by_kind[t["kind"]] = by_kind.get(t["kind"], 0.0) + t["cpu_s"] / 3600
    measured = {
        "cpu_hours": by_kind,
        "cpu_hours_total": sum(by_kind.values()),
        "wall_hours_total": sum(t["wall_s"] for t in timings.values()) / 3600,
        "stages": timings,
        "pretrain_timed": pretrain_timed(timings),
    }
    pre = work / "pretrain" / "result.json"
    if pre.is_file():
        measured["pretrain"] = read_json(pre)
    manifest = work / "shards" / "manifest.json"
    return {
        "results": results,
        "runs_finished": finished,
        "runs_planned": planned,
        "heldout_mlm": mlm_curve(plan),
        "heldout_mlm_budgets": budget_curves(plan),
        "measured": measured,
        "decontamination": read_json(manifest).get("decontamination") if manifest.is_file() else None,
        "machine": machine(plan),
    }


SAVED = ("results", "runs_finished", "runs_planned", "heldout_mlm", "heldout_mlm_budgets", "measured")


def write_report(plan: dict, report_dir: Path, saved: dict | None = None) -> dict:
    """reproduce.md and results/reproduce.json from the work dir, or, with `saved` (an earlier
    results/reproduce.json whose work dir is gone), from what it recorded: only the learning curve's section is
    read again, from the curve's runs (or its ledger)."""
    from biobert.checkpoint import git_sha

    got = gather(plan) if saved is None else {k: saved[k] for k in (*SAVED, "decontamination", "machine")}
    results, finished, planned = got["results"], got["runs_finished"], got["runs_planned"]
    curve, measured, decon, curves = (
        got["heldout_mlm"],
        got["measured"],
        got["decontamination"],
        got["heldout_mlm_budgets"],
    )
    by_kind = measured["cpu_hours"]
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "results").mkdir(exist_ok=True)
    protocol = bool(results) or not plan.get("learning_curve")  # the protocol's tables, or the curve alone
    if protocol:
        plot_delta(results, report_dir / "reproduce_delta.png")
    plot_mlm(curves, report_dir / "reproduce_mlm_loss.png", corpus_name(plan))
    paragraphs = summary(plan, results, curve, measured)
    lc = curve_section(plan, report_dir)
    paragraphs = [*lc.get("summary", []), *paragraphs]
    data = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "machine": got["machine"],
        # the pre-training's own report, however many times its report was rewritten from a saved one since
        **({"pretraining_from": saved.get("pretraining_from", saved["date"])} if saved else {}),
        "plan": {k: v for k, v in plan.items() if k != "groups"},
        "measured": measured,
        "decontamination": decon,
        "heldout_mlm": curve,
        "heldout_mlm_budgets": curves,
        "complete": finished == planned,
        "runs_finished": finished,
        "runs_planned": planned,
        "results": results,
        "summary": paragraphs,
        "readme": readme_paragraph(plan, curve, lc.get("summary", []) or paragraphs[:1]),
    }
    write_json(report_dir / "results" / "reproduce.json", data)
    found = (decon or {}).get("dropped", (decon or {}).get("flagged", {}))
    md = [
        f"# Reproduction: Base vs Bio at laptop scale\n\nWritten by `bench/reproduce.py` on {data['date']} "
        f"(git {data['git_sha']}); raw numbers in `results/reproduce.json`. Machine: {data['machine']['cpu']}, "
        f"{data['machine']['cores']} cores, {data['machine']['gpus']} GPUs; torch "
        f"{data['machine']['versions']['torch']}, deepspeed {data['machine']['versions']['deepspeed']}."
        + (
            f" Pre-training, its measurements and the machine: from the report of {data['pretraining_from']} "
            "(`--from_results`; its work dir is not here); the learning curve: rewritten from its runs and ledger."
            if saved
            else ""
        ),
        "",
        f"- Base: `{plan['base_model']}` ({plan['base_config']})",
        f"- Bio: Base + {plan['pretrain_tokens']:,} tokens of masked-LM pre-training on {corpus_name(plan)} "
        f"({plan['pretrain_steps']:,} steps x {plan['train_batch_size']} x {plan['seq_len']}, {plan['nproc']} ranks)"
        + (
            f", after {plan['head_tokens']:,} tokens ({plan['head_steps']:,} steps, peak learning rate "
            f"{plan['head_lr']:g}) that trained only the new masked-LM head, the encoder frozen"
            if plan.get("head_steps")
            else ""
        ),
        "- decontamination (documents dropped for overlapping a test set): "
        + (", ".join(f"{v:,} by {k}" for k, v in found.items()) or "none found" if decon else "not run")
        + (
            f" (a shared {(decon.get('summary') or {}).get('ngram', '?')}-word sequence with one of "
            f"{len((decon.get('summary') or {}).get('files', [])):,} test files)"
            if decon
            else ""
        ),
        "- fine-tuning: the learning curve below (bench/learning_curve.py), the same settings for both models"
        if plan.get("learning_curve") and not plan.get("earlier_groups")
        else f"- fine-tuning: finetune/protocol.py `--protocol {plan['protocol']}`, epochs {plan['epochs']}, seeds "
        f"{plan['seeds']}, the same settings for both models",
        f"- CPU time measured: {measured['cpu_hours_total']:.2f} h ("
        + ", ".join(f"{k} {v:.2f} h" for k, v in by_kind.items())
        + f"); wall {measured['wall_hours_total']:.2f} h",
        "" if finished == planned else f"\n**Incomplete: {finished} of {planned} fine-tuning runs finished.**",
        "",
    ]
    md += ["## What the numbers say", "", *[p + "\n" for p in paragraphs]]
    md += ["The README's summary, from these numbers:", "", f"> {data['readme']}", ""]
    if protocol:
        md += ["## Fine-tuning (test sets)", "", *tables(results)]
        md += ["## Plots", "", f"![{DELTA}](reproduce_delta.png)", "", "![held-out MLM loss](reproduce_mlm_loss.png)"]
    else:
        md += ["## Pre-training", "", "![held-out MLM loss](reproduce_mlm_loss.png)"]
    md += [""]
    if plan.get("learning_curve"):  # bench/learning_curve_report.py's section, written by the curve's run
        section = report_dir / "learning_curve.md"
        md += section.read_text(encoding="utf-8").splitlines() if section.is_file() else ["## Learning curve", ""]
        md += ["", "Raw numbers: `results/learning_curve.json`." if section.is_file() else "Not run yet.", ""]
    (report_dir / "reproduce.md").write_text("\n".join(md), encoding="utf-8")
    print(f"report: {report_dir / 'reproduce.md'}, {report_dir / 'results' / 'reproduce.json'}", flush=True)
    return data
