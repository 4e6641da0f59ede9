"""Which reader handles which input file, and how `--input` arguments become a list of files.

New corpus formats (PMC JATS `.nxml`, plain text) plug in by adding one entry to READERS; nothing else in
the pipeline knows about file formats.
"""

from __future__ import annotations

import glob
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from biobert.corpus.document import Document
from biobert.corpus.pubmed import read_pubmed
from biobert.errors import UserError
from data_prep.pmc import read_nxml, read_pmc_package
from data_prep.text import read_jsonl, read_sentence_lines

# A reader streams Documents from one file, counting skipped records by reason into the Counter.
Reader = Callable[..., Iterator[Document]]

READERS: dict[str, Reader] = {  # file-name suffix -> reader; longest matching suffix wins
    ".xml.gz": read_pubmed,
    ".xml": read_pubmed,
    ".nxml": read_nxml,  # PMC JATS article
    ".tar.gz": read_pmc_package,  # PMC package of .nxml articles (a PubMed file is .xml.gz, never .tar.gz)
    ".txt": read_sentence_lines,  # one sentence per line, blank line between documents (BERT format)
    ".txt.gz": read_sentence_lines,
    ".jsonl": read_jsonl,  # one {"id": ..., "text": ...} document per line
    ".jsonl.gz": read_jsonl,
}


def reader_for(path: Path) -> Reader | None:
    for suffix in sorted(READERS, key=len, reverse=True):
        if path.name.endswith(suffix):
            return READERS[suffix]
    return None


def _is_supported(path: Path) -> bool:
    return path.is_file() and reader_for(path) is not None


# Text files that live beside corpora but are not corpora; skipped in directory scans (named explicitly,
# they are read). Skipped names are reported, never silently dropped.
_NOT_CORPUS = ("readme", "license", "licence", "changelog", "requirements", "vocab", "notes")


def _in_directory_scan(path: Path) -> bool:
    name = path.name.lower()
    if name.startswith(".") or (name.endswith((".txt", ".txt.gz")) and name.startswith(_NOT_CORPUS)):
        return False
    return _is_supported(path)


def expand_inputs(specs: list[str]) -> list[Path]:
    """Resolve files, directories (searched recursively for supported suffixes) and glob patterns.

    Sorted and de-duplicated so that the order of documents, hence the output, never depends on the
    shell or the file system.
    """
    if not specs:
        raise UserError("no --input given; pass PubMed .xml.gz files, directories or glob patterns")
    found: set[Path] = set()
    for spec in specs:
        matches = [Path(p) for p in glob.glob(spec, recursive=True)] if glob.has_magic(spec) else [Path(spec)]
        if not matches or not any(m.exists() for m in matches):
            raise UserError(f"{spec}: no such file or directory (check the --input path)")
        files = []
        for match in matches:
            if match.is_dir():
                scanned = [p for p in match.rglob("*") if _is_supported(p)]
                kept = [p for p in scanned if _in_directory_scan(p)]
                if len(kept) < len(scanned):
                    print(
                        f"note: {match}: not reading {len(scanned) - len(kept)} non-corpus file(s) such as "
                        f"{sorted(set(scanned) - set(kept))[0].name} (name them explicitly to read them)",
                        file=sys.stderr,
                    )
                files += kept
            elif match.is_file() and reader_for(match) is None and not glob.has_magic(spec):
                raise UserError(f"{match}: no reader for this file type; supported suffixes: {', '.join(READERS)}")
            elif _is_supported(match):
                files.append(match)
        if not files:
            raise UserError(f"{spec}: no input files with a supported suffix ({', '.join(READERS)}) found")
        found.update(p.resolve() for p in files)
    return sorted(found)


def read_documents(path: Path, counts: Counter, **options) -> Iterator[Document]:
    """Dispatch to the reader registered for `path`'s suffix."""
    reader = reader_for(path)
    if reader is None:
        raise UserError(f"{path}: no reader for this file type; supported suffixes: {', '.join(READERS)}")
    return reader(path, counts, **options)
