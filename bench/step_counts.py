"""Host work per pre-training step, counted on CPU: GPU->host syncs and dispatched ATen ops, before and after.

    .venv/bin/python bench/step_counts.py                  # this tree vs commit 534785f; ~2 minutes
    .venv/bin/python bench/step_counts.py --before REV     # another baseline commit (git archive of REV)

A GPU step is host-bound when the host launches more kernels than the GPU can absorb or waits for the GPU
(bench/README.md, the H200 profile). Both are host-side facts and are counted here without a GPU, with
biobert/probe.py: `.item()`, `bool(t)`, `float(t)`, `.tolist()`, `.cpu()`, `.numpy()` on tensors, and ATen ops
reaching the dispatcher (a TorchDispatchMode that lets compiled code run as compiled), in the training thread,
over steady-state optimizer steps 13-16 (no log, eval or save step among them). The model is the test suite's
tiny BERT (2 layers, hidden 32, seq 64, batch 4), so the count is what a step asks of the host, not of the
arithmetic. Each configuration runs in its own process, on this tree or on the baseline's (`git archive`),
through the real `pretrain/run.py`. Writes bench/results/step_counts.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST, N = 12, 4  # after warm-up: both compiled variants (padded / unpadded batch) exist by then
CONFIGS = {  # name: (--ds overrides and flags, which trees)
    "fp32 ZeRO-0 (cpu.json)": ([], ("before", "after")),
    "fp32 ZeRO-0, compiled (inductor)": (["--compile", "default"], ("after",)),
    "bf16 ZeRO-1 (DeepSpeed's optimizer; the GPU profiles before)": (
        ["--ds", "bf16.enabled=true", "--ds", "zero_optimization.stage=1"],
        ("before", "after"),
    ),
    "bf16 ZeRO-0 (DeepSpeed's FP16_UnfusedOptimizer)": (["--ds", "bf16.enabled=true"], ("before",)),
    "bf16 torch_autocast ZeRO-0 (the GPU profiles now)": (
        ["--ds", "torch_autocast.enabled=true", "--ds", "torch_autocast.dtype=bfloat16"],
        ("after",),
    ),
    "bf16 torch_autocast ZeRO-0, compiled (inductor)": (
        ["--ds", "torch_autocast.enabled=true", "--ds", "torch_autocast.dtype=bfloat16", "--compile", "default"],
        ("after",),
    ),
    "fp16 torch_autocast ZeRO-0 + GradScaler (v100x8.json now)": (
        ["--ds", "torch_autocast.enabled=true", "--ds", "torch_autocast.dtype=float16"],
        ("after",),
    ),
}


def one(spec: dict) -> dict:
    """In the child: this tree's probe around the tree-under-test's pretrain/run.py."""
    sys.path.insert(0, spec["src"])
    sys.path.insert(1, str(ROOT / "bench"))
    from gpu_configs import load_probe

    probe = load_probe()
    import pretrain.run as pretrain_run
    from biobert.engine import Engine

    argv = [
        "--deepspeed_config",
        str(Path(spec["src"]) / "ds_configs" / "cpu.json"),
        "--ds",
        "train_batch_size=4",
        "--ds",
        "train_micro_batch_size_per_gpu=4",
        "--data_dir",
        spec["shards"],
        "--init_from",
        spec["model"],
        "--run_dir",
        spec["run_dir"],
        "--max_steps",
        str(FIRST + N + 1),
        "--log_every",
        "1000",
        "--progress",
        "false",
        "--export_hf",
        "false",
        "--eval_batches",
        "0",
        *spec["extra"],
    ]
    with probe.StepWindow(Engine, first=FIRST, n=N) as window:
        if hasattr(pretrain_run, "run"):  # the Python API; a baseline tree older than it has only its CLI
            cfg, args = pretrain_run.parse_args(argv)
            pretrain_run.run(cfg, args.deepspeed_config, args.ds)
        else:
            pretrain_run.main.__wrapped__(argv)
    return {
        "syncs_per_step": window.syncs.count / N,
        "ops_per_step": window.ops.count / N,
        "graphs_compiled_in_window": window.compiled_in_window,
        "sync_sites": dict(window.syncs.where.most_common(8)),
        "top_ops": dict(window.ops.by_op.most_common(12)),
    }


def fixture(tmp: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_pubmed_xml, write_tiny_bert, write_vocab
    from data_prep import prepare
    from data_prep.pipeline import PrepConfig

    vocab = write_vocab(tmp / "vocab.txt")
    model = write_tiny_bert(tmp / "bert", vocab)
    (tmp / "xml").mkdir()
    write_pubmed_xml(tmp / "xml" / "pubmed26n0001.xml.gz", 120, seed=1)
    prepare(
        PrepConfig(
            inputs=[str(tmp / "xml")], vocab=str(vocab), out=str(tmp / "shards"), seq_len=64, heldout_fraction=0.05
        )
    )
    return model, tmp / "shards"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="534785f", help="baseline commit (its tree via git archive)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "step_counts.json"))
    p.add_argument("--_one", help=argparse.SUPPRESS)
    p.add_argument("--_result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._one:
        Path(args._result).write_text(json.dumps(one(json.loads(args._one))))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="biobert_step_counts_"))
    model, shards = fixture(tmp)
    before = tmp / "before_tree"
    before.mkdir()
    archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
    trees = {"before": before, "after": ROOT}
    rows = []
    for name, (extra, sides) in CONFIGS.items():
        for side in sides:
            spec = {
                "src": str(trees[side]),
                "model": str(model),
                "shards": str(shards),
                "extra": extra,
                "run_dir": str(tmp / f"run_{len(rows)}"),
            }
            result_file = tmp / f"result_{len(rows)}.json"
            env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(trees[side])}
            env = {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
            proc = subprocess.run(
                [sys.executable, __file__, "--_one", json.dumps(spec), "--_result", str(result_file)],
                env=env,
                capture_output=True,
                text=True,
                cwd=trees[side],
            )
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            row = {"config": name, "tree": side, **json.loads(result_file.read_text())}
            rows.append(row)
            print(
                f"{name:62} {side:6} syncs/step {row['syncs_per_step']:5.1f}  ops/step {row['ops_per_step']:7.1f}",
                flush=True,
            )
    import torch

    doc = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "before": args.before,
        "after": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "torch": torch.__version__,
        "setup": f"tiny BERT (2 layers, hidden 32), seq 64, batch 4 = 1 micro-batch, steady-state steps "
        f"{FIRST + 1}-{FIRST + N}, one process, OMP_NUM_THREADS=1, this machine's CPU",
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
