"""PubMed update files: keep each PMID once, at its latest version, and drop deleted PMIDs.

NCBI publishes a yearly baseline (`pubmedYYnNNNN.xml.gz`) and then daily update files numbered after it. A
citation revised after the baseline appears again, whole, in a later file; a withdrawn one is listed in a
later file's <DeleteCitation>. Files are processed in parallel (and across Slurm parts), so no worker can
see "later" files. Instead a pre-pass reads only the PMIDs and DeleteCitation lists of EVERY PubMed input,
in NCBI's order (file name), and decides once, for every article record, whether it is the latest
occurrence of its PMID. The result is stored in the output directory as memory-mappable NumPy arrays:

    pmid.npy    uint32, sorted: every PMID seen (article or deletion)
    file.npy    int32: slot (position in name order) of the file holding its latest occurrence; -1 = deleted
    record.npy  int32: ordinal of that <PubmedArticle> in its file (read_pubmed's meta["record"]); -1 = deleted
    drop_file.npy, drop_record.npy, drop_reason.npy: the article records NOT to emit, sorted by file slot,
                then record (reason 1 = superseded by a later occurrence, 2 = deleted by a later list)
    index.json  the files (name, size, mtime) in slot order, counts, the pre-pass time

"Latest" is the last occurrence in (file name, position in file) order: a PMID deleted and then re-added
is kept at its re-added version. The PMID `Version` attribute is not compared (NCBI redistributes the
current version of a citation in later files). Every part of a Slurm array builds the same index over ALL
inputs (identical content, written to a folder named by the hash of the inputs' identities, by atomic
rename), so each part decides the same way without any communication; a resumed run reuses it.

The index must agree with what the workers emit: a record after a damage point (malformed XML, bad
UTF-8, truncated or corrupt gzip) is read by no worker, so if it counted as a PMID's latest occurrence, the
intact earlier copy would be dropped too and the PMID lost. So each file is scanned twice at once: a
regular expression over the decompressed bytes finds the PMIDs (it relies on NCBI's layout: the first <PMID>
inside a <PubmedArticle> is its own), and libxml2, with a parser target that keeps nothing, checks that the
same bytes parse. An intact file is decided by the regex (~1.3 s per 40 MB baseline file, half of it the
parse check; the regex alone was ~0.7 s). A damaged one is read again with the reader's own record iterator
(biobert.corpus.pubmed.iter_records), so only the records it delivers take part; index.json lists it under
`damaged` with those records, the records a byte scan finds after the damage (`unread`, counted by the
worker as skipped `unread_after_damage`) and the reader's message (file, last PMID, byte, what to do).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lxml import etree

from biobert.corpus.document import CorpusFileError
from biobert.corpus.gzip_stream import GzipDamage, inflate
from biobert.corpus.pubmed import PARSE_OPTIONS, iter_records, own_pmid

INDEX_DIR = "pubmed_index"
SUPERSEDED, DELETED = 1, 2
REASONS = {SUPERSEDED: "superseded", DELETED: "deleted"}
_RECORD = re.compile(rb"<(PubmedArticle|DeleteCitation)[\s>]")
_PMID = re.compile(rb"<PMID[^>]*>\s*(\d+)\s*</PMID>")
_CLOSERS = (b"</PubmedArticle>", b"</DeleteCitation>")
_READ = 1 << 22
# 1: a regex over the bytes, whatever they hold; 2: a damaged file counts only the records its reader delivers.
SCAN_RULE = 2


@dataclass
class Scan:
    """The PMID events of one file in document order: record >= 0 for an article, -1 for a deletion.

    For a damaged file, only the records its reader delivers (those before the damage); `unread` counts the
    <PubmedArticle> start tags a byte scan still finds after them.
    """

    pmids: np.ndarray
    records: np.ndarray
    articles: int
    deletions: int
    error: str | None = None
    unread: int = 0


class _Discard:
    """A parser target that keeps nothing: libxml2 checks the whole file at C speed, no tree is built."""

    def close(self) -> None:
        return None


def _decompressed(path: Path, raw) -> Iterable[bytes]:
    """The file's bytes in bounded pieces: inflated for .gz (GzipDamage after the last good byte)."""
    if path.name.endswith(".gz"):
        yield from inflate(raw, _READ)
    else:
        yield from iter(lambda: raw.read(_READ), b"")


class _IdScan:
    """The regular-expression pass: PMIDs of articles and deletions, from bytes split at record ends."""

    def __init__(self):
        self.pmids, self.records = array("I"), array("i")
        self.article, self.deletions, self._buf = -1, 0, b""

    def feed(self, data: bytes) -> None:
        self._buf += data
        cut = max(self._buf.rfind(closer) for closer in _CLOSERS)
        if cut > 0:
            self._consume(self._buf[:cut])
            self._buf = self._buf[cut:]

    def close(self) -> None:
        self._consume(self._buf)
        self._buf = b""

    def _consume(self, text: bytes) -> None:
        for m in _RECORD.finditer(text):
            if m.group(1) == b"PubmedArticle":
                self.article += 1
                pmid = _PMID.search(text, m.end())
                if pmid is not None:
                    self.pmids.append(int(pmid.group(1)))
                    self.records.append(self.article)
            else:
                end = text.find(b"</DeleteCitation>", m.end())
                for pmid in _PMID.finditer(text, m.end(), end if end >= 0 else len(text)):
                    self.pmids.append(int(pmid.group(1)))
                    self.records.append(-1)
                    self.deletions += 1

    def result(self, error: str | None = None, unread: int = 0) -> Scan:
        return Scan(
            np.frombuffer(self.pmids, np.uint32).copy(),
            np.frombuffer(self.records, np.int32).copy(),
            self.article + 1,
            self.deletions,
            error,
            unread,
        )


def _fast_scan(path: Path) -> tuple[_IdScan, bool]:
    """The regex pass over all readable bytes, and whether libxml2 parsed them without any damage.

    A damaged file is still scanned to its last readable byte, to count the records after the damage.
    """
    ids, parser, intact = _IdScan(), etree.XMLParser(target=_Discard(), **PARSE_OPTIONS), True
    with open(path, "rb") as raw:
        try:
            for data in _decompressed(path, raw):
                ids.feed(data)
                if intact:
                    try:
                        parser.feed(data)
                    except etree.XMLSyntaxError:
                        intact = False
        except GzipDamage:
            intact = False
    ids.close()
    if intact:
        try:
            parser.close()
        except etree.XMLSyntaxError:  # premature end, or no XML at all
            intact = False
    return ids, intact


def _parsed_scan(path: Path, ids: _IdScan) -> None:
    """The PMIDs of the records the reader delivers, read by the reader's own record iterator, into `ids`
    (filled as far as the reader gets before it raises)."""
    for elem in iter_records(path):
        if elem.tag == "PubmedArticle":
            ids.article += 1
            pmid = (own_pmid(elem) or "").strip()
            if pmid.isdigit():
                ids.pmids.append(int(pmid))
                ids.records.append(ids.article)
        elif elem.tag == "DeleteCitation":
            for p in elem.iterchildren("PMID"):
                if (p.text or "").strip().isdigit():
                    ids.pmids.append(int(p.text))
                    ids.records.append(-1)
                    ids.deletions += 1


def scan_pubmed_ids(path: str | Path) -> Scan:
    """PMIDs of articles and deletions of one PubMed file: those of the records its reader will deliver.

    An intact file (libxml2 parses it to the end, the gzip stream is whole) is read by the regular
    expression alone. A damaged one is read again by the reader's own record iterator, up to the damage, so
    that no record after the damage, which no worker will emit, supersedes an earlier file's intact copy.
    """
    path = Path(path)
    try:
        fast, intact = _fast_scan(path)
    except OSError as e:
        return _IdScan().result(f"{path}: PMID pre-pass cannot read the file ({type(e).__name__}: {e})")
    if intact:
        return fast.result()
    exact, error = _IdScan(), None
    try:
        _parsed_scan(path, exact)
    except CorpusFileError as e:
        error = str(e)
    except OSError as e:
        error = f"{path}: PMID pre-pass cannot read the file ({type(e).__name__}: {e})"
    return exact.result(error, max(0, fast.article - exact.article))


def file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"name": path.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def index_hash(files: list[Path]) -> str:
    """Names the index by its inputs and by how they are scanned: an index built by an earlier rule is never
    reused (nor are the done markers that name it), so a resumed run decides by the current rule."""
    ids = [file_identity(p) for p in files] + [{"scan_rule": SCAN_RULE}]
    return hashlib.sha256(json.dumps(ids, sort_keys=True).encode()).hexdigest()[:16]


def order_files(files: Iterable[Path]) -> list[Path]:
    """NCBI's order: by file name (`pubmed24n1219` after `pubmed24n1218`), then path for equal names."""
    return sorted(files, key=lambda p: (p.name, str(p)))


def _decide(scans: list[Scan]) -> dict[str, np.ndarray]:
    """Last occurrence per PMID, and the article records that are not it."""
    pmid = np.concatenate([s.pmids for s in scans]) if scans else np.empty(0, np.uint32)
    record = np.concatenate([s.records for s in scans]) if scans else np.empty(0, np.int32)
    slot = (
        np.concatenate([np.full(len(s.pmids), i, np.int32) for i, s in enumerate(scans)])
        if scans
        else np.empty(0, np.int32)
    )
    n = len(pmid)
    uniq, first_rev = np.unique(pmid[::-1], return_index=True)
    last = n - 1 - first_rev  # event position of each PMID's last occurrence
    latest_record = record[last]
    latest_file = np.where(latest_record < 0, -1, slot[last]).astype(np.int32)
    is_last = np.zeros(n, bool)
    is_last[last] = True
    drop = (record >= 0) & ~is_last
    deleted = latest_record[np.searchsorted(uniq, pmid[drop])] < 0
    return {
        "pmid": uniq.astype(np.uint32),
        "file": latest_file,
        "record": latest_record.astype(np.int32),
        "drop_file": slot[drop],
        "drop_record": record[drop],
        "drop_reason": np.where(deleted, DELETED, SUPERSEDED).astype(np.int8),
    }


def _damaged(files: list[Path], scans: list[Scan]) -> list[dict]:
    """Per damaged file: the records its reader delivers (only those take part in supersession), the records a
    byte scan finds after the damage, and the reader's own account of where and what to do."""
    return [
        {"file": str(p), "name": p.name, "records": s.articles, "unread": s.unread, "message": s.error}
        for p, s in zip(files, scans)
        if s.error
    ]


class SupersedeIndex:
    """The stored decisions; workers open it memory-mapped and ask for the records to drop of one file."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.info = json.loads((self.folder / "index.json").read_text(encoding="utf-8"))
        self.hash: str = self.info["hash"]
        self.slots = {f["name"]: i for i, f in enumerate(self.info["files"])}
        self._drop = {k: np.load(self.folder / f"drop_{k}.npy", mmap_mode="r") for k in ("file", "record", "reason")}

    def drops_for(self, name: str) -> dict[int, str]:
        """record ordinal -> "superseded" | "deleted", for the article records of file `name` not to emit."""
        slot = self.slots[name]
        lo, hi = np.searchsorted(self._drop["file"], [slot, slot + 1])
        records, reasons = self._drop["record"][lo:hi].tolist(), self._drop["reason"][lo:hi].tolist()
        return {r: REASONS[k] for r, k in zip(records, reasons)}

    def unread_for(self, name: str) -> int:
        """<PubmedArticle> records of damaged file `name` after its damage: no worker can read them."""
        return sum(d["unread"] for d in self.info.get("damaged", []) if d["name"] == name)


def build_index(out: Path, files: list[Path], map_fn: Callable = map) -> SupersedeIndex:
    """Scan `files` (any order; ordered by name here) with `map_fn` (e.g. a process pool's map) and store.

    Reused when a folder for the same inputs exists already (resume, or another Slurm part built it).
    """
    files = order_files(files)
    digest = index_hash(files)
    folder = Path(out) / INDEX_DIR / digest
    if (folder / "index.json").is_file():
        return SupersedeIndex(folder)
    start = time.perf_counter()
    scans = list(map_fn(scan_pubmed_ids, files))
    arrays = _decide(scans)
    tmp = folder.with_name(f"{digest}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, values in arrays.items():
        np.save(tmp / f"{name}.npy", values)
    reasons = np.bincount(arrays["drop_reason"], minlength=3)
    info = {
        "hash": digest,
        "files": [file_identity(p) for p in files],
        "articles": int(sum(s.articles for s in scans)),
        "deletions": int(sum(s.deletions for s in scans)),
        "pmids": int(len(arrays["pmid"])),
        "deleted_pmids": int((arrays["file"] < 0).sum()),
        "drop_superseded": int(reasons[SUPERSEDED]),
        "drop_deleted": int(reasons[DELETED]),
        "errors": [s.error for s in scans if s.error],
        "damaged": _damaged(files, scans),
        "prepass_s": round(time.perf_counter() - start, 3),
    }
    (tmp / "index.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    try:
        os.rename(tmp, folder)
    except OSError:  # another part renamed its identical index first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "index.json").is_file():
            raise
    return SupersedeIndex(folder)
