"""Predict with a fine-tuned checkpoint on your own text: entities (NER) or relation labels (RE), JSON lines.

    python finetune/predict.py --model runs/ncbi/hf --input abstracts.txt --out preds.jsonl
    python finetune/predict.py --model runs/ncbi/hf --input pubmed26n0001.xml.gz --out preds.jsonl
    python finetune/predict.py --model runs/gad/fold_01/hf --input pairs.txt --out -

The model directory is a run's Hugging Face export (`run_dir/hf`); its config.json decides the task:
`BertForTokenClassification` (NER) or `BertForSequenceClassification` (RE).

Documents. A text file (UTF-8, `.gz` allowed, `-` for stdin) holds ONE DOCUMENT PER LINE; blank lines are
skipped and every other line is a document with id `line:N` (N the 1-based line number), its text the line
as written (without the line end). A PubMed XML file (`pubmed*.xml[.gz]`) gives one document per PMID, id
`pmid:N`, its text the title and abstract joined by one space, cleaned by data_prep's reader (NFC, single
spaces); records without title and abstract are skipped and counted. `--format auto` picks PubMed for
`.xml`/`.xml.gz` names or content that starts with `<?xml`/`<PubmedArticleSet`.

NER: each document is split into sentences (data_prep.sentences), each sentence into words the way BERT's
pre-tokenizer splits them (whitespace and punctuation), each word labelled by its first sub-token, long
sentences in overlapping windows with every word predicted by exactly one (finetune.tasks.ner). Labels are
read as conlleval reads them (an I- after O opens an entity, as in scoring). One line per document:
    {"id", "text", "entities": [{"start", "end", "text", "label", "score"}]}
`text[start:end] == entity["text"]` (Python string indices into the document's `text`); `label` is the
entity type of B-X/I-X labels, or for untyped B/I/O models the dataset the model was fine-tuned on (from
biobert_run.json) unless `--entity_label` says otherwise; `score` is the mean softmax probability of the
predicted labels of the entity's words.

RE: BioBERT classifies one sentence in which the two candidate entities are already anonymised, so the input
is a text file of such sentences, one per line: `@GENE$` / `@DISEASE$` (GAD, EU-ADR) or `BC6ENTC` /
`BC6ENTG` (and `BC6OTHER` for other mentions; ChemProt), e.g. `Mutations in @GENE$ cause @DISEASE$ .`.
One output line per non-blank input line: {"id", "text", "label", "probabilities": {label: p}}. Sentences
longer than `--max_seq_length` pieces are truncated, as in training, and counted.
`--max_seq_length` and `--doc_stride` default to the values the model was fine-tuned with (biobert_run.json),
else 128 and 32.

Inference is plain torch (no DeepSpeed), `--device auto` uses CUDA when available. This entry script reads
corpora, so unlike the rest of finetune/ it imports data_prep's reader and splitter (which import only
biobert; the import graph stays acyclic).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biobert.errors import UserError, exit_on_user_error  # noqa: E402

HEADS = {"BertForTokenClassification": "ner", "BertForSequenceClassification": "re"}
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


# ---------------------------------------------------------------------------------------------- input


def resolve_format(source: str, fmt: str) -> str:
    """"text" or "pubmed" for `--input`/`--format`; a missing file is an error naming it."""
    if source == "-":
        if fmt == "pubmed":
            raise UserError("--input -: PubMed XML is read from a file, not stdin; save it and pass its path")
        return "text"
    path = Path(source)
    if not path.is_file():
        raise UserError(f"{path}: no such file; pass a text file (one document per line), a PubMed XML "
                        "file (.xml or .xml.gz) or - for stdin")
    if fmt != "auto":
        return fmt
    if path.name.endswith((".xml", ".xml.gz")):
        return "pubmed"
    try:
        with _open_bytes(path) as fh:
            head = fh.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read the input ({e}); re-download or re-compress it") from None
    return "pubmed" if head.startswith((b"<?xml", b"<PubmedArticleSet")) else "text"


def _open_bytes(path: Path):
    try:
        raw = open(path, "rb")
        if raw.read(2) == b"\x1f\x8b":
            raw.seek(0)
            return gzip.GzipFile(fileobj=raw)
        raw.seek(0)
        return raw
    except OSError as e:
        raise UserError(f"{path}: cannot read the input ({e.strerror or e}); pass a readable text or PubMed "
                        "XML file, or - for stdin") from None


def read_documents(source: str, fmt: str, counts: Counter) -> Iterator[tuple[str, str]]:
    """(id, text) per document, `fmt` from `resolve_format`; see the module docstring for a document."""
    if fmt == "pubmed":
        yield from _read_pubmed(Path(source), counts)
        return
    if source == "-":
        data, name = sys.stdin.buffer.read(), "<stdin>"
    else:
        try:
            with _open_bytes(Path(source)) as fh:
                data, name = fh.read(), source
        except (OSError, EOFError) as e:
            raise UserError(f"{source}: cannot read the input ({e}); re-download or re-compress it") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{name}: not UTF-8 text ({e}); re-encode the file as UTF-8") from None
    # Split on "\n" only: str.splitlines() would also split inside a line on \x1c, \x85, \u2028 and co.
    lines = text.split("\n")
    if lines[-1] == "":  # the end of the last line, not a line of its own
        lines.pop()
    for line_no, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield f"line:{line_no}", line
        else:
            counts["blank_lines"] += 1


def _read_pubmed(path: Path, counts: Counter) -> Iterator[tuple[str, str]]:
    from data_prep.document import CorpusFileError
    from data_prep.pubmed import read_pubmed

    try:
        for doc in read_pubmed(path, counts, require_abstract=False):
            yield doc.doc_id, " ".join(doc.sections)
    except CorpusFileError as e:
        raise UserError(str(e)) from None


# ------------------------------------------------------------------------------------------------ model


def load_model(model_dir: str, device: str):
    """(kind, model, tokenizer, labels, provenance); a directory without a trained head is refused."""
    import torch
    from transformers import BertForSequenceClassification, BertForTokenClassification

    from biobert.checkpoint import read_provenance
    from biobert.models import load_bert_config
    from biobert.tokenizer import load_tokenizer

    if not (Path(model_dir) / "config.json").is_file():
        raise UserError(f"{model_dir}: no config.json; pass the Hugging Face export of a fine-tuned run "
                        "(run_dir/hf of finetune/run_task.py)")
    config = load_bert_config(model_dir)
    found = [a for a in (config.architectures or []) if a in HEADS]
    if not found:
        raise UserError(f"{model_dir}: architectures {config.architectures} has no token-classification "
                        "(NER) or sequence-classification (RE) head; a pre-trained or QA model cannot "
                        "predict entities or relations. Pass run_dir/hf of an NER or RE run_task.py run.")
    kind = HEADS[found[0]]
    cls = BertForTokenClassification if kind == "ner" else BertForSequenceClassification
    model = cls.from_pretrained(model_dir, config=config)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    labels = [config.id2label[i] for i in sorted(config.id2label)]
    return kind, model, load_tokenizer(model_dir), labels, read_provenance(model_dir)


def run_model(model, task, features: list, pad_id: int, batch_size: int) -> list:
    """`task.outputs` per feature (logits as numpy), batched by length, returned in input order."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(features)), key=lambda i: len(features[i].input_ids))
    out: list = [None] * len(features)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            ix = order[start: start + batch_size]
            batch = task.collate([features[i] for i in ix], pad_id)
            batch.pop("labels")
            batch = {k: v.to(device) for k, v in batch.items()}
            for i, row in zip(ix, task.outputs(model(**batch), batch)):
                out[i] = row
    return out


# -------------------------------------------------------------------------------------------------- NER


def _softmax(scores):
    import numpy as np

    z = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def entity_spans(words: list[tuple[str, tuple[int, int]]], labels: list[str], probs: list[float],
                 offset: int, default_type: str) -> list[dict]:
    """Chunks of one sentence by conlleval's rules, as character spans shifted by `offset`."""
    from finetune.conlleval import end_of_chunk, split_tag, start_of_chunk

    spans, current = [], None
    prev = ("O", "")
    for w, label in enumerate([*labels, "O"]):  # a final O closes an open chunk
        tag = split_tag(label)
        starts = start_of_chunk(prev[0], tag[0], prev[1], tag[1]) and tag[0] not in ("O", ".")
        if current is not None and (starts or end_of_chunk(prev[0], tag[0], prev[1], tag[1])):
            spans.append(current)
            current = None
        if starts:
            current = {"first": w, "type": tag[1]}
        if current is not None:
            current["last"] = w
        prev = tag
    out = []
    for s in spans:
        start, end = words[s["first"]][1][0] + offset, words[s["last"]][1][1] + offset
        score = sum(probs[s["first"]: s["last"] + 1]) / (s["last"] + 1 - s["first"])
        out.append({"start": start, "end": end, "label": s["type"] or default_type, "score": round(score, 4)})
    return out


def predict_ner(docs: list[tuple[str, str]], model, tokenizer, labels: list[str], args, default_type: str,
                stats: Counter) -> list[dict]:
    from data_prep.sentences import split_sentences
    from finetune.tasks.base import token_outputs
    from finetune.tasks.ner import Sentence, collate_ner, encode_ner

    class _Task:  # the two TaskSpec methods run_model needs, without a TaskSpec's data files
        collate = staticmethod(collate_ner)
        outputs = staticmethod(token_outputs)

    sentences, where = [], []  # where[k] = (doc index, char offset of the sentence, its words with offsets)
    for d, (_, text) in enumerate(docs):
        cursor = 0
        for piece in split_sentences(text):
            begin = text.index(piece, cursor)  # pieces are stripped substrings of text, in order
            cursor = begin + len(piece)
            words = tokenizer.backend.pre_tokenizer.pre_tokenize_str(piece)
            if words:
                sentences.append(Sentence([w for w, _ in words], ["O"] * len(words), 0, "input"))
                where.append((d, begin, words))
    features, enc_stats = encode_ner(sentences, tokenizer, {x: i for i, x in enumerate(labels)},
                                     args.max_seq_length, args.doc_stride)
    stats.update({k: enc_stats[k] for k in ("sentences", "split_sentences", "words", "unk_words", "cut_words")})
    logits = run_model(model, _Task, features, tokenizer.pad_id, args.batch_size)
    predicted = [[("O", 0.0)] * len(s.words) for s in sentences]
    for feature, scores in zip(features, logits):  # each word from its owning window's first piece
        probs = _softmax(scores)
        best = probs.argmax(axis=-1)
        for pos, w in enumerate(feature.word_index):
            if w >= 0:
                predicted[feature.sentence_index][w] = (labels[best[pos]], float(probs[pos, best[pos]]))
    out = [{"id": doc_id, "text": text, "entities": []} for doc_id, text in docs]
    for (d, begin, words), pred in zip(where, predicted):
        for span in entity_spans(words, [x for x, _ in pred], [p for _, p in pred], begin, default_type):
            text = docs[d][1]
            out[d]["entities"].append({"start": span["start"], "end": span["end"],
                                       "text": text[span["start"]: span["end"]], "label": span["label"],
                                       "score": span["score"]})
    return out


# --------------------------------------------------------------------------------------------------- RE


def predict_re(docs: list[tuple[str, str]], model, tokenizer, labels: list[str], args, markers: tuple,
               stats: Counter) -> list[dict]:
    from finetune.tasks.relation import RelationExample, collate_relations, encode_relations

    class _Task:
        collate = staticmethod(collate_relations)

        @staticmethod
        def outputs(model_output, batch):
            return list(model_output.logits.float().cpu().numpy())

    source = "<stdin>" if args.input == "-" else args.input  # named in encode_relations' truncation note
    examples = [RelationExample(text, labels[0], 0, doc_id, source) for doc_id, text in docs]
    features, enc_stats = encode_relations(examples, tokenizer, {x: i for i, x in enumerate(labels)},
                                           args.max_seq_length, markers)
    stats.update({k: enc_stats[k] for k in ("examples", "truncated", "truncated_lost_marker")})
    out = []
    for (doc_id, text), scores in zip(docs, run_model(model, _Task, features, tokenizer.pad_id, args.batch_size)):
        p = _softmax(scores)
        out.append({"id": doc_id, "text": text, "label": labels[int(p.argmax())],
                    "probabilities": {x: round(float(v), 4) for x, v in zip(labels, p)}})
    return out


def _task_facts(provenance: dict) -> tuple[str, tuple]:
    """(dataset name for untyped entities, RE entity markers) of the run the model was fine-tuned in."""
    from finetune.tasks.ner_task import NER_DATASETS
    from finetune.tasks.re_task import get_re_task

    task = ((provenance.get("run_config") or {}).get("run") or {}).get("task", "")
    if task in NER_DATASETS:
        return NER_DATASETS[task], ()
    try:
        re_task = get_re_task(task) if task else None
    except UserError:
        re_task = None
    return task or "ENTITY", re_task.dataset.markers if re_task else ()


# ------------------------------------------------------------------------------------------------- main


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    kind, model, tokenizer, labels, provenance = load_model(args.model, args.device)
    dataset, markers = _task_facts(provenance)
    run = (provenance.get("run_config") or {}).get("run") or {}
    args.max_seq_length = args.max_seq_length or run.get("max_seq_length") or 128
    args.doc_stride = run.get("doc_stride", 32) if args.doc_stride is None else args.doc_stride
    if kind == "ner" and "O" not in labels:
        raise UserError(f"{args.model}: labels {labels} have no 'O'; expected a BIO/BIOES token classifier")
    fmt = resolve_format(args.input, args.format)
    if kind == "re" and fmt == "pubmed":
        raise UserError(f"{args.input}: an RE model classifies sentences whose two entities are already "
                        "anonymised (@GENE$ / @DISEASE$, BC6ENTC / BC6ENTG), one per line; pass such a text "
                        "file, not PubMed XML")
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
    summary = {"task": kind, "model": args.model, "input": args.input, "out": args.out, "documents": n_docs,
               "labels": labels, "max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride,
               "skipped": {k: v for k, v in counts.items() if v}, "stats": dict(stats),
               "seconds": round(time.time() - t0, 1)}
    if kind == "ner":
        summary["entities"] = n_items
    what = f"{n_items} entities" if kind == "ner" else "relation labels"
    print(f"predict: {n_docs} documents, {what} -> {args.out}"
          + (f"; skipped {summary['skipped']}" if summary["skipped"] else ""), file=sys.stderr, flush=True)
    return summary


if __name__ == "__main__":
    main()
