"""Streaming reader for MEDLINE/PubMed baseline and update files (`pubmedYYnNNNN.xml[.gz]`).

A baseline file is ~150 MB of XML; the full baseline is 1,000+ of them. The reader therefore parses
incrementally and frees every record once read, so memory stays flat whatever the file size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from lxml import etree

from biobert.corpus.document import CorpusFileError, Document
from biobert.corpus.gzip_stream import GZIP_ERRORS, BadGzipFile, open_gzip
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
    meta = {"language": None if language is None else language.text or "",
            "year": _year(parts.get("Journal"))}
    return Document(doc_id=f"pmid:{pmid}", sections=sections, meta=meta)


def _open_binary(path: Path, raw: BinaryIO) -> BinaryIO:
    return open_gzip(raw) if path.name.endswith(".gz") else raw


def _describe(path: Path, raw: BinaryIO, last_pmid: str | None, err: Exception) -> str:
    where = f"after PMID {last_pmid}" if last_pmid else "before the first record"
    try:
        offset = f", near byte {raw.tell():,} of the file"
    except (OSError, ValueError):
        offset = ""
    if isinstance(err, BadGzipFile):
        hint = "not a gzip file; rename it to .xml if it is plain XML, or re-download it"
    elif isinstance(err, GZIP_ERRORS):
        hint = "the gzip stream is truncated or corrupt; re-download the file"
    else:
        hint = "the XML is malformed or truncated; re-download the file or remove it from --input"
    return f"{path}: {hint} ({type(err).__name__}: {err}) {where}{offset}"


def read_pubmed(path: str | Path, counts: Counter, *, require_abstract: bool = True,
                on_delete: Callable[[list[str]], None] | None = None) -> Iterator[Document]:
    """Yield one Document per usable <PubmedArticle>; count every record that is not used, by reason.

    `on_delete` receives the PMIDs of each <DeleteCitation> (update files list citations withdrawn from
    earlier files); v1 only counts them. Raises CorpusFileError naming the file and the last PMID read.
    """
    path = Path(path)
    last_pmid = None
    record = -1  # ordinal of the <PubmedArticle> in the file: meta["record"], what supersede.py indexes
    with open(path, "rb") as raw:
        try:
            context = etree.iterparse(_open_binary(path, raw), events=("end",), tag=RECORD_TAGS,
                                      resolve_entities=False, no_network=True, load_dtd=False,
                                      huge_tree=True)
            for _, elem in context:
                if elem.tag == "PubmedArticle":
                    record += 1
                    doc = parse_article(elem, counts, require_abstract)
                    if doc is not None:
                        doc.meta["record"] = record
                    last_pmid = _child_text(_child(elem, "MedlineCitation"), "PMID") or last_pmid
                elif elem.tag == "PubmedBookArticle":  # NCBI Bookshelf chapters: not abstracts, not used
                    counts["book_article"] += 1
                    last_pmid = _child_text(_child(elem, "BookDocument"), "PMID") or last_pmid
                    doc = None
                else:
                    pmids = [p.text.strip() for p in elem.iterchildren("PMID") if p.text]
                    counts["delete_citation"] += len(pmids)
                    if on_delete is not None:
                        on_delete(pmids)
                    doc = None
                _free(elem)
                if doc is not None:
                    yield doc
            root = context.root
        except (*GZIP_ERRORS, etree.XMLSyntaxError) as err:
            raise CorpusFileError(_describe(path, raw, last_pmid, err)) from err
    if root is None or root.tag != ROOT_TAG:
        found = "no root element" if root is None else f"root element <{root.tag}>"
        raise CorpusFileError(f"{path}: not a PubMed XML file ({found}, expected <{ROOT_TAG}>); "
                              "remove it from --input or pass it to the matching reader")


def _free(elem: etree._Element) -> None:
    # Clear the record and drop already-processed siblings so the in-memory tree never grows.
    elem.clear(keep_tail=False)
    parent = elem.getparent()
    if parent is not None:
        while elem.getprevious() is not None:
            del parent[0]
