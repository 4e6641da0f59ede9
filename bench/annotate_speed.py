"""Annotation speed on CPU: ours (finetune/annotate.py's path) vs transformers' token-classification pipeline,
on the same sentences of real PubMed abstracts, with the same fine-tuned NER export.

    .venv/bin/python bench/annotate_speed.py --model runs/ncbi/hf                 # 2,000 abstracts, 3 rounds
    .venv/bin/python bench/annotate_speed.py --model runs/ncbi/hf --threads 8 --docs 5000 --rounds 5
    .venv/bin/python bench/annotate_speed.py --model runs/ncbi/hf --dry_run       # 20 abstracts, 1 round

Sentences: the first --docs records of a PubMed file (default: the first one in ../shared/data/pubmed),
read by data_prep's reader and split by its sentence splitter, as annotate.py reads them. Ours: windows of
one tokenisation, sorted by length within chunks of 256 documents, batches of --batch_size (64), softmax and
argmax on the device, entities chunked by conlleval's rules (finetune/annotate_core.py). Peer:
`pipeline("token-classification", model=MODEL, aggregation_strategy="simple", batch_size=32)` called on the
list of sentences (its documented batch use), in input order.

Timing: both sides in THIS process, loaded once, interleaved (ours, peer, then peer, ours, ...) so that the
load of a shared machine hits both; the best round of each is reported (the least disturbed), with every
round's time. Memory: each side's peak RSS (ru_maxrss) in its own subprocess that loads its model and runs
one round (`--side`), since one process' peak cannot be split between two sides.

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
    def __init__(self, model: str, batch_size: int):
        from finetune.annotate_core import Settings
        from finetune.annotate_models import load_models

        self.models = load_models([model], None, "cpu")
        run = self.models.ner[0].run
        self.settings = Settings(run.get("max_seq_length") or 128, run.get("doc_stride", 32), batch_size)

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
    def __init__(self, model: str, batch_size: int):
        from transformers import pipeline
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.pipe = pipeline(
            "token-classification", model=model, aggregation_strategy="simple", batch_size=batch_size, device="cpu"
        )

    def __call__(self, docs: list) -> set:
        keys = [(d, s) for d, doc in enumerate(docs) for s in range(len(doc.sentences))]
        texts = [docs[d].text[slice(*docs[d].sentences[s])] for d, s in keys]
        found = set()
        for (d, s), ents in zip(keys, self.pipe(texts)):
            found |= {(d, s, int(e["start"]), int(e["end"])) for e in ents}
        return found


def one_side(args) -> None:
    """--side: load one side, run one round, print its peak RSS (a subprocess of the main run)."""
    docs = load_docs(args.input, args.docs)
    runner = (Ours if args.side == "ours" else Peer)(args.model, args.batch_size if args.side == "ours" else 32)
    runner(docs)
    print(json.dumps({"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def peak_rss(args, side: str) -> float:
    cmd = [sys.executable, __file__, "--side", side, "--model", args.model, "--input", args.input]
    cmd += ["--docs", str(args.docs), "--threads", str(args.threads), "--batch_size", str(args.batch_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
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
    import torch

    docs = load_docs(args.input, args.docs)
    n_sent = sum(len(d.sentences) for d in docs)
    sides = {"ours": Ours(args.model, args.batch_size), "peer": Peer(args.model, 32)}
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    found = {}
    for r in range(args.rounds):
        for name in ("ours", "peer") if r % 2 == 0 else ("peer", "ours"):
            t0 = time.perf_counter()
            found[name] = sides[name](docs)
            times[name].append(round(time.perf_counter() - t0, 3))
    result = {"model": args.model, "input": args.input, "documents": len(docs), "sentences": n_sent}
    result |= {"threads": torch.get_num_threads(), "rounds": args.rounds, "batch_size_ours": args.batch_size}
    for name in sides:
        best = min(times[name])
        result[name] = {
            "round_s": times[name],
            "best_s": best,
            "sentences_per_s": round(n_sent / best, 1),
            "abstracts_per_s": round(len(docs) / best, 2),
            "peak_rss_mb": peak_rss(args, name),
        }
    result["ratio_sentences_per_s"] = round(result["ours"]["sentences_per_s"] / result["peer"]["sentences_per_s"], 2)
    result["entities"] = compare(found["ours"], found["peer"])
    procs = max(1, args.node_cores // args.threads)
    result["projection"] = {
        "node_cores": args.node_cores,
        "processes_per_node": procs,
        **{
            f"{name}_hours_{what}": round(total / result[name]["abstracts_per_s"] / 3600 / procs, 1)
            for name in sides
            for what, total in (("baseline_records", BASELINE_RECORDS), ("baseline_abstracts", BASELINE_ABSTRACTS))
        },
    }
    return result


def main() -> None:
    shared = sorted((REPO.parent / "shared" / "data" / "pubmed").glob("*.xml.gz"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a fine-tuned NER export (run_dir/hf)")
    p.add_argument("--input", default=str(shared[0]) if shared else None, help="a PubMed XML file")
    p.add_argument("--docs", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=64, help="ours (the peer's is 32)")
    p.add_argument("--node_cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "annotate_speed.json"))
    p.add_argument("--dry_run", action="store_true", help="20 abstracts, 1 round: checks that it runs")
    p.add_argument("--side", choices=("ours", "peer"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.input:
        p.error("--input: no PubMed file found in ../shared/data/pubmed; pass one")
    if args.dry_run:
        args.docs, args.rounds = min(args.docs, 20), 1
    import torch

    torch.set_num_threads(args.threads)
    if args.side:
        one_side(args)
        return
    result = measure(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    o, q = result["ours"], result["peer"]
    print(
        f"{result['sentences']} sentences / {result['documents']} abstracts, {result['threads']} thread(s): ours "
        f"{o['sentences_per_s']}/s ({o['peak_rss_mb']} MB), peer {q['sentences_per_s']}/s ({q['peak_rss_mb']} MB), "
        f"ratio {result['ratio_sentences_per_s']}x; entities same {result['entities']['same']}, only ours "
        f"{result['entities']['only_ours']}, only peer {result['entities']['only_peer']} -> {args.out}"
    )


if __name__ == "__main__":
    main()
