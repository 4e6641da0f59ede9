"""WordPiece vocabulary training on a tiny generated PubMed corpus: files written, casing, limits, errors."""

from __future__ import annotations

import gzip
import json

import pytest

from biobert.tokenizer import SPECIAL_TOKENS, load_tokenizer
from conftest import WORDS, write_pubmed_xml
from data_prep.vocab import main, train_vocab


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab_corpus")
    write_pubmed_xml(root / "pubmed26n0001.xml.gz", 60, seed=1, first_pmid=1000)
    write_pubmed_xml(root / "pubmed26n0002.xml", 60, seed=2, first_pmid=5000)
    return root


def test_uncased_vocab_loads_with_the_project_tokenizer(corpus, tmp_path):
    out = tmp_path / "vocab"
    manifest = main(["--input", str(corpus), "--out", str(out), "--vocab_size", "600", "--lowercase"])
    lines = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:5] == list(SPECIAL_TOKENS) and len(lines) == manifest["vocab_size"] <= 600
    assert json.loads((out / "tokenizer_config.json").read_text())["do_lower_case"] is True
    assert (out / "tokenizer.json").exists()
    tok = load_tokenizer(out)
    assert tok.lowercase and tok.vocab_hash == manifest["vocab_hash"]
    assert not any(c.isupper() for t in tok.vocab if t not in SPECIAL_TOKENS for c in t)
    ids = tok.encode_batch(["Patients with Cancer were treated and the tumor decreased."])[0]
    assert tok.unk_id not in ids
    whole_words = [w for w in WORDS if w in tok.vocab]
    assert len(whole_words) > len(WORDS) // 2  # frequent corpus words become single pieces
    assert manifest["documents"] == 120 and manifest["words"] > 5000 and manifest["errors"] == []
    assert json.loads((out / "vocab_manifest.json").read_text()) == manifest


def test_cased_vocab_keeps_case_and_respects_max_docs(corpus, tmp_path):
    out = tmp_path / "cased"
    manifest = main(
        [
            "--input",
            str(corpus / "pubmed26n0001.xml.gz"),
            "--out",
            str(out),
            "--vocab_size",
            "200",
            "--cased",
            "--max_docs",
            "25",
            "--min_frequency",
            "1",
        ]
    )
    assert manifest["documents"] == 25 and manifest["lowercase"] is False
    tok = load_tokenizer(out)
    assert tok.lowercase is False and any(t[0].isupper() for t in tok.vocab if t not in SPECIAL_TOKENS)


def test_normalisation_matches_the_loader():
    texts = ["Gène expression in Ångström-scale probes"] * 5
    uncased = train_vocab(texts, 500, lowercase=True, min_frequency=1)
    cased = train_vocab(texts, 500, lowercase=False, min_frequency=1)
    assert "gene" in uncased and "gène" not in uncased  # lower-casing strips accents, as BertNormalizer does
    assert "Gène" in cased


def test_unreadable_file_is_recorded_and_existing_output_is_protected(corpus, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "pubmed26n0001.xml.gz").write_bytes((corpus / "pubmed26n0001.xml.gz").read_bytes())
    (inputs / "pubmed26n0003.xml.gz").write_bytes(gzip.compress(b"<PubmedArticleSet><PubmedArticle>")[:30])
    out = tmp_path / "v"
    manifest = main(["--input", str(inputs), "--out", str(out), "--vocab_size", "200", "--lowercase"])
    assert manifest["documents"] == 60 and len(manifest["errors"]) == 1
    assert "pubmed26n0003.xml.gz" in manifest["errors"][0]["file"]
    with pytest.raises(SystemExit) as exc:
        main(["--input", str(inputs), "--out", str(out), "--vocab_size", "200", "--lowercase"])
    assert exc.value.code == 2 and "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--input", str(inputs), "--out", str(out), "--vocab_size", "200"])  # casing must be chosen


def test_every_character_has_both_forms_and_greek_is_known_without_being_seen(tmp_path):
    texts = ["Serum levels of the cytokine rose sharply in treated mice"] * 20
    tokens = train_vocab(texts, 500, lowercase=False, min_frequency=1)
    assert len(tokens) <= 500 and len(set(tokens)) == len(tokens)
    assert {"α", "##α", "±", "##±", "S", "##S", "_", "##_"} <= set(tokens)
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    tok = load_tokenizer(tmp_path / "vocab.txt", lowercase=False)
    assert tok.unk_id not in tok.encode_batch(["Serum levelsα ± x_y"])[0]  # "##α": seen in neither position
