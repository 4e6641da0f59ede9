"""The preparation run: units of input spread over worker processes, one unit at a time, resumable.

A unit is one input file, or a group of consecutive single-article files of one folder (PMC `.nxml`, up
to GROUP_MAX_FILES files and GROUP_MAX_BYTES): alone, such a file has no other document for NSP to draw a
random next segment from, and 1,000s of tiny units would each pay for a marker, shard files and a manifest
entry. A worker reads a unit, writes its own shard files to `<out>/<split>/<unit>/` and then, last, its
done marker (outdir.py). The manifest is assembled from the markers, in input order, so the output is
identical for any --workers (each unit's RNG is seeded from its name, never from the worker: a single
file's from its file name, as before grouping existed). A rerun of an interrupted run skips units whose
marker matches (same size and mtime of every file, config, tokenizer and supersession index) and redoes
the others from scratch.

--part i/N takes every N-th unit of the sorted input list starting at i (unit k belongs to part k mod N),
which spreads small update files and large baseline files evenly over the parts; `merge` joins them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

from biobert.corpus.document import Document
from biobert.errors import UserError
from biobert.faults import NO_FAULTS, Faults
from biobert.tokenizer import load_tokenizer
from data_prep import outdir
from data_prep.fast_wordpiece import SentenceEncoder
from data_prep.pipeline import FileReport, PrepConfig, Sinks, process_file, unreadable
from data_prep.readers import expand_inputs
from data_prep.shards import MANIFEST, SPLITS, file_sha256, write_manifest
from data_prep.supersede import INDEX_DIR, SupersedeIndex, build_index, file_identity, index_hash, order_files
from data_prep.units import Unit, check_pubmed_names, parse_part, plan_units


def _name_date(name: str) -> str | None:
    """The date an input's name carries: 2024-01-15 / 20240115, or the release year of pubmedYYnNNNN."""
    if m := re.search(r"(?<!\d)((?:19|20)\d{2})-?(\d{2})-?(\d{2})(?!\d)", name):
        try:
            return datetime(int(m.group(1)), int(m.group(2)), int(m.group(3))).date().isoformat()
        except ValueError:
            pass
    m = re.match(r"pubmed(\d{2})n\d{4}", name)
    return f"20{m.group(1)}" if m else None


def _load_decontaminator(paths: list[str]):
    try:
        from data_prep.decontaminate import Decontaminator
    except ImportError as e:
        if e.name not in ("data_prep.decontaminate", None):
            raise
        raise UserError(
            "--decontaminate needs data_prep/decontaminate.py (Decontaminator), which is not in this "
            "checkout; update it or run without --decontaminate"
        ) from None
    return Decontaminator.from_paths(list(paths))


class _Gate:
    """Per file: drop superseded/deleted PubMed records and decontaminated documents, counting each."""

    def __init__(self, drops: dict[int, str], decon, action: str, skipped: Counter):
        self.drops, self.decon, self.action, self.skipped = drops, decon, action, skipped
        self.decontaminated: Counter = Counter()

    def __call__(self, doc: Document) -> bool:
        if self.drops:
            reason = self.drops.get(doc.meta.get("record", -1))
            if reason:
                self.skipped[reason] += 1
                return False
        if self.decon is not None:
            reason = self.decon.check(doc)
            if reason:
                self.decontaminated[reason] += 1
                return self.action == "flag"
        return True


class Worker:
    """Everything one process needs to prepare files; built once per process (cheap: vocab + mmaps)."""

    def __init__(
        self,
        cfg: PrepConfig,
        lowercase: bool,
        expect: dict,
        index_folder: str | None,
        decon=None,
        faults: Faults = NO_FAULTS,
    ):
        self.cfg, self.out, self.expect, self.decon, self.faults = cfg, Path(cfg.out), expect, decon, faults
        self.tokenizer = load_tokenizer(cfg.vocab, lowercase)
        self.encoder = SentenceEncoder(self.tokenizer)
        self.index_folder = index_folder
        self._index: SupersedeIndex | None = None

    @property
    def index(self) -> SupersedeIndex | None:
        # Opened on first use: the pool starts before the pre-pass (in the same pool) has written it.
        if self._index is None and self.index_folder:
            self._index = SupersedeIndex(Path(self.index_folder))
        return self._index

    def run(self, unit: Unit, max_docs: int | None = None) -> dict:
        outdir.clear_unit(self.out, unit.name)
        sinks = Sinks.create(self.out, self.tokenizer.vocab_size, self.cfg.shard_size, unit.name)
        identities = [file_identity(p) for p in unit.paths]  # before reading: a file changed meanwhile is redone
        skipped = Counter()
        index = self.index if unit.pubmed else None
        drops = index.drops_for(unit.path.name) if index else {}
        gate = _Gate(drops, self.decon, self.cfg.decontaminate_action, skipped)
        report = process_file(
            list(unit.paths),
            self.cfg,
            self.tokenizer,
            sinks,
            skipped,
            max_docs,
            gate,
            self.encoder,
            stream=unit.name if unit.grouped else None,
        )
        if index and not report.stopped_early:
            skipped["unread_after_damage"] += index.unread_for(unit.path.name)
        self.faults.in_unit(unit.name)  # resume tests: crash or hang inside this unit
        entry = _input_entry(unit, identities, report)  # first: a file it cannot hash is a file error
        marker = {
            "unit": unit.name,
            "position": unit.position,
            **self.expect,
            "index_hash": index.hash if index else None,
            **entry,
            "report": {
                "documents_read": report.documents_read,
                "words": report.words,
                "seconds": round(report.seconds, 3),
                "complete": not report.stopped_early and not report.error,
            },
            "shards": sinks.close(),
            "stats": {s: asdict(sinks.stats[s]) for s in SPLITS},
            "skipped": dict(sorted((k, v) for k, v in skipped.items() if v)),
            "error": report.error,
            "decontaminated": dict(gate.decontaminated),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if unit.grouped:
            marker["file_errors"] = report.file_errors
        outdir.write_marker(self.out, unit.name, marker)
        return marker


def _iso(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).isoformat(timespec="seconds")


def _sha256(path: Path, report: FileReport) -> str | None:
    """The file's sha256, or None when it cannot be read: then it is a file error (once: the reader has
    usually reported it already), never a crash of the run."""
    try:
        return file_sha256(path)
    except OSError as e:
        if not any(err["file"] == str(path) for err in report.file_errors):
            report.fail(path, unreadable(path, e))
        return None


def _input_entry(unit: Unit, identities: list[dict], report: FileReport) -> dict:
    """The marker's `input` (what the manifest lists) and, for a group, `members` (every file, for resume)."""
    if not unit.grouped:
        (identity,) = identities
        return {
            "input": {
                "path": str(unit.path),
                "bytes": identity["bytes"],
                "mtime_ns": identity["mtime_ns"],
                "mtime": _iso(identity["mtime_ns"]),
                "name_date": _name_date(unit.path.name),
                "sha256": _sha256(unit.path, report),
            }
        }
    members = [
        {"path": str(p), "bytes": i["bytes"], "mtime_ns": i["mtime_ns"], "sha256": _sha256(p, report)}
        for p, i in zip(unit.paths, identities)
    ]
    digest = hashlib.sha256("".join(f"{Path(m['path']).name} {m['sha256']}\n" for m in members).encode())
    return {
        "input": {
            "path": str(unit.path.parent),
            "files": len(members),
            "first": members[0]["path"],
            "last": members[-1]["path"],
            "bytes": sum(m["bytes"] for m in members),
            "mtime_ns": max(m["mtime_ns"] for m in members),
            "mtime": _iso(max(m["mtime_ns"] for m in members)),
            "name_date": None,
            "sha256": digest.hexdigest(),
        },  # of the members' names and sha256, one per line
        "members": members,
    }


_worker: Worker | None = None  # one per pool process, set by _init_worker


def _init_worker(*args) -> None:
    global _worker
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _worker = Worker(*args)


def _run_unit(unit: Unit) -> dict:
    return _worker.run(unit)


def _progress(n: int, total: int, unit: Unit, marker: dict | None) -> None:
    if marker is None:
        print(f"[kept] {unit.label}: finished by an earlier attempt of this run", file=sys.stderr, flush=True)
        return
    r = marker["report"]
    rate = r["words"] / r["seconds"] if r["seconds"] else 0.0
    status = "ok" if r["complete"] else "stopped at --max_docs"
    status = "ERROR, see manifest errors" if marker["error"] else status
    print(
        f"[{n}/{total}] {unit.label}: {r['documents_read']:,} docs, {r['words']:,} words, {rate:,.0f} words/s, "
        f"{r['seconds']:.1f}s ({status})",
        file=sys.stderr,
        flush=True,
    )
    if marker["error"]:
        print(f"  error: {marker['error']}", file=sys.stderr, flush=True)


def _run_sequential(worker: Worker, mine: list[Unit], markers: dict, max_docs: int | None) -> list[Unit]:
    """In this process, in input order. With --max_docs the limit runs across files, as in v1, and the files
    after it are left out of the run (returns the units that are in it)."""
    left, used, n = max_docs, [], 0
    todo = sum(u.name not in markers for u in mine)
    for unit in mine:
        if left is not None and left <= 0:
            break
        if unit.name not in markers:
            markers[unit.name] = worker.run(unit, left)
            n += 1
            _progress(n, todo, unit, markers[unit.name])
        used.append(unit)
        if left is not None:
            left -= markers[unit.name]["report"]["documents_read"]
    return used


def _run_pool(pool: ProcessPoolExecutor, todo: list[Unit], markers: dict) -> None:
    futures = {pool.submit(_run_unit, unit): unit for unit in todo}
    for n, future in enumerate(as_completed(futures), start=1):
        unit = futures[future]
        try:
            markers[unit.name] = future.result()
        except BaseException as e:
            pool.shutdown(wait=False, cancel_futures=True)
            raise RuntimeError(
                f"{unit.path}: worker failed ({type(e).__name__}: {e}); files finished so far are "
                "kept: rerun the same command to resume"
            ) from e
        _progress(n, len(todo), unit, markers[unit.name])


def _decontamination(cfg: PrepConfig) -> tuple[object | None, dict | None, dict]:
    """The parent's Decontaminator (picklable: shipped to the workers), its manifest entry, its hash input."""
    if not cfg.decontaminate:
        return None, None, {}
    decon = _load_decontaminator(cfg.decontaminate)
    summary = decon.summary()
    hashes = {str(f): file_sha256(Path(f)) for f in summary.get("files", [])}  # by path: folds share names
    return (
        decon,
        {"action": cfg.decontaminate_action, "paths": list(cfg.decontaminate), "sha256": hashes, "summary": summary},
        {"decontaminate": sorted(hashes.values())},
    )


def _current_markers(out: Path, mine: list[Unit], expect: dict, idx_hash: str | None) -> dict[str, dict]:
    """Markers of units finished by an earlier attempt of this run that are still valid."""
    markers = {}
    for u in mine:
        stats = [p.stat() for p in u.paths]
        members = [(str(p), st.st_size, st.st_mtime_ns) for p, st in zip(u.paths, stats)]
        path = str(u.path.parent) if u.grouped else str(u.path)
        want = expect | {
            "index_hash": idx_hash if u.pubmed else None,
            "position": u.position,
            "input": {"path": path, "bytes": sum(m[1] for m in members), "mtime_ns": max(m[2] for m in members)},
        }
        marker = outdir.read_marker(out, u.name)
        if (
            u.grouped
            and marker is not None
            and members != [(m["path"], m["bytes"], m["mtime_ns"]) for m in marker.get("members", [])]
        ):
            continue
        if outdir.marker_is_current(out, marker, want):
            markers[u.name] = marker
            _progress(0, 0, u, None)
    return markers


def _pool_size(cfg: PrepConfig, jobs: int) -> int:
    return 1 if cfg.max_docs is not None else max(1, min(cfg.workers, jobs))


def _supersession(index: SupersedeIndex) -> dict:
    keys = (
        "hash",
        "articles",
        "deletions",
        "pmids",
        "deleted_pmids",
        "drop_superseded",
        "drop_deleted",
        "errors",
        "damaged",
        "prepass_s",
    )
    return {k: index.info[k] for k in keys} | {"pubmed_files": len(index.info["files"])}


def run(cfg: PrepConfig) -> dict:
    """Prepare (this part of) the shards into `cfg.out`; returns the manifest, written last."""
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    cfg.validate()
    part = parse_part(cfg.part)
    if part and cfg.max_docs is not None:
        raise UserError("--max_docs (a demo limit across files) cannot be combined with --part")
    units = plan_units(expand_inputs(cfg.inputs))
    check_pubmed_names(units)
    tokenizer = load_tokenizer(cfg.vocab, cfg.lowercase)
    decon, decon_entry, extra = _decontamination(cfg)
    resolved = asdict(cfg) | {"lowercase": tokenizer.lowercase, "short_seq_prob": cfg.effective_short_seq_prob}
    config_hash = PrepConfig(**resolved).hash(extra)
    # Names only: a file whose content changed is redone through its done marker, not refused.
    inputs_hash = hashlib.sha256(json.dumps([u.name for u in units]).encode()).hexdigest()[:16]
    mine = [u for u in units if part is None or u.position % part[1] == part[0]]
    out = Path(cfg.out)
    expect = {"config_hash": config_hash, "tokenizer_hash": tokenizer.vocab_hash}
    outdir.claim(out, expect | {"inputs_hash": inputs_hash}, [u.name for u in mine], part, cfg.overwrite)
    tokenizer.save(out / "tokenizer")

    pubmed = order_files(u.path for u in units if u.pubmed)
    idx_hash = index_hash(pubmed) if pubmed else None
    index_folder = str(out / INDEX_DIR / idx_hash) if pubmed else None
    markers = _current_markers(out, mine, expect, idx_hash)
    todo = [u for u in mine if u.name not in markers]
    scan = len(pubmed) if todo and pubmed and not Path(index_folder, "index.json").is_file() else 0
    size = _pool_size(cfg, max(len(todo), scan))
    args = (cfg, tokenizer.lowercase, expect, index_folder, decon, Faults.from_env())  # test hooks, read once
    if size == 1:
        index = build_index(out, pubmed) if pubmed else None
        used = _run_sequential(Worker(*args), mine, markers, cfg.max_docs)
    else:  # spawn: never fork a parent whose tokenizer may hold threads
        with ProcessPoolExecutor(
            size, mp_context=get_context("spawn"), initializer=_init_worker, initargs=args
        ) as pool:
            index = build_index(out, pubmed, lambda f, xs: pool.map(f, xs)) if pubmed else None
            _run_pool(pool, todo, markers)
        used = mine

    head = outdir.header(resolved, tokenizer, config_hash, inputs_hash)
    manifest = outdir.assemble(head, [markers[u.name] for u in used], decon_entry)
    if index is not None:
        manifest["supersession"] = _supersession(index)
    manifest |= {
        "created": started.isoformat(timespec="seconds"),
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "workers": size,
        "resumed_files": len(mine) - len(todo),
        "tool_version": _tool_version(),
    }
    if part:
        manifest["part"] = {
            "index": part[0],
            "count": part[1],
            "inputs_total": len(units),
            "units": [[u.position, u.name] for u in mine],
        }
    write_manifest(out, manifest, outdir.part_manifest_name(*part) if part else MANIFEST)
    return manifest


def _tool_version() -> str:
    """Package version, plus the git commit when run from a checkout (what the lead needs to reproduce)."""
    from importlib import metadata

    try:
        version = metadata.version("biobert")
    except metadata.PackageNotFoundError:
        version = "source"
    from biobert.files import git_sha

    sha = git_sha(short=True)
    sha = "" if sha == "unknown" else sha
    return f"{version}+git.{sha}" if sha else version
