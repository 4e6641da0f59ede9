"""Streaming reader for MEDLINE/PubMed baseline and update files (`pubmedYYnNNNN.xml[.gz]`).

A baseline file is ~150 MB of XML; the full baseline is 1,000+ of them. The reader therefore parses
incrementally and frees every record once read, so memory stays flat whatever the file size.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from lxml import etree

from biobert.corpus.document import CorpusFileError, Document
from biobert.corpus.gzip_stream import REDOWNLOAD, DamageAsEnd
from biobert.corpus.text_clean import clean_text

RECORD_TAGS = ("PubmedArticle", "PubmedBookArticle", "DeleteCitation")
ROOT_TAG = "PubmedArticleSet"


def _text_of(elem: etree._Element | None) -> str:
    if elem is None:
        return ""
    # itertext keeps inline markup text (<i>n</i>, PGD<sub>2</sub>) in place; most elements have none.
    return clean_text(("".join(elem.itertext()) if len(elem) else elem.text) or "")


def _child(elem: etree._Element | None, tag: str) -> etree._Element | None:
    """`elem.find(tag)` for a plain tag name, without ElementPath's Python-level path handling."""
    return next(elem.iterchildren(tag), None) if elem is not None else None


def _child_text(elem: etree._Element | None, tag: str) -> str | None:
    """`elem.findtext(tag)`: the first such child's text ("" when it has none), None when there is none."""
    child = _child(elem, tag)
    return None if child is None else child.text or ""


def _year(journal: etree._Element | None) -> int | None:
    pub_date = _child(_child(journal, "JournalIssue"), "PubDate")
    if pub_date is None:
        return None
    year = _child_text(pub_date, "Year") or (_child_text(pub_date, "MedlineDate") or "")[:4]
    return int(year) if year.isdigit() else None


def _first_children(elem: etree._Element, tags: tuple[str, ...]) -> dict[str, etree._Element]:
    first: dict[str, etree._Element] = {}
    for child in elem.iterchildren(*tags):
        first.setdefault(child.tag, child)
    return first


def parse_article(elem: etree._Element, counts: Counter, require_abstract: bool) -> Document | None:
    """Turn one <PubmedArticle> into a Document, or count why it cannot be one."""
    citation = _child(elem, "MedlineCitation")
    pmid = (_child_text(citation, "PMID") or "").strip()
    article = _child(citation, "Article")
    if not pmid or article is None:
        counts["no_pmid_or_article"] += 1
        return None
    parts = _first_children(article, ("ArticleTitle", "Journal", "Language"))
    title = _text_of(parts.get("ArticleTitle"))
    # Structured abstracts are several <AbstractText Label=...>; their text is read in order, labels dropped.
    texts = [_text_of(a) for part in article.iterchildren("Abstract") for a in part.iterchildren("AbstractText")]
    abstract = " ".join(t for t in texts if t)
    if not abstract and (require_abstract or not title):
        counts["no_abstract" if title else "no_text"] += 1
        return None
    sections = [s for s in (title, abstract) if s]
    language = parts.get("Language")
    meta = {"language": None if language is None else language.text or "", "year": _year(parts.get("Journal"))}
    return Document(doc_id=f"pmid:{pmid}", sections=sections, meta=meta)


# One set of parser options for the reader and for the pre-pass that must agree with it (supersede.py).
PARSE_OPTIONS = {"resolve_entities": False, "no_network": True, "load_dtd": False, "huge_tree": True}
_GZIP_MAGIC = b"\x1f\x8b"
_REMOVE = "or remove it from --input"


def _source(path: Path, raw: BinaryIO) -> BinaryIO | DamageAsEnd:
    """What the parser reads: a .gz file's decompressed bytes (damage reads as their end), else the file."""
    if os.fstat(raw.fileno()).st_size == 0:
        raise CorpusFileError(f"{path}: empty file (0 bytes; an interrupted download or copy?): {REDOWNLOAD} {_REMOVE}")
    if path.name.endswith(".gz"):
        return DamageAsEnd(raw)
    if raw.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC:
        raise CorpusFileError(
            f"{path}: gzip-compressed data in a file named without .gz (it starts with the gzip "
            f"magic bytes 1f 8b); rename it to {path.name}.gz"
        )
    raw.seek(0)
    return raw


def own_pmid(elem: etree._Element) -> str | None:
    """The PMID of an article or book record (its first <PMID>, as NCBI lays it out); None for a deletion."""
    holder = _child(elem, "MedlineCitation" if elem.tag == "PubmedArticle" else "BookDocument")
    return _child_text(holder, "PMID")


def _describe(path: Path, raw: BinaryIO, source: object, last_pmid: str | None, err: Exception) -> str:
    """What went wrong where, and what to do; the gzip damage, when there is any, is what ended the XML."""
    where = f"after PMID {last_pmid}" if last_pmid else "before the first record"
    damage = getattr(source, "damage", None)
    if damage is not None:
        kept = "every complete record before it was read" if last_pmid else "no record could be read"
        return f"{path}: {damage.detail}, {where}; {kept}; {damage.advice}"
    try:
        offset = f", near byte {raw.tell():,} of the file"
    except (OSError, ValueError):
        offset = ""
    bad_bytes = getattr(err, "code", None) == etree.ErrorTypes.ERR_INVALID_ENCODING
    what = (
        "bytes that are not UTF-8 (or not the XML's declared encoding)" if bad_bytes else "malformed or truncated XML"
    )
    read = "the records before it were read" if last_pmid else "no record could be read"
    return f"{path}: {what} {where}{offset} ({type(err).__name__}: {err}); {read}; {REDOWNLOAD} {_REMOVE}"


def iter_records(path: str | Path) -> Iterator[etree._Element]:
    """Every <PubmedArticle>, <PubmedBookArticle> and <DeleteCitation> of a PubMed file, in order.

    Each element is freed once the caller moves on. A damaged file raises CorpusFileError (file, last PMID,
    byte, what to do) after every record complete before the damage: the reader and the supersession
    pre-pass both read damaged files through here, so they agree on exactly which records a file delivers.
    """
    path = Path(path)
    last_pmid = None
    with open(path, "rb") as raw:
        source = _source(path, raw)
        try:
            context = etree.iterparse(source, events=("end",), tag=RECORD_TAGS, **PARSE_OPTIONS)
            for _, elem in context:
                yield elem
                if elem.tag != "DeleteCitation":
                    last_pmid = own_pmid(elem) or last_pmid
                _free(elem)
            root = context.root
        except etree.XMLSyntaxError as err:
            raise CorpusFileError(_describe(path, raw, source, last_pmid, err)) from err
        if getattr(source, "damage", None) is not None:  # the XML ended cleanly before the damage (trailing garbage)
            raise CorpusFileError(_describe(path, raw, source, last_pmid, source.damage))
    if root is None or root.tag != ROOT_TAG:
        found = "no root element" if root is None else f"root element <{root.tag}>"
        raise CorpusFileError(
            f"{path}: not a PubMed XML file ({found}, expected <{ROOT_TAG}>); "
            "remove it from --input or pass it to the matching reader"
        )


def read_pubmed(
    path: str | Path,
    counts: Counter,
    *,
    require_abstract: bool = True,
    on_delete: Callable[[list[str]], None] | None = None,
) -> Iterator[Document]:
    """Yield one Document per usable <PubmedArticle>; count every record that is not used, by reason.

    `on_delete` receives the PMIDs of each <DeleteCitation> (update files list citations withdrawn from
    earlier files); v1 only counts them. Raises CorpusFileError naming the file and the last PMID read, after
    every complete record before the damage.
    """
    record = -1  # ordinal of the <PubmedArticle> in the file: meta["record"], what supersede.py indexes
    for elem in iter_records(path):
        if elem.tag == "PubmedArticle":
            record += 1
            doc = parse_article(elem, counts, require_abstract)
            if doc is not None:
                doc.meta["record"] = record
                yield doc
        elif elem.tag == "PubmedBookArticle":  # NCBI Bookshelf chapters: not abstracts, not used
            counts["book_article"] += 1
        else:
            pmids = [p.text.strip() for p in elem.iterchildren("PMID") if p.text]
            counts["delete_citation"] += len(pmids)
            if on_delete is not None:
                on_delete(pmids)


def _free(elem: etree._Element) -> None:
    # Clear the record and drop already-processed siblings so the in-memory tree never grows.
    elem.clear(keep_tail=False)
    parent = elem.getparent()
    if parent is not None:
        while elem.getprevious() is not None:
            del parent[0]
