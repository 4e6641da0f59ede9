"""PMC JATS reader: what is kept, what is dropped, citation-marker cleanup, tar packages, broken inputs."""

import gzip
import io
import random
import re
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree

from biobert.corpus.document import CorpusFileError
from conftest import SHARED_DATA
from data_prep.pmc import read_nxml, read_pmc_package
from data_prep.pmc_markers import CITE, CITE_END, FLOAT, FLOAT_END, GAP, resolve_markers

FIXTURES = Path(__file__).parent / "fixtures" / "data_prep" / "pmc"
FULL = FIXTURES / "PMC1000001.nxml"
# Every text the fixture article holds in a dropped element carries one of these upper-case tags.
DROPPED_TAGS = (
    "AUTHORNOTE",
    "GRAPHICAL",
    "KEYWORD",
    "TABLECAPTION",
    "TABLECELL",
    "FORMULA",
    "FIGTITLE",
    "FIGCAPTION",
    "SUPPCAPTION",
    "COMPETING",
    "ACKNOWLEDGED",
    "FOOTNOTE",
    "REFERENCE",
    "FLOATFIG",
)


def test_title_abstract_and_body_paragraphs_in_reading_order():
    counts = Counter()
    [doc] = read_nxml(FULL, counts)
    assert doc.doc_id == "pmc:PMC1000001" and not counts
    assert doc.sections == [
        "Autophagy limits Staphylococcus aureus growth in mice",
        "Prostaglandin D2 levels rise in disease. Its role is unclear.",  # structured abstract: one per sec
        "We infected mice (n = 12) and measured growth.",
        "Autophagy is conserved. It was studied in yeast and in flies.",
        "Earlier work measured [Ca2+]i and interleukin 6 (IL-6) levels. As Smith et al. (2005) showed, growth doubled.",
        "Mice were housed in groups (n = 12) and weighed daily. Weights did not differ.",  # table tail kept
        "The dose was given orally. Details are given elsewhere.",
        "Doses were adjusted according to Eq. 1 every week.",
        "Outcomes were:",
        "body weight,",
        "bacterial load.",
        "Table 1 summarises the weights.",
    ]
    assert doc.meta == {
        "pmid": "20000001",
        "year": 2016,
        "title": doc.sections[0],
        "journal": "Journal of Test Medicine",
        "article_type": "research-article",
    }


def test_tables_figures_formulas_notes_and_back_matter_are_dropped():
    [doc] = read_nxml(FULL, Counter())
    text = "\n".join(doc.sections)
    assert [tag for tag in DROPPED_TAGS if tag in text] == []
    assert not {"Introduction", "Methods", "Background", "Animals"} & set(doc.sections)  # titles dropped
    assert not re.search(r"[\x00-\x08]", text)  # no marker survives


def _c(text: str) -> str:
    return CITE + text + CITE_END


def _f(text: str) -> str:
    return FLOAT + text + FLOAT_END


MARKER_CASES = [
    (f"Autophagy is conserved [{_c('1')}, {_c('2')}].", "Autophagy is conserved."),
    (f"It was studied in yeast [{_c('3')}–{_c('5')}] and in flies{_c('6')}.", "It was studied in yeast and in flies."),
    (f"Some [{_c('7')}-9], others [{_c('12')}]; more.", "Some, others; more."),
    (f"Housed in groups (n = 12; {_f('Table 1')}) daily.", "Housed in groups (n = 12) daily."),
    (f"Growth doubled ({_f('Fig. 1A')}).", "Growth doubled."),
    (f"Growth doubled (P = 0.04, {_f('Fig. 2')}).", "Growth doubled (P = 0.04)."),
    (f"Table {_f('1')} and {_f('Figure 2')} show it.", "Table 1 and Figure 2 show it."),  # part of the sentence
    (f"As {_c('Smith et al. (2005)')} showed, it grew.", "As Smith et al. (2005) showed, it grew."),
    (f"It was shown (Willis et al., {_c('2012')}; {_c('Jones, 2006')}).", "It was shown."),
    (f"It was shown ({_c('Smith et al., 2005')}; ACSM, 2010).", "It was shown (ACSM, 2010)."),
    (f"It is common (see [{_c('3')}]) in mice.", "It is common in mice."),
    (f"It is common (reviewed in {_c('12')}).", "It is common."),
    (f"Both (Tables {_f('1')}, 2) agree.", "Both agree."),
    (f"See also ( {_f('Additional file 1')} ).", "See also."),
    (f"The dose {GAP} was given.", "The dose was given."),
    (f"The mean ({GAP}) rose.", "The mean rose."),
    ("Genuine [Ca2+]i, (IL-6), F[1,29] and [0, 1] stay.", "Genuine [Ca2+]i, (IL-6), F[1,29] and [0, 1] stay."),
]


@pytest.mark.parametrize("raw, expected", MARKER_CASES)
def test_citation_markers_and_their_punctuation_are_removed(raw, expected):
    assert " ".join(resolve_markers(raw).split()) == expected


def test_article_without_text_is_counted_unless_title_only_allowed(capsys):
    counts = Counter()
    assert list(read_nxml(FIXTURES / "PMC1000003.nxml", counts)) == []
    assert counts == Counter(no_text=1)
    assert "PMC1000003.nxml:article: skipped (no_text)" in capsys.readouterr().err
    [doc] = read_nxml(FIXTURES / "PMC1000003.nxml", Counter(), require_abstract=False)
    assert doc.doc_id == "pmc:PMC1000003" and doc.sections == ["Correction: Autophagy limits growth"]


def test_id_falls_back_to_the_file_name():
    [doc] = read_nxml(FIXTURES / "abstract_only.nxml", Counter())
    assert doc.doc_id == "pmc:abstract_only"
    assert doc.meta["pmid"] is None and doc.meta["year"] == 2009 and doc.meta["journal"] == "Critical Care"
    assert doc.sections[1] == "Scanned articles have no body. The abstract is all the text."


def test_malformed_or_foreign_xml_file_is_a_file_error(tmp_path):
    broken = tmp_path / "PMC9.nxml"
    broken.write_text(FULL.read_text()[:2000])
    with pytest.raises(CorpusFileError, match=r"PMC9\.nxml: not a well-formed JATS XML file"):
        list(read_nxml(broken, Counter()))
    foreign = tmp_path / "other.nxml"
    foreign.write_text("<PubmedArticleSet/>")
    with pytest.raises(CorpusFileError, match=r"other\.nxml: root element <PubmedArticleSet>"):
        list(read_nxml(foreign, Counter()))


def _package(path: Path, members: list[tuple[str, bytes]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buf.getvalue()))
    return path


def _members() -> list[tuple[str, bytes]]:
    return [
        ("pkg/PMC1000001.nxml", FULL.read_bytes()),
        ("pkg/PMC1000001.pdf", b"%PDF-1.4 not an article"),
        ("pkg/broken.nxml", b"<article><body><p>unclosed</body></article>"),
        ("pkg/abstract_only.nxml", (FIXTURES / "abstract_only.nxml").read_bytes()),
        ("pkg/PMC1000003.nxml", (FIXTURES / "PMC1000003.nxml").read_bytes()),
        ("pkg/meta.xml", b"<manifest/>"),
    ]


def test_tar_package_streams_articles_and_counts_bad_members(tmp_path, capsys):
    package = _package(tmp_path / "articles.A-B.tar.gz", _members())
    counts = Counter()
    docs = list(read_pmc_package(package, counts))
    assert [d.doc_id for d in docs] == ["pmc:PMC1000001", "pmc:pkg/abstract_only"]
    assert docs[0].sections == list(read_nxml(FULL, Counter()))[0].sections
    assert counts == Counter(bad_xml=1, no_text=1, not_article=1)
    err = capsys.readouterr().err
    assert "articles.A-B.tar.gz:pkg/broken.nxml: skipped (bad_xml)" in err and "pkg/meta.xml" in err


def test_truncated_tar_package_names_the_last_complete_member(tmp_path):
    noise = random.Random(0).randbytes(100_000).hex().encode()  # incompressible: the cut lands inside it
    second = FULL.read_bytes().replace(b"1000001", b"1000002").replace(b"</article>", b"<!--" + noise + b"-->")
    members = _members()[:1] + [("pkg/PMC1000002.nxml", second + b"</article>")]
    data = _package(tmp_path / "full.tar.gz", members).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) * 3 // 4])
    docs, counts = [], Counter()
    with pytest.raises(
        CorpusFileError,
        match=r"cut\.tar\.gz: .*truncated .* after member pkg/PMC1000001\.nxml, "
        r"while reading pkg/PMC1000002\.nxml",
    ):
        docs.extend(read_pmc_package(cut, counts))
    assert [d.doc_id for d in docs] == ["pmc:PMC1000001"]  # what came before the damage is kept
    cut.write_bytes(data[:-6])  # only the gzip trailer lost: every article read, the damage still reported
    with pytest.raises(CorpusFileError, match=r"after member pkg/PMC1000002\.nxml"):
        list(read_pmc_package(cut, Counter()))


PMC_DIR = SHARED_DATA / "pmc"


@pytest.mark.skipif(
    not PMC_DIR.is_dir(), reason=f"real PMC articles not found under {PMC_DIR} (set BIOBERT_SHARED_DATA)"
)
def test_real_pmc_articles():
    """298 real PMC OA articles: measured 297 documents (one correction without text), 1,004,675 words."""
    files = sorted(PMC_DIR.glob("*.nxml"))
    counts, docs, leaked = Counter(), [], 0
    # "[12]", "[1, 2]". Not ranges: "[30–85]" is a genuine interval in this data (unit tests cover "[3–5]"),
    # and not "[0,1]".
    bracket_citation = re.compile(r"(?<!\w)\[[1-9]\d{0,2}(?:, ?[1-9]\d{0,2})*\]")
    for path in files:
        for doc in read_nxml(path, counts):
            docs.append(doc)
            text = " ".join(doc.sections)
            assert not bracket_citation.search(text), (doc.doc_id, bracket_citation.search(text).group())
            assert not re.search(r"(?<!\w)\(\s*\)|\[\s*\]|[\x00-\x08]", text), doc.doc_id  # not "f()"
            root = etree.parse(str(path), etree.XMLParser(load_dtd=False, no_network=True)).getroot()
            floats = (" ".join("".join(e.itertext()).split()) for e in root.iter("td", "th", "caption"))
            leaked += sum(1 for t in floats if len(t) >= 60 and t in text)
    words = sum(len(s.split()) for d in docs for s in d.sections)
    assert len(files) == 298 and len(docs) == 297 and counts == Counter(no_text=1)
    assert len({d.doc_id for d in docs}) == 297 and all(d.doc_id.startswith("pmc:PMC") for d in docs)
    assert 950_000 < words < 1_100_000, words
    assert leaked <= 1  # table cell or caption text of 60+ characters; PMC5735476 repeats one in its body
