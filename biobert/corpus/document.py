"""The record every corpus reader yields, and the error a reader raises when a whole file is unusable.

Readers are pluggable (PubMed XML now; PMC JATS and plain text later), so the rest of the pipeline only
ever sees `Document`s and never a format-specific type.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Document:
    """One unit of NSP context: sentences are only paired within a document, never across two."""

    doc_id: str  # globally unique and stable ("pmid:123"): it decides the train/held-out split
    sections: list[str]  # text blocks in reading order (title, abstract, ...); each is split into sentences
    meta: dict = field(default_factory=dict)  # reader-specific facts (language, year) for later filtering


class CorpusFileError(Exception):
    """A whole input file is unreadable (corrupt, truncated, wrong format).

    Not a `UserError`: the pipeline records it and goes on with the other files, because one bad file in
    a baseline of a thousand must not throw away hours of work. The message names the file and how far
    the reader got.
    """
