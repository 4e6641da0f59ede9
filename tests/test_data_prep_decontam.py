"""Decontamination against fine-tuning test sets: what is loaded, what is flagged and why.

Fixture test sets (written for these tests, in BioBERT's formats) live in fixtures/data_prep/decontam;
an opt-in test loads the real NER test sets from the shared data directory.
"""

from __future__ import annotations

import pickle
import time
import tracemalloc
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest

from biobert.corpus.document import Document
from biobert.errors import UserError
from conftest import SHARED_DATA
from data_prep.decontaminate import Decontaminator, ngram_hashes, words

FIXTURES = Path(__file__).parent / "fixtures" / "data_prep" / "decontam"


def doc(*sections: str, doc_id: str = "pmid:1", **meta) -> Document:
    return Document(doc_id=doc_id, sections=list(sections), meta=meta)


@pytest.fixture(scope="module")
def decon() -> Decontaminator:
    return Decontaminator.from_paths([str(FIXTURES)])


def test_directories_contribute_only_their_test_files(decon):
    loaded = sorted(Path(f).relative_to(FIXTURES).as_posix() for f in decon.files)
    assert loaded == [
        "ner/toy-disease/test.tsv",
        "qa/BioASQ-test-factoid-toy.json",
        "qa/toy_golden.json",
        "re/toy-chemprot/test.tsv",
        "re/toy-gad/1/test.tsv",
        "test.pmids",
    ]
    summary = decon.summary()
    assert summary["sentences"] == 6 and summary["sentences_too_short"] == 1  # "No mutations were detected ."
    assert summary["pmids"] == 3 and summary["ngram"] == 13 and summary["ngrams"] > 0
    # An explicitly named file is used whatever its name.
    train = Decontaminator.from_paths([str(FIXTURES / "ner" / "toy-disease" / "train.tsv")])
    assert train.summary()["sentences"] == 1


def test_pmid_lists_and_bioasq_documents_flag_by_pmid(decon):
    assert decon.check(doc("Unrelated title.", doc_id="pmid:31000001")) == "pmid"
    assert decon.check(doc("Unrelated title.", doc_id="pmid:31000002")) == "pmid"  # "pmid:" prefix in the list
    assert decon.check(doc("Unrelated title.", doc_id="pmc:PMC77", pmid="29000001")) == "pmid"  # golden docs
    assert decon.check(doc("Unrelated title.", doc_id="pmid:31000003")) is None


def test_ner_sentence_matches_the_abstract_text_it_came_from(decon):
    abstract = (
        "We screened 40 families. GERMLINE mutations in the BRCA1 gene were found in 12 of 40 families "
        "with early-onset breast cancer. Penetrance was high."
    )
    assert decon.check(doc("A title.", abstract, doc_id="pmid:5")) == "ngram"
    # 12 of the 13 words is not an overlap.
    assert decon.check(doc("mutations in the BRCA1 gene were found in 12 of 40 families")) is None
    # Training sentences are not contamination and were not loaded from the directory.
    train = "The hereditary form of the disease was mapped to chromosome 11q22-23 in three large Amish pedigrees."
    assert decon.check(doc(train)) is None


def test_relation_placeholders_are_left_out_of_ngrams(decon):
    gad = (
        "MTHFR polymorphisms were not associated with the severity or the age at onset of the disease in our "
        "Italian patients with migraine."
    )
    assert decon.check(doc(gad)) == "ngram"
    chemprot = "Inhibition of EGFR by gefitinib reduced the growth of tumour cells in nude mice over a period of four"
    assert decon.check(doc(chemprot + " weeks in vivo.")) == "ngram"
    assert list(ngram_hashes("alpha @GENE$ beta gamma", 2)) == list(ngram_hashes("beta gamma", 2))
    assert list(ngram_hashes("alpha BC6ENTC beta", 2)) == []


def test_bioasq_contexts_and_snippets_are_ngram_sources(decon):
    squad = "Here we show that loss of the kinase domain abolishes the interaction with the scaffold protein"
    assert decon.check(doc(squad)) == "ngram"
    snippet = "the toy ligand binds the orphan receptor with nanomolar affinity in every cell line that we tested"
    assert decon.check(doc(snippet, doc_id="pmid:2")) == "ngram"


def test_tokenisation_ignores_case_punctuation_and_unicode_width():
    assert words("Early-onset ( BRCA1 ) ，ＩＬ-6_level") == ["early", "onset", "brca1", "il", "6", "level"]


def test_check_has_no_side_effects_and_survives_pickling(decon):
    clone = pickle.loads(pickle.dumps(decon))
    assert clone.summary() == decon.summary()
    assert clone.check(doc("x", doc_id="pmid:31000001")) == "pmid"


def test_bad_inputs_name_the_file_and_line(tmp_path):
    bad = tmp_path / "test.tsv"
    bad.write_text("word\tO\nlonely\n")
    with pytest.raises(UserError, match=r"test.tsv:2: expected 'word<TAB>label'"):
        Decontaminator.from_paths([str(bad)])
    pmids = tmp_path / "test.pmids"
    pmids.write_text("123\nPMC456\n")
    with pytest.raises(UserError, match=r"test.pmids:2: expected one numeric PMID"):
        Decontaminator.from_paths([str(pmids)])
    broken = tmp_path / "test.json"
    broken.write_text('{"version": 1}')
    with pytest.raises(UserError, match="not a BioASQ JSON file"):
        Decontaminator.from_paths([str(broken)])
    only_train = tmp_path / "d"
    only_train.mkdir()
    (only_train / "train.tsv").write_text("a\tO\n")
    with pytest.raises(UserError, match="no test files"):
        Decontaminator.from_paths([str(only_train)])
    with pytest.raises(UserError, match="no such file"):
        Decontaminator.from_paths([str(tmp_path / "missing")])
    (tmp_path / "test.csv").write_text("x")
    with pytest.raises(UserError, match="unknown test-set format"):
        Decontaminator.from_paths([str(tmp_path / "test.csv")])


NER_TESTS = sorted((SHARED_DATA / "ner").glob("*/test.tsv"))
PUBMED_FILE = SHARED_DATA / "pubmed" / "pubmed20n0014.xml.gz"


@pytest.mark.skipif(not NER_TESTS or not PUBMED_FILE.exists(), reason=f"real data not found under {SHARED_DATA}")
def test_real_ner_test_sets(capsys):
    from biobert.corpus.pubmed import read_pubmed

    tracemalloc.start()
    start = time.perf_counter()
    decon = Decontaminator.from_paths([str(p) for p in NER_TESTS])
    load_s = time.perf_counter() - start
    memory_mb = tracemalloc.get_traced_memory()[0] / 1e6
    tracemalloc.stop()
    summary = decon.summary()
    assert summary["sentences"] > 10_000 and summary["ngrams"] > 50_000

    with open(NER_TESTS[0], encoding="utf-8") as f:  # the first real test sentence of >= 20 words
        sentences = " ".join(line.split("\t")[0] if line.strip() else "\n" for line in f).split("\n")
    sentence = next(s.strip() for s in sentences if len(words(s)) >= 20)
    assert decon.check(doc("A title.", f"Background text. {sentence} More text.")) == "ngram"

    counts: Counter = Counter()
    start = time.perf_counter()
    docs = list(islice(read_pubmed(PUBMED_FILE, counts), 5000))
    flagged = Counter(decon.check(d) for d in docs)
    check_s = time.perf_counter() - start
    with capsys.disabled():
        print(
            f"\n[decontam] {len(NER_TESTS)} NER test sets: {summary['sentences']:,} sentences "
            f"({summary['sentences_too_short']:,} under {decon.ngram} words), {summary['ngrams']:,} n-grams, "
            f"{memory_mb:.1f} MB traced, loaded in {load_s:.2f}s; {PUBMED_FILE.name}: "
            f"{flagged['ngram']} of {len(docs):,} abstracts flagged, read+check {check_s:.1f}s"
        )
    assert flagged["ngram"] <= 0.01 * len(docs)
