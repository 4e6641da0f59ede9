"""Reader for PMC Open Access full text in JATS XML: single `.nxml` files and `.tar.gz` packages of them.

Pre-training wants running prose, so an article becomes its title, its abstract paragraphs and its body
paragraphs in reading order, one `sections` entry per paragraph (sentences are split within it and never
across a section boundary). Dropped, with their text: tables, figures, formulas, captions, footnotes,
supplementary material, back matter (references, acknowledgements, appendices, glossary), author notes,
section titles and labels (one-word "sentences" like "Methods" are noise), and back-matter sections that
some journals put into the body ("Competing interests", "Abbreviations", ...; see _SKIP_SEC_TITLE).
The text that follows a dropped inline element (its lxml `.tail`) is kept.

Citation markers: an `<xref>` to a reference, figure, table or supplementary file is wrapped in control
characters and resolved once the paragraph's text is assembled (data_prep/pmc_markers.py): "[1, 2]" and
"(Fig. 2A; Table 1)" go, "as shown in Figure 2" stays. An xref with ref-type "other" or none is classified by the
element its rid points to (BJC-style author-year citations point to <ref>).

Article types are all kept (research articles, reviews, case reports, letters, ...): each is real
biomedical prose. `meta["article_type"]` allows filtering later; corrections and retractions without
body text are skipped as `no_text` anyway.
"""

from __future__ import annotations

import gzip
import html
import re
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from lxml import etree

from biobert.corpus.document import CorpusFileError, Document
from biobert.corpus.text_clean import clean_text
from data_prep.pmc_markers import CITE, CITE_END, FLOAT, FLOAT_END, GAP, resolve_markers
from data_prep.text import SkipReporter

MEMBER_SUFFIXES = (".nxml", ".xml")  # articles in PMC packages: .nxml (article/bulk packages), .xml (2024 bulk)

# Elements dropped with everything inside them (the tail, the text after the element, is kept).
_DROP = frozenset(
    """
    table-wrap table-wrap-group table fig fig-group graphic inline-graphic media alternatives
    disp-formula disp-formula-group inline-formula math tex-math chem-struct-wrap
    supplementary-material inline-supplementary-material fn fn-group table-wrap-foot caption label
    ref-list ack glossary notes author-notes app-group object-id sec-meta title-group kwd-group
""".split()
)
_TITLES = frozenset({"title", "subtitle"})
# Children that make an element a container of blocks rather than one block of running text.
_BLOCK = frozenset("p sec list list-item disp-quote boxed-text statement def-list def-item title".split())
_SPACED = _BLOCK | {"break", "term", "def", "disp-quote"}  # inline elements that separate words

_CITATION_TYPES = frozenset({"bibr"})
_FLOAT_TYPES = frozenset({"fig", "table", "table-wrap", "supplementary-material", "media", "disp-formula"})
_NOTE_TYPES = frozenset({"fn", "table-fn", "author-notes", "corresp", "aff"})
_TARGET_KIND = {
    "ref": "bibr",
    "fig": "fig",
    "table-wrap": "table",
    "supplementary-material": "fig",
    "media": "fig",
    "disp-formula": "fig",
    "fn": "fn",
}

_SKIP_SEC_TYPES = frozenset(
    {
        "supplementary-material",
        "display-objects",
        "COI-statement",
        "ack",
        "funding-information",
        "data-availability",
        "author-contributions",
    }
)
_SKIP_SEC_TITLE = re.compile(
    r"(?:acknowledge?ments?|competing interests?|conflicts? of interests?|declarations? of (?:competing )?interests?"
    r"|disclosures?|authors?['’]? contributions?|contributors|(?:list of )?abbreviations(?: used)?"
    r"|pre-?publication history|supporting information|supplementa(?:ry|l) (?:materials?|data|information)"
    r"|additional (?:files?|materials?)|electronic supplementary material|funding(?: sources?| information)?"
    r"|financial (?:support|disclosures?)(?: and sponsorship)?|sources? of funding|role of the funding source"
    r"|(?:data|material) availability(?: statement)?|availability of data(?: and materials?)?|footnotes?)",
    re.IGNORECASE,
)
_SKIP_ABSTRACT_TYPES = frozenset({"graphical", "toc", "teaser"})  # one-line blurbs, not the abstract


class _Article:
    """Text extraction for one parsed <article>; holds the id -> element-kind map that classifies xrefs."""

    def __init__(self, root: etree._Element):
        self.root = root
        self.kind_of_id = {el.get("id"): _local(el) for el in root.iter(etree.Element) if el.get("id")}

    def xref_kind(self, xref: etree._Element) -> str:
        ref_type = xref.get("ref-type") or ""
        if ref_type in _CITATION_TYPES or ref_type in _FLOAT_TYPES or ref_type in _NOTE_TYPES:
            return ref_type
        target = (xref.get("rid") or "").split()[:1]  # ref-type "other"/missing: decide by what it points to
        return _TARGET_KIND.get(self.kind_of_id.get(target[0], "") if target else "", "")

    def inline(self, elem: etree._Element, out: list[str]) -> None:
        """Append the running text inside `elem` (not its tail) to `out`, with markers for xrefs."""
        if elem.text:
            out.append(elem.text)
        for child in elem:
            if isinstance(child.tag, str):
                name = _local(child)
                if name in _DROP or name in _TITLES:
                    out.append(GAP)
                elif name == "xref":
                    self._xref(child, out)
                else:
                    spaced = name in _SPACED
                    out.append(" " if spaced else "")
                    self.inline(child, out)
                    out.append(" " if spaced else "")
            elif isinstance(child, etree._Entity):  # only when a DTD entity was left unresolved
                out.append(html.unescape(child.text or ""))
            if child.tail:
                out.append(child.tail)

    def _xref(self, xref: etree._Element, out: list[str]) -> None:
        kind = self.xref_kind(xref)
        if kind in _NOTE_TYPES:
            out.append(GAP)
            return
        inner: list[str] = []
        self.inline(xref, inner)
        text = "".join(inner).replace(GAP, "")
        if kind in _CITATION_TYPES:
            out.append(CITE + text + CITE_END)
        elif kind in _FLOAT_TYPES:
            out.append(FLOAT + text + FLOAT_END)
        else:
            out.append(text)

    def block_text(self, elem: etree._Element) -> str:
        out: list[str] = []
        self.inline(elem, out)
        return clean_text(resolve_markers("".join(out)))

    def blocks(self, container: etree._Element, sections: list[str]) -> None:
        """Append one entry per paragraph-like block under `container`, in document order."""
        for child in container:
            if not isinstance(child.tag, str):
                continue
            name = _local(child)
            if name in _DROP or name in _TITLES or (name == "sec" and _is_back_matter(child)):
                continue
            if _is_container(child):
                self.blocks(child, sections)
            else:
                text = self.block_text(child)
                if text:
                    sections.append(text)


def _local(elem: etree._Element) -> str:
    tag = elem.tag
    return tag.rpartition("}")[2] if tag[0] == "{" else tag


def _is_container(elem: etree._Element) -> bool:
    if (elem.text or "").strip():
        return False
    return any(isinstance(c.tag, str) and _local(c) in _BLOCK for c in elem)


def _is_back_matter(sec: etree._Element) -> bool:
    if sec.get("sec-type") in _SKIP_SEC_TYPES:
        return True
    title_el = sec.find("title")
    title = clean_text("".join(title_el.itertext())) if title_el is not None else ""
    title = re.sub(r"^[\dIVX]+(?:\.\d+)*\.?\s+", "", title).rstrip(":. ")
    return _SKIP_SEC_TITLE.fullmatch(title) is not None


def _pmc_id(meta: etree._Element | None) -> str | None:
    for kind in ("pmc", "pmcid"):
        value = meta.findtext(f"article-id[@pub-id-type='{kind}']") if meta is not None else None
        digits = (value or "").strip().upper().removeprefix("PMC")
        if digits:
            return f"PMC{digits}"
    return None


def _year(meta: etree._Element | None) -> int | None:
    if meta is None:
        return None
    years = [
        d.findtext("year", "").strip()
        for d in meta.iterfind("pub-date")
        if d.get("pub-type") not in ("pmc-release", "nihms-submitted")
    ]
    years = [int(y) for y in years if y.isdigit()]
    return min(years) if years else None


def _journal(root: etree._Element) -> str | None:
    title = root.find("front/journal-meta//journal-title")
    if title is not None:
        return clean_text("".join(title.itertext())) or None
    return root.findtext("front/journal-meta/journal-id[@journal-id-type='nlm-ta']")


def parse_article(root: etree._Element, fallback_id: str, require_abstract: bool = True) -> Document | str:
    """Turn one parsed <article> into a Document, or return the reason (a counts key) it is skipped."""
    if _local(root) != "article":
        return "not_article"
    article, meta = _Article(root), root.find("front/article-meta")
    title_el = meta.find("title-group/article-title") if meta is not None else None
    title = article.block_text(title_el) if title_el is not None else ""
    abstract: list[str] = []
    for abstract_el in meta.iterfind("abstract") if meta is not None else ():
        if abstract_el.get("abstract-type") in _SKIP_ABSTRACT_TYPES:
            continue
        if _is_container(abstract_el):
            article.blocks(abstract_el, abstract)
        elif text := article.block_text(abstract_el):
            abstract.append(text)
    body: list[str] = []
    body_el = root.find("body")
    if body_el is not None:
        article.blocks(body_el, body)
    sections = [s for s in [title, *abstract, *body] if s]
    if not abstract and not body and (require_abstract or not title):
        return "no_text"
    pmc_id, pmid = _pmc_id(meta), meta.findtext("article-id[@pub-id-type='pmid']") if meta is not None else None
    info = {
        "pmid": pmid.strip() if pmid else None,
        "year": _year(meta),
        "title": title or None,
        "journal": _journal(root),
        "article_type": root.get("article-type"),
    }
    return Document(f"pmc:{pmc_id or fallback_id}", sections, info)


def _parser() -> etree.XMLParser:
    # No DTD, no network: PMC files name an external DTD that is neither needed nor reachable.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


def _name_stem(name: str) -> str:
    for suffix in MEMBER_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_nxml(path: str | Path, counts: Counter, *, require_abstract: bool = True) -> Iterator[Document]:
    """One article per `.nxml` file. Malformed XML is a whole-file failure (CorpusFileError).

    `require_abstract` means "require text beyond the title" (abstract or body), as for PubMed: with it
    off, a title-only article is kept.
    """
    path = Path(path)
    try:
        root = etree.parse(str(path), _parser()).getroot()
    except (OSError, etree.XMLSyntaxError) as err:
        raise CorpusFileError(
            f"{path}: not a well-formed JATS XML file ({type(err).__name__}: {err}); "
            "re-download it or remove it from --input"
        ) from err
    result = parse_article(root, _name_stem(path.name), require_abstract)
    if result == "not_article":
        raise CorpusFileError(
            f"{path}: root element <{_local(root)}>, expected a JATS <article>; "
            "remove it from --input or pass it to the matching reader"
        )
    if isinstance(result, str):
        SkipReporter(path, counts).skip(result, "article")
    else:
        yield result


def read_pmc_package(path: str | Path, counts: Counter, *, require_abstract: bool = True) -> Iterator[Document]:
    """One article per `.nxml`/`.xml` member of a PMC `.tar.gz` package, streamed member by member.

    A member that is not well-formed XML or not an <article> is counted (`bad_xml`, `not_article`) and
    named on stderr; other members (PDFs, images) are passed over. A truncated or corrupt archive raises
    CorpusFileError naming the last complete member; the articles before it have been yielded.
    """
    path = Path(path)
    skips, last, current = SkipReporter(path, counts), None, None
    with open(path, "rb") as raw:
        try:
            # Our own GzipFile, not mode "r|gz": tarfile ends silently when a truncated stream stops at a
            # header boundary, whereas GzipFile raises EOFError on a missing end-of-stream marker.
            gz = gzip.GzipFile(fileobj=raw, mode="rb")
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                for member in tar:
                    if not member.isfile() or not member.name.endswith(MEMBER_SUFFIXES):
                        continue
                    current = member.name
                    data = tar.extractfile(member).read()
                    doc = _parse_member(data, member.name, skips, require_abstract)
                    last, current = member.name, None
                    if doc is not None:
                        yield doc
            while gz.read(1 << 20):  # the end-of-archive padding: reading it checks the gzip trailer
                pass
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            where = f"after member {last}" if last else "before the first article member"
            where += f", while reading {current}" if current else ""
            raise CorpusFileError(
                f"{path}: the .tar.gz package is truncated or corrupt ({type(err).__name__}: "
                f"{err}) {where}, near byte {raw.tell():,}; re-download it"
            ) from err


def _parse_member(data: bytes, name: str, skips: SkipReporter, require_abstract: bool) -> Document | None:
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as err:
        skips.skip("bad_xml", name, str(err))
        return None
    result = parse_article(root, _name_stem(name), require_abstract)
    if isinstance(result, str):
        skips.skip(result, name)
        return None
    return result
