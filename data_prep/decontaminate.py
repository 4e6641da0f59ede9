"""Optional removal of pre-training documents that contain fine-tuning TEST text.

BioBERT's NER, RE and QA test sets are sentences from PubMed abstracts, the same abstracts the model is
pre-trained on; a model that saw a test sentence during pre-training scores higher than it should. A
document is dropped when its PMID is on a known test-set PMID list, or when it shares one word n-gram
(default 13 words, the length GPT-3 and later LM papers use for contamination checks) with a test
sentence.

Words are compared after NFKC normalisation and lower-casing, as runs of letters and digits: punctuation
and spacing are ignored on both sides, so "ataxia - telangiectasia" from a tokenised NER file matches
"ataxia-telangiectasia" in the abstract. Relation-extraction test sentences have their entities replaced
by placeholders (`@GENE$`, `BC6ENTC`); an n-gram never spans a placeholder, so the words around it still
match the original abstract while the placeholder itself (and the unknown entity text) are left out.

What is loaded from a path:
  * a file is always loaded (NER/RE `.tsv`, BioASQ `.json`, PMID list `*.pmids` / `pmids.txt`);
  * a directory is walked recursively and only TEST files are loaded: names with a `test` word
    (`test.tsv`, `BioASQ-test-factoid-7b.json`), BioASQ `*golden*.json` and PMID lists. Training and dev
    files are not contamination (the model is meant to learn from them), so they are skipped.
Note that with cross-validated RE corpora (GAD, EU-ADR: 10 folds) the union of the test folds is the whole
corpus.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from biobert.corpus.document import Document
from biobert.errors import UserError

WORD = re.compile(r"[^\W_]+")  # runs of letters/digits: punctuation and "_" separate words
# Entity placeholders of BioBERT's RE data: @GENE$, @DISEASE$, @CHEMICAL$ (GAD, EU-ADR) and ChemProt's
# BC6ENTC / BC6ENTG / BC6OTHER.
PLACEHOLDER = re.compile(r"@[A-Za-z]+\$|\bBC6(?:ENTC|ENTG|OTHER)\b")
PMID_URL = re.compile(r"pubmed/(\d+)")
TEST_NAME = re.compile(r"(?:^|[-_.\s])(?:test|golden)(?:[-_.\s]|$)", re.IGNORECASE)


def words(text: str) -> list[str]:
    return WORD.findall(unicodedata.normalize("NFKC", text).lower())


def ngram_hashes(text: str, n: int) -> Iterator[int]:
    """64-bit hashes of every n-word window of `text`, never across an entity placeholder."""
    for segment in PLACEHOLDER.split(text):
        tokens = words(segment)
        for i in range(len(tokens) - n + 1):
            digest = hashlib.blake2b(" ".join(tokens[i : i + n]).encode("utf-8"), digest_size=8).digest()
            yield int.from_bytes(digest, "little")


def is_test_file(path: Path) -> bool:
    name = path.name.lower()
    return bool(TEST_NAME.search(name)) or _is_pmid_list(path)


def _is_pmid_list(path: Path) -> bool:
    return path.suffix == ".pmids" or path.name.lower() == "pmids.txt"


def _read_tsv(path: Path) -> Iterator[str]:
    """Sentences of a BioBERT NER file (word<TAB>label, blank line between sentences) or RE file.

    RE files have a `index<TAB>sentence<TAB>label` or `sentence<TAB>label` header (test) or no header
    and a multi-word first column (train); an NER file has one word per line.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    first = next((line.split("\t") for line in lines if line.strip()), None)
    if first is None:
        return
    if "sentence" in first[:2]:
        column = first.index("sentence")
        rows = lines[1:]
    elif " " in first[0].strip():
        column, rows = 0, lines
    else:
        yield from _ner_sentences(path, lines)
        return
    for line_no, line in enumerate(rows, start=len(lines) - len(rows) + 1):
        if line.strip():
            fields = line.split("\t")
            if len(fields) <= column:
                raise UserError(
                    f"{path}:{line_no}: expected a sentence in column {column + 1} (tab-separated), "
                    f"got {line[:80]!r}; is this a BioBERT RE file?"
                )
            yield fields[column]


def _ner_sentences(path: Path, lines: list[str]) -> Iterator[str]:
    sentence: list[str] = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            if sentence:
                yield " ".join(sentence)
            sentence = []
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise UserError(
                f"{path}:{line_no}: expected 'word<TAB>label', got {line[:80]!r}; is this a BioBERT NER file?"
            )
        sentence.append(fields[0])
    if sentence:
        yield " ".join(sentence)


def _read_json(path: Path, pmids: set[str]) -> Iterator[str]:
    """BioASQ in SQuAD layout (data[].paragraphs[].context) or the official layout (questions[] with
    snippets[].text and documents[] PubMed URLs, whose PMIDs are added to `pmids`).

    SQuAD-layout question ids (`<qid>_<nnn>`) are BioASQ question ids, not PMIDs, so they are not used.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if "data" in data:
            for article in data["data"]:
                for paragraph in article["paragraphs"]:
                    yield paragraph["context"]
        elif "questions" in data:
            for question in data["questions"]:
                pmids.update(m for url in question.get("documents", []) for m in PMID_URL.findall(url))
                for snippet in question.get("snippets", []):
                    yield snippet["text"]
        else:
            raise KeyError("data' or 'questions")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(
            f"{path}: not a BioASQ JSON file ({type(e).__name__}: {e}); expected SQuAD layout "
            "{'data': [{'paragraphs': [{'context': ...}]}]} or BioASQ {'questions': [...]}"
        ) from None


def _read_pmids(path: Path) -> Iterator[str]:
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        pmid = line.strip().removeprefix("pmid:").removeprefix("PMID:")
        if not pmid or pmid.startswith("#"):
            continue
        if not pmid.isdigit():
            raise UserError(f"{path}:{line_no}: expected one numeric PMID per line, got {line[:80]!r}")
        yield pmid


def _expand(paths: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for spec in paths:
        path = Path(spec)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and is_test_file(p) and (p.suffix in (".tsv", ".json") or _is_pmid_list(p))
            )
            if not found:
                raise UserError(
                    f"{path}: no test files (test*.tsv, *test*.json, *golden*.json, *.pmids, "
                    "pmids.txt) found in this directory; pass the test files themselves"
                )
            files += found
        elif path.is_file():
            if not (path.suffix in (".tsv", ".json") or _is_pmid_list(path)):
                raise UserError(
                    f"{path}: unknown test-set format; expected a BioBERT .tsv, a BioASQ .json, "
                    "or a PMID list (*.pmids, pmids.txt)"
                )
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or directory (decontamination test-set path)")
    return files


class Decontaminator:
    """Flags documents that overlap fine-tuning test sets. Picklable, so worker processes can share it.

    `check` does not count; the caller counts the returned reasons (the pipeline adds them to its skip
    counts), which keeps this object read-only after loading.
    """

    def __init__(self, ngram: int = 13) -> None:
        if ngram < 1:
            raise UserError(f"decontamination n-gram length must be >= 1, got {ngram}")
        self.ngram = ngram
        self.hashes: set[int] = set()
        self.pmids: set[str] = set()
        self.stats: Counter = Counter()
        self.files: list[str] = []

    @classmethod
    def from_paths(cls, paths: list[str], ngram: int = 13) -> Decontaminator:
        self = cls(ngram)
        for path in _expand(paths):
            self.add_file(path)
        return self

    def add_file(self, path: Path) -> None:
        if _is_pmid_list(path):
            self.pmids.update(_read_pmids(path))
        else:
            sentences = _read_json(path, self.pmids) if path.suffix == ".json" else _read_tsv(path)
            self.add_sentences(sentences)
        self.files.append(str(path))

    def add_sentences(self, sentences: Iterable[str]) -> None:
        for sentence in sentences:
            hashes = list(ngram_hashes(sentence, self.ngram))
            self.hashes.update(hashes)
            self.stats["sentences"] += 1
            self.stats["sentences_too_short"] += not hashes  # fewer than `ngram` words: cannot be matched

    def check(self, doc: Document) -> str | None:
        """ "pmid" if the document's PMID is a test-set PMID, "ngram" if it shares an n-gram, else None."""
        pmid = doc.meta.get("pmid")
        if pmid is None and doc.doc_id.startswith("pmid:"):
            pmid = doc.doc_id.removeprefix("pmid:")
        if pmid is not None and str(pmid) in self.pmids:
            return "pmid"
        if self.hashes:
            for section in doc.sections:
                if not self.hashes.isdisjoint(ngram_hashes(section, self.ngram)):
                    return "ngram"
        return None

    def summary(self) -> dict:
        return {
            "files": list(self.files),
            "ngram": self.ngram,
            "sentences": self.stats["sentences"],
            "sentences_too_short": self.stats["sentences_too_short"],
            "ngrams": len(self.hashes),
            "pmids": len(self.pmids),
        }
