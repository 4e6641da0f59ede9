"""The pre-training side of bench/reproduce.py's report: Base's held-out masked-LM loss at step 0, the held-out
curve of one or several budgets and its plot, the pre-training time measured and the steps it covers, and the
next budget the curve points to."""

from __future__ import annotations

import json
from pathlib import Path

from biobert.config import read_json


def heldout_at_start(plan: dict) -> dict:
    """Base's held-out masked-LM metrics at step 0: pretrain/run.py's own evaluator (same batches, same masks,
    each rank's share in turn, summed exactly) on the model as the run builds it (same seeded new heads)."""
    import torch

    from biobert.dist import derived_seed, seed_everything
    from biobert.ds_config import load_ds_config, resolve_batch
    from biobert.models import load_pretraining_model
    from biobert.tokenizer import load_tokenizer
    from pretrain.collator import MaskingCollator
    from pretrain.objective import PretrainingObjective, heldout_evaluator
    from pretrain.pretrain_config import PretrainConfig

    cfg = PretrainConfig(data_dir=str(Path(plan["work_dir"]) / "shards"), eval_batches=plan["eval_batches"])
    tok = load_tokenizer(plan["base_model"])
    seed_everything(derived_seed(cfg.seed, "init"))
    model = load_pretraining_model(plan["base_model"], "", cfg.attn_implementation)
    objective = PretrainingObjective(model).eval()
    collate = MaskingCollator(
        model.config.vocab_size, tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, cfg.mlm_probability
    )
    micro = resolve_batch(load_ds_config(plan["ds_pretrain"]), plan["nproc"], plan["ds_pretrain"])[1]
    sums: dict[str, list[float]] = {}

    class OneProcess:  # what the evaluator uses of the Engine; sums the metrics' numerators and denominators
        micro_batch, world_size, rank = micro, plan["nproc"], 0

        def __call__(self, batch):
            out = objective(**batch)
            for name, (num, den) in out["metrics"].items():
                acc = sums.setdefault(name, [0.0, 0.0])
                acc[0], acc[1] = acc[0] + float(num), acc[1] + float(den)
            return out

        def all_reduce_sum(self, values):
            return values

    shim = OneProcess()
    with torch.no_grad():
        for shim.rank in range(plan["nproc"]):
            evaluate = heldout_evaluator(cfg, shim, collate)
            if evaluate is not None:
                evaluate(shim, None)
    return {
        "step": 0,
        **{f"heldout_{n}": num / den for n, (num, den) in sums.items() if den},
        "new_heads": getattr(model, "biobert_new_heads", []),
    }


def mlm_curve(plan: dict) -> list[dict]:
    work, per_step = Path(plan["work_dir"]), plan["tokens_per_step"]
    points = []
    base = work / "base_heldout.json"
    if base.is_file() and "heldout_mlm_loss" in read_json(base):
        points.append({"step": 0, "tokens": 0, **{k: v for k, v in read_json(base).items() if k.startswith("heldout")}})
    head_steps = plan.get("head_steps", 0)  # a heads-only phase first: its steps come before the full run's
    for phase, offset in (("heads", 0), ("full", head_steps)) if head_steps else (("full", 0),):
        metrics = work / ("pretrain_heads" if phase == "heads" else "pretrain") / "metrics.jsonl"
        for line in metrics.read_text().splitlines() if metrics.is_file() else []:
            rec = json.loads(line)
            if rec.get("kind") == "eval" and "heldout_mlm_loss" in rec:
                step = rec["step"] + offset
                points.append(
                    {
                        "step": step,
                        "tokens": step * per_step,
                        "phase": phase,
                        **{k: v for k, v in rec.items() if k.startswith("heldout")},
                    }
                )
    return points


def corpus_name(plan: dict) -> str:
    """What Bio was pre-trained on: PubMed abstracts, and PMC full text with --pmc."""
    return "PubMed + PMC" if plan.get("pmc") else "PubMed"


def reproduction_of(model: str | Path) -> Path | None:
    """The work dir of the reproduction whose Bio export `model` is (the curve records the resolved path,
    WORK/pretrain/checkpoints/step_N/hf, of WORK/pretrain/hf), or None."""
    model = Path(model).resolve()
    for parent in model.parents:
        if (parent / "plan.json").is_file() and "bio_model" in read_json(parent / "plan.json"):
            return parent if Path(read_json(parent / "plan.json")["bio_model"]).resolve() == model else None
    return None


def budget_curves(plan: dict) -> dict[str, list[dict]]:
    """The held-out masked-LM curve of every pre-training budget on this reproduction's learning curve, by
    label: each Bio of the curve's plan.json that is a reproduction's export (reproduction_of), this one
    included; this one alone without a curve. Curves of another corpus or held-out set say so in their label
    (their losses are not on one held-out set)."""

    def held_out(p: dict) -> str | None:
        manifest = Path(p["work_dir"]) / "shards" / "manifest.json"
        return json.dumps(read_json(manifest).get("counts", {}).get("heldout")) if manifest.is_file() else None

    def name(p: dict) -> str:
        return f"{p['pretrain_tokens'] / 1e6:.1f}M tokens"

    found = [(plan["pretrain_tokens"], name(plan), mlm_curve(plan))]
    cfg = plan.get("learning_curve") or {}
    curve_plan = Path(cfg.get("work_dir", "")) / "plan.json"
    models = read_json(curve_plan).get("models", {}) if cfg and curve_plan.is_file() else {}
    for m, path in models.items():
        work = reproduction_of(path) if m != "base" else None
        if work is None or work.resolve() == Path(plan["work_dir"]).resolve():
            continue
        other = read_json(work / "plan.json")
        tag = "" if held_out(other) == held_out(plan) else f", {corpus_name(other)}, another held-out set"
        found.append((other["pretrain_tokens"], name(other) + tag, mlm_curve(other)))
    return {label: curve for _, label, curve in sorted(found, key=lambda x: x[0])}


def plot_mlm(curves: list[dict] | dict[str, list[dict]], path: Path, corpus: str = "PubMed") -> None:
    """Held-out MLM loss (and accuracy, dashed) against pre-training tokens: one curve, or one per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {"": curves} if isinstance(curves, list) else curves
    fig, ax = plt.subplots(figsize=(6.5, 4))
    top = max((p["tokens"] for c in curves.values() for p in c), default=0)
    scale, unit = next(
        ((f, u) for f, u in ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands")) if top >= f), (1, "")
    )  # in the label, not as matplotlib's offset text over it
    acc = ax.twinx() if any(c and all("heldout_mlm_acc" in p for p in c) for c in curves.values()) else None
    colors = ("tab:blue", "tab:red", "tab:green", "tab:purple")
    for (label, curve), color in zip(curves.items(), colors):
        if not curve:
            continue
        x = [p["tokens"] / scale for p in curve]
        ax.plot(x, [p.get("heldout_mlm_loss") for p in curve], "o-", color=color, label=f"loss {label}".strip())
        heads = [p["tokens"] / scale for p in curve if p.get("phase") == "heads"]
        if heads:
            ax.axvline(heads[-1], color="gray", linestyle=":", linewidth=1)
            ax.text(heads[-1], ax.get_ylim()[1], " heads only | all weights", va="top", fontsize=8, color="gray")
        if acc is not None and all("heldout_mlm_acc" in p for p in curve):
            acc.plot(x, [p["heldout_mlm_acc"] for p in curve], "s--", color=color, alpha=0.6, label=f"accuracy {label}")
    if not any(curves.values()):
        ax.text(0.5, 0.5, "no held-out evaluation yet", ha="center", transform=ax.transAxes)
    ax.set_ylabel("held-out MLM loss (solid)")
    if acc is not None:
        acc.set_ylabel("held-out MLM accuracy (dashed)")
    if len(curves) > 1:
        ax.legend(fontsize=8, loc="center right")
    ax.set_xlabel(f"pre-training tokens{f', {unit}' if unit else ''} (steps x train_batch_size x seq_len)")
    budgets = f"{len(curves)} budgets, " if len(curves) > 1 else ""
    ax.set_title(f"Continued pre-training from Base (step 0) on {corpus}: {budgets}held-out set", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def untimed_steps(measured: dict) -> str:
    """The pre-training steps the measured time does not cover, said."""
    t = measured.get("pretrain_timed") or {}
    if not t or t["steps_measured"] >= t["steps"]:
        return ""
    rate = f"{t['cpu_s_per_step']:.2f} CPU-seconds per step" if t["cpu_s_per_step"] else "no rate yet"
    return (
        f", timed over {t['steps_measured']:,} of its {t['steps']:,} full steps ({rate}): the other steps ran in "
        "invocations that were stopped before their time was recorded"
    )


def next_budget(plan: dict, curve: list[dict], measured: dict, factor: int = 5) -> str:
    """Where the benchmark expects the effect, from the held-out curve's second half of full training (not its
    last stretch: the learning rate decays to 0 there, so that stretch is flat whatever the budget): still
    falling means the encoder is still adapting, so a larger budget of the same corpus (priced at this run's
    measured rate); flat means this model has taken what the corpus gives at this size."""
    full = [p for p in curve if p.get("phase") != "heads" and p["step"] > 0]
    if len(full) < 3:
        return ""
    mid_tokens = (full[0]["tokens"] + full[-1]["tokens"]) / 2
    mid, last = min(full[:-1], key=lambda p: abs(p["tokens"] - mid_tokens)), full[-1]
    drop, span = mid["heldout_mlm_loss"] - last["heldout_mlm_loss"], last["tokens"] - mid["tokens"]
    rel = drop / mid["heldout_mlm_loss"] if mid["heldout_mlm_loss"] else 0.0
    where = (
        f"({mid['heldout_mlm_loss']:.3f} -> {last['heldout_mlm_loss']:.3f}, {rel:.1%}, over the last {span:,} tokens"
    )
    if rel > 0.01:
        tokens = factor * plan["pretrain_tokens"]
        per_step = measured.get("pretrain_timed", {}).get("cpu_s_per_step") or 0.0
        cpu_h = per_step * tokens / plan["tokens_per_step"] / 3600
        price = f"about {cpu_h:.1f} CPU-hours of pre-training at this run's measured rate" if cpu_h else "unmeasured"
        return (
            f"Where the benchmark expects the effect: the held-out loss was still falling in the second half of "
            f"the full phase {where}, as the learning rate decayed), so the encoder was still adapting to the "
            "corpus when fine-tuning started, and the paper's gains grow with pre-training steps (its Figure 3). "
            f"The next budget to run is {factor}x this one, `--pretrain_tokens {tokens:,}` ({price}; minutes on "
            "one GPU)."
        )
    return (
        f"The held-out loss was flat in the second half of the full phase {where}): this model has taken "
        "most of what more tokens of this corpus give at this size, so the benchmark expects the paper's effect "
        "from a larger Base (BERT-base, `--base_model`) at BioBERT's budget, not from more tokens here."
    )


def pretrain_timed(timings: dict) -> dict:
    """The full pre-training phase's measured time and the steps it covers: finished, or unfinished attempts so
    far. Steps run by an invocation that was never timed (killed, or an older version) are not in it, so the
    rate is CPU seconds per measured step, not per step of the run."""
    from reproduce_progress import unfinished

    t = timings.get("pretrain") or timings.get(unfinished("pretrain"))
    if not t:
        return {}
    steps = t.get("units_measured", t["units"])
    return {
        "steps": t["units"],
        "steps_measured": steps,
        "cpu_s": t["cpu_s"],
        "cpu_s_per_step": t["cpu_s"] / steps if steps else None,
        "finished": "pretrain" in timings,
    }
