"""Shared fixtures: a tiny BERT, its vocabulary, and a small PubMed-format corpus written by the tests."""

from __future__ import annotations

import gzip
import os
import random
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(os.environ.get("BIOBERT_SHARED_DATA", REPO.parent / "shared" / "data"))

WORDS = (
    "the of and in to a with for was were by patients cells protein gene expression cancer tumor "
    "disease treatment study results analysis increased decreased significantly associated human "
    "mice mutation receptor binding activity levels clinical therapy response risk factor blood "
    "brain liver kidney heart lung acid dna rna virus infection immune inflammatory signaling "
    "pathway inhibitor drug dose effect model data group control compared observed"
).split()
PIECES = ["##s", "##ed", "##ing", "##ly", "##al", "##ic", "##ion", "##er"]


def write_vocab(path: Path, lowercase: bool = True) -> Path:
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:()-%<>=/")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + ["##" + c for c in letters[:36]]
    tokens += [w for w in WORDS if w not in tokens] + [p for p in PIECES if p not in tokens]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def make_sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
    return " ".join(words).capitalize() + "."


def write_pubmed_xml(path: Path, n_articles: int, seed: int = 0, first_pmid: int = 1000) -> Path:
    """A small but well-formed MEDLINE baseline file (PubmedArticleSet) of random abstracts."""
    rng = random.Random(seed)
    parts = ['<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE PubmedArticleSet>\n<PubmedArticleSet>']
    for i in range(n_articles):
        title = make_sentence(rng)
        abstract = " ".join(make_sentence(rng) for _ in range(rng.randint(3, 9)))
        parts.append(
            f'<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">{first_pmid + i}'
            f'</PMID><Article PubModel="Print"><Journal><JournalIssue><PubDate><Year>2019</Year></PubDate>'
            f"</JournalIssue></Journal><ArticleTitle>{title}</ArticleTitle><Abstract><AbstractText>{abstract}"
            f"</AbstractText></Abstract><Language>eng</Language></Article></MedlineCitation></PubmedArticle>"
        )
    parts.append("</PubmedArticleSet>\n")
    data = "\n".join(parts).encode("utf-8")
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_tiny_bert(out_dir: Path, vocab: Path, layers: int = 2, hidden: int = 32) -> Path:
    """A randomly initialised tiny BertForPreTraining saved as a Hugging Face directory."""
    import torch
    from transformers import BertConfig, BertForPreTraining

    from biobert.tokenizer import load_tokenizer

    tok = load_tokenizer(vocab)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        type_vocab_size=2,
    )
    model = BertForPreTraining(config)
    model.save_pretrained(str(out_dir))
    tok.save(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> dict[str, Path]:
    """vocab.txt, a tiny BERT directory, two PubMed files and shards prepared from them (seq 64)."""
    root = tmp_path_factory.mktemp("assets")
    vocab = write_vocab(root / "vocab.txt")
    model = write_tiny_bert(root / "tiny_bert", vocab)
    xml_dir = root / "pubmed"
    xml_dir.mkdir()
    write_pubmed_xml(xml_dir / "pubmed26n0001.xml.gz", 120, seed=1, first_pmid=1000)
    write_pubmed_xml(xml_dir / "pubmed26n0002.xml.gz", 120, seed=2, first_pmid=5000)
    from data_prep.cli import main as data_prep_main

    shards = root / "shards"
    data_prep_main(
        [
            "--input",
            str(xml_dir),
            "--vocab",
            str(vocab),
            "--out",
            str(shards),
            "--seq_len",
            "64",
            "--heldout_fraction",
            "0.05",
        ]
    )
    return {"root": root, "vocab": vocab, "model": model, "pubmed": xml_dir, "shards": shards}


DIST_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "LOCAL_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "CROSS_RANK",
    "CROSS_SIZE",
)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a launched run: no rendezvous variables left over from in-process tests."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", **extra)
    return env


from biobert.dist import free_port  # noqa: E402, F401  (tests import it from here)


def read_metrics(run_dir: Path, kind: str = "train") -> dict[int, dict]:
    import json

    out = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == kind:
            out[record["step"]] = record
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny BERT (2 layers, hidden 32, its uncased vocabulary) and its tokenizer, once per test module."""
    from biobert.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("tiny_model")
    model = write_tiny_bert(root / "tiny_bert", write_vocab(root / "vocab.txt"))
    return {"model": model, "tokenizer": load_tokenizer(model)}


NER_ENTITY = {"cancer": "B", "tumor": "B", "disease": "I"}


def write_ner_split(
    path: Path,
    n: int,
    seed: int,
    lengths: tuple[int, int] = (4, 10),
    entity_rate: float = 0.0,
    long_every: int = 0,
    long_len: int = 40,
) -> None:
    """n BIO-tagged sentences of the fixture words (entity_rate: share of tokens drawn from the entity words;
    long_every: every k-th sentence long_len tokens long, to get several windows)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        prev = "O"
        for _ in range(long_len if long_every and i % long_every == 0 else rng.randint(*lengths)):
            w = rng.choice(tuple(NER_ENTITY)) if entity_rate and rng.random() < entity_rate else rng.choice(WORDS)
            label = NER_ENTITY.get(w, "O")
            label = "O" if label == "I" and prev == "O" else label
            lines.append(f"{w}\t{label}")
            prev = label
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def ner_root(tmp_path_factory) -> Path:
    """A data root holding NCBI-disease in its BIO layout: 40 train, 5 devel and 12 test sentences."""
    root = tmp_path_factory.mktemp("lc_data")
    folder = root / "ner" / "NCBI-disease"
    folder.mkdir(parents=True)
    write_ner_split(folder / "train.tsv", 40, 1)
    write_ner_split(folder / "devel.tsv", 5, 2)
    write_ner_split(folder / "test.tsv", 12, 3)
    return root
