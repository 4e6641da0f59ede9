"""BERT-base pre-training and fine-tuning throughput + MFU on ONE GPU, through our real code path.

    bash bench/gpu.sh                                   # what a user runs (about 7 minutes, unattended)
    .venv/bin/python bench/gpu_pretrain.py              # the same without the wrapper
    .venv/bin/python bench/gpu_pretrain.py --dry_run    # CPU, tiny model: checks the script itself

Self-contained (no network, no corpus): a synthetic WordPiece vocab.txt and synthetic full-length NSP
examples are written with data_prep.shards' ShardWriter into a temp dir, then every configuration runs in
its own process (an out-of-memory micro-batch cannot spoil the next one):

* pre-training: `pretrain.run.main` (DeepSpeed Engine, fit(), MaskingCollator, PretrainingObjective with
  the masked-only projection), BERT-base from random init, ds_configs/h100x8.json (bf16, ZeRO 1, torch
  fused AdamW) with the batch set to one micro-batch on one GPU; seq 128 and 512, several micro-batches;
* the same with the encoder under torch.compile (one config, if time is left);
* fine-tuning: BertForTokenClassification at seq 128 through the same Engine + fit()
  (ds_configs/finetune.json with bf16 and torch's fused AdamW).

Each configuration warms up, then is timed for `--config_s` seconds; the whole run stops starting new
configurations when `--budget_s` would be exceeded. MFU = tokens/s x biobert.flops.bert_flops_per_token /
biobert.flops.device_peak_tflops (dense bf16). The BioBERT projection assumes linear scaling to 8 GPUs.
Writes bench/results/gpu_<device>.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from gpu_configs import run_one, write_synthetic_shards, write_vocab  # noqa: E402

BIOBERT_STEPS, BIOBERT_TOKENS_PER_STEP = 470_000, 131_072  # BioBERT v1.0 PubMed: 470K steps
PAPER_HOURS = 10 * 24  # "more than 10 days" on 8 V100s


# ---------------------------------------------------------------------------------------------- driver
def device_description(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            name=torch.cuda.get_device_name(0),
            memory_gb=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            count_visible=torch.cuda.device_count(),
        )
    else:
        info["name"] = "cpu"
    for pkg in ("deepspeed", "transformers"):
        info[pkg] = __import__(pkg).__version__
    return info


def launch(spec: dict, timeout_s: float) -> dict:
    """One configuration in its own process. A "before" configuration imports the baseline tree's library
    (`src` first on the path) under this tree's harness and counters."""
    result_file = Path(spec["tmp"]) / f"result_{spec['name']}.json"
    log_file = Path(spec["tmp"]) / f"log_{spec['name']}.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.setdefault("TQDM_DISABLE", "1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_one", json.dumps(spec), "--_result", str(result_file)]
    t = time.time()
    with open(log_file, "w") as log:
        try:
            subprocess.run(
                cmd, cwd=spec.get("src") or ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            pass
    if result_file.is_file():
        out = json.loads(result_file.read_text())
    else:
        out = {
            "error": f"no result within {timeout_s:.0f} s; log tail: "
            + log_file.read_text(errors="replace")[-600:].replace("\n", " | ")
        }
    out["wall_s"] = round(time.time() - t, 1)
    return out


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


VARIANTS = ("new", "before", "eager", "fp16", "finetune", "parity", "sweep", "cudagraphs", "fusedadam")


def plan(args) -> list[dict]:
    """In priority order (the budget cuts from the end): the new default at BioBERT's per-GPU batches, the
    baseline tree's path at the same batches, eager, fp16, fine-tuning, fp16/bf16 parity, larger micro-batches,
    CUDA graphs, DeepSpeed's FusedAdam."""
    b128, b512, ft = (8, 2, 8) if args.tiny else (128, 32, 32)  # 128 x 128 and 32 x 512: 131,072 tokens / 8
    sweep128, sweep512 = ([16], [4]) if args.tiny else (_ints(args.mb128), _ints(args.mb512))
    pre = [("pretrain", 512, b512), ("pretrain", 128, b128)]
    want = set(args.variants.split(","))
    configs = []

    def add(variant, kind, seq, mb):
        if variant in want or (kind in ("finetune", "parity") and kind in want):
            configs.append({"kind": kind, "seq_len": seq, "micro_batch": mb, "variant": variant})

    for kind, seq, mb in pre:
        add("new", kind, seq, mb)
    if args.baseline_src:
        for kind, seq, mb in pre:
            add("before", kind, seq, mb)
    for kind, seq, mb in pre:
        add("eager", kind, seq, mb)
    add("fp16", "pretrain", 512, b512)
    if "finetune" in want:
        add("new", "finetune", 128, ft)
        if args.baseline_src:
            add("before", "finetune", 128, ft)
    add("eager", "parity", 128, 4 if args.tiny else 32)
    if "sweep" in want:
        for seq, sizes, share in ((512, sweep512, b512), (128, sweep128, b128)):
            configs += [
                {"kind": "pretrain", "seq_len": seq, "micro_batch": m, "variant": "new"} for m in sizes if m != share
            ]
    add("cudagraphs", "pretrain", 512, b512)
    if args.device == "cuda":  # DeepSpeed's CPU FusedAdam is a 60-s C++ build and not what this measures
        add("fusedadam", "pretrain", 512, b512)
    return configs


def _ok(results, variant, kind, seq, mb=None):
    return next(
        (
            r
            for r in results
            if r.get("tokens_per_s")
            and r["spec"].get("variant", "new") == variant
            and r["spec"]["kind"] == kind
            and r["spec"]["seq_len"] == seq
            and (mb is None or r["spec"]["micro_batch"] == mb)
        ),
        None,
    )


def summarize(results: list[dict], peak: float) -> dict:
    out = {}
    for r in results:
        if r.get("tokens_per_s") and peak:
            r["mfu"] = round(r["tokens_per_s"] * r["flops_per_token"] / (peak * 1e12), 4)
    total_tokens = BIOBERT_STEPS * BIOBERT_TOKENS_PER_STEP
    share = BIOBERT_TOKENS_PER_STEP // 8  # one GPU's part of BioBERT's step: 32 x 512 or 128 x 128 sequences
    for seq in (128, 512):
        # Project at BioBERT's own batch: a larger micro-batch hides more per-step overhead but would be a
        # larger global batch than the paper's. The fastest configuration is reported beside it.
        new = [
            r
            for r in results
            if r.get("tokens_per_s")
            and r["spec"]["kind"] == "pretrain"
            and r["spec"]["seq_len"] == seq
            and r["spec"].get("variant", "new") == "new"
        ]
        fastest = max(new, key=lambda r: r["tokens_per_s"], default=None)
        at_share = [r for r in new if r["spec"]["micro_batch"] * seq == share]
        b = at_share[0] if at_share else fastest
        if b:
            hours = total_tokens / (8 * b["tokens_per_s"]) / 3600
            out[f"biobert_projection_seq{seq}"] = {
                "tokens_per_s_1gpu": round(b["tokens_per_s"]),
                "micro_batch": b["spec"]["micro_batch"],
                "at_biobert_batch": bool(at_share),
                "fastest_tokens_per_s_1gpu": round(fastest["tokens_per_s"]),
                "fastest_micro_batch": fastest["spec"]["micro_batch"],
                "mfu": b.get("mfu"),
                "hours_on_8_gpus": round(hours, 1),
                "days_on_8_gpus": round(hours / 24, 2),
                "paper_8xV100_hours_at_least": PAPER_HOURS,
                "speedup_vs_paper_at_least": round(PAPER_HOURS / hours, 1),
                "assumption": f"{BIOBERT_STEPS:,} steps x {BIOBERT_TOKENS_PER_STEP:,} tokens, every token at seq "
                f"{seq}; 8 GPUs at exactly 8x this single GPU's tokens/s (linear scaling, no "
                "communication cost); the paper's figure is a lower bound ('more than 10 days')",
            }
        for other in ("before", "eager", "fp16", "cudagraphs", "fusedadam"):
            a, o = (
                _ok(results, "new", "pretrain", seq, b["spec"]["micro_batch"]) if b else None,
                _ok(results, other, "pretrain", seq, b["spec"]["micro_batch"] if b else None),
            )
            if a and o:
                ratio = round(a["tokens_per_s"] / o["tokens_per_s"], 3)
                out.setdefault("ratios", {})[f"new_over_{other}_seq{seq}"] = ratio
    fn, fb = _ok(results, "new", "finetune", 128), _ok(results, "before", "finetune", 128)
    if fn and fb:
        out.setdefault("ratios", {})["finetune_new_over_before"] = round(fn["tokens_per_s"] / fb["tokens_per_s"], 3)
    parity = next((r["parity"]["summary"] for r in results if "parity" in r), None)
    if parity:
        out["fp16_vs_bf16"] = parity
    return out


def print_table(results: list[dict], summary: dict, device: str) -> None:
    print(f"\n{device}")
    print(
        f"{'config':36} {'tokens/s':>10} {'s/step':>8} {'MFU':>6} {'mem GB':>7} {'launch/st':>9} {'reads/st':>8}  note"
    )
    for r in results:
        s = r["spec"]
        name = f"{s.get('variant', 'new')} {s['kind']} seq{s['seq_len']} mb{s['micro_batch']}"
        if "parity" in r:
            p = r["parity"]["summary"]
            print(
                f"{name:36} fp16 vs bf16 over {p['steps']} steps: max rel. loss diff "
                f"{p['max_rel_loss_diff_fp16_vs_bf16']}"
                f"; forced overflow skipped: {p['overflow_step_skipped']}, scale {p['scale_before_after']}"
            )
            continue
        if not r.get("tokens_per_s"):
            print(f"{name:36} {'-':>10} {'':>8} {'':>6} {'':>7} {'':>9} {'':>8}  {r.get('error', '')[:70]}")
            continue
        c = r.get("counts", {})
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        mem = f"{r['peak_mem_gb']:.1f}" if r.get("peak_mem_gb") is not None else "n/a"
        launches = f"{c['kernel_launches_per_step']:.0f}" if "kernel_launches_per_step" in c else "n/a"
        reads = f"{c['host_reads_per_step']:.1f}" if "host_reads_per_step" in c else "n/a"
        print(
            f"{name:36} {r['tokens_per_s']:10.0f} {r['s_per_step']:8.3f} {mfu:>6} {mem:>7} {launches:>9} {reads:>8}"
            f"  {r.get('error', '')[:60]}"
        )
    for key, p in summary.items():
        if key.startswith("biobert_projection"):
            print(
                f"{key}: {p['tokens_per_s_1gpu']:,} tokens/s/GPU at micro-batch {p['micro_batch']} -> "
                f"{p['hours_on_8_gpus']:,} h ({p['days_on_8_gpus']} days) on 8 GPUs vs > "
                f"{p['paper_8xV100_hours_at_least']} h on 8 V100s (>= {p['speedup_vs_paper_at_least']}x); "
                "linear scaling assumed"
            )
    for key, ratio in summary.get("ratios", {}).items():
        print(f"{key}: {ratio}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--tiny", action="store_true", help="2-layer hidden-64 BERT (script checks)")
    p.add_argument("--dry_run", action="store_true", help="= --device cpu --tiny, short budgets")
    p.add_argument("--budget_s", type=float, default=420.0, help="no configuration starts after this")
    p.add_argument("--config_s", type=float, default=20.0, help="timed seconds per configuration")
    p.add_argument("--warmup", type=int, default=10, help="steps not timed (cuDNN/allocator/compile)")
    p.add_argument(
        "--mb128",
        default="128,256,512",
        help="pre-training micro-batches at seq 128 (128 = one GPU's share of BioBERT's 131,072-token step on 8 GPUs)",
    )
    p.add_argument("--mb512", default="32,64,128", help="... at seq 512 (32 = BioBERT's per-GPU share)")
    p.add_argument("--mb_finetune", default="32", help="fine-tuning micro-batches at seq 128 ('' for none)")
    p.add_argument(
        "--profile",
        choices=("torch", "cprofile"),
        default=None,
        help="profile each configuration over --profile_steps steps after warm-up instead of timing "
        "it (torch.profiler: per-op CPU/CUDA time; cprofile: Python functions); tables in "
        "profile_<config>.txt beside the logs; the timings of profiled runs include its overhead",
    )
    p.add_argument("--profile_steps", type=int, default=10)
    p.add_argument(
        "--ds",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra DeepSpeed override for every configuration, e.g. bf16.check_grad_overflow=true",
    )
    p.add_argument("--vocab_size", type=int, default=30522, help="30522 (bert-base-uncased) or 28996 (cased)")
    p.add_argument("--zero", type=int, default=1)
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="which to run (default all, in this priority order): new = the default path "
        "(ds_configs/h100x8.json, compiled); before = --baseline_src's path; eager = new without "
        "torch.compile; fp16 = ds_configs/v100x8.json's precision; finetune; parity = fp16 vs bf16 "
        "losses and a forced overflow; sweep = --mb128/--mb512; cudagraphs = --compile "
        "reduce-overhead; fusedadam = DeepSpeed's FusedAdam instead of torch's fused AdamW",
    )
    p.add_argument(
        "--baseline_src",
        default="",
        help="a checkout of the baseline commit (bench/gpu.sh writes "
        "bench/.baseline with git archive); its library runs the 'before' configurations",
    )
    p.add_argument("--out", default="")
    p.add_argument(
        "--summarize_only",
        metavar="RESULTS_JSON",
        help="recompute the summary (projection) of an earlier results file in place and print it",
    )
    p.add_argument("--_one", help=argparse.SUPPRESS)
    p.add_argument("--_result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._one:
        spec = json.loads(args._one)
        if spec.get("src"):  # a "before" configuration: the baseline tree's library under this harness
            sys.path.insert(0, spec["src"])
        out = run_one(spec)
        Path(args._result).write_text(json.dumps(out, indent=1))
        return 0
    if args.summarize_only:
        doc = json.loads(Path(args.summarize_only).read_text())
        doc["summary"] = summarize(doc["results"], doc["peak_tflops_bf16"])
        Path(args.summarize_only).write_text(json.dumps(doc, indent=1) + "\n")
        print_table(doc["results"], doc["summary"], doc["device"]["name"])
        return 0
    if args.dry_run:
        args.device, args.tiny, args.config_s, args.warmup = "cpu", True, 3.0, 2
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench/gpu_pretrain.py: no CUDA device visible to torch "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). Run it on a GPU machine "
            "with the CUDA build of torch (`make test` installs it there), or check the script here with "
            "--dry_run.",
            file=sys.stderr,
        )
        return 2
    t_start = time.time()
    deadline = t_start + args.budget_s
    tmp = Path(tempfile.mkdtemp(prefix="biobert_gpu_bench_"))
    vocab = write_vocab(tmp / "vocab.txt", args.vocab_size if not args.tiny else 1000)
    data = {
        seq: write_synthetic_shards(tmp / f"shards{seq}", vocab, seq, 2048 if args.tiny else 8192) for seq in (128, 512)
    }
    desc = device_description(args.device)
    from biobert.flops import device_peak_tflops

    peak = device_peak_tflops("cuda:0", torch.bfloat16) if args.device == "cuda" else 0.0
    est = 25.0 + args.config_s + (15 if args.device == "cuda" else 30)  # start-up + warm-up + timed
    results: list[dict] = []
    oom_at: dict[tuple, int] = {}
    name = "cpu_dryrun" if args.device == "cpu" else re.sub(r"[^A-Za-z0-9]+", "_", desc["name"]).strip("_")
    out_path = (
        Path(args.out)
        if args.out
        else (tmp / f"gpu_{name}.json" if args.device == "cpu" else ROOT / "bench" / "results" / f"gpu_{name}.json")
    )

    def write() -> dict:  # after every configuration: a killed run still leaves its numbers
        doc = {
            "device": desc,
            "peak_tflops_bf16": peak,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
            "results": results,
            "summary": summarize(results, peak),
            "wall_s": round(time.time() - t_start, 1),
            "work_dir": str(tmp),
        }
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(doc, indent=1) + "\n")
        return doc

    for i, cfg in enumerate(plan(args)):
        key = (cfg["kind"], cfg["seq_len"], cfg["variant"])
        spec = {
            **cfg,
            "name": f"{i:02d}",
            "tiny": args.tiny,
            "vocab_size": args.vocab_size if not args.tiny else 1000,
            "zero": args.zero,
            "warmup": args.warmup,
            "config_s": args.config_s,
            "max_steps": 100000,
            "log_every": 1 if args.device == "cpu" else 5,
            "tmp": str(tmp),
            "vocab": str(vocab),
            "profile": args.profile,
            "profile_steps": args.profile_steps,
            "ds": args.ds,
            "data_dir": str(data[cfg["seq_len"]]),
            "parity_steps": 12 if args.tiny else 40,
            "backend": "inductor" if args.device == "cuda" else "aot_eager",
        }
        if cfg["variant"] == "before":
            spec["src"] = str(Path(args.baseline_src).resolve())
        compiled = cfg["variant"] in ("new", "cudagraphs", "fusedadam") and cfg["kind"] != "parity"
        extra = (90.0 if args.device == "cuda" else 10.0) if compiled else 0.0
        extra += 60.0 if cfg["variant"] == "fusedadam" else 0.0  # the CUDA op's JIT build
        extra += 2 * est if cfg["kind"] == "parity" else 0.0  # three short runs
        shown = {k: v for k, v in spec.items() if k not in ("tmp", "vocab", "data_dir", "src")}
        if key in oom_at and cfg["micro_batch"] > oom_at[key]:
            results.append({"spec": shown, "error": f"skipped: micro-batch {oom_at[key]} ran out of memory"})
            continue
        if time.time() + est + extra > deadline:
            results.append({"spec": shown, "error": "skipped: time budget (--budget_s) would be exceeded"})
            continue
        print(f"[{time.time() - t_start:5.0f} s] {cfg}", file=sys.stderr, flush=True)
        r = launch(spec, timeout_s=max(30.0, min(deadline + 40 - time.time(), est + extra + 120)))
        r.setdefault("spec", shown)
        if "out of memory" in r.get("error", ""):
            oom_at[key] = cfg["micro_batch"]
        results.append(r)
        write()
    doc = write()
    for path in [*tmp.glob("run_*"), *tmp.glob("shards*")]:  # checkpoints, shards; logs and JSON stay
        shutil.rmtree(path, ignore_errors=True)
    if args.profile:  # all configurations' tables in one file beside the results
        tables = sorted(tmp.glob("profile_*.txt"))
        prof_path = out_path.with_suffix(".profile.txt")
        prof_path.write_text(
            "\n\n".join(
                f"=== {r['spec']} ===\n" + t.read_text()
                for r, t in zip([r for r in results if "steps_timed" in r], tables)
            )
        )
        print(f"profiles: {prof_path}")
    print_table(results, doc["summary"], desc["name"])
    print(f"\nwrote {out_path} ({doc['wall_s']} s); per-config logs in {tmp}")
    return 0 if any(r.get("tokens_per_s") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
