"""One input unit of an annotation run: read its documents in chunks, annotate, write its Parquet file.

Documents come from data_prep's readers (the same records, ids and cleaning as pre-training data), PubMed
records superseded or deleted by a later update file are dropped by data_prep's supersession index, and
sentences are split as data_prep splits them: each section by biobert.corpus.sentences, except the
sentence-per-line text format, whose lines are its sentences. A document's text is its sections joined by
one space; entity offsets index into it.

This module (and annotate.py) imports data_prep: the one place where finetune reads corpora, so that
annotation sees exactly what data_prep reads. (GUIDE's import DAG has finetune use only biobert; the readers
are corpus code that data_prep owns, and copying them would let the two drift.)
"""

from __future__ import annotations

import itertools
import resource
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from biobert.corpus.document import CorpusFileError, Document
from data_prep.readers import read_documents
from data_prep.supersede import file_identity
from data_prep.units import Unit
from finetune.annotate_core import Doc, annotate_docs
from finetune.annotate_output import UnitWriter, marker_path
from finetune.inputs import sentence_spans


def unit_input(unit: Unit) -> list[dict]:
    """The unit's files as the done marker records them: a changed file makes its unit be redone."""
    return [{"path": str(p), **file_identity(p)} for p in unit.paths]


def to_doc(doc: Document) -> Doc | None:
    """Text = sections joined by one space; sentence spans into it; None when no sentence is left."""
    spans, offset = [], 0
    for section in doc.sections:
        if doc.meta.get("presplit"):
            if section.strip():
                spans.append((offset, offset + len(section)))
        else:
            spans += [(offset + a, offset + b) for a, b in sentence_spans(section)]
        offset += len(section) + 1
    return Doc(doc.doc_id, " ".join(doc.sections), spans) if spans else None


class _Reader:
    """The unit's documents, gated by supersession; skips counted by reason, with ids where a record has one."""

    def __init__(self, unit: Unit, index, keep_title_only: bool):
        self.unit, self.keep_title_only = unit, keep_title_only
        self.drops = index.drops_for(unit.path.name) if index is not None and unit.pubmed else {}
        self.unread = index.unread_for(unit.path.name) if index is not None and unit.pubmed else 0
        self.skipped: Counter = Counter()
        self.records: list[dict] = []
        self.errors: list[dict] = []

    def skip(self, doc_id: str, reason: str) -> None:
        self.skipped[reason] += 1
        self.records.append({"id": doc_id, "reason": reason})

    def __iter__(self) -> Iterator[Doc]:
        for path in self.unit.paths:
            try:
                for doc in read_documents(Path(path), self.skipped, require_abstract=not self.keep_title_only):
                    reason = self.drops.get(doc.meta.get("record", -1))
                    if reason:
                        self.skip(doc.doc_id, reason)
                        continue
                    out = to_doc(doc)
                    if out is None:
                        self.skip(doc.doc_id, "no_sentences")
                        continue
                    yield out
            except CorpusFileError as e:  # records before the damage are kept, as data_prep does
                self.errors.append({"file": str(path), "message": str(e)})
                if self.unread:
                    self.skipped["unread_after_damage"] += self.unread
            except OSError as e:
                self.errors.append({"file": str(path), "message": f"{path}: cannot read the file ({e})"})


def _chunks(docs: Iterator[Doc], n: int) -> Iterator[list[Doc]]:
    chunk: list[Doc] = []
    for doc in docs:
        chunk.append(doc)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def annotate_unit(unit: Unit, models, settings, cfg, out: Path, index, faults) -> dict:
    """Annotate one unit into `<out>/<unit>.parquet` (renamed into place when complete); returns its marker
    (the caller adds the run's identity and writes it)."""
    start = time.perf_counter()
    marker_path(out, unit.name).unlink(missing_ok=True)  # first: a marker never outlives its file
    reader, counts = _Reader(unit, index, cfg.keep_title_only), Counter()
    by_type: Counter = Counter()
    by_label: Counter = Counter()
    writer = UnitWriter(out, unit.name)
    try:
        docs = itertools.islice(reader, cfg.max_docs) if getattr(cfg, "max_docs", None) else iter(reader)
        for k, chunk in enumerate(_chunks(docs, cfg.chunk_docs)):
            rows = annotate_docs(chunk, models, settings, counts)
            writer.write(rows)
            counts["documents"] += len(rows)
            by_type.update(e["type"] for r in rows for e in r["entities"])
            by_label.update(x["label"] for r in rows for x in r["relations"])
            if k == 0:
                faults.in_unit(unit.name)  # resume tests: die with a partial file
        output = writer.close()
    except BaseException:
        writer.abort()
        raise
    for key in ("documents", "sentences", "entities", "relations"):
        counts.setdefault(key, 0)
    return {
        "unit": unit.name,
        "position": unit.position,
        "output": output,
        "counts": dict(sorted(counts.items())),
        "entities_by_type": dict(sorted(by_type.items())),
        "relations_by_label": dict(sorted(by_label.items())),
        "skipped": dict(sorted((k, v) for k, v in reader.skipped.items() if v)),
        "skipped_records": reader.records,
        "error": reader.errors[0]["message"] if reader.errors else None,
        "file_errors": reader.errors,
        "seconds": round(time.perf_counter() - start, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
