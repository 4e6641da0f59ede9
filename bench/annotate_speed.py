"""Annotation speed on CPU: ours (finetune/annotate.py's path) vs transformers' token-classification pipeline,
on the same sentences of real PubMed abstracts, with the same fine-tuned NER export.

    .venv/bin/python bench/annotate_speed.py --model runs/ncbi/hf                 # 2,000 abstracts, 3 rounds
    .venv/bin/python bench/annotate_speed.py --model runs/ncbi/hf --threads 8 --docs 5000 --rounds 5
    .venv/bin/python bench/annotate_speed.py --model runs/ncbi/hf --dry_run       # 20 abstracts, 1 round
    .venv/bin/python bench/annotate_speed.py --model runs/ncbi/hf --device cuda   # one GPU; 8-GPU projection

Sentences: the first --docs records of a PubMed file (default: the first one in ../shared/data/pubmed),
read by data_prep's reader and split by its sentence splitter, as annotate.py reads them. Ours: windows of
one tokenisation, sorted by length within chunks of 256 documents, batches of --batch_size (16, annotate's CPU
default), softmax and argmax on the device, entities chunked by conlleval's rules (finetune/annotate_core.py).
Peer:
`pipeline("token-classification", model=MODEL, aggregation_strategy="simple", batch_size=32)` called on the
list of sentences (its documented batch use), in input order.

Sides (SIDES below): ours as `annotate.py` runs by default on CPU (float32, eager, its linear layers by oneDNN
on packed weights: finetune/packed_linear.py), ours with `--linear torch` (aten's kernels: evaluation's
arithmetic exactly), ours with `--compile`, ours with `--dtype bfloat16 --compile` (a CPU with native bf16), the
peer, and the peer with aggregation_strategy="first" (to explain the entity differences). Timing: every side in THIS
process, loaded once and warmed up (compiled sides compile there) on 40 other abstracts, then --rounds rounds
each running every side once in a rotated order, so that the load of a shared machine hits all of them; the
best round of each is reported (the least disturbed), with every round's time and the median. Memory: each
side's peak RSS (ru_maxrss) in its own subprocess that loads its model and runs one round (`--side`), since
one process' peak cannot be split between sides.

Entities: sets of (sentence, start, end) character spans within the sentence. Typical differences: the
pipeline labels every sub-token and "simple" aggregation groups sub-tokens, so a word whose later pieces
are predicted differently from its first is split or extended (ours labels a word by its first piece, as
training and evaluation do); untyped B/I exports (`B`, `I` labels, before typed labels) are grouped by the
label name, so the pipeline then splits `B I I` into two entities; sentences longer than the model's 512
positions are truncated by the pipeline and windowed by ours.

Projection: the whole PubMed baseline (~36M records, of which ~26M have an abstract; both given) at ours'
and the peer's abstracts/s, for one process of --threads threads, and for one node of --node_cores cores
running node_cores/threads such processes (linear scaling: an upper bound; memory bandwidth limits it).

Writes bench/results/annotate_speed.json (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BASELINE_RECORDS, BASELINE_ABSTRACTS = 36_000_000, 26_000_000


def load_docs(path: str, n: int) -> list:
    from biobert.corpus.pubmed import read_pubmed
    from finetune.annotate_unit import to_doc

    docs = []
    for doc in read_pubmed(Path(path), Counter()):
        d = to_doc(doc)
        if d is not None:
            docs.append(d)
        if len(docs) == n:
            break
    return docs


class Ours:
    """finetune/annotate.py's NER path with one of its settings: `dtype` (float32, the CPU default; bfloat16
    autocast), `compile` (--compile: inductor with frozen weights) and `linear` (auto: float32 on CPU on oneDNN's
    packed linear layers, annotate's default; torch: aten's kernels, evaluation's arithmetic exactly)."""

    def __init__(
        self,
        model: str,
        batch_size: int,
        dtype: str = "auto",
        compile: bool = False,
        device: str = "cpu",
        linear: str = "auto",
    ):
        from finetune.annotate import compile_models, pack_models
        from finetune.annotate_core import Settings, resolve_dtype
        from finetune.annotate_models import load_models

        self.models = load_models([model], None, device)
        dtype = resolve_dtype(dtype, self.models.device)  # auto: float32 on CPU, bfloat16 on CUDA, as annotate
        batch_size = batch_size or (128 if self.models.device.startswith("cuda") else 16)
        run = self.models.ner[0].run
        self.settings = Settings(run.get("max_seq_length") or 128, run.get("doc_stride", 32), batch_size, dtype=dtype)
        self.linear = "torch"
        if compile:
            compile_models(self.models)
        elif linear == "auto":
            self.linear = pack_models(self.models, self.settings)

    def __call__(self, docs: list) -> set:
        from finetune.annotate_core import ner_entities

        found = set()
        for start in range(0, len(docs), 256):
            chunk = docs[start : start + 256]
            for d, ents in enumerate(ner_entities(chunk, self.models, self.settings, Counter())):
                doc = chunk[d]
                for e in ents:
                    s = e["_sentence"]
                    begin = doc.sentences[s][0]
                    found.add((start + d, s, e["start"] - begin, e["end"] - begin))
        return found


class Peer:
    def __init__(self, model: str, batch_size: int, aggregation: str = "simple", device: str = "cpu"):
        from transformers import pipeline
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.pipe = pipeline(
            "token-classification", model=model, aggregation_strategy=aggregation, batch_size=batch_size, device=device
        )

    def __call__(self, docs: list) -> set:
        keys = [(d, s) for d, doc in enumerate(docs) for s in range(len(doc.sentences))]
        texts = [docs[d].text[slice(*docs[d].sentences[s])] for d, s in keys]
        found = set()
        for (d, s), ents in zip(keys, self.pipe(texts)):
            found |= {(d, s, int(e["start"]), int(e["end"])) for e in ents}
        return found


SIDES = {  # name -> (what it is, how to build it from args)
    "ours": (
        "annotate.py as run by default (CPU: float32, eager, oneDNN packed linear layers; CUDA: bf16 autocast)",
        lambda a: Ours(a.model, a.batch_size, device=a.device),
    ),
    "ours_torch_linear": (
        "annotate.py --linear torch: float32 eager on aten's kernels (evaluation's arithmetic exactly)",
        lambda a: Ours(a.model, a.batch_size, device=a.device, linear="torch"),
    ),
    "ours_compiled": (
        "annotate.py --compile: inductor with frozen weights (the same entities)",
        lambda a: Ours(a.model, a.batch_size, compile=True, device=a.device),
    ),
    "ours_bf16": (
        "annotate.py --dtype bfloat16 --compile: bf16 autocast (on a CPU: its AVX512-BF16 / AMX)",
        lambda a: Ours(a.model, a.batch_size, dtype="bfloat16", compile=True, device=a.device),
    ),
    "peer": (
        'transformers pipeline("token-classification", aggregation_strategy="simple", batch_size=32)',
        lambda a: Peer(a.model, 32, device=a.device),
    ),
    "peer_first": (
        'the same pipeline with aggregation_strategy="first" (a word labelled by its first piece, as ours)',
        lambda a: Peer(a.model, 32, "first", device=a.device),
    ),
}


def one_side(args) -> None:
    """--side: load one side, run one round, print its peak RSS (a subprocess of the main run). The documents
    come as JSON (--docs_json), not parsed from the XML here: parsing a baseline file would set the peak."""
    from finetune.annotate_core import Doc

    docs = [
        Doc(d["id"], d["text"], [tuple(s) for s in d["sentences"]])
        for d in json.loads(Path(args.docs_json).read_text())
    ]
    SIDES[args.side][1](args)(docs)
    print(json.dumps({"peak_rss_mb": _peak_rss_mb()}))


def _peak_rss_mb() -> float:
    """This process' peak RSS: VmHWM, which starts afresh at exec. ru_maxrss would not do: Linux carries it
    over from the forked parent, so every child would report the benchmark process' own size."""
    try:
        kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024, 1)


def peak_rss(args, side: str, docs: list) -> float:
    docs_json = Path(args.out).with_suffix(".docs.tmp.json")
    docs_json.write_text(json.dumps([{"id": d.id, "text": d.text, "sentences": d.sentences} for d in docs]))
    cmd = [sys.executable, __file__, "--side", side, "--model", args.model, "--docs_json", str(docs_json)]
    cmd += ["--threads", str(args.threads), "--batch_size", str(args.batch_size), "--device", args.device]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    docs_json.unlink()
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def compare(ours: set, peer: set) -> dict:
    only_ours, only_peer = sorted(ours - peer), sorted(peer - ours)
    return {
        "ours": len(ours),
        "peer": len(peer),
        "same": len(ours & peer),
        "only_ours": len(only_ours),
        "only_peer": len(only_peer),
        "examples_only_ours": [list(x) for x in only_ours[:5]],
        "examples_only_peer": [list(x) for x in only_peer[:5]],
    }


def measure(args) -> dict:
    """Every side loaded once (compiled sides warmed up on other documents), then `rounds` rounds, each running
    every side once in a rotated order, so a load on the shared machine falls on all of them."""
    import torch

    docs = load_docs(args.input, args.docs)
    warm = load_docs(args.input, args.docs + 40)[args.docs :]  # compile on documents outside the timed set
    n_sent = sum(len(d.sentences) for d in docs)
    sides = {name: SIDES[name][1](args) for name in args.sides}
    warmup = {}
    for name, side in sides.items():
        t0 = time.perf_counter()
        side(warm)
        warmup[name] = round(time.perf_counter() - t0, 1)
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    found = {}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            found[name] = sides[name](docs)
            times[name].append(round(time.perf_counter() - t0, 3))
    result = {"model": args.model, "input": args.input, "documents": len(docs), "sentences": n_sent}
    result |= {"threads": torch.get_num_threads(), "rounds": args.rounds, "batch_size_ours": args.batch_size}
    from cpu_info import cpu_name

    result["cpu"] = cpu_name()
    for name in names:
        best = min(times[name])
        result[name] = {
            "what": SIDES[name][0],
            "warmup_s": warmup[name],
            "round_s": times[name],
            "best_s": best,
            "median_s": sorted(times[name])[len(times[name]) // 2],
            "sentences_per_s": round(n_sent / best, 1),
            "abstracts_per_s": round(len(docs) / best, 2),
            "peak_rss_mb": peak_rss(args, name, docs),
        }
    peer = result["peer"]["sentences_per_s"]
    result["ratio_to_peer"] = {n: round(result[n]["sentences_per_s"] / peer, 2) for n in names if n != "peer"}
    result["entities"] = {
        f"ours_vs_{other}": compare(found["ours"], found[other]) for other in names if other != "ours"
    }
    result["device"] = args.device
    if args.device.startswith("cuda"):  # one process per GPU: 8 GPUs, linear scaling (an upper bound)
        import torch

        result["gpu"] = torch.cuda.get_device_name()
        result["projection"] = {
            f"{name}_hours_8_gpus_{what}": round(total / result[name]["abstracts_per_s"] / 3600 / 8, 2)
            for name in ("ours", "peer")
            for what, total in (("baseline_records", BASELINE_RECORDS), ("baseline_abstracts", BASELINE_ABSTRACTS))
        }
        return result
    procs = max(1, args.node_cores // args.threads)
    result["projection"] = {
        "node_cores": args.node_cores,
        "processes_per_node": procs,
        **{
            f"{name}_hours_{what}": round(total / result[name]["abstracts_per_s"] / 3600 / procs, 1)
            for name in ("ours", "ours_bf16", "peer")
            if name in result
            for what, total in (("baseline_records", BASELINE_RECORDS), ("baseline_abstracts", BASELINE_ABSTRACTS))
        },
    }
    return result


def main() -> None:
    shared_data = Path(os.environ.get("BIOBERT_SHARED_DATA", REPO.parent / "shared" / "data"))
    shared = sorted((shared_data / "pubmed").glob("*.xml.gz"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a fine-tuned NER export (run_dir/hf)")
    p.add_argument("--input", default=str(shared[0]) if shared else None, help="a PubMed XML file")
    p.add_argument("--docs", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--batch_size",
        type=int,
        default=0,
        help="ours (0: annotate's default, 16 on CPU, 128 on CUDA; the peer's is 32)",
    )
    p.add_argument("--device", default="cpu", help="cpu, or cuda: the GPU numbers and the 8-GPU projection")
    p.add_argument("--node_cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "annotate_speed.json"))
    p.add_argument("--dry_run", action="store_true", help="20 abstracts, 1 round: checks that it runs")
    p.add_argument(
        "--sides", default=",".join(SIDES), help="comma-separated sides to measure (default: all; ours and peer needed)"
    )
    p.add_argument("--side", choices=tuple(SIDES), help=argparse.SUPPRESS)
    p.add_argument("--docs_json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.input and not args.side:  # a --side subprocess reads its documents from --docs_json
        p.error("--input: no PubMed file found in ../shared/data/pubmed; pass one")
    if args.dry_run:
        args.docs, args.rounds = min(args.docs, 20), 1
    args.sides = [x for x in args.sides.split(",") if x]
    if not {"ours", "peer"} <= set(args.sides) or not set(args.sides) <= set(SIDES):
        p.error(f"--sides {args.sides}: choose from {list(SIDES)}, ours and peer included")
    import torch

    torch.set_num_threads(args.threads)
    if args.side:
        one_side(args)
        return
    result = measure(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['sentences']} sentences / {result['documents']} abstracts, {result['threads']} thread(s):")
    for name in args.sides:
        r = result[name]
        ratio = result["ratio_to_peer"].get(name, 1.0)
        print(f"  {name:14s} {r['sentences_per_s']:7.1f} sentences/s  {ratio:4.2f}x peer  {r['peak_rss_mb']} MB")
    for key, c in result["entities"].items():
        print(f"  entities {key}: same {c['same']}, only first {c['only_ours']}, only second {c['only_peer']}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
