"""data_prep at scale: worker-count independence, resume after a crash or SIGKILL, --part + merge, PubMed
update files (supersession, deletion), presplit documents, decontamination, subcommand dispatch."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path

import pytest

from biobert.corpus.document import Document
from conftest import make_sentence, subprocess_env, write_pubmed_xml, write_vocab
from data_prep import readers
from data_prep.cli import main
from data_prep.shards import open_shards
from data_prep.supersede import SupersedeIndex, scan_pubmed_ids

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    vocab = write_vocab(root / "vocab.txt")
    pubmed = root / "pubmed"
    pubmed.mkdir()
    for i, n in enumerate([60, 25, 80, 40, 50]):
        write_pubmed_xml(pubmed / f"pubmed26n{i + 1:04d}.xml.gz", n, seed=i, first_pmid=10_000 * (i + 1))
    return {"vocab": vocab, "pubmed": pubmed}


def prep(inputs, vocab, out, *extra) -> dict:
    return main(
        [
            "--input",
            *map(str, inputs),
            "--vocab",
            str(vocab),
            "--out",
            str(out),
            "--seq_len",
            "48",
            "--shard_size",
            "40",
            "--heldout_fraction",
            "0.1",
            *map(str, extra),
        ]
    )


def content(out: Path) -> dict:
    """Every example of both splits, in manifest order: what pre-training sees."""
    result = {}
    for split in ("train", "heldout"):
        shards = open_shards(out, split)
        batch = shards.get_batch(range(len(shards)))
        result[split] = [
            (ids.tolist(), int(s), int(lab))
            for ids, s, lab in zip(batch["input_ids"], batch["sep_index"], batch["next_sentence_label"])
        ]
    return result


def same_output(a: dict, b: dict) -> None:
    assert a["splits"] == b["splits"] and a["counts"] == b["counts"] and a["skipped"] == b["skipped"]
    assert a["config_hash"] == b["config_hash"]
    assert [i["sha256"] for i in a["inputs"]] == [i["sha256"] for i in b["inputs"]]


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    return out, prep([corpus["pubmed"]], corpus["vocab"], out, "--workers", 1)


def test_one_or_two_workers_give_identical_shards(corpus, reference, tmp_path):
    ref_out, ref = reference
    two = prep([corpus["pubmed"]], corpus["vocab"], tmp_path / "two", "--workers", 2)
    assert ref["workers"] == 1 and two["workers"] == 2
    same_output(ref, two)
    assert content(ref_out) == content(tmp_path / "two")
    assert [Path(i["path"]).name for i in two["inputs"]] == sorted(p.name for p in corpus["pubmed"].iterdir())
    first = two["inputs"][0]
    assert first["name_date"] == "2026" and first["bytes"] > 0 and first["documents_read"] > 0
    assert first["train_examples"] + first["heldout_examples"] == first["examples"]
    assert sum(i["examples"] for i in two["inputs"]) == two["counts"]["examples"]
    assert two["worker_peak_rss_mb"] < 1024
    markers = sorted((tmp_path / "two" / "done").glob("*.json"))
    assert len(markers) == 5 and json.loads(markers[0].read_text())["config_hash"] == two["config_hash"]


def test_resume_after_crash_redoes_only_unfinished_files(corpus, reference, tmp_path, monkeypatch, capsys):
    ref_out, ref = reference
    out = tmp_path / "out"
    monkeypatch.setenv("BIOBERT_FAULT_DATA_PREP", "crash:pubmed26n0003")
    with pytest.raises(RuntimeError, match="simulated crash"):
        prep([corpus["pubmed"]], corpus["vocab"], out, "--workers", 1)
    assert sorted(p.stem for p in (out / "done").glob("*.json")) == ["pubmed26n0001", "pubmed26n0002"]
    assert list((out / "train" / "pubmed26n0003").glob("shard_*.arrow"))  # partial output left behind
    assert not (out / "manifest.json").exists()
    with pytest.raises(SystemExit) as exit_info:  # a different config on the unfinished run: refused
        prep([corpus["pubmed"]], corpus["vocab"], out, "--workers", 1, "--seed", 7)
    assert exit_info.value.code == 2 and "different config_hash" in capsys.readouterr().err
    monkeypatch.delenv("BIOBERT_FAULT_DATA_PREP")
    resumed = prep([corpus["pubmed"]], corpus["vocab"], out, "--workers", 1)
    assert resumed["resumed_files"] == 2 and "[kept] pubmed26n0001.xml.gz" in capsys.readouterr().err
    same_output(ref, resumed)
    assert content(ref_out) == content(out)
    assert not list(out.rglob("*.tmp"))


def test_resume_after_sigkill_of_the_whole_run(corpus, reference, tmp_path):
    ref_out, ref = reference
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "data_prep",
        "--input",
        str(corpus["pubmed"]),
        "--vocab",
        str(corpus["vocab"]),
        "--out",
        str(out),
        "--seq_len",
        "48",
        "--shard_size",
        "40",
        "--heldout_fraction",
        "0.1",
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(
        cmd,
        env=subprocess_env(BIOBERT_FAULT_DATA_PREP="hang:pubmed26n0005"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list((out / "done").glob("*.json"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # the hanging file has written (some of) its shards
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(list((out / "done").glob("*.json"))) == 4 and not (out / "manifest.json").exists()
    resumed = prep([corpus["pubmed"]], corpus["vocab"], out, "--workers", 2)
    assert resumed["resumed_files"] == 4
    same_output(ref, resumed)
    assert content(ref_out) == content(out)


def test_parts_and_merge_equal_a_single_run(corpus, reference, tmp_path, capsys):
    ref_out, ref = reference
    out = tmp_path / "out"
    p0 = prep([corpus["pubmed"]], corpus["vocab"], out, "--part", "0/2", "--workers", 1)
    assert [Path(i["path"]).name for i in p0["inputs"]] == [f"pubmed26n000{k}.xml.gz" for k in (1, 3, 5)]
    assert (out / "manifest.part-0-of-2.json").is_file() and not (out / "manifest.json").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["merge", str(out)])
    assert exit_info.value.code == 2 and "parts 1 of 2 have not finished" in capsys.readouterr().err
    prep([corpus["pubmed"]], corpus["vocab"], out, "--part", "1/2", "--workers", 2)
    merged = main(["merge", str(out)])
    same_output(ref, merged)
    assert content(ref_out) == content(out) and len(merged["parts"]) == 2
    # a part redone with another seed makes the parts inconsistent: merge refuses
    prep([corpus["pubmed"]], corpus["vocab"], out, "--part", "1/2", "--seed", 3, "--overwrite", "--workers", 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["merge", str(out)])
    assert exit_info.value.code == 2 and "disagree on config_hash" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prep([corpus["pubmed"]], corpus["vocab"], out, "--part", "2/2")


def _pubmed_file(path: Path, articles: list[tuple[int, str]], deleted: list[int] = ()) -> Path:
    records = [
        f'<PubmedArticle><MedlineCitation Status="MEDLINE"><PMID Version="1">{pmid}</PMID><Article>'
        f"<ArticleTitle>Title of {pmid}.</ArticleTitle><Abstract><AbstractText>{text}</AbstractText>"
        "</Abstract><Language>eng</Language></Article></MedlineCitation></PubmedArticle>"
        for pmid, text in articles
    ]
    if deleted:
        records.append(
            "<DeleteCitation>" + "".join(f'<PMID Version="1">{p}</PMID>' for p in deleted) + "</DeleteCitation>"
        )
    xml = "<?xml version='1.0'?>\n<PubmedArticleSet>\n" + "\n".join(records) + "\n</PubmedArticleSet>\n"
    path.write_bytes(gzip.compress(xml.encode()))
    return path


def test_update_files_supersede_and_delete(tmp_path):
    import random

    rng = random.Random(0)
    text = lambda: " ".join(make_sentence(rng) for _ in range(4))  # noqa: E731
    d = tmp_path / "in"
    d.mkdir()
    _pubmed_file(d / "pubmed26n0001.xml.gz", [(p, text()) for p in range(1, 21)])
    v5, v12a, v12b, v8 = "Zebrafish new. " + text(), text(), "Quokka second copy. " + text(), "Wombat back. " + text()
    _pubmed_file(d / "pubmed26n0002.xml.gz", [(5, v5), (12, v12a), (12, v12b)], deleted=[7, 8])
    _pubmed_file(d / "pubmed26n0003.xml.gz", [(8, v8)])
    vocab = write_vocab(tmp_path / "vocab.txt")
    out = tmp_path / "out"
    manifest = prep([d], vocab, out, "--heldout_fraction", 0, "--workers", 2)
    docs = {Path(i["path"]).name: i["documents_read"] for i in manifest["inputs"]}
    assert docs == {"pubmed26n0001.xml.gz": 16, "pubmed26n0002.xml.gz": 2, "pubmed26n0003.xml.gz": 1}
    assert manifest["counts"]["documents"] == 20 - 1  # PMID 7 deleted; 5, 8 and 12 once each
    assert manifest["skipped"]["superseded"] == 4 and manifest["skipped"]["deleted"] == 1
    sup = manifest["supersession"]
    assert sup["pubmed_files"] == 3 and sup["deleted_pmids"] == 1 and sup["deletions"] == 2
    index = SupersedeIndex(out / "pubmed_index" / sup["hash"])
    assert index.drops_for("pubmed26n0001.xml.gz") == {4: "superseded", 6: "deleted", 7: "superseded", 11: "superseded"}
    assert index.drops_for("pubmed26n0002.xml.gz") == {1: "superseded"}
    words = {Path(i["path"]).name: i["words"] for i in manifest["inputs"]}
    n_words = lambda pmid, t: len(f"Title of {pmid}. {t}".split())  # noqa: E731
    assert words["pubmed26n0002.xml.gz"] == n_words(5, v5) + n_words(12, v12b) != n_words(5, v5) + n_words(12, v12a)
    assert words["pubmed26n0003.xml.gz"] == n_words(8, v8)
    assert scan_pubmed_ids(d / "pubmed26n0002.xml.gz").records.tolist() == [0, 1, 2, -1, -1]


def test_presplit_documents_are_not_split_again(tmp_path, monkeypatch):
    sections = ["Cells grew. They died.", "E. coli was found. It grew.", "Dose rose. Levels fell."]

    def reader(path, counts, **_):
        for i in range(30):
            yield Document(f"fake:{i}", sections, {"presplit": i % 2 == 0})

    monkeypatch.setitem(readers.READERS, ".fake", reader)
    (tmp_path / "a.fake").write_text("x")
    vocab = write_vocab(tmp_path / "vocab.txt")
    manifest = prep([tmp_path / "a.fake"], vocab, tmp_path / "out", "--heldout_fraction", 0)
    assert manifest["counts"]["documents"] == 30
    assert manifest["counts"]["sentences"] == 15 * 3 + 15 * 6  # presplit: one sentence per section


class StandIn:
    """What data_prep.decontaminate.Decontaminator offers, for a test independent of its matching rules."""

    def __init__(self, pmids):
        self.pmids = pmids

    @classmethod
    def from_paths(cls, paths, ngram=13):
        return cls({line for p in paths for line in Path(p).read_text().split()})

    def check(self, doc):
        pmid = doc.doc_id.removeprefix("pmid:")
        return "pmid" if pmid in self.pmids else ("ngram" if pmid.endswith("7") else None)

    def summary(self):
        return {"pmids": len(self.pmids)}


def test_decontamination_drop_and_flag_are_counted(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "data_prep.decontaminate", types.SimpleNamespace(Decontaminator=StandIn))
    corpus = write_pubmed_xml(tmp_path / "pubmed26n0001.xml.gz", 40, first_pmid=100)
    vocab = write_vocab(tmp_path / "vocab.txt")
    (tmp_path / "test.pmids").write_text("101\n102\n105\n")
    plain = prep([corpus], vocab, tmp_path / "plain")
    dropped = prep([corpus], vocab, tmp_path / "drop", "--decontaminate", tmp_path / "test.pmids")
    flagged = prep(
        [corpus], vocab, tmp_path / "flag", "--decontaminate", tmp_path / "test.pmids", "--decontaminate_action", "flag"
    )
    assert dropped["decontamination"]["dropped"] == {"ngram": 4, "pmid": 3}
    assert dropped["decontamination"]["summary"] == {"pmids": 3}
    assert dropped["counts"]["documents"] == plain["counts"]["documents"] - 7
    assert flagged["decontamination"]["flagged"] == {"ngram": 4, "pmid": 3}
    assert flagged["counts"] == plain["counts"]
    assert len({plain["config_hash"], dropped["config_hash"], flagged["config_hash"]}) == 3
    assert "decontamination (drop): ngram=4, pmid=3" in capsys.readouterr().out


def test_subcommands_dispatch_lazily(monkeypatch, capsys):
    seen = []
    monkeypatch.setitem(sys.modules, "data_prep.download", types.SimpleNamespace(main=lambda a: seen.append(a) or 0))
    assert main(["download", "--dest", "x"]) == 0 and seen == [["--dest", "x"]]
    monkeypatch.setitem(sys.modules, "data_prep.vocab", None)  # as if the module did not exist
    with pytest.raises(SystemExit) as exit_info:
        main(["train-vocab", "--help"])
    assert exit_info.value.code == 2 and "needs data_prep/vocab.py" in capsys.readouterr().err


def test_prepass_reads_only_ids_and_survives_a_truncated_file(tmp_path):
    path = write_pubmed_xml(tmp_path / "pubmed26n0001.xml.gz", 300, first_pmid=1)
    scan = scan_pubmed_ids(path)
    assert scan.pmids.tolist() == list(range(1, 301)) and scan.articles == 300 and scan.error is None
    data = path.read_bytes()
    (tmp_path / "cut.xml.gz").write_bytes(data[: len(data) // 2])
    cut = scan_pubmed_ids(tmp_path / "cut.xml.gz")
    assert 0 < cut.articles < 300 and "cut.xml.gz" in cut.error
    assert Counter(scan_pubmed_ids(REPO / "tests/fixtures/data_prep/pubmed_sample.xml").records.tolist())[-1] == 2


def _with_malformation(xml: bytes, record: int) -> bytes:
    """`xml` with an unclosed tag inside the abstract of its `record`-th <PubmedArticle> (0-based)."""
    at = -1
    for _ in range(record + 1):
        at = xml.index(b"<PubmedArticle>", at + 1)
    at = xml.index(b"<AbstractText>", at) + len(b"<AbstractText>")
    return xml[:at] + b"<Unclosed>" + xml[at:]


def test_a_malformed_update_file_supersedes_only_the_records_it_delivers(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    good = write_pubmed_xml(d / "pubmed26n0001.xml.gz", 40, seed=3, first_pmid=1)
    # The same 40 PMIDs again in a later file, damaged inside record 24: its reader delivers records 0-23 only.
    damaged = _with_malformation(gzip.decompress(good.read_bytes()), 24)
    (d / "pubmed26n0002.xml.gz").write_bytes(gzip.compress(damaged))
    vocab = write_vocab(tmp_path / "vocab.txt")
    with pytest.raises(SystemExit) as exit_info:
        prep([d], vocab, tmp_path / "out", "--heldout_fraction", 0)
    assert exit_info.value.code == 3
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    docs = {Path(i["path"]).name: i["documents_read"] for i in manifest["inputs"]}
    assert docs == {"pubmed26n0001.xml.gz": 16, "pubmed26n0002.xml.gz": 24}  # every PMID once, none lost
    assert manifest["counts"]["documents"] == 40 and manifest["skipped"]["superseded"] == 24
    assert manifest["skipped"]["unread_after_damage"] == 16  # the damaged file's records after the damage
    [error] = manifest["errors"]
    assert error["file"].endswith("pubmed26n0002.xml.gz") and "after PMID 24" in error["message"]
    [damage] = manifest["supersession"]["damaged"]
    assert damage["file"].endswith("pubmed26n0002.xml.gz") and damage["records"] == 24 and damage["unread"] == 16
    assert "after PMID 24" in damage["message"]
