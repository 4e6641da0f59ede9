"""PubMed XML reader and input expansion: records read, records counted, broken files reported."""

import gzip
from collections import Counter
from pathlib import Path

import pytest

from biobert.corpus.document import CorpusFileError
from biobert.corpus.pubmed import read_pubmed
from biobert.errors import UserError
from data_prep.readers import expand_inputs

SAMPLE = Path(__file__).parent / "fixtures" / "data_prep" / "pubmed_sample.xml"


@pytest.fixture
def sample_gz(tmp_path):
    path = tmp_path / "sample.xml.gz"
    path.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    return path


def test_reads_structured_abstract_with_inline_markup(sample_gz):
    counts = Counter()
    docs = list(read_pubmed(sample_gz, counts))
    assert [d.doc_id for d in docs] == ["pmid:1001", "pmid:1002", "pmid:1005"]
    title, abstract = docs[0].sections
    assert title == "Autophagy limits Staphylococcus aureus growth in mice."
    assert abstract.startswith("Prostaglandin D2 levels rise in disease. Its role is unclear. We infected mice")
    assert abstract.endswith("Yes, see Fig. 2.")
    assert "BACKGROUND" not in abstract and "(n = 12)" in abstract and "(p < 0.05)" in abstract
    assert docs[0].meta == {"language": "eng", "year": 2019, "record": 0}  # record: ordinal of the <PubmedArticle>
    assert docs[1].meta == {"language": "ger", "year": 1998, "record": 1}
    assert docs[2].meta["record"] == 4  # records 2 and 3 (no abstract, no text) were skipped
    assert docs[2].sections == ["An abstract without a title. It still has two sentences."]


def test_skipped_records_are_counted_by_reason(sample_gz):
    counts, deleted = Counter(), []
    list(read_pubmed(sample_gz, counts, on_delete=deleted.extend))
    assert counts == Counter(no_abstract=1, no_text=1, book_article=1, delete_citation=2)
    assert deleted == ["900", "901"]


def test_title_only_records_kept_when_abstract_not_required():
    counts = Counter()
    docs = list(read_pubmed(SAMPLE, counts, require_abstract=False))  # plain .xml works too
    assert [d.sections for d in docs if d.doc_id == "pmid:1003"] == [["A title without any abstract."]]
    assert counts["no_abstract"] == 0 and counts["no_text"] == 1


def _many_articles(n: int) -> bytes:
    """A valid PubMed file of n articles (copies of the first sample record with new PMIDs)."""
    text = SAMPLE.read_text()
    start, end = text.index("<PubmedArticle>"), text.index("</PubmedArticle>") + len("</PubmedArticle>")
    record = text[start:end]
    body = "".join(record.replace(">1001<", f">{10_000 + i}<") for i in range(n))
    return (text[:start] + body + "</PubmedArticleSet>\n").encode()


def test_truncated_gzip_names_file_and_last_pmid(tmp_path):
    data = gzip.compress(_many_articles(2000))
    path = tmp_path / "cut.xml.gz"
    path.write_bytes(data[: len(data) // 2])
    docs = []
    with pytest.raises(CorpusFileError) as err:
        for doc in read_pubmed(path, Counter()):
            docs.append(doc)
    message = str(err.value)
    assert str(path) in message and "truncated" in message
    assert 0 < len(docs) < 2000
    assert f"after PMID {docs[-1].doc_id.removeprefix('pmid:')}" in message


def test_not_gzip_file_with_gz_suffix(tmp_path):
    path = tmp_path / "plain.xml.gz"
    path.write_bytes(SAMPLE.read_bytes())
    with pytest.raises(CorpusFileError, match="not a gzip file") as err:
        list(read_pubmed(path, Counter()))
    assert str(path) in str(err.value) and "before the first record" in str(err.value)


def test_malformed_xml_names_last_pmid(tmp_path):
    text = SAMPLE.read_text().replace('<PMID Version="1">1005</PMID>', '<PMID Version="1">1005</PMIDX>')
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(CorpusFileError, match="malformed") as err:
        list(read_pubmed(path, Counter()))
    assert str(path) in str(err.value) and "after PMID 2001" in str(err.value)


def test_not_xml_and_wrong_root(tmp_path):
    text_file = tmp_path / "notes.xml"
    text_file.write_text("just some text, not XML\n")
    with pytest.raises(CorpusFileError, match="malformed") as err:
        list(read_pubmed(text_file, Counter()))
    assert str(text_file) in str(err.value)
    jats = tmp_path / "article.xml"
    jats.write_text("<article><front><article-title>T</article-title></front></article>")
    with pytest.raises(CorpusFileError, match=r"not a PubMed XML file \(root element <article>"):
        list(read_pubmed(jats, Counter()))


def test_expand_inputs_dirs_globs_and_errors(tmp_path, sample_gz):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.xml").write_text("<PubmedArticleSet/>")
    (tmp_path / "readme.txt").write_text("ignored in directories")
    assert expand_inputs([str(tmp_path)]) == sorted([sample_gz.resolve(), (tmp_path / "sub" / "b.xml").resolve()])
    assert expand_inputs([str(tmp_path / "*.gz"), str(sample_gz)]) == [sample_gz.resolve()]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"{empty}: no input files"):
        expand_inputs([str(empty)])
    with pytest.raises(UserError, match="no such file or directory"):
        expand_inputs([str(tmp_path / "missing.xml.gz")])
    (tmp_path / "readme.md").write_text("not a corpus")
    with pytest.raises(UserError, match="no reader for this file type"):
        expand_inputs([str(tmp_path / "readme.md")])
    # named explicitly, a .txt file is a corpus in BERT's one-sentence-per-line format
    assert expand_inputs([str(tmp_path / "readme.txt")]) == [(tmp_path / "readme.txt").resolve()]
    with pytest.raises(UserError, match="no --input"):
        expand_inputs([])


def _complete_records(prefix: bytes) -> int:
    """Complete <PubmedArticle> records in what a gzip prefix decompresses to (what a reader can recover)."""
    import zlib

    return zlib.decompressobj(31).decompress(prefix).count(b"</PubmedArticle>")


def _read_until_error(path: Path) -> tuple[list, str]:
    docs = []
    with pytest.raises(CorpusFileError) as err:
        for doc in read_pubmed(path, Counter()):
            docs.append(doc)
    return docs, str(err.value)


def test_garbage_after_the_gzip_stream_keeps_every_record_and_says_so(tmp_path):
    data = gzip.compress(_many_articles(200))
    path = tmp_path / "tail.xml.gz"
    path.write_bytes(data + bytes(range(1, 201)) * 5)  # 1,000 bytes that are not gzip data
    docs, message = _read_until_error(path)
    assert len(docs) == 200
    assert f"trailing garbage after the gzip stream at byte {len(data):,}" in message and "1,000 bytes" in message
    assert "not a gzip file" not in message and "python -m data_prep download" in message and "md5" in message


def test_truncated_gzip_reads_every_complete_record_before_the_cut(tmp_path):
    data = gzip.compress(_many_articles(200))
    cut = data[: len(data) * 6 // 10]
    path = tmp_path / "cut.xml.gz"
    path.write_bytes(cut)
    docs, message = _read_until_error(path)
    assert 0 < len(docs) == _complete_records(cut) < 200
    assert f"truncated gzip stream: the file ends at byte {len(cut):,}" in message
    assert f"after PMID {docs[-1].doc_id.removeprefix('pmid:')}" in message
    assert "python -m data_prep download" in message


def test_zero_padding_after_the_gzip_stream_is_not_damage(tmp_path):
    path = tmp_path / "padded.xml.gz"
    path.write_bytes(gzip.compress(_many_articles(3)) + bytes(512))  # gzip(1) ignores trailing zeros too
    assert len(list(read_pubmed(path, Counter()))) == 3
