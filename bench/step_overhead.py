"""Per-step framework overhead on CPU, as a stand-in for what a GPU cannot hide: DeepSpeed's bf16 overflow scan.

    OMP_NUM_THREADS=1 .venv/bin/python bench/step_overhead.py --rounds 4

A 12-layer, hidden-64 BERT has BERT-base's 206 parameter tensors at a fraction of the arithmetic. Measured:
on a CPU the arithmetic still dominates the step (~130 ms), so the per-tensor work shows only as a few per
cent; on a GPU the same work is kernel launches the GPU waits for. Each round runs bench/gpu_pretrain.py's pre-training
configuration (pretrain/run.py, bf16, ZeRO-1, one process) twice, once with DeepSpeed's per-parameter bf16
overflow scan (`bf16.check_grad_overflow=true`, DeepSpeed's default) and once without (our default, see
biobert/ds_config.finalize), alternating the order. Writes bench/results/step_overhead.json.
On a GPU the same scan is ~1,600 kernel launches per BERT-base step; `bash bench/gpu.sh --profile torch`
shows it there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import gpu_pretrain as g  # noqa: E402
from gpu_configs import write_synthetic_shards, write_vocab  # noqa: E402

SCAN_ON = ["bf16.check_grad_overflow=true"]
# BERT-base's 12 layers (206 parameter tensors) at almost no arithmetic. It goes in each spec: every
# configuration runs in a child process, so changing a module constant here would not reach it.
SIZE = dict(hidden_size=64, num_hidden_layers=12, num_attention_heads=2, intermediate_size=128)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--config_s", type=float, default=12.0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "step_overhead.json"))
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="biobert_step_overhead_"))
    vocab = write_vocab(tmp / "vocab.txt", 1000)
    data = write_synthetic_shards(tmp / "shards", vocab, 128, 4096)
    runs: dict[str, list[float]] = {"scan_on": [], "scan_off": []}
    for rnd in range(args.rounds):
        order = [("scan_on", SCAN_ON), ("scan_off", [])]
        for name, ds in order if rnd % 2 == 0 else order[::-1]:
            spec = {
                "kind": "pretrain",
                "seq_len": 128,
                "micro_batch": 4,
                "name": f"{name}_{rnd}",
                "tiny": True,
                "vocab_size": 1000,
                "zero": 1,
                "warmup": 10,
                "config_s": args.config_s,
                "max_steps": 10**6,
                "log_every": 5,
                "tmp": str(tmp),
                "vocab": str(vocab),
                "data_dir": str(data),
                "variant": "eager",
                "ds": ["torch_autocast.enabled=false", "bf16.enabled=true", "zero_optimization.stage=1", *ds],
                "size": SIZE,
            }
            r = g.launch(spec, 300)
            if "s_per_step" not in r:
                print(f"{name} round {rnd}: {r.get('error')}", file=sys.stderr)
                return 1
            runs[name].append(r["s_per_step"])
            print(f"round {rnd} {name}: {1000 * r['s_per_step']:.1f} ms/step", flush=True)
    on, off = statistics.median(runs["scan_on"]), statistics.median(runs["scan_off"])
    doc = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": "cpu",
        "model": "BERT 12 layers, hidden 64 (206 parameter tensors)",
        "setting": "bf16, ZeRO-1, 1 process, micro-batch 4 x 128",
        "s_per_step": runs,
        "median_ms_scan_on": round(1000 * on, 2),
        "median_ms_scan_off": round(1000 * off, 2),
        "speedup_scan_off": round(on / off, 3),
    }
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(
        f"median {1000 * on:.1f} ms/step with DeepSpeed's bf16 overflow scan, {1000 * off:.1f} without: "
        f"{on / off:.2f}x; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
