"""Streaming reader for MEDLINE/PubMed baseline and update files (`pubmedYYnNNNN.xml[.gz]`).

A baseline file is ~150 MB of XML; the full baseline is 1,000+ of them. The reader therefore parses
incrementally and frees every record once read, so memory stays flat whatever the file size.
"""

from __future__ import annotations

import gzip
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from lxml import etree

from data_prep.document import CorpusFileError, Document
from data_prep.text_clean import clean_text

RECORD_TAGS = ("PubmedArticle", "PubmedBookArticle", "DeleteCitation")
ROOT_TAG = "PubmedArticleSet"


def _text_of(elem: etree._Element | None) -> str:
    # itertext keeps inline markup text (<i>n</i>, PGD<sub>2</sub>) in place.
    return clean_text("".join(elem.itertext())) if elem is not None else ""


def _year(article: etree._Element) -> int | None:
    pub_date = article.find("Journal/JournalIssue/PubDate")
    if pub_date is None:
        return None
    year = pub_date.findtext("Year") or (pub_date.findtext("MedlineDate") or "")[:4]
    return int(year) if year.isdigit() else None


def parse_article(elem: etree._Element, counts: Counter, require_abstract: bool) -> Document | None:
    """Turn one <PubmedArticle> into a Document, or count why it cannot be one."""
    citation = elem.find("MedlineCitation")
    pmid = citation.findtext("PMID", "").strip() if citation is not None else ""
    article = citation.find("Article") if citation is not None else None
    if not pmid or article is None:
        counts["no_pmid_or_article"] += 1
        return None
    title = _text_of(article.find("ArticleTitle"))
    # Structured abstracts are several <AbstractText Label=...>; their text is read in order, labels dropped.
    abstract = " ".join(t for t in (_text_of(a) for a in article.iterfind("Abstract/AbstractText")) if t)
    if not abstract and (require_abstract or not title):
        counts["no_abstract" if title else "no_text"] += 1
        return None
    sections = [s for s in (title, abstract) if s]
    meta = {"language": article.findtext("Language"), "year": _year(article)}
    return Document(doc_id=f"pmid:{pmid}", sections=sections, meta=meta)


def _open_binary(path: Path, raw: BinaryIO) -> BinaryIO:
    return gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else raw


def _describe(path: Path, raw: BinaryIO, last_pmid: str | None, err: Exception) -> str:
    where = f"after PMID {last_pmid}" if last_pmid else "before the first record"
    try:
        offset = f", near byte {raw.tell():,} of the file"
    except (OSError, ValueError):
        offset = ""
    if isinstance(err, gzip.BadGzipFile):
        hint = "not a gzip file; rename it to .xml if it is plain XML, or re-download it"
    elif isinstance(err, (EOFError, zlib.error, OSError)):
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
                    last_pmid = elem.findtext("MedlineCitation/PMID") or last_pmid
                elif elem.tag == "PubmedBookArticle":  # NCBI Bookshelf chapters: not abstracts, not used
                    counts["book_article"] += 1
                    last_pmid = elem.findtext("BookDocument/PMID") or last_pmid
                    doc = None
                else:
                    pmids = [p.text.strip() for p in elem.iterfind("PMID") if p.text]
                    counts["delete_citation"] += len(pmids)
                    if on_delete is not None:
                        on_delete(pmids)
                    doc = None
                _free(elem)
                if doc is not None:
                    yield doc
            root = context.root
        except (OSError, EOFError, zlib.error, etree.XMLSyntaxError) as err:
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
