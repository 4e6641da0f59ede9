"""End to end: PubMed XML -> `python -m data_prep` (in process) -> shards + manifest -> open_shards."""

import gzip
import json
import os
import random
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from biobert.errors import UserError
from biobert.tokenizer import load_tokenizer
from data_prep.cli import main
from data_prep.shards import is_heldout, open_shards

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "fixtures" / "data_prep" / "pubmed_sample.xml"
WORDS = "cells mice dose protein gene expression patients tumor growth levels increased reduced".split()


@pytest.fixture
def vocab(tmp_path):
    """Character-level WordPiece vocabulary: every ASCII word tokenises, no [UNK]."""
    chars = [c for c in string.printable if not c.isspace()]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars), *WORDS]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n")
    return path


def synthetic_pubmed(path: Path, n_docs: int, seed: int = 0, first_pmid: int = 1) -> Path:
    rng = random.Random(seed)
    records = []
    for i in range(n_docs):
        sentences = [
            " ".join(rng.choices(WORDS, k=rng.randint(3, 15))).capitalize() + "." for _ in range(rng.randint(2, 8))
        ]
        records.append(
            f"<PubmedArticle><MedlineCitation><PMID>{first_pmid + i}</PMID><Article>"
            f"<ArticleTitle>Title {i}.</ArticleTitle><Abstract><AbstractText>{' '.join(sentences)}"
            "</AbstractText></Abstract><Language>eng</Language></Article></MedlineCitation>"
            "</PubmedArticle>\n"
        )
    xml = "<?xml version='1.0'?>\n<PubmedArticleSet>\n" + "".join(records) + "</PubmedArticleSet>\n"
    path.write_bytes(gzip.compress(xml.encode()) if path.name.endswith(".gz") else xml.encode())
    return path


def prep(inputs, vocab, out, *extra) -> dict:
    return main(["--input", *map(str, inputs), "--vocab", str(vocab), "--out", str(out), *map(str, extra)])


def test_fixture_end_to_end_manifest_and_round_trip(tmp_path, vocab):
    out = tmp_path / "out"
    manifest = prep([SAMPLE], vocab, out, "--seq_len", 32, "--heldout_fraction", 0)
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "biobert-shards" and manifest["format_version"] == 1
    assert manifest["skipped"] == {"book_article": 1, "delete_citation": 2, "no_abstract": 1, "no_text": 1}
    assert manifest["errors"] == [] and manifest["counts"]["documents"] == 3
    assert manifest["counts"]["words"] == manifest["counts"]["train"]["words"] > 50
    assert manifest["inputs"][0]["path"] == str(SAMPLE.resolve()) and len(manifest["inputs"][0]["sha256"]) == 64
    tok = load_tokenizer(vocab)
    assert manifest["tokenizer_hash"] == tok.vocab_hash and manifest["lowercase"] is False
    assert load_tokenizer(out / "tokenizer").vocab_hash == tok.vocab_hash
    shards = open_shards(out)
    assert len(shards) == manifest["splits"]["train"]["examples"] == manifest["counts"]["examples"] > 0
    batch = shards.get_batch(list(range(len(shards)))[::-1])
    for ids, sep, label in zip(batch["input_ids"], batch["sep_index"], batch["next_sentence_label"]):
        assert ids.dtype == np.int64 and len(ids) <= 32 and ids[0] == tok.cls_id and ids[-1] == tok.sep_id
        assert ids[sep] == tok.sep_id and label in (0, 1)
    shard_mtimes = [p.stat().st_mtime_ns for p in out.glob("*/*/shard_*.arrow")]
    assert len(shard_mtimes) == len(manifest["splits"]["train"]["shards"]) >= 1
    assert (out / "manifest.json").stat().st_mtime_ns >= max(shard_mtimes)  # manifest written last
    assert not list(out.rglob("*.tmp"))


def test_multi_shard_split_and_get_batch_matches_files(tmp_path, vocab):
    corpus = synthetic_pubmed(tmp_path / "a.xml.gz", 400)
    out = tmp_path / "out"
    manifest = prep([corpus], vocab, out, "--seq_len", 64, "--shard_size", 50, "--heldout_fraction", 0.1)
    train = manifest["splits"]["train"]
    assert len(train["shards"]) > 2 and all(s["rows"] <= 50 for s in train["shards"])
    assert manifest["counts"]["heldout"]["documents"] == sum(is_heldout(f"pmid:{i}", 0.1) for i in range(1, 401))
    assert 0 < manifest["counts"]["heldout"]["documents"] < 80
    labels = []
    for split in ("train", "heldout"):
        shards = open_shards(out, split)
        rows = [
            r
            for s in manifest["splits"][split]["shards"]
            for r in pa.ipc.open_stream(pa.memory_map(str(out / s["file"]))).read_all().to_pylist()
        ]
        assert len(shards) == len(rows) == manifest["splits"][split]["examples"]
        assert pa.ipc.open_stream(pa.memory_map(str(out / train["shards"][0]["file"]))).schema.field(
            "input_ids"
        ).type == pa.list_(pa.uint16())
        picks = [len(rows) - 1, 0, 49, 50, 51, len(rows) // 2]
        batch = shards.get_batch(picks)
        for k, i in enumerate(picks):
            assert batch["input_ids"][k].tolist() == rows[i]["input_ids"]
            assert batch["sep_index"][k] == rows[i]["sep_index"]
            assert batch["next_sentence_label"][k] == rows[i]["next_sentence_label"]
        labels += [r["next_sentence_label"] for r in rows]
    assert 0.4 < np.mean(labels) < 0.6
    with pytest.raises(IndexError):
        open_shards(out).get_batch([10**9])


def test_same_seed_same_shards(tmp_path, vocab):
    corpus = synthetic_pubmed(tmp_path / "a.xml.gz", 100)
    first = prep([corpus], vocab, tmp_path / "o1", "--seq_len", 48)
    second = prep([corpus], vocab, tmp_path / "o2", "--seq_len", 48)
    shas = lambda m: [s["sha256"] for split in m["splits"].values() for s in split["shards"]]  # noqa: E731
    assert shas(first) == shas(second) and first["config_hash"] == second["config_hash"]
    third = prep([corpus], vocab, tmp_path / "o3", "--seq_len", 48, "--seed", 1)
    assert shas(third) != shas(first) and third["config_hash"] != first["config_hash"]


def test_mlm_mode_and_max_docs(tmp_path, vocab):
    corpus = synthetic_pubmed(tmp_path / "a.xml", 100)
    manifest = prep([corpus], vocab, tmp_path / "out", "--mode", "mlm", "--max_docs", 30, "--seq_len", 128)
    assert manifest["counts"]["documents"] == 30 and manifest["inputs"][0]["complete"] is False
    batch = open_shards(tmp_path / "out").get_batch(range(len(open_shards(tmp_path / "out"))))
    assert set(batch["next_sentence_label"].tolist()) == {-1}
    assert all(s == len(ids) - 1 for ids, s in zip(batch["input_ids"], batch["sep_index"]))
    # Packed across documents by default; --within_documents ends each document with a padded example.
    within = prep(
        [corpus], vocab, tmp_path / "o2", "--mode", "mlm", "--max_docs", 30, "--seq_len", 128, "--within_documents"
    )
    assert manifest["counts"]["train"]["padding_fraction"] < 0.05
    assert within["counts"]["train"]["padding_fraction"] > 2 * manifest["counts"]["train"]["padding_fraction"]
    assert within["config_hash"] != manifest["config_hash"]
    assert manifest["counts"]["train"]["tokens"] == within["counts"]["train"]["tokens"]


def test_broken_file_is_reported_and_other_files_still_processed(tmp_path, vocab, capsys):
    (tmp_path / "in").mkdir()
    good = synthetic_pubmed(tmp_path / "in" / "good.xml.gz", 50)
    data = gzip.compress(synthetic_pubmed(tmp_path / "raw.xml", 3000, first_pmid=10_000).read_bytes())
    (tmp_path / "in" / "cut.xml.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "in" / "text.xml").write_text("this is not XML at all\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        prep([tmp_path / "in"], vocab, out, "--seq_len", 64)
    assert exit_info.value.code == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"]["file_error"] == 2
    assert [Path(e["file"]).name for e in manifest["errors"]] == ["cut.xml.gz", "text.xml"]
    assert "truncated" in manifest["errors"][0]["message"] and "after PMID" in manifest["errors"][0]["message"]
    kept = {i["path"]: i["documents_read"] for i in manifest["inputs"]}
    assert kept[str(good.resolve())] == 50 and kept[str((tmp_path / "in" / "cut.xml.gz").resolve())] > 0
    assert len(open_shards(out)) == manifest["splits"]["train"]["examples"] > 0
    assert "cut.xml.gz" in capsys.readouterr().err


def test_refuses_existing_output_without_overwrite(tmp_path, vocab, capsys):
    out = tmp_path / "out"
    prep([SAMPLE], vocab, out)
    with pytest.raises(SystemExit) as exit_info:
        prep([SAMPLE], vocab, out)
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert prep([SAMPLE], vocab, out, "--overwrite")["counts"]["documents"] == 3


def test_empty_input_dir_is_a_user_error(tmp_path, vocab, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        prep([tmp_path / "empty"], vocab, tmp_path / "out")
    assert exit_info.value.code == 2 and f"{tmp_path / 'empty'}: no input files" in capsys.readouterr().err


def test_open_shards_errors(tmp_path, vocab):
    with pytest.raises(UserError, match="no such shard directory; run `python -m data_prep"):
        open_shards(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(UserError, match="did not finish"):
        open_shards(tmp_path / "half")
    out = tmp_path / "out"
    manifest = prep([SAMPLE], vocab, out, "--heldout_fraction", 0)
    manifest_path = out / "manifest.json"
    manifest_path.write_text(json.dumps(manifest | {"format_version": 99}))
    with pytest.raises(UserError, match="version 99"):
        open_shards(out)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="no split 'dev'"):
        open_shards(out, "dev")
    (out / "train" / "pubmed_sample" / "shard_00000.arrow").unlink()
    with pytest.raises(UserError, match=r"train/pubmed_sample/shard_00000\.arrow: listed in manifest.json but missing"):
        open_shards(out)


def test_module_entry_point_exit_status(tmp_path, vocab):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "data_prep", "--vocab", str(vocab), "--input", str(SAMPLE)]
    ok = subprocess.run([*cmd, "--out", str(tmp_path / "a")], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "examples" in ok.stdout and "words/s" in ok.stderr
    (tmp_path / "bad.xml.gz").write_text("plain text")
    bad = subprocess.run(
        [*cmd, str(tmp_path / "bad.xml.gz"), "--out", str(tmp_path / "b")], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 3 and "not a gzip file" in bad.stderr


SHARED = Path(os.environ.get("BIOBERT_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL_PUBMED = SHARED / "pubmed" / "pubmed21n1298.xml.gz"
REAL_VOCAB = SHARED / "vocab" / "bert-base-cased-vocab.txt"


@pytest.mark.skipif(
    not (REAL_PUBMED.is_file() and REAL_VOCAB.is_file()),
    reason=f"real PubMed data not found under {SHARED} (set BIOBERT_SHARED_DATA)",
)
def test_real_pubmed_baseline_first_2000_documents(tmp_path):
    manifest = prep([REAL_PUBMED], REAL_VOCAB, tmp_path / "out", "--max_docs", 2000)
    counts = manifest["counts"]
    assert counts["documents"] + manifest["skipped"].get("too_short", 0) == 2000
    assert counts["words"] > 200_000 and counts["tokens"] > counts["words"]
    assert manifest["vocab_size"] == 28996 and manifest["lowercase"] is False and manifest["errors"] == []
    assert 0.0 < counts["padding_fraction"] < 0.4
    shards = open_shards(tmp_path / "out")
    batch = shards.get_batch(range(min(len(shards), 2000)))
    assert 0.45 < batch["next_sentence_label"].mean() < 0.55
    assert max(len(ids) for ids in batch["input_ids"]) == 128
    assert np.all(np.concatenate(batch["input_ids"]) < 28996)


def test_malformed_manifest_names_the_file_and_position(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": "x",\n  oops}')
    with pytest.raises(UserError, match=r"manifest\.json:2:3: malformed JSON in shard manifest \(rerun the data"):
        open_shards(tmp_path)
    (tmp_path / "manifest.json").write_bytes(b'{"format": "\xff"}')
    with pytest.raises(UserError, match=r"manifest\.json: shard manifest .* is not UTF-8"):
        open_shards(tmp_path)


def deny_reads(monkeypatch, path: Path) -> None:
    """Make `path` unreadable in this process, as chmod 000 would for a non-root user (tests may run as root)."""
    import builtins

    real_open, denied = builtins.open, str(path.resolve())

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(os.fspath(file)) == denied:
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)


def test_unreadable_file_is_a_file_error_and_the_run_finishes(tmp_path, vocab, monkeypatch, capsys):
    (tmp_path / "in").mkdir()
    synthetic_pubmed(tmp_path / "in" / "good.xml.gz", 30)
    locked = synthetic_pubmed(tmp_path / "in" / "locked.xml.gz", 30, first_pmid=1000)
    deny_reads(monkeypatch, locked)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:  # one worker: the patched open() is this process's
        prep([tmp_path / "in"], vocab, out, "--seq_len", 64, "--workers", 1)
    assert exit_info.value.code == 3
    manifest = json.loads((out / "manifest.json").read_text())
    [error] = manifest["errors"]
    assert error["file"] == str(locked.resolve()) and manifest["skipped"]["file_error"] == 1
    assert "cannot read the file (PermissionError" in error["message"] and "chmod" in error["message"]
    entries = {Path(i["path"]).name: i for i in manifest["inputs"]}
    assert entries["good.xml.gz"]["documents_read"] == 30 and entries["locked.xml.gz"]["documents_read"] == 0
    assert entries["locked.xml.gz"]["sha256"] is None and entries["good.xml.gz"]["sha256"] is not None
    assert f"error: {error['message']}" in capsys.readouterr().out


def test_python_api_prepare_matches_the_command(tmp_path, vocab):
    """data_prep.prepare(PrepConfig) is the stage's API: the same shards and counts as `python -m data_prep`."""
    from data_prep import prepare
    from data_prep.pipeline import PrepConfig

    by_cli = prep([SAMPLE], vocab, tmp_path / "cli", "--seq_len", 32, "--workers", 1)
    by_api = prepare(
        PrepConfig(inputs=[str(SAMPLE)], vocab=str(vocab), out=str(tmp_path / "api"), seq_len=32, workers=1)
    )
    assert by_api["counts"] == by_cli["counts"] and by_api["counts"]["examples"] > 0
    cli, api = open_shards(tmp_path / "cli"), open_shards(tmp_path / "api")
    assert len(api) == len(cli)
    ix = list(range(len(cli)))
    a, b = api.get_batch(ix)["input_ids"], cli.get_batch(ix)["input_ids"]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
