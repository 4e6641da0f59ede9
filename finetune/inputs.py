"""Raw-text inputs of the inference commands (predict.py, embed.py): text lines, a TSV column, PubMed XML.

Both commands read a user's file the same way: UTF-8 (`.gz` recognised by its magic bytes, `-` for stdin),
split on "\\n" only (str.splitlines() would also split inside a line on \\x1c, \\x85, \\u2028 and co.), a
trailing "\\r" dropped, blank lines skipped and counted, ids `line:N` with N the 1-based line number. A
PubMed XML file is read by the library's streaming reader (biobert.corpus.pubmed). Every reader streams:
a file of millions of lines never sits in memory.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from biobert.corpus.gzip_stream import GZIP_ERRORS, open_gzip
from biobert.errors import UserError


class TextUnit(NamedTuple):
    """One sentence to embed: its id, its text, and its character span in the document it came from."""

    id: str
    text: str
    start: int  # text == document[start:end]; a text line or TSV cell is its own document (0, len)
    end: int


def open_bytes(path: Path) -> BinaryIO:
    """A binary reader of `path`, decompressing gzip (recognised by content, not by name)."""
    try:
        raw = open(path, "rb")
        if raw.read(2) == b"\x1f\x8b":
            raw.seek(0)
            return open_gzip(raw)
        raw.seek(0)
        return raw
    except OSError as e:
        raise UserError(
            f"{path}: cannot read the input ({e.strerror or e}); pass a readable text or PubMed "
            "XML file, or - for stdin"
        ) from None


def resolve_format(source: str, fmt: str) -> str:
    """`fmt`, or for "auto" "pubmed" or "text"; a missing file is an error naming it.

    Auto picks PubMed for `.xml`/`.xml.gz` names or content that starts with `<?xml`/`<PubmedArticleSet`.
    """
    if source == "-":
        if fmt == "pubmed":
            raise UserError("--input -: PubMed XML is read from a file, not stdin; save it and pass its path")
        return "text" if fmt == "auto" else fmt
    path = Path(source)
    if not path.is_file():
        raise UserError(
            f"{path}: no such file; pass a text file (one item per line), a PubMed XML "
            "file (.xml or .xml.gz) or - for stdin"
        )
    if fmt != "auto":
        return fmt
    if path.name.endswith((".xml", ".xml.gz")):
        return "pubmed"
    try:
        with open_bytes(path) as fh:
            head = fh.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    except GZIP_ERRORS as e:
        raise UserError(f"{path}: cannot read the input ({e}); re-download or re-compress it") from None
    return "pubmed" if head.startswith((b"<?xml", b"<PubmedArticleSet")) else "text"


def iter_lines(source: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line end) for every line of a UTF-8 file or stdin."""
    name = "<stdin>" if source == "-" else source
    fh = sys.stdin.buffer if source == "-" else open_bytes(Path(source))
    line_no = 0
    try:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{name}: not UTF-8 text (line {line_no}: {e}); re-encode the file as UTF-8") from None
            yield line_no, line.removesuffix("\n").removesuffix("\r")
    except GZIP_ERRORS as e:
        raise UserError(
            f"{name}: cannot read the input after line {line_no} ({e}); re-download or re-compress it"
        ) from None
    finally:
        if source != "-":
            fh.close()


def read_documents(source: str, fmt: str, counts: Counter) -> Iterator[tuple[str, str]]:
    """(id, text) per document, `fmt` from `resolve_format`: a non-blank line, or a PubMed record's title
    and abstract joined by one space."""
    if fmt == "pubmed":
        for doc_id, sections in _pubmed_records(Path(source), counts):
            yield doc_id, " ".join(sections)
        return
    for line_no, line in iter_lines(source):
        if line.strip():
            yield f"line:{line_no}", line
        else:
            counts["blank_lines"] += 1


def _pubmed_records(path: Path, counts: Counter) -> Iterator[tuple[str, list[str]]]:
    from biobert.corpus.document import CorpusFileError
    from biobert.corpus.pubmed import read_pubmed

    try:
        for doc in read_pubmed(path, counts, require_abstract=False):
            yield doc.doc_id, doc.sections
    except CorpusFileError as e:
        raise UserError(str(e)) from None


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text` by the library's splitter (biobert.corpus.sentences)."""
    from biobert.corpus.sentences import split_sentences

    spans, cursor = [], 0
    for piece in split_sentences(text):
        begin = text.index(piece, cursor)  # pieces are stripped substrings of text, in order
        cursor = begin + len(piece)
        spans.append((begin, cursor))
    return spans


def read_sentences(
    source: str, fmt: str, counts: Counter, column: str | None = None, header: bool = False
) -> Iterator[TextUnit]:
    """Sentences to embed. `fmt` "lines": each non-blank line; "tsv": one column of each non-blank row
    (`column` a 0-based index, or a header name when `header`); "pubmed": each section (title, abstract)
    of each record split into sentences, id `pmid:N:sent:K` (K from 1), offsets into the record's text
    (its sections joined by one space, as predict.py's documents)."""
    if fmt == "pubmed":
        for doc_id, sections in _pubmed_records(Path(source), counts):
            k, offset = 0, 0
            for section in sections:
                for start, end in sentence_spans(section):
                    k += 1
                    yield TextUnit(f"{doc_id}:sent:{k}", section[start:end], offset + start, offset + end)
                offset += len(section) + 1
        return
    if fmt == "tsv" and column is None:
        raise UserError("--format tsv: pass --column N (0-based) or --column NAME with --header")
    name = "<stdin>" if source == "-" else source
    index = None if fmt != "tsv" or header else _column_index(column, None, name)
    for line_no, line in iter_lines(source):
        if fmt == "tsv" and header and index is None:
            if line.strip():
                index = _column_index(column, line.split("\t"), name)
            continue
        if not line.strip():
            counts["blank_lines"] += 1
            continue
        if fmt == "tsv":
            cells = line.split("\t")
            if len(cells) <= index:
                raise UserError(
                    f"{name}:{line_no}: {len(cells)} tab-separated column(s), but --column {column} "
                    f"needs at least {index + 1}; fix the row or choose another column"
                )
            line = cells[index]
            if not line.strip():
                counts["empty_cells"] += 1
                continue
        yield TextUnit(f"line:{line_no}", line, 0, len(line))


def _column_index(column: str, names: list[str] | None, source: str) -> int:
    if names is not None and column in names:
        return names.index(column)
    if column.isdigit():
        return int(column)
    if names is None:
        raise UserError(
            f"--column {column!r}: not a 0-based column number; to select a column by name, "
            "pass --header (the first line of the file names the columns)"
        )
    raise UserError(
        f"{source}: the header has no column {column!r} (columns: {names}); pass one of those "
        "names or a 0-based column number"
    )
