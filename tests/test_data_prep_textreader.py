"""Plain-text readers (sentence-per-line, JSON lines) and the registration of every reader by suffix."""

import gzip
import shutil
from collections import Counter
from pathlib import Path

import pytest

from biobert.corpus.document import CorpusFileError
from biobert.corpus.pubmed import read_pubmed
from conftest import write_pubmed_xml, write_vocab
from data_prep.cli import main as data_prep_main
from data_prep.pmc import read_nxml, read_pmc_package
from data_prep.readers import expand_inputs, read_documents, reader_for
from data_prep.text import read_jsonl, read_sentence_lines

FIXTURES = Path(__file__).parent / "fixtures" / "data_prep"
SENTENCES = FIXTURES / "text" / "sentences.txt"
JSONL = FIXTURES / "text" / "docs.jsonl"


def test_sentence_per_line_documents_are_presplit():
    counts = Counter()
    docs = list(read_sentence_lines(SENTENCES, counts))
    assert [d.doc_id for d in docs] == ["sentences:0", "sentences:1", "sentences:2"]
    assert docs[0].sections == ["Autophagy is a conserved pathway.", "It recycles proteins in cells."]
    assert docs[1].sections == ["Mice were infected with bacteria."]  # whitespace-only line ends a document
    assert docs[2].sections == [
        "Growth was measured daily in all groups.",
        "Weights did not differ.",
        "No adverse events occurred.",
    ]
    assert all(d.meta == {"presplit": True} for d in docs) and not counts


def test_gzipped_text_and_bad_utf8_lines(tmp_path, capsys):
    data = SENTENCES.read_bytes().replace(b"It recycles proteins in cells.", b"It recycles prot\xe9ins.")
    path = tmp_path / "corpus.txt.gz"
    path.write_bytes(gzip.compress(data))
    counts = Counter()
    docs = list(read_sentence_lines(path, counts))
    assert [d.doc_id for d in docs] == ["corpus:0", "corpus:1", "corpus:2"]
    assert docs[0].sections == ["Autophagy is a conserved pathway."]  # the bad line is dropped, not mangled
    assert counts == Counter(bad_utf8=1)
    assert "corpus.txt.gz:line 2: skipped (bad_utf8)" in capsys.readouterr().err


def test_truncated_gzip_text_is_a_file_error(tmp_path):
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(gzip.compress(SENTENCES.read_bytes() * 50)[:-12])
    with pytest.raises(CorpusFileError, match=r"cut\.txt\.gz: the gzip stream is truncated .* after line"):
        list(read_sentence_lines(path, Counter()))


def test_jsonl_documents_and_skipped_lines(capsys):
    counts = Counter()
    docs = list(read_jsonl(JSONL, counts))
    assert [d.doc_id for d in docs] == ["pmid:101", "docs:2", "107"]
    assert docs[0].sections == ["Autophagy is conserved. It recycles proteins."]
    assert docs[1].sections == [
        "A title as the first section",
        "The body follows in a second section. It has two sentences.",
    ]
    assert counts == Counter(bad_json=2, bad_text=1, no_text=1)  # the blank line 7 is not a record
    err = capsys.readouterr().err
    for where in (
        "docs.jsonl:line 3: skipped (bad_json)",
        "docs.jsonl:line 4: skipped (bad_json): expected a JSON object",
        "docs.jsonl:line 5: skipped (bad_text)",
        "docs.jsonl:line 6: skipped (no_text)",
    ):
        assert where in err


def test_jsonl_field_options_and_bounded_warnings(tmp_path, capsys):
    lines = ['{"pmid": "9", "body": "Custom fields work."}'] + ["{not json"] * 8
    path = tmp_path / "custom.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    counts = Counter()
    docs = list(read_jsonl(path, counts, text_field="body", id_field="pmid"))
    assert [(d.doc_id, d.sections) for d in docs] == [("9", ["Custom fields work."])]
    assert counts == Counter(bad_json=8)
    err = capsys.readouterr().err
    assert err.count("skipped (bad_json)") == 5 and "further 'bad_json' records are only counted" in err


def test_every_format_is_registered_and_found_in_a_directory(tmp_path):
    shutil.copy(FIXTURES / "pmc" / "PMC1000001.nxml", tmp_path / "PMC1000001.nxml")
    shutil.copy(SENTENCES, tmp_path / "a.txt")
    shutil.copy(JSONL, tmp_path / "b.jsonl")
    (tmp_path / "a2.txt.gz").write_bytes(gzip.compress(SENTENCES.read_bytes()))
    (tmp_path / "b2.jsonl.gz").write_bytes(gzip.compress(JSONL.read_bytes()))
    (tmp_path / "nested").mkdir()
    write_pubmed_xml(tmp_path / "nested" / "pubmed26n0001.xml.gz", 3)
    with gzip.open(tmp_path / "nested" / "oa_package.tar.gz", "wb") as gz:
        gz.write(b"\0" * 1024)  # an empty tar archive
    (tmp_path / "notes.md").write_text("not a corpus")
    found = {p.name: reader_for(p) for p in expand_inputs([str(tmp_path)])}
    assert found == {
        "PMC1000001.nxml": read_nxml,
        "a.txt": read_sentence_lines,
        "a2.txt.gz": read_sentence_lines,
        "b.jsonl": read_jsonl,
        "b2.jsonl.gz": read_jsonl,
        "pubmed26n0001.xml.gz": read_pubmed,
        "oa_package.tar.gz": read_pmc_package,
    }
    counts = Counter()
    pubmed = list(read_documents(tmp_path / "nested" / "pubmed26n0001.xml.gz", counts, require_abstract=True))
    assert [d.doc_id for d in pubmed] == ["pmid:1000", "pmid:1001", "pmid:1002"]
    assert list(read_documents(tmp_path / "nested" / "oa_package.tar.gz", counts, require_abstract=True)) == []


def test_pipeline_prepares_shards_from_mixed_formats(tmp_path):
    inputs = tmp_path / "corpus"
    inputs.mkdir()
    shutil.copy(FIXTURES / "pmc" / "PMC1000001.nxml", inputs)
    shutil.copy(SENTENCES, inputs)
    shutil.copy(JSONL, inputs)
    vocab = write_vocab(tmp_path / "vocab.txt")
    manifest = data_prep_main(
        [
            "--input",
            str(inputs),
            "--vocab",
            str(vocab),
            "--out",
            str(tmp_path / "out"),
            "--seq_len",
            "32",
            "--heldout_fraction",
            "0",
        ]
    )
    assert manifest["errors"] == [] and len(manifest["inputs"]) == 3
    assert sorted(i["documents_read"] for i in manifest["inputs"]) == [1, 3, 3]
    # one-sentence documents cannot make an NSP example: counted by the packer as too_short
    assert manifest["counts"]["documents"] + manifest["skipped"]["too_short"] == 7
    assert {k: manifest["skipped"][k] for k in ("bad_json", "bad_text", "no_text")} == {
        "bad_json": 2,
        "bad_text": 1,
        "no_text": 1,
    }
