"""Corpus fault suite: good PubMed files next to one bad file of each kind that turns up in practice.

Whatever the bad files hold, (a) the good files' shards are byte for byte those of a run on the good files
alone, and (b) every bad file is counted, with its reason, in the manifest and the printed summary; the
run finishes (exit status 3) and the records a bad file delivers before its damage are kept.
"""

import gzip
import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from test_data_prep_pipeline import deny_reads

from conftest import REPO, subprocess_env, write_pubmed_xml, write_vocab
from data_prep.cli import main

GOOD = {"pubmed26n0001.xml.gz": (14, 1000), "pubmed26n0002.xml.gz": (12, 2000), "pubmed26n0003.xml": (10, 3000)}
UPDATE = "pubmed26n0009.xml.gz"  # a later PubMed file: its records supersede earlier ones with the same PMID
# file name -> what its manifest error must say (the reason, and where or what to do)
BAD = {
    "cut.xml.gz": ["truncated gzip stream: the file ends at byte", "python -m data_prep download"],
    "tail.xml.gz": ["trailing garbage after the gzip stream at byte", "md5"],
    "broken.xml": ["malformed or truncated XML after PMID 90201", "line"],
    "latin1.xml": ["bytes that are not UTF-8", "after PMID 90300", "line 5"],
    "empty.xml.gz": ["empty file (0 bytes", "remove it from --input"],
    "locked.xml.gz": ["cannot read the file (PermissionError", "chmod"],
    "plain.xml.gz": ["not a gzip file", "it looks like plain XML: rename it without .gz"],
    "packed.xml": ["gzip-compressed data in a file named without .gz", "rename it to packed.xml.gz"],
    UPDATE: ["malformed or truncated XML after PMID 90503", "re-download"],
}
KEPT = {"cut.xml.gz": None, "tail.xml.gz": 12, "broken.xml": 2, "latin1.xml": 1, UPDATE: 4}  # documents kept


def _xml(tmp: Path, n: int, first_pmid: int) -> bytes:
    return write_pubmed_xml(tmp / f"{first_pmid}.xml", n, seed=first_pmid, first_pmid=first_pmid).read_bytes()


def _inside_record(xml: bytes, record: int, insert: bytes) -> bytes:
    """`xml` with `insert` put inside the abstract of its `record`-th <PubmedArticle> (0-based)."""
    at = -1
    for _ in range(record + 1):
        at = xml.index(b"<PubmedArticle>", at + 1)
    at = xml.index(b"<AbstractText>", at) + len(b"<AbstractText>")
    return xml[:at] + insert + xml[at:]


def _records(xml: bytes) -> bytes:
    return xml[xml.index(b"<PubmedArticle>") : xml.rindex(b"</PubmedArticleSet>")]


def _malformed_update(tmp: Path) -> bytes:
    """Five new records, the fifth damaged, then newer copies of every record of good file 1: only the four
    before the damage are delivered, so none of good file 1's records may be superseded."""
    new, old = _xml(tmp, 5, 90500), _xml(tmp, GOOD["pubmed26n0001.xml.gz"][0], GOOD["pubmed26n0001.xml.gz"][1])
    xml = new.replace(b"</PubmedArticleSet>", _records(old) + b"</PubmedArticleSet>")
    return gzip.compress(_inside_record(xml, 4, b"<Unclosed>"))


def _bad_files(folder: Path, tmp: Path) -> None:
    packed = gzip.compress(_xml(tmp, 12, 90000))
    (folder / "cut.xml.gz").write_bytes(packed[: len(packed) * 6 // 10])
    (folder / "tail.xml.gz").write_bytes(gzip.compress(_xml(tmp, 12, 90100)) + b"GARBAGE!" * 125)
    (folder / "broken.xml").write_bytes(_inside_record(_xml(tmp, 6, 90200), 2, b"<Unclosed>"))
    (folder / "latin1.xml").write_bytes(_inside_record(_xml(tmp, 6, 90300), 1, "Caf\u00e9 ".encode("latin-1")))
    (folder / "empty.xml.gz").write_bytes(b"")
    (folder / "locked.xml.gz").write_bytes(gzip.compress(_xml(tmp, 6, 90400)))
    (folder / "plain.xml.gz").write_bytes(_xml(tmp, 6, 90600))
    (folder / "packed.xml").write_bytes(gzip.compress(_xml(tmp, 6, 90700)))
    (folder / UPDATE).write_bytes(_malformed_update(tmp))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    good, mixed, tmp = root / "good", root / "mixed", root / "tmp"
    for folder in (good, mixed, tmp):
        folder.mkdir()
    for name, (n, first_pmid) in GOOD.items():
        write_pubmed_xml(good / name, n, seed=first_pmid, first_pmid=first_pmid)
        shutil.copy(good / name, mixed / name)
    _bad_files(mixed, tmp)
    return {"good": good, "mixed": mixed, "vocab": write_vocab(root / "vocab.txt")}


def prep(folder: Path, vocab: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--input",
        str(folder),
        "--vocab",
        str(vocab),
        "--out",
        str(out),
        "--seq_len",
        "48",
        "--shard_size",
        "20",
        "--heldout_fraction",
        "0.2",
        *extra,
    ]


def shard_bytes(out: Path, unit: str) -> dict[str, bytes]:
    """Every shard file of one input, both splits, by path relative to the output directory."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for split in ("train", "heldout")
        for p in sorted((out / split / unit).glob("shard_*.arrow"))
    }


def complete_records(gz_prefix: bytes) -> int:
    return zlib.decompressobj(31).decompress(gz_prefix).count(b"</PubmedArticle>")


def test_bad_files_are_counted_and_leave_the_good_files_output_untouched(corpus, tmp_path, monkeypatch, capsys):
    main(prep(corpus["good"], corpus["vocab"], tmp_path / "good"))
    deny_reads(monkeypatch, corpus["mixed"] / "locked.xml.gz")
    with pytest.raises(SystemExit) as exit_info:  # one worker: the patched open() is this process's
        main(prep(corpus["mixed"], corpus["vocab"], tmp_path / "mixed", "--workers", "1"))
    assert exit_info.value.code == 3
    summary = capsys.readouterr().out
    good, mixed = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("good", "mixed"))

    # (a) the good files: the same shards, byte for byte, and the same counts
    for name in GOOD:
        unit = name.removesuffix(".gz").removesuffix(".xml")
        assert shard_bytes(tmp_path / "mixed", unit) == shard_bytes(tmp_path / "good", unit) != {}
    entry = lambda m, n: next(i for i in m["inputs"] if Path(i["path"]).name == n)  # noqa: E731
    for name in GOOD:
        fields = ("documents_read", "words", "examples", "skipped", "error", "sha256")
        assert {k: entry(mixed, name)[k] for k in fields} == {k: entry(good, name)[k] for k in fields}

    # (b) every bad file: one error each, with its reason, in the manifest and in the summary
    errors = {Path(e["file"]).name: e["message"] for e in mixed["errors"]}
    assert sorted(errors) == sorted(BAD) and mixed["skipped"]["file_error"] == len(BAD)
    for name, phrases in BAD.items():
        assert all(p in errors[name] for p in phrases), (name, errors[name])
        assert f"error: {errors[name]}" in summary
    assert f"file_error={len(BAD)}" in summary

    # the records a bad file delivers before its damage are kept, and no intact record is superseded
    KEPT["cut.xml.gz"] = complete_records((corpus["mixed"] / "cut.xml.gz").read_bytes())
    for name, n in KEPT.items():
        assert entry(mixed, name)["documents_read"] == n, name
    damaged = {d["name"]: d for d in mixed["supersession"]["damaged"]}
    assert damaged[UPDATE]["records"] == 4 and damaged[UPDATE]["unread"] == 1 + GOOD["pubmed26n0001.xml.gz"][0]
    assert "superseded" not in mixed["skipped"] and mixed["skipped"]["unread_after_damage"] >= 15
    assert mixed["counts"]["documents"] == good["counts"]["documents"] + sum(KEPT.values())


def _cannot_read_prefix(path: Path) -> list[str] | None:
    """A command prefix under which a child process really cannot read `path` (mode 000), or None.

    As root, chmod 000 stops nothing: the child runs without the capabilities that bypass file permissions.
    """
    path.chmod(0)
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            return None
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", "--bounding-set", caps, "--inh-caps", caps]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", f"open({str(path)!r}, 'rb')"], capture_output=True, text=True
    )
    return prefix if "PermissionError" in probe.stderr else None


def test_unreadable_file_with_two_workers_is_a_file_error_not_a_crash(corpus, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in GOOD:
        shutil.copy(corpus["good"] / name, folder / name)
    locked = folder / "locked.xml.gz"
    locked.write_bytes(gzip.compress(_xml(tmp_path, 6, 90400)))
    prefix = _cannot_read_prefix(locked)
    if prefix is None:
        pytest.skip("cannot make a file unreadable for a child process here (root without setpriv)")
    out = tmp_path / "out"
    run = subprocess.run(
        [*prefix, sys.executable, "-m", "data_prep", *prep(folder, corpus["vocab"], out, "--workers", "2")],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr and "rerun the same command to resume" not in run.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    [error] = manifest["errors"]
    assert error["file"] == str(locked.resolve()) and "cannot read the file (PermissionError" in error["message"]
    assert manifest["skipped"]["file_error"] == 1 and manifest["workers"] == 2
    assert sum(i["documents_read"] for i in manifest["inputs"]) == sum(n for n, _ in GOOD.values())
    assert f"error: {error['message']}" in run.stdout
