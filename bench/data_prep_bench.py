"""data_prep throughput and memory on the real corpora, side by side with the tokenizer alone.

    .venv/bin/python bench/data_prep_bench.py                  # full run (~5-8 min on 2 shared cores)
    .venv/bin/python bench/data_prep_bench.py --quick          # smoke test: 1 PubMed file, 2x memory corpus
    .venv/bin/python bench/data_prep_bench.py --baseline-src DIR   # also the code in DIR (a checkout holding
                                                               # data_prep/ and biobert/): before/after + identity
    .venv/bin/python bench/data_prep_bench.py --report         # print the table of the results file

Every measurement is its own process (what a worker is), with the tokenizer on ONE thread
(RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false): throughput per core is words per CPU-second of that
process tree (user+sys, from the parent's RUSAGE_CHILDREN), which separates our work from the other jobs
on a shared machine better than wall time; wall time is reported too. The reference is the Hugging Face
fast WordPiece tokenizer alone (`WordPieceTokenizer.encode_batch`, 1,000 sentences a call, what data_prep
called before) on exactly the pipeline's sentences, measured in the same run: pipeline / tokenizer-alone is
how close the whole pipeline (gzip, XML, cleaning, splitting, tokenising, packing, Arrow, hashing, manifest)
is to that tokenizer-bound limit; above 1 means the pipeline beats the tokenizer it used to be bound by.

Memory: peak RSS (ru_maxrss) of a one-worker run on one PubMed file and on that file's records repeated
`--mem-copies` times under one root (PMIDs offset so that supersession keeps them), written to a temp dir.

Writes bench/results/data_prep.json and prints a table; the 64-core projection uses the measured rates.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOBERT_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results" / "data_prep.json"
TARGET_WORDS_PER_CORE_S = 250_000
TARGET_PEAK_RSS_MB = 1024
ONE_THREAD = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
# Corpus sizes for the projection (words). BioBERT (Lee et al. 2020, Table 1): PubMed abstracts 4.5B, PMC
# full text 13.5B. The 2025 PubMed baseline has ~38M citations against ~29M in BioBERT's 2019 download:
# assumed 4.5B x 38/29 = 5.9B words; PMC OA is kept at BioBERT's 13.5B as the issue states.
CORPORA = {"pubmed_biobert": 4.5e9, "pubmed_2025_assumed": 5.9e9, "pmc_oa": 13.5e9}
NODE_CORES = 64


# ---------------------------------------------------------------------------------------------- children
def _child_prepare(spec: dict) -> dict:
    """One `python -m data_prep` run in this process (workers=1: sequential, in this very process)."""
    sys.path.insert(0, spec["src"])
    from data_prep import prepare as run
    from data_prep.pipeline import PrepConfig

    cfg = PrepConfig(
        inputs=spec["inputs"], vocab=spec["vocab"], out=spec["out"], workers=spec["workers"], overwrite=True
    )
    manifest = run(cfg)
    c = manifest["counts"]
    return {
        "words": c["words"],
        "documents": c["documents"],
        "examples": c["examples"],
        "nsp_fallbacks": c["train"]["nsp_fallbacks"] + c["heldout"]["nsp_fallbacks"],
        "units": len(manifest["inputs"]),
        "peak_rss_mb": manifest["worker_peak_rss_mb"],
        "shards": [s["sha256"] for split in manifest["splits"].values() for s in split["shards"]],
        "errors": manifest["errors"],
        "random_next_fraction": _random_next_fraction(spec["out"]),
    }


def _random_next_fraction(out: str) -> float | None:
    from data_prep.shards import open_shards

    shards = open_shards(out)
    if not len(shards):
        return None
    labels = shards.get_batch(range(len(shards)))["next_sentence_label"]
    return round(float((labels == 1).mean()), 4)


def _child_tokenizer(spec: dict) -> dict:
    """The sentences the pipeline tokenises (read + split untimed), then the tokenizer alone on them."""
    sys.path.insert(0, spec["src"])
    from collections import Counter

    from biobert.tokenizer import load_tokenizer
    from data_prep.fast_wordpiece import SentenceEncoder
    from data_prep.pipeline import _sentences
    from data_prep.readers import expand_inputs, read_documents

    sentences = [
        s for path in expand_inputs(spec["inputs"]) for doc in read_documents(path, Counter()) for s in _sentences(doc)
    ]
    words = sum(len(s.split()) for s in sentences)
    tok = load_tokenizer(spec["vocab"])
    batches = [sentences[i : i + 1000] for i in range(0, len(sentences), 1000)]
    out = {"words": words, "sentences": len(sentences)}
    for name, fn in (("hf_encode_batch", tok.encode_batch), ("ours_cached_encoder", SentenceEncoder(tok).encode)):
        start_cpu, start = time.process_time(), time.perf_counter()
        for batch in batches:
            fn(batch)
        out[name] = {
            "cpu_s": round(time.process_time() - start_cpu, 3),
            "wall_s": round(time.perf_counter() - start, 3),
        }
    return out


def _child_copies(spec: dict) -> dict:
    sys.path.insert(0, spec["src"])
    make_copies(Path(spec["source"]), spec["copies"], Path(spec["dest"]), spec["first"])
    return {}


def _child(spec: dict) -> None:
    kinds = {"prepare": _child_prepare, "tokenizer": _child_tokenizer, "copies": _child_copies}
    result = kinds[spec["kind"]](spec)
    result["self_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(result), flush=True)


def measure(spec: dict, log: list) -> dict:
    """Run one child; its CPU time is the whole process tree's (pool workers included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, **ONE_THREAD, "PYTHONPATH": spec["src"]},
        cwd=spec["src"],
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['kind']} child failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    result["cpu_s"] = round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3)
    result["wall_s"] = round(wall, 3)
    result["words_per_cpu_s"] = round(result["words"] / result["cpu_s"]) if result["cpu_s"] else None
    result["words_per_wall_s"] = round(result["words"] / wall)
    log.append({"spec": {k: v for k, v in spec.items() if k != "vocab"}, "result": result})
    return result


# ---------------------------------------------------------------------------------------------- corpora
def copies_file(source: Path, copies: int, dest: Path, first: int = 0) -> Path:
    """`make_copies` in a child process: ru_maxrss is inherited across fork and exec on Linux, so a parent
    that held the decompressed corpus would lend its peak to every later measurement."""
    spec = {
        "kind": "copies",
        "source": str(source),
        "copies": copies,
        "dest": str(dest),
        "first": first,
        "src": str(ROOT),
    }
    subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return dest


def make_copies(source: Path, copies: int, dest: Path, first: int = 0, offset: int = 50_000_000) -> Path:
    """`source`'s records `copies` times under one <PubmedArticleSet>, PMIDs of copy k offset by k*offset
    (k from `first`), so that the supersession pre-pass keeps every copy."""
    from biobert.corpus.gzip_stream import decompressobj

    try:
        from isal import igzip as gz
    except ImportError:
        import gzip as gz
    inflate, chunks = decompressobj(), []
    with open(source, "rb") as f:
        while block := f.read(1 << 22):
            chunks.append(inflate.decompress(block))
    xml = b"".join(chunks)
    start = xml.index(b"<PubmedArticleSet>") + len(b"<PubmedArticleSet>")
    end = xml.rindex(b"</PubmedArticleSet>")
    head, body, tail = xml[:start], xml[start:end], xml[end:]
    pmid = re.compile(rb"(<PMID[^>]*>)(\d+)(</PMID>)")
    with gz.open(dest, "wb", compresslevel=1) as out:
        out.write(head)
        for k in range(first, first + copies):
            out.write(
                body
                if k == 0
                else pmid.sub(lambda m, k=k: m.group(1) + str(int(m.group(2)) + k * offset).encode() + m.group(3), body)
            )
        out.write(tail)
    return dest


# ---------------------------------------------------------------------------------------------- report
def machine() -> dict:
    from cpu_info import machine as record

    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    return {**record(("tokenizers", "lxml", "pyarrow", "numpy", "isal")), "git": sha.strip()}


def _spin(n: int) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    x = 0
    for i in range(n):
        x += i
    return time.perf_counter() - start, time.process_time() - cpu


def cores_available(n: int = 20_000_000) -> float:
    """How many cores two busy processes actually get here (2.0 on an idle 2-core machine): the 2-worker
    wall-clock numbers mean little when the other jobs on a shared machine hold one of the cores."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(_spin, [n, n])
    return round(sum(cpu / wall for wall, cpu in results), 2)


def projection(rates: dict, efficiency: float) -> dict:
    """Hours on one 64-core node at the measured per-core rates: linear (one worker per core, workers share
    nothing but the file system), and divided by the CPU efficiency of 2 workers against 1 measured here
    (CPU-seconds for the same files: extra process start, a pre-pass per process, two cold caches)."""
    out = {"node_cores": NODE_CORES, "parallel_efficiency_2_workers": round(efficiency, 3), "corpora_words": CORPORA}
    for name, words in CORPORA.items():
        rate = rates["pmc" if name == "pmc_oa" else "pubmed"]
        hours = words / (rate * NODE_CORES) / 3600
        out[name] = {
            "words_per_core_s": rate,
            "hours_linear": round(hours, 2),
            "hours_at_measured_efficiency": round(hours / max(efficiency, 1e-6), 2),
        }
    total = words_total = 0.0
    for name in ("pubmed_2025_assumed", "pmc_oa"):
        total += out[name]["hours_linear"]
        words_total += CORPORA[name]
    out["pubmed_2025_plus_pmc_hours_linear"] = round(total, 2)
    out["pubmed_2025_plus_pmc_hours_at_measured_efficiency"] = round(total / max(efficiency, 1e-6), 2)
    return out


def table(res: dict) -> str:
    rows = [("measurement", "words", "CPU s", "wall s", "words/CPU-s", "words/wall-s", "peak RSS MB")]
    for name, r in res["runs"].items():
        rows.append(
            (
                name,
                f"{r['words']:,}",
                f"{r['cpu_s']:.1f}",
                f"{r['wall_s']:.1f}",
                f"{r['words_per_cpu_s']:,}" if r.get("words_per_cpu_s") else "-",
                f"{r['words_per_wall_s']:,}",
                f"{r['peak_rss_mb'] or r['self_peak_rss_mb']}" if "peak_rss_mb" in r else f"{r['self_peak_rss_mb']}",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    s = res["summary"]
    lines += ["", *(f"{k}: {v}" for k, v in s.items())]
    p = res["projection"]
    eff, cores = p["parallel_efficiency_2_workers"], res["machine"].get("cores_available_to_2_busy_processes")
    lines += [
        "",
        f"cores two busy processes got here: {cores} of {res['machine']['cores']}",
        f"64-core node projection (linear / at the 2-worker CPU efficiency {eff}):",
    ]
    for name in CORPORA:
        lines.append(
            f"  {name:22s} {CORPORA[name] / 1e9:5.1f}B words at {p[name]['words_per_core_s']:,} words/core-s:"
            f" {p[name]['hours_linear']:.2f} h / {p[name]['hours_at_measured_efficiency']:.2f} h"
        )
    lines.append(
        f"  PubMed 2025 + PMC OA: {p['pubmed_2025_plus_pmc_hours_linear']:.2f} h / "
        f"{p['pubmed_2025_plus_pmc_hours_at_measured_efficiency']:.2f} h"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def run_all(args) -> dict:
    sys.path.insert(0, str(ROOT))  # here only: a child imports the code under test from its own `src`
    vocab = str(SHARED / "vocab" / "bert-base-cased-vocab.txt")
    pubmed = sorted((SHARED / "pubmed").glob("*.xml.gz"))
    if args.quick:
        pubmed = pubmed[:1]
    pmc = SHARED / "pmc"
    src = str(ROOT)
    log: list = []
    runs: dict[str, dict] = {}
    res = {
        "machine": machine() | {"cores_available_to_2_busy_processes": cores_available()},
        "method": __doc__.split("\n\n")[2].replace("\n", " "),
        "runs": runs,
        "log": log,
    }
    with tempfile.TemporaryDirectory(prefix="data_prep_bench_") as tmp:
        tmp = Path(tmp)
        smallest = min(pubmed, key=lambda p: p.stat().st_size)
        pair = [copies_file(smallest, 1, tmp / f"pubmed90n000{k}.xml.gz", first=k) for k in (1, 2)]
        big = copies_file(smallest, args.mem_copies, tmp / "pubmed90n0009.xml.gz")
        spec = lambda kind, inputs, out, workers=1, src=src: {  # noqa: E731
            "kind": kind,
            "inputs": [str(i) for i in inputs],
            "vocab": vocab,
            "out": str(tmp / out),
            "workers": workers,
            "src": src,
        }
        # 1. per core, side by side: tokenizer alone, then the pipeline, on the same PubMed files
        for path in pubmed:
            name = path.name.removesuffix(".xml.gz")
            runs[f"tokenizer_alone_hf[{name}]"] = tok = measure(spec("tokenizer", [path], "t"), log)
            hf = tok["hf_encode_batch"]
            tok.update(
                cpu_s=hf["cpu_s"],
                wall_s=hf["wall_s"],
                words_per_cpu_s=round(tok["words"] / hf["cpu_s"]),
                words_per_wall_s=round(tok["words"] / hf["wall_s"]),
            )
            runs[f"pipeline_1_worker[{name}]"] = measure(spec("prepare", [path], f"p_{name}"), log)
            if args.baseline_src:
                runs[f"baseline_pipeline_1_worker[{name}]"] = measure(
                    spec("prepare", [path], f"b_{name}", src=args.baseline_src), log
                )
        # 2. PMC: the 298 articles
        if pmc.is_dir():
            runs["tokenizer_alone_hf[pmc]"] = tok = measure(spec("tokenizer", [pmc], "t"), log)
            hf = tok["hf_encode_batch"]
            tok.update(
                cpu_s=hf["cpu_s"],
                wall_s=hf["wall_s"],
                words_per_cpu_s=round(tok["words"] / hf["cpu_s"]),
                words_per_wall_s=round(tok["words"] / hf["wall_s"]),
            )
            runs["pipeline_1_worker[pmc]"] = measure(spec("prepare", [pmc], "pmc"), log)
            if args.baseline_src:
                runs["baseline_pipeline_1_worker[pmc]"] = measure(
                    spec("prepare", [pmc], "bpmc", src=args.baseline_src), log
                )
        # 3. two workers, wall clock: two PMID-offset copies of the smallest file, 1 worker then 2 workers
        runs["pipeline_1_worker[2 files]"] = measure(spec("prepare", pair, "w1"), log)
        runs["pipeline_2_workers[2 files]"] = measure(spec("prepare", pair, "w2", workers=2), log)
        # 4. memory: one file vs the same records repeated under one root
        runs[f"memory_1_worker[{args.mem_copies}x {smallest.name}]"] = measure(spec("prepare", [big], "mem"), log)
    res["summary"] = summarize(runs, pubmed, args)
    one, two = runs["pipeline_1_worker[2 files]"], runs["pipeline_2_workers[2 files]"]
    efficiency = min(1.0, one["cpu_s"] / two["cpu_s"])
    res["projection"] = projection(res["summary"]["per_core_rates_for_projection"], efficiency)
    return res


def summarize(runs: dict, pubmed: list[Path], args) -> dict:
    s: dict = {}
    pipe_words = pipe_cpu = tok_cpu = tok_words = 0.0
    for path in pubmed:
        name = path.name.removesuffix(".xml.gz")
        p, t = runs[f"pipeline_1_worker[{name}]"], runs[f"tokenizer_alone_hf[{name}]"]
        pipe_words, pipe_cpu = pipe_words + p["words"], pipe_cpu + p["cpu_s"]
        tok_words, tok_cpu = tok_words + t["words"], tok_cpu + t["cpu_s"]
        s[f"ratio_pipeline_to_tokenizer_alone[{name}]"] = round(p["words_per_cpu_s"] / t["words_per_cpu_s"], 3)
        if args.baseline_src:
            b = runs[f"baseline_pipeline_1_worker[{name}]"]
            s[f"speedup_vs_baseline[{name}]"] = round(p["words_per_cpu_s"] / b["words_per_cpu_s"], 3)
            s[f"shards_identical_to_baseline[{name}]"] = p["shards"] == b["shards"]
    pubmed_rate = round(pipe_words / pipe_cpu)
    s["pubmed_words_per_cpu_s"] = pubmed_rate
    s["pubmed_tokenizer_alone_words_per_cpu_s"] = round(tok_words / tok_cpu)
    s["pubmed_ratio_pipeline_to_tokenizer_alone"] = round(pubmed_rate / (tok_words / tok_cpu), 3)
    s["target_words_per_core_s"] = TARGET_WORDS_PER_CORE_S
    s["target_met_throughput"] = pubmed_rate >= TARGET_WORDS_PER_CORE_S
    rates = {"pubmed": pubmed_rate, "pmc": pubmed_rate}
    if "pipeline_1_worker[pmc]" in runs:
        p, t = runs["pipeline_1_worker[pmc]"], runs["tokenizer_alone_hf[pmc]"]
        rates["pmc"] = p["words_per_cpu_s"]
        s["pmc_words_per_cpu_s"] = p["words_per_cpu_s"]
        s["pmc_ratio_pipeline_to_tokenizer_alone"] = round(p["words_per_cpu_s"] / t["words_per_cpu_s"], 3)
        s["pmc_units"] = p["units"]
        s["pmc_random_next_fraction"] = p["random_next_fraction"]
        s["pmc_nsp_fallback_fraction"] = round(p["nsp_fallbacks"] / p["examples"], 4)
        if args.baseline_src:
            b = runs["baseline_pipeline_1_worker[pmc]"]
            s["pmc_baseline_units"] = b["units"]
            s["pmc_baseline_nsp_fallback_fraction"] = round(b["nsp_fallbacks"] / b["examples"], 4)
            s["pmc_baseline_random_next_fraction"] = b["random_next_fraction"]
    one, two = runs["pipeline_1_worker[2 files]"], runs["pipeline_2_workers[2 files]"]
    s["two_workers_words_per_wall_s"] = two["words_per_wall_s"]
    s["two_workers_wall_speedup"] = round(one["wall_s"] / two["wall_s"], 3)
    s["two_workers_cpu_efficiency"] = round(one["cpu_s"] / two["cpu_s"], 3)
    s["two_workers_identical_output"] = one["shards"] == two["shards"]
    small = [r for k, r in runs.items() if k.startswith("pipeline_1_worker[") and "files" not in k and "pmc" not in k]
    mem = next(r for k, r in runs.items() if k.startswith("memory_1_worker"))
    one_file = min(small, key=lambda r: r["words"])
    s["peak_rss_mb_1_file"] = one_file["peak_rss_mb"]
    s[f"peak_rss_mb_{args.mem_copies}x_file"] = mem["peak_rss_mb"]
    s["memory_words_1_file_vs_copies"] = [one_file["words"], mem["words"]]
    s["target_met_memory"] = max(one_file["peak_rss_mb"], mem["peak_rss_mb"]) < TARGET_PEAK_RSS_MB
    s["per_core_rates_for_projection"] = rates
    return s


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="one PubMed file and a 2x memory corpus")
    p.add_argument("--mem-copies", type=int, default=None, help="copies in the memory corpus (default 10; quick 2)")
    p.add_argument("--baseline-src", default=None, help="a checkout with data_prep/ and biobert/ to compare with")
    p.add_argument("--report", action="store_true", help="print the table of the results file")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.child:
        _child(json.loads(args.child))
        return {}
    if args.report:
        res = json.loads(Path(args.out).read_text())
        print(table(res))
        return res
    args.mem_copies = args.mem_copies or (2 if args.quick else 10)
    start = time.perf_counter()
    res = run_all(args)
    res["bench_wall_s"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(table(res))
    print(f"\nwrote {out} ({res['bench_wall_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
