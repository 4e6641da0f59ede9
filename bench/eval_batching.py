"""Evaluation batched by length against evaluation in file order, side by side: run_task.py scoring a test set
with a fine-tuned NER model, the same code on both sides except the order its batches are cut in.

    .venv/bin/python bench/eval_batching.py --model runs/ncbi_disease/hf
    .venv/bin/python bench/eval_batching.py --model runs/ncbi_disease/hf --tasks ncbi_disease --rounds 1  # quick

"file order" is what run_task did before and what the Hugging Face Trainer's evaluation does (a sequential
sampler, each batch padded to its longest sentence); "by length" is run_task's evaluation now
(finetune.tasks.base.predict_outputs: each rank sorts its share by length, batches it, and puts the outputs
back in input order). Each round runs both sides (the order alternating) as an evaluation-only run_task run
(`--train_split ""`), the learning curve's settings: one thread, batch 64, bf16 autocast where the CPU has
AVX-512 BF16 or AMX. Timed: the predict_outputs call. Checked: the two sides' F1 and their prediction files
(which must be the same). Also counted for every test set the learning curve scores: the tokens each order
pads to (no model needed). Run it on an otherwise idle machine. Writes bench/results/eval_batching.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]


def file_order(lengths, batch_size: int) -> list[list[int]]:
    """The batches before: consecutive features in file order."""
    n = len(lengths)
    return [list(range(s, min(n, s + batch_size))) for s in range(0, n, batch_size)]


def padding(task_name: str, data_root: str, tokenizer_dir: str, batch_size: int) -> dict:
    """Real tokens of a test set, and the tokens each order's batches pad to."""
    from biobert.tokenizer import load_tokenizer
    from finetune.inference import length_batches
    from finetune.run_task import FinetuneConfig, load_splits
    from finetune.tasks.registry import get_task

    task = get_task(task_name)
    cfg = FinetuneConfig(task=task_name, data_dir=str(Path(data_root) / task.kind))
    cfg.train_split, cfg.eval_split, cfg.test_split = "", "", "test"
    split = load_splits(task, cfg, load_tokenizer(tokenizer_dir))["test"]
    lengths = [len(f.input_ids) for f in split.features]

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    real = sum(lengths)
    by_file, by_length = padded(file_order(lengths, batch_size)), padded(length_batches(lengths, batch_size))
    return {
        "features": len(lengths),
        "real_tokens": real,
        "file_order_tokens": by_file,
        "by_length_tokens": by_length,
        "file_order_over_real": round(by_file / real, 3),
        "by_length_over_real": round(by_length / real, 3),
    }


def evaluate(task_name: str, model: str, data_dir: str, run_dir: Path, side: str, bf16: bool) -> dict:
    """One evaluation-only run_task run; `side` picks the batch order. Returns the time, F1 and predictions."""
    import finetune.inference as inference
    from finetune import run_task
    from finetune.tasks import base

    flags = ["--task", task_name, "--data_dir", data_dir, "--init_from", model, "--run_dir", str(run_dir)]
    flags += ["--train_split", "", "--eval_split", "", "--test_split", "test", "--progress", "false"]
    flags += ["--export_hf", "false", "--eval_batch_size", "64"]
    if bf16:
        flags += ["--ds", "torch_autocast.enabled=true", "--ds", "torch_autocast.dtype=bfloat16"]
    timed: list[float] = []
    real_predict, real_batches = base.predict_outputs, inference.length_batches

    def predict(*a, **k):
        t = time.perf_counter()
        out = real_predict(*a, **k)
        timed.append(time.perf_counter() - t)
        return out

    base.predict_outputs = predict
    if side == "file_order":
        inference.length_batches = file_order
    try:
        results = run_task.run(run_task.job_from_args(flags))
    finally:
        base.predict_outputs, inference.length_batches = real_predict, real_batches
    return {
        "predict_s": timed[0],
        "f1": results["scores"]["test"]["f1"],
        "predictions": (run_dir / "predictions_test.txt").read_text(),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a fine-tuned NER export (run_dir/hf of run_task.py)")
    p.add_argument("--tasks", nargs="+", default=["ncbi_disease", "bc5cdr_disease"], help="NER test sets to time")
    p.add_argument("--data_root", default=os.environ.get("BIOBERT_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="auto: bf16 autocast where the CPU has AVX-512 BF16 or AMX (the curve's choice)",
    )
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "eval_batching.json"))
    a = p.parse_args(argv)
    import torch
    from cpu_info import cpu_name
    from learning_curve import DATASETS, cpu_has_bf16

    from biobert.errors import UserError

    torch.set_num_threads(a.threads)
    bf16 = a.dtype == "bfloat16" or (a.dtype == "auto" and cpu_has_bf16())
    record: dict = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "load_avg_start": os.getloadavg(),
        "model": a.model,
        "threads": a.threads,
        "dtype": "bf16 autocast" if bf16 else "float32",
        "eval_batch_size": 64,
        "padding": {},
        "timed": {},
    }
    for name in DATASETS:
        try:
            record["padding"][name] = pad = padding(name, a.data_root, a.model, 64)
        except UserError as e:  # a test set this data root does not have: said, not counted
            print(f"{name}: not counted ({e})", flush=True)
            continue
        print(
            f"{name}: {pad['features']:,} test features; file order pads to {pad['file_order_over_real']}x the "
            f"real tokens, by length to {pad['by_length_over_real']}x",
            flush=True,
        )
    from finetune.tasks.registry import get_task

    tmp = Path(tempfile.mkdtemp(prefix="biobert_eval_batching_"))
    for task_name in a.tasks:
        data_dir = str(Path(a.data_root) / get_task(task_name).kind)
        sides: dict[str, list[dict]] = {"file_order": [], "by_length": []}
        for rnd in range(a.rounds):
            order = ["file_order", "by_length"] if rnd % 2 == 0 else ["by_length", "file_order"]
            for side in order:
                out = evaluate(task_name, a.model, data_dir, tmp / f"{task_name}_{side}_{rnd}", side, bf16)
                sides[side].append(out)
                print(f"{task_name} round {rnd} {side}: {out['predict_s']:.1f} s, F1 {out['f1']:.2f}", flush=True)
        first = sides["file_order"][0]["predictions"]
        med = {s: statistics.median(r["predict_s"] for r in runs) for s, runs in sides.items()}
        record["timed"][task_name] = {
            "predict_s": {s: [round(r["predict_s"], 2) for r in runs] for s, runs in sides.items()},
            "median_s": {s: round(v, 2) for s, v in med.items()},
            "speedup_by_length": round(med["file_order"] / med["by_length"], 2),
            "f1": {s: [r["f1"] for r in runs] for s, runs in sides.items()},
            "same_predictions": all(r["predictions"] == first for runs in sides.values() for r in runs),
        }
        print(json.dumps({task_name: record["timed"][task_name]}, indent=1), flush=True)
    record["load_avg_end"] = os.getloadavg()
    Path(a.out).write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
