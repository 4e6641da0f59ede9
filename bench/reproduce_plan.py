"""bench/reproduce.py's plan: the budgets and presets, the tasks present under a data root, the plan itself
(pre-training steps and its CPU estimate, the fine-tuning groups), and the settings that decide the Bio model
(a work dir's earlier plan must share them)."""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import math
import sys
from pathlib import Path

import learning_curve
from reproduce_progress import HEAD_COST, KINDS, count_tokens

from biobert.errors import UserError

# Pre-training, CPU-s per token at 1 thread (bench/README.md, section 1), for est_pretrain_cpu_h: with the
# held-out evaluations counted, the default 489 steps on 2 ranks are estimated at 22.5 min (23.1 measured idle).
CPU_S_PER_TOKEN = 1.2e-3
DEFAULT_TOKENS = 2_000_000  # 489 steps of 4,096 tokens with cpu.json: 0.7 CPU-hours here, evaluations included
# A heads-only first phase when Base has no trained MLM head: 98 steps, 0.08 CPU-hours here. Measured with it,
# the NER mean Bio - Base went from -0.01 to +0.18 and the final held-out MLM loss from 5.10 to 4.84.
DEFAULT_HEAD_TOKENS = 400_000
PRESETS = {
    "full": {"seeds": "1,2,3", "epochs": "1", "folds": "", "max_docs": 0, "steps": 0, "head_steps": 0, "prep": ""},
    "quick": {
        "seeds": "1",
        "epochs": "0.05",
        "folds": "1,2",
        "max_docs": 1000,
        "steps": 4,
        "head_steps": 2,
        "prep": "--heldout_fraction 0.05",
    },
}  # enough held-out examples for an evaluation
# --device cuda: h100x8.json's phase-1 batch (1,024 x 128 = GPU_TOKENS_PER_STEP) on one rank, micro x accumulation
# x 1 GPU = 256 x 4 x 1 (a MiniLM micro-batch of 256 x 128 is what learning_curve_gpu.measure times); warmup
# GPU_WARMUP of each phase's steps, as cpu.json's 10 of 489 (its 10,000 steps exceed a 10-minute run's).
GPU_DS = ["train_batch_size=1024", "train_micro_batch_size_per_gpu=256", "gradient_accumulation_steps=4"]
GPU_WARMUP = 0.02
PAPER = {"steps": 470_000, "tokens_per_step": 131_072, "tokens": 470_000 * 131_072, "hardware": "8 x V100"}


def parse_ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated integers, e.g. 1,2,3") from None


def parse_epochs(text: str) -> dict[str, float]:
    """`2` for every kind, or `ner=2,re=1` (a kind left out: 1 epoch)."""
    out = dict.fromkeys(KINDS, 1.0)
    try:
        if "=" not in text:
            return dict.fromkeys(KINDS, float(text))
        for kind, _, value in (item.partition("=") for item in text.split(",")):
            if kind not in KINDS:
                raise ValueError(kind)
            out[kind] = float(value)
    except ValueError:
        raise UserError(f"--epochs {text!r}: expected a number, or ner=E,re=E,qa=E") from None
    return out


def discover(root: Path, wanted: list[str], folds: list[int]) -> list[dict]:
    """The tasks present under the data root, in the paper's row order: [{task, kind, data_dir, folds}]."""
    from finetune.tasks.registry import folds_of, get_task, summary_rows

    rows = summary_rows()  # the paper's tables: their rows in its order

    known = {task for kind in KINDS for task, _ in rows[kind]} - {"bioasq_factoid"}  # QA: factoid (Table 6)
    if set(wanted) - known - set(KINDS):
        raise UserError(
            f"--tasks: unknown {sorted(set(wanted) - known - set(KINDS))}; use ner, re, qa or any of {sorted(known)}"
        )

    def present(name: str, data_dir: Path) -> bool:
        try:
            return {"train", "test"} <= set(get_task(name).splits(data_dir))
        except UserError:
            return False

    found = []
    for kind in KINDS:
        for task, _ in rows[kind]:
            if task not in known or not (kind in wanted or task in wanted):
                continue
            fold_ds = folds_of(task)
            have = [k for k in (folds or fold_ds) if k in fold_ds and present(fold_ds[k], root / kind)]
            if have or (not fold_ds and (root / kind).is_dir() and present(task, root / kind)):
                found.append({"task": task, "kind": kind, "data_dir": str(root / kind), "folds": have})
            elif task in wanted:
                raise UserError(f"--tasks {task}: no data for it under {root / kind} (BioBERT's layout expected)")
    return found


def build_plan(a: argparse.Namespace) -> dict:
    import torch

    from biobert.ds_config import load_ds_config, resolve_batch
    from biobert.models import has_mlm_head, load_bert_config

    base = str(Path(a.base_model or learning_curve.default_base_model()).resolve())
    bert = load_bert_config(base)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    nproc = 1 if a.device == "cuda" else a.nproc or gpus or 2
    tbs, micro, _ = resolve_batch(load_ds_config(a.ds_pretrain, a.ds_overrides), nproc, a.ds_pretrain)
    per_step = tbs * a.seq_len
    steps = (
        a.steps if a.steps and not a.pretrain_tokens else math.ceil((a.pretrain_tokens or DEFAULT_TOKENS) / per_step)
    )
    root = Path(a.data_root).resolve()
    tasks = [] if a.learning_curve or a.pretrain_only else discover(root, [t for t in a.tasks.split(",") if t], a.folds)
    if not tasks and not (a.learning_curve or a.pretrain_only):
        raise UserError(
            f"{root}: no task data for --tasks {a.tasks} (expected BioBERT's layout: ner/NCBI-disease/, "
            "re/GAD/1/, re/chemprot/, qa/bioasq/)"
        )
    pubmed = a.pubmed or [str(root / "pubmed")]
    if "bio" in a.models and not any(glob.glob(p) for p in pubmed):
        raise UserError(f"--pubmed {pubmed}: no such files or folders (PubMed baseline .xml.gz files are needed)")
    pmc = [] if a.pmc is None else a.pmc or [str(root / "pmc")]
    if pmc and "bio" in a.models and not any(glob.glob(p) for p in pmc):
        raise UserError(f"--pmc {pmc}: no such files or folders (PMC Open Access .nxml files or .tar.gz packages)")
    if a.head_tokens is None:  # automatic: a head to learn first only when Base has none
        head_steps = 0 if has_mlm_head(base) else a.head_steps or math.ceil(a.head_default / per_step)
    else:
        head_steps = math.ceil(a.head_tokens / per_step) if a.head_tokens > 0 else 0
    size = bert.num_hidden_layers * bert.hidden_size**2 / (6 * 384**2)  # compute relative to all-MiniLM-L6-v2
    evals = 10 * a.eval_batches * micro * nproc * a.seq_len / 3  # held-out forward passes, ~1/3 of a step's work
    groups = []
    for t in tasks:  # already NER, then RE, then QA; Base and Bio of a dataset side by side
        train, test = count_tokens(t, a.protocol)
        units = (train * a.epochs[t["kind"]] + test / 3) * len(a.seeds) * size
        groups += [
            {**t, "model": m, "units": units, "run_dir": str(a.work_dir / "finetune" / m / t["task"])} for m in a.models
        ]
    return {
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "command": sys.argv,
        "quick": a.quick,
        "base_model": base,
        "bio_model": str(a.work_dir / "pretrain" / "hf"),
        "work_dir": str(a.work_dir),
        "base_config": {k: getattr(bert, k) for k in ("num_hidden_layers", "hidden_size", "vocab_size")},
        "data_root": str(root),
        "pubmed": pubmed,
        "pmc": pmc,
        "decontaminate": [str(root / k) for k in KINDS if (root / k).is_dir()],
        "seq_len": a.seq_len,
        "nproc": nproc,
        "gpus": gpus,
        "launcher": a.launcher,
        "ds_pretrain": a.ds_pretrain,
        "ds_overrides": a.ds_overrides,
        "device": a.device,
        "ds_finetune": a.ds_finetune,
        "train_batch_size": tbs,
        "tokens_per_step": per_step,
        "pretrain_steps": steps,
        "pretrain_tokens": steps * per_step,
        "pretrain_tokens_requested": a.pretrain_tokens,
        "eval_every": max(1, math.ceil(steps / 10)),
        "eval_batches": a.eval_batches,
        "head_steps": head_steps,
        "head_tokens": head_steps * per_step,
        "head_lr": a.head_lr if head_steps else None,
        "est_pretrain_cpu_h": ((steps + HEAD_COST * head_steps) * per_step + evals) * CPU_S_PER_TOKEN * size / 3600,
        "paper": PAPER,
        "protocol": a.protocol,
        "epochs": a.epochs,
        "seeds": a.seeds,
        "models": a.models,
        "groups": groups,
        "max_docs": a.max_docs,
        "prep_args": a.prep_args,
        "pretrain_args": a.pretrain_args,
        "ft_args": a.ft_args,
        "keep_checkpoints": a.keep_checkpoints,
        "pretrain_only": a.pretrain_only,
        "learning_curve": None,  # main(): the CurveConfig, when the curve replaces the protocol's fine-tuning
    }


PRETRAIN_KEYS = (
    "base_model",
    "pubmed",
    "pmc",
    "seq_len",
    "pretrain_steps",
    "ds_pretrain",
    "ds_overrides",
    "max_docs",
    "prep_args",
    "pretrain_args",
    "decontaminate",
    "eval_batches",
    "head_steps",
    "head_lr",
)


def pretrain_settings(plan: dict) -> dict:
    """What decides the Bio model; a plan written before the heads-only phase (or --pmc) existed had none."""
    return {k: plan.get(k, {"head_steps": 0, "pmc": [], "ds_overrides": []}.get(k)) for k in PRETRAIN_KEYS}
