"""Readers for corpora that are already plain text: BERT's one-sentence-per-line files and JSON lines.

Both are line formats, so both read line by line (bounded memory, except one document at a time) and say
which line a problem is on. Bytes are decoded per line and strictly: a line that is not UTF-8 is skipped
and counted as `bad_utf8` rather than decoded with replacement characters, because U+FFFD inside training
text teaches the model nothing and hides a mis-encoded file; the stderr examples name the lines.
"""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from biobert.corpus.document import CorpusFileError, Document
from biobert.corpus.text_clean import clean_text

MAX_EXAMPLES = 5  # per file and reason: enough to find the problem, never a flood


class SkipReporter:
    """Counts skipped records by reason into the run's Counter and names the first few of each on stderr.

    The Counter goes into the manifest; the examples (file:line or file member) tell the user where to look.
    `examples` keeps them for callers and tests.
    """

    def __init__(self, path: Path, counts: Counter, limit: int = MAX_EXAMPLES):
        self.path, self.counts, self.limit = path, counts, limit
        self.examples: dict[str, list[str]] = {}

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.limit:
            shown.append(f"{self.path}:{where}")
            print(
                f"warning: {self.path}:{where}: skipped ({reason}){': ' + detail if detail else ''}",
                file=sys.stderr,
                flush=True,
            )
            if len(shown) == self.limit:
                print(f"warning: {self.path}: further '{reason}' records are only counted", file=sys.stderr, flush=True)


def file_stem(path: Path) -> str:
    """`corpus.txt.gz` -> `corpus`: the stable part of a doc_id, whatever the compression."""
    name = path.name
    for suffix in (".gz", ".jsonl", ".txt"):
        name = name.removesuffix(suffix)
    return name


def _open_binary(path: Path, raw: BinaryIO) -> BinaryIO:
    return gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else raw


def _lines(path: Path, raw: BinaryIO, skips: SkipReporter) -> Iterator[tuple[int, str | None]]:
    """Yield (1-based line number, decoded line) for each line; None for a line counted as bad_utf8."""
    for number, data in enumerate(_open_binary(path, raw), start=1):
        try:
            yield number, data.decode("utf-8")
        except UnicodeDecodeError as err:
            skips.skip("bad_utf8", f"line {number}", f"not UTF-8 at byte {err.start} of the line")
            yield number, None


def _file_error(path: Path, raw: BinaryIO, where: str, err: Exception) -> CorpusFileError:
    if isinstance(err, gzip.BadGzipFile):
        hint = "not a gzip file; drop the .gz suffix if it is plain text, or re-create it"
    else:
        hint = "the gzip stream is truncated or corrupt; re-create or re-download the file"
    try:
        offset = f", near byte {raw.tell():,} of the file"
    except (OSError, ValueError):
        offset = ""
    return CorpusFileError(f"{path}: {hint} ({type(err).__name__}: {err}) {where}{offset}")


def read_sentence_lines(path: str | Path, counts: Counter, *, require_abstract: bool = True) -> Iterator[Document]:
    """Original BERT pre-training format: one sentence per line, a blank line between documents.

    The sentences are already split, so each one becomes its own `sections` entry and `meta["presplit"]`
    tells the pipeline not to split them again. doc_id is `<file stem>:<document index from 0>`.
    `require_abstract` is a PubMed option, accepted so that the pipeline can pass one set of options to
    every reader; it has no meaning here.
    """
    path = Path(path)
    stem, skips = file_stem(path), SkipReporter(path, counts)
    index, sentences, line_no = 0, [], 0
    with open(path, "rb") as raw:
        try:
            for line_no, line in _lines(path, raw, skips):  # noqa: B007 (line_no is reported on error)
                if line is None:
                    continue
                sentence = clean_text(line)
                if sentence:
                    sentences.append(sentence)
                elif sentences:  # blank line: the document is complete
                    yield Document(f"{stem}:{index}", sentences, {"presplit": True})
                    index, sentences = index + 1, []
        except (OSError, EOFError, zlib.error) as err:
            partial = f"; document {stem}:{index} was incomplete and is dropped" if sentences else ""
            raise _file_error(path, raw, f"after line {line_no:,}{partial}", err) from err
    if sentences:
        yield Document(f"{stem}:{index}", sentences, {"presplit": True})


def _record_text(record: dict, field: str) -> list[str] | None:
    """The cleaned, non-empty sections of a record; None when the field has the wrong type."""
    value = record.get(field)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return [s for s in map(clean_text, value) if s]


def read_jsonl(
    path: str | Path, counts: Counter, *, text_field: str = "text", id_field: str = "id", require_abstract: bool = True
) -> Iterator[Document]:
    """JSON lines, one document per line: `{"id": ..., "text": "..." | ["section", ...]}`.

    A string `text` is one section (split into sentences by the pipeline); a list of strings is several.
    The id is used as given (make it globally unique, e.g. "pmid:123": it decides the held-out split);
    without one the doc_id is `<file stem>:<line number>`. Skipped lines are counted by reason: `bad_json`
    (not a JSON object), `bad_text` (the text field is neither a string nor a list of strings), `no_text`
    (missing or empty after cleaning), `bad_utf8`. Blank lines are not records and are passed over.
    `require_abstract` is accepted for the pipeline's sake and has no meaning here.
    """
    path = Path(path)
    stem, skips = file_stem(path), SkipReporter(path, counts)
    line_no = 0
    with open(path, "rb") as raw:
        try:
            for line_no, line in _lines(path, raw, skips):
                if line is None or not line.strip():
                    continue
                doc = _parse_json_line(line, line_no, stem, text_field, id_field, skips)
                if doc is not None:
                    yield doc
        except (OSError, EOFError, zlib.error) as err:
            raise _file_error(path, raw, f"after line {line_no:,}", err) from err


def _parse_json_line(
    line: str, line_no: int, stem: str, text_field: str, id_field: str, skips: SkipReporter
) -> Document | None:
    where = f"line {line_no}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        skips.skip("bad_json", where, str(err))
        return None
    if not isinstance(record, dict):
        skips.skip("bad_json", where, f"expected a JSON object, got {type(record).__name__}")
        return None
    sections = _record_text(record, text_field)
    if sections is None:
        skips.skip("bad_text", where, f"field {text_field!r} must be a string or a list of strings")
        return None
    if not sections:
        skips.skip("no_text", where, f"no text in field {text_field!r}")
        return None
    doc_id = record.get(id_field)
    doc_id = f"{stem}:{line_no}" if doc_id is None or doc_id == "" else str(doc_id)
    return Document(doc_id, sections, {})
