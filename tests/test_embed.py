"""finetune/embed.py on a tiny BERT: pooling against a direct forward pass, padding independence, token
offsets, layer combination, every input format, input order across buffers, and the errors."""

import gzip
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from biobert.corpus.pubmed import read_pubmed
from biobert.errors import UserError
from biobert.tokenizer import load_tokenizer
from conftest import write_pubmed_xml, write_tiny_bert, write_vocab
from finetune.embed import main as embed_main

embed = embed_main.__wrapped__
SHORT = "The cells were treated."
LONG = (
    "Human liver cancer cells with increased dna expression levels were significantly associated with "
    "inflammatory signaling in the mice treatment group compared to the control group."
)
LINES = [SHORT, "Tumor growth (kidney) decreased.", LONG, "Blood levels of the drug.", LONG + " " + LONG]


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("embed_bert")
    return write_tiny_bert(root / "bert", write_vocab(root / "vocab.txt"))


def run(
    bert: Path, tmp_path: Path, lines: list[str] | None = None, name: str = "in.txt", *flags: str, out: str = "out"
) -> tuple[np.ndarray, list[dict], dict]:
    src = tmp_path / name
    if lines is not None:
        src.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    meta = embed(["--model", str(bert), "--input", str(src), "--out", str(tmp_path / out), "--device", "cpu", *flags])
    vectors = np.load(tmp_path / out / "vectors.npy", mmap_mode="r")
    assert isinstance(vectors, np.memmap) and vectors.shape == (meta["counts"]["vectors"], meta["dim"])
    with pa.ipc.open_file(tmp_path / out / "index.arrow") as f:
        rows = f.read_all().to_pylist()
    assert [r["row"] for r in rows] == list(range(len(vectors)))
    assert json.loads((tmp_path / out / "meta.json").read_text()) == meta
    return np.asarray(vectors), rows, meta


def hidden_states(bert: Path, text: str) -> tuple[torch.Tensor, ...]:
    """A direct, unpadded forward pass of one sentence: [CLS] pieces [SEP]."""
    from transformers import BertModel

    tok = load_tokenizer(bert)
    ids = [tok.cls_id, *tok.encode_batch([text])[0], tok.sep_id]
    model = BertModel.from_pretrained(str(bert), add_pooling_layer=False).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states


def test_mean_pooling_ignores_padding(bert, tmp_path):
    alone, _, _ = run(bert, tmp_path, [SHORT], "alone.txt", "--pooling", "mean", out="alone")
    batch, rows, meta = run(bert, tmp_path, LINES, "batch.txt", "--pooling", "mean", "--batch_size", "8")
    assert [r["text"] for r in rows] == LINES and meta["counts"]["sentences"] == len(LINES)
    np.testing.assert_allclose(batch[0], alone[0], atol=1e-5, rtol=0)  # padded to LONG + LONG's length
    direct = hidden_states(bert, SHORT)[-1][0].mean(0).numpy()  # [CLS] and [SEP] included
    np.testing.assert_allclose(alone[0], direct, atol=1e-5, rtol=0)


def test_cls_is_the_first_vector_and_differs_from_mean(bert, tmp_path):
    cls, _, _ = run(bert, tmp_path, LINES, "in.txt", "--pooling", "cls", "--batch_size", "3", out="cls")
    mean, _, _ = run(bert, tmp_path, None, "in.txt", "--pooling", "mean", "--batch_size", "3", out="mean")
    np.testing.assert_allclose(cls[1], hidden_states(bert, LINES[1])[-1][0, 0].numpy(), atol=1e-5, rtol=0)
    assert not np.allclose(cls, mean, atol=1e-3)


def test_token_vectors_offsets_and_truncation(bert, tmp_path):
    lines = ["Treatments of LIVER-cancer (in Mice) increased 25% dna levels.", SHORT, LONG]
    vectors, rows, meta = run(bert, tmp_path, lines, "in.txt", "--pooling", "none", "--max_seq_length", "24")
    tok = load_tokenizer(bert)
    pieces = [tok.backend.encode(x, add_special_tokens=False).tokens for x in lines]
    assert [len(p) for p in pieces][:2] == [sum(r["sentence_id"] == f"line:{k}" for r in rows) for k in (1, 2)]
    assert len(vectors) == len(rows) == sum(min(len(p), 22) for p in pieces)
    assert meta["counts"]["truncated"] == 1 and meta["counts"]["sentences"] == 3  # LONG: 22 of its pieces
    for r in rows:
        text = lines[int(r["sentence_id"].split(":")[1]) - 1]
        assert r["token"] != "[UNK]" and text[r["start"] : r["end"]].lower() == r["token"].removeprefix("##")
    assert any(r["token"].startswith("##") for r in rows)
    direct = hidden_states(bert, lines[0])[-1][0, 1:-1].numpy()  # [CLS] and [SEP] left out
    np.testing.assert_allclose(vectors[: len(direct)], direct, atol=1e-5, rtol=0)


def test_layers_concat_and_mean(bert, tmp_path):
    last, _, _ = run(bert, tmp_path, LINES, "in.txt", "--layers", "-1", out="last")
    prev, _, _ = run(bert, tmp_path, None, "in.txt", "--layers", "-2", out="prev")
    both, _, meta = run(bert, tmp_path, None, "in.txt", "--layers", "-2,-1", out="both")
    assert meta["dim"] == 2 * 32 and meta["layers"] == [-2, -1]
    np.testing.assert_allclose(both, np.concatenate([prev, last], axis=1), atol=1e-6)
    avg, _, meta = run(bert, tmp_path, None, "in.txt", "--layers=-2,-1", "--layer_combine", "mean", out="avg")
    assert meta["dim"] == 32
    np.testing.assert_allclose(avg, (prev + last) / 2, atol=1e-6)
    with pytest.raises(UserError, match=r"--layers -4: \[-4\] out of range; the model has 2 layers"):
        run(bert, tmp_path, None, "in.txt", "--layers", "-4", out="bad")


def test_input_order_across_buffers_and_batches(bert, tmp_path, monkeypatch):
    import finetune.embedding

    lines = [LINES[k % len(LINES)] + f" {k}" for k in range(23)]
    alone = np.stack([run(bert, tmp_path, [x], f"{k}.txt", out=f"alone{k}")[0][0] for k, x in enumerate(lines[:4])])
    monkeypatch.setattr(finetune.embedding, "BUFFER_BATCHES", 2)  # buffers of 2 x 3 sentences: 4 flushes
    vectors, rows, _ = run(bert, tmp_path, lines, "in.txt", "--batch_size", "3")
    assert [r["id"] for r in rows] == [f"line:{k}" for k in range(1, 24)] and [r["text"] for r in rows] == lines
    np.testing.assert_allclose(vectors[:4], alone, atol=1e-5, rtol=0)


def test_tsv_column_by_index_and_by_name(bert, tmp_path):
    rows_in = ["pmid\tsentence\tlabel", f"1\t{SHORT}\t0", "", f"2\t{LONG}\t1", "3\t \t0"]
    by_index, rows, meta = run(bert, tmp_path, rows_in[1:], "a.tsv", "--column", "1", out="index")
    assert [r["id"] for r in rows] == ["line:1", "line:3"] and [r["text"] for r in rows] == [SHORT, LONG]
    assert meta["format"] == "tsv" and meta["counts"]["skipped"] == {"blank_lines": 1, "empty_cells": 1}
    by_name, rows, _ = run(bert, tmp_path, rows_in, "b.txt", "--column", "sentence", "--header", out="name")
    assert [r["id"] for r in rows] == ["line:2", "line:4"]
    np.testing.assert_allclose(by_name, by_index, atol=1e-6)
    with pytest.raises(UserError, match=r"b\.txt: the header has no column 'text'"):
        run(bert, tmp_path, None, "b.txt", "--column", "text", "--header", out="x")
    with pytest.raises(UserError, match="--column 'text': not a 0-based column number.*--header"):
        run(bert, tmp_path, None, "b.txt", "--column", "text", out="x")


def test_bad_tsv_row_names_file_and_line(bert, tmp_path):
    lines = [f"{k}\t{SHORT}" for k in range(200)]
    lines[150] = "only one column"
    with pytest.raises(UserError, match=r"bad\.tsv:151: 1 tab-separated column\(s\), but --column 1 needs at least 2"):
        run(bert, tmp_path, lines, "bad.tsv", "--column", "1", "--batch_size", "1")
    assert not any((tmp_path / "out").iterdir())  # a half-written output is removed


def test_pubmed_ids_and_sentence_offsets(bert, tmp_path):
    xml = write_pubmed_xml(tmp_path / "abstracts.xml.gz", 4, seed=5, first_pmid=300)
    _, rows, meta = run(bert, tmp_path, None, "abstracts.xml.gz", "--batch_size", "4")
    docs = {d.doc_id: " ".join(d.sections) for d in read_pubmed(xml, Counter())}
    assert meta["format"] == "pubmed" and len(rows) > 2 * len(docs)
    expected_k = Counter()
    for r in rows:
        doc_id, k = r["id"].rsplit(":sent:", 1)
        expected_k[doc_id] += 1
        assert int(k) == expected_k[doc_id] and docs[doc_id][r["start"] : r["end"]] == r["text"]
    assert list(expected_k) == [f"pmid:{300 + i}" for i in range(4)]
    first = rows[0]["text"]  # the title is a sentence of its own
    assert docs["pmid:300"].startswith(first) and rows[1]["start"] == len(first) + 1
    _, tokens, _ = run(bert, tmp_path, None, "abstracts.xml.gz", "--pooling", "none", out="tokens")
    r = tokens[-1]
    assert docs[r["sentence_id"].split(":sent:")[0]][r["sentence_start"] + r["start"] :][:1].lower() == r["token"][0]


def test_empty_input_gz_and_stdin(bert, tmp_path, monkeypatch):
    vectors, rows, meta = run(bert, tmp_path, ["", "  ", ""], "empty.txt")
    assert vectors.shape == (0, 32) and rows == [] and meta["counts"]["skipped"] == {"blank_lines": 3}
    assert meta["counts"]["sentences"] == 0 and meta["counts"]["vectors"] == 0
    (tmp_path / "in.txt.gz").write_bytes(gzip.compress(f"{SHORT}\n{LONG}\n".encode()))
    from_gz, _, _ = run(bert, tmp_path, None, "in.txt.gz", out="gz")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(f"{SHORT}\n{LONG}\n".encode())))
    meta = embed(["--model", str(bert), "--input", "-", "--out", str(tmp_path / "stdin"), "--device", "cpu"])
    assert meta["counts"]["sentences"] == 2
    np.testing.assert_allclose(np.load(tmp_path / "stdin" / "vectors.npy"), from_gz, atol=1e-6)


def test_fine_tuned_export_gives_the_encoder_vectors(bert, tmp_path):
    from transformers import BertForTokenClassification

    head = BertForTokenClassification.from_pretrained(str(bert), num_labels=3)
    head.save_pretrained(str(tmp_path / "ner"))
    load_tokenizer(bert).save(tmp_path / "ner")
    ours, _, _ = run(bert, tmp_path, LINES, "in.txt", out="pretraining")
    theirs, _, _ = run(tmp_path / "ner", tmp_path, None, "in.txt", out="ner_out")
    np.testing.assert_allclose(theirs, ours, atol=1e-6)


def test_errors(bert, tmp_path):
    (tmp_path / "in.txt").write_text(SHORT + "\n")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "vectors.npy").write_bytes(b"")
    with pytest.raises(UserError, match=r"used: exists and is not an empty directory"):
        embed(["--model", str(bert), "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "used")])
    with pytest.raises(UserError, match="only a TSV input has columns"):
        embed(
            [
                "--model",
                str(bert),
                "--input",
                str(tmp_path / "in.txt"),
                "--out",
                str(tmp_path / "o"),
                "--format",
                "lines",
                "--column",
                "1",
            ]
        )
    with pytest.raises(UserError, match="--header: only a TSV input has columns"):
        embed(["--model", str(bert), "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "o"), "--header"])
    with pytest.raises(UserError, match=r"in\.txt: a TSV input needs --column"):
        embed(
            ["--model", str(bert), "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "o"), "--format", "tsv"]
        )
    assert not (tmp_path / "o").exists()  # refused before any output
    with pytest.raises(UserError, match="no config.json"):
        embed(["--model", str(tmp_path), "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "o")])
    with pytest.raises(UserError, match=r"missing\.txt: no such file"):
        embed(["--model", str(bert), "--input", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")])
    with pytest.raises(UserError, match="--max_seq_length 512: must be between 3 and the model's 128"):
        embed(
            [
                "--model",
                str(bert),
                "--input",
                str(tmp_path / "in.txt"),
                "--out",
                str(tmp_path / "o"),
                "--max_seq_length",
                "512",
            ]
        )
