"""Which reader handles which input file, and how `--input` arguments become a list of files.

New corpus formats (PMC JATS `.nxml`, plain text) plug in by adding one entry to READERS; nothing else in
the pipeline knows about file formats.
"""

from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from biobert.errors import UserError
from data_prep.document import Document
from data_prep.pubmed import read_pubmed

# A reader streams Documents from one file, counting skipped records by reason into the Counter.
Reader = Callable[..., Iterator[Document]]

READERS: dict[str, Reader] = {  # file-name suffix -> reader; longest matching suffix wins
    ".xml.gz": read_pubmed,
    ".xml": read_pubmed,
}


def reader_for(path: Path) -> Reader | None:
    for suffix in sorted(READERS, key=len, reverse=True):
        if path.name.endswith(suffix):
            return READERS[suffix]
    return None


def _is_supported(path: Path) -> bool:
    return path.is_file() and reader_for(path) is not None


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
                files += [p for p in match.rglob("*") if _is_supported(p)]
            elif match.is_file() and reader_for(match) is None and not glob.has_magic(spec):
                raise UserError(f"{match}: no reader for this file type; supported suffixes: "
                                f"{', '.join(READERS)}")
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
