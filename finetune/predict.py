"""Predict with a fine-tuned checkpoint on your own text: entities (NER) or relation labels (RE), JSON lines.

    python finetune/predict.py --model runs/ncbi/hf --input abstracts.txt --out preds.jsonl
    python finetune/predict.py --model runs/ncbi/hf --input pubmed26n0001.xml.gz --out preds.jsonl
    python finetune/predict.py --model runs/gad/fold_01/hf --input pairs.txt --out -

The model directory is a run's Hugging Face export (`run_dir/hf`); its config.json decides the task:
`BertForTokenClassification` (NER) or `BertForSequenceClassification` (RE).

Documents. A text file (UTF-8, `.gz` allowed, `-` for stdin) holds ONE DOCUMENT PER LINE; blank lines are
skipped and every other line is a document with id `line:N` (N the 1-based line number), its text the line
as written (without the line end). A PubMed XML file (`pubmed*.xml[.gz]`) gives one document per PMID, id
`pmid:N`, its text the title and abstract joined by one space, cleaned by the library's PubMed reader (NFC, single
spaces); records without title and abstract are skipped and counted. `--format auto` picks PubMed for
`.xml`/`.xml.gz` names or content that starts with `<?xml`/`<PubmedArticleSet`.

NER: each document is split into sentences (biobert.corpus.sentences), each sentence into words the way BERT's
pre-tokenizer splits them (whitespace and punctuation), each word labelled by its first sub-token, long
sentences in overlapping windows with every word predicted by exactly one (finetune.tasks.ner). Labels are
read as conlleval reads them (an I- after O opens an entity, as in scoring). One line per document:
    {"id", "text", "entities": [{"start", "end", "text", "label", "score"}]}
`text[start:end] == entity["text"]` (Python string indices into the document's `text`); `label` is the
entity type of B-X/I-X labels, or for untyped B/I/O models the entity type of the task the model was
fine-tuned on (biobert_run.json's task, its TaskSpec's `entity_type`, e.g. Disease) unless `--entity_label`
says otherwise; `score` is the mean softmax probability of the predicted labels of the entity's words.

RE: BioBERT classifies one sentence in which the two candidate entities are already anonymised, so the input
is a text file of such sentences, one per line: `@GENE$` / `@DISEASE$` (GAD, EU-ADR) or `BC6ENTC` /
`BC6ENTG` (and `BC6OTHER` for other mentions; ChemProt), e.g. `Mutations in @GENE$ cause @DISEASE$ .`.
One output line per non-blank input line: {"id", "text", "label", "probabilities": {label: p}}. Sentences
longer than `--max_seq_length` pieces are truncated, as in training, and counted.
`--max_seq_length` and `--doc_stride` default to the values the model was fine-tuned with (biobert_run.json),
else 128 and 32.

Inference is plain torch (no DeepSpeed), `--device auto` uses CUDA when available. Reading the input is
finetune/inputs.py (shared with embed.py), loading and batching finetune/inference.py, encoding and decoding
finetune/predict_tasks.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biobert.errors import UserError, exit_on_user_error  # noqa: E402
from finetune.inference import load_model  # noqa: E402
from finetune.inputs import read_documents, resolve_format  # noqa: E402
from finetune.predict_tasks import predict_ner, predict_re, task_facts  # noqa: E402

CHUNK_DOCS = 256  # documents predicted (and written) at a time: a 30k-abstract file never sits in memory


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported fine-tuned checkpoint (run_dir/hf)")
    p.add_argument("--input", required=True, help="text file (one document per line), PubMed XML, or -")
    p.add_argument("--format", choices=("auto", "text", "pubmed"), default="auto")
    p.add_argument("--out", required=True, help="JSON-lines output file, or - for stdout")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_seq_length", type=int, default=None, help="default: the fine-tuning run's, else 128")
    p.add_argument("--doc_stride", type=int, default=None, help="NER window overlap; default: the run's, else 32")
    p.add_argument("--entity_label", default="", help="type of untyped B/I entities (default: the dataset)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch_size {args.batch_size}: must be at least 1")
    return args


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    kind, model, tokenizer, labels, provenance = load_model(args.model, args.device)
    dataset, markers = task_facts(provenance)
    run = (provenance.get("run_config") or {}).get("run") or {}
    args.max_seq_length = args.max_seq_length or run.get("max_seq_length") or 128
    args.doc_stride = run.get("doc_stride", 32) if args.doc_stride is None else args.doc_stride
    if kind == "ner" and "O" not in labels:
        raise UserError(f"{args.model}: labels {labels} have no 'O'; expected a BIO/BIOES token classifier")
    fmt = resolve_format(args.input, args.format)
    if kind == "re" and fmt == "pubmed":
        raise UserError(
            f"{args.input}: an RE model classifies sentences whose two entities are already "
            "anonymised (@GENE$ / @DISEASE$, BC6ENTC / BC6ENTG), one per line; pass such a text "
            "file, not PubMed XML"
        )
    counts: Counter = Counter()  # reader skips
    stats: Counter = Counter()
    n_docs = n_items = 0
    out_path = None if args.out == "-" else Path(args.out)
    tmp = out_path.with_name(out_path.name + ".tmp") if out_path else None
    if tmp:
        tmp.parent.mkdir(parents=True, exist_ok=True)
    sink = open(tmp, "w", encoding="utf-8") if tmp else sys.stdout
    try:
        docs = read_documents(args.input, fmt, counts)
        while True:
            chunk = [d for _, d in zip(range(CHUNK_DOCS), docs)]
            if not chunk:
                break
            if kind == "ner":
                rows = predict_ner(chunk, model, tokenizer, labels, args, args.entity_label or dataset, stats)
                n_items += sum(len(r["entities"]) for r in rows)
            else:
                rows = predict_re(chunk, model, tokenizer, labels, args, markers, stats)
            sink.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            n_docs += len(rows)
    except BaseException:
        if tmp:
            sink.close()
            tmp.unlink(missing_ok=True)
        raise
    if tmp:
        sink.close()
        tmp.replace(out_path)
    else:
        sink.flush()
    summary = {
        "task": kind,
        "model": args.model,
        "input": args.input,
        "out": args.out,
        "documents": n_docs,
        "labels": labels,
        "max_seq_length": args.max_seq_length,
        "doc_stride": args.doc_stride,
        "skipped": {k: v for k, v in counts.items() if v},
        "stats": dict(stats),
        "seconds": round(time.time() - t0, 1),
    }
    if kind == "ner":
        summary["entities"] = n_items
    what = f"{n_items} entities" if kind == "ner" else "relation labels"
    print(
        f"predict: {n_docs} documents, {what} -> {args.out}"
        + (f"; skipped {summary['skipped']}" if summary["skipped"] else ""),
        file=sys.stderr,
        flush=True,
    )
    return summary


if __name__ == "__main__":
    main()
