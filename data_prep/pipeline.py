"""The preparation run: input files -> documents -> sentences -> token ids -> packed examples -> shards.

`process_file` is the unit of work and depends only on its arguments, so a later parallel driver can run
one per worker process (each with its own `Sinks`) and mark files done for resumption. `run` is the
single-process v1 driver that owns the output directory and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from biobert.errors import UserError
from biobert.tokenizer import WordPieceTokenizer, load_tokenizer
from data_prep.document import CorpusFileError, Document
from data_prep.packing import MODES, NSP, Example, Packer
from data_prep.readers import expand_inputs, read_documents
from data_prep.sentences import split_sentences
from data_prep.shards import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SPLITS,
    ShardWriter,
    file_sha256,
    is_heldout,
    write_manifest,
)

# Options that name machine-local paths or run behaviour, not the content of the output: kept in the
# manifest's `config` but left out of `config_hash` (inputs and vocabulary are identified by their hashes).
_NOT_HASHED = ("inputs", "vocab", "out", "overwrite")


@dataclass
class PrepConfig:
    inputs: list[str]
    vocab: str
    out: str
    seq_len: int = 128
    mode: str = NSP
    heldout_fraction: float = 0.01
    seed: int = 12345
    lowercase: bool | None = None  # None: inferred from the vocabulary
    max_docs: int | None = None  # stop after this many documents (quick demos)
    shard_size: int = 100_000  # examples per shard file
    short_seq_prob: float = 0.1
    require_abstract: bool = True  # title-only PubMed records give near-empty examples
    nsp_buffer_docs: int = 1000  # recent documents that random-next segments are drawn from
    encode_batch_sentences: int = 1000
    overwrite: bool = False

    def validate(self) -> None:
        checks = [
            (self.mode in MODES, f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}"),
            (8 <= self.seq_len <= 32767, f"--seq_len must be in [8, 32767], got {self.seq_len}"),
            (0.0 <= self.heldout_fraction < 1.0,
             f"--heldout_fraction must be in [0, 1), got {self.heldout_fraction}"),
            (0.0 <= self.short_seq_prob <= 1.0, f"--short_seq_prob must be in [0, 1], got {self.short_seq_prob}"),
            (self.shard_size >= 1, f"--shard_size must be >= 1, got {self.shard_size}"),
            (self.max_docs is None or self.max_docs >= 1, f"--max_docs must be >= 1, got {self.max_docs}"),
            (self.nsp_buffer_docs >= 1, f"nsp_buffer_docs must be >= 1, got {self.nsp_buffer_docs}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def hash(self) -> str:
        content = {k: v for k, v in asdict(self).items() if k not in _NOT_HASHED}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SplitStats:
    documents: int = 0
    sentences: int = 0
    words: int = 0
    tokens: int = 0  # word-piece tokens of the packed documents' sentences (before any truncation)
    examples: int = 0
    example_tokens: int = 0  # tokens actually written, special tokens included
    nsp_fallbacks: int = 0  # random-next drawn but no earlier document in the stream: real next used

    def add(self, other: SplitStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self, seq_len: int) -> dict:
        padded = self.examples * seq_len
        out = {k: v for k, v in asdict(self).items() if k != "example_tokens"}
        out["padding_fraction"] = round(1 - self.example_tokens / padded, 6) if padded else 0.0
        return out


@dataclass
class Sinks:
    """Where one worker's examples go: one shard writer and one running count per split."""

    writers: dict[str, ShardWriter]
    stats: dict[str, SplitStats] = field(default_factory=lambda: {s: SplitStats() for s in SPLITS})

    @classmethod
    def create(cls, out_dir: Path, vocab_size: int, shard_size: int) -> Sinks:
        return cls({s: ShardWriter(out_dir / s, vocab_size, shard_size) for s in SPLITS})

    def write(self, split: str, examples: list[Example]) -> None:
        writer, stats = self.writers[split], self.stats[split]
        for ex in examples:
            writer.write(ex.input_ids, ex.sep_index, ex.next_sentence_label)
            stats.example_tokens += len(ex.input_ids)
        stats.examples += len(examples)

    def close(self) -> dict[str, list[dict]]:
        return {split: writer.close() for split, writer in self.writers.items()}


@dataclass
class FileReport:
    path: str
    documents_read: int = 0
    words: int = 0
    seconds: float = 0.0
    stopped_early: bool = False  # hit --max_docs before the end of the file
    error: str | None = None


def _stream_seed(seed: int, path: Path, split: str) -> int:
    # One RNG per (file, split): output does not depend on which worker or in which order files run.
    return int.from_bytes(hashlib.blake2b(f"{seed}:{path.name}:{split}".encode(), digest_size=8).digest(), "big")


def _pack_pending(pending: list[tuple[str, Document, list[str], int]], tokenizer: WordPieceTokenizer,
                  packers: dict[str, Packer], sinks: Sinks, skipped: Counter) -> None:
    """Tokenise the sentences of all pending documents in one batch call, then pack document by document."""
    flat = [s for _, _, sentences, _ in pending for s in sentences]
    ids = tokenizer.encode_batch(flat) if flat else []
    pos = 0
    for split, _doc, sentences, words in pending:
        doc_ids = ids[pos : pos + len(sentences)]
        pos += len(sentences)
        examples = packers[split].pack(doc_ids)
        if not examples:
            skipped["too_short"] += 1
            continue
        sinks.write(split, examples)
        stats = sinks.stats[split]
        stats.documents += 1
        stats.sentences += len(sentences)
        stats.words += words
        stats.tokens += sum(map(len, doc_ids))
    pending.clear()


def process_file(path: Path, cfg: PrepConfig, tokenizer: WordPieceTokenizer, sinks: Sinks,
                 skipped: Counter, max_docs: int | None = None) -> FileReport:
    """Read, split, tokenise and pack one input file into `sinks`.

    A file-level failure (CorpusFileError) is returned in the report, not raised: documents read before
    the failure are complete records and are kept; the caller records the error and goes on.
    """
    report, start = FileReport(str(path)), time.perf_counter()
    packers = {split: Packer(seq_len=cfg.seq_len, mode=cfg.mode, cls_id=tokenizer.cls_id,
                             sep_id=tokenizer.sep_id, seed=_stream_seed(cfg.seed, path, split),
                             short_seq_prob=cfg.short_seq_prob, buffer_docs=cfg.nsp_buffer_docs)
               for split in SPLITS}
    pending: list[tuple[str, Document, list[str], int]] = []
    n_sentences = 0
    try:
        for doc in read_documents(path, skipped, require_abstract=cfg.require_abstract):
            sentences = [s for section in doc.sections for s in split_sentences(section)]
            words = sum(len(section.split()) for section in doc.sections)
            split = "heldout" if is_heldout(doc.doc_id, cfg.heldout_fraction) else "train"
            pending.append((split, doc, sentences, words))
            n_sentences += len(sentences)
            report.documents_read += 1
            report.words += words
            if n_sentences >= cfg.encode_batch_sentences:
                _pack_pending(pending, tokenizer, packers, sinks, skipped)
                n_sentences = 0
            if max_docs is not None and report.documents_read >= max_docs:
                report.stopped_early = True
                break
    except CorpusFileError as e:
        report.error = str(e)
    _pack_pending(pending, tokenizer, packers, sinks, skipped)
    for split, packer in packers.items():
        sinks.stats[split].nsp_fallbacks += packer.no_random_doc
    report.seconds = time.perf_counter() - start
    return report


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to clobber finished output; clear stale shards so the directory holds only this run's."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    if (out / MANIFEST).exists():
        if not overwrite:
            raise UserError(f"{out}: already holds prepared shards ({MANIFEST}); pass --overwrite to replace "
                            "them or choose another --out")
        (out / MANIFEST).unlink()  # first, so an interrupted rerun never looks finished
    for split in SPLITS:
        for stale in (out / split).glob("shard_*.arrow*"):
            stale.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _describe_input(path: Path, report: FileReport) -> dict:
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "sha256": file_sha256(path),
            "mtime": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(timespec="seconds"),
            "documents_read": report.documents_read, "complete": not report.stopped_early and not report.error}


def _tool_version() -> str:
    """Package version, plus the git commit when run from a checkout (what the lead needs to reproduce)."""
    try:
        version = metadata.version("biobert")
    except metadata.PackageNotFoundError:
        version = "source"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, text=True,
                             capture_output=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{version}+git.{sha}" if sha else version


def _progress(n: int, total: int, report: FileReport) -> None:
    rate = report.words / report.seconds if report.seconds else 0.0
    status = "stopped at --max_docs" if report.stopped_early else "ok"
    status = "ERROR, see manifest errors" if report.error else status
    print(f"[{n}/{total}] {Path(report.path).name}: {report.documents_read:,} docs, {report.words:,} words, "
          f"{rate:,.0f} words/s, {report.seconds:.1f}s ({status})", file=sys.stderr, flush=True)
    if report.error:
        print(f"  error: {report.error}", file=sys.stderr, flush=True)


def _build_manifest(cfg: PrepConfig, tokenizer: WordPieceTokenizer, shards: dict[str, list[dict]],
                    stats: dict[str, SplitStats], inputs: list[dict], skipped: Counter, errors: list[dict]) -> dict:
    resolved = asdict(cfg) | {"lowercase": tokenizer.lowercase}
    total = SplitStats()
    for split_stats in stats.values():
        total.add(split_stats)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "seq_len": cfg.seq_len, "mode": cfg.mode,
        "vocab_size": tokenizer.vocab_size, "tokenizer_hash": tokenizer.vocab_hash,
        "lowercase": tokenizer.lowercase, "special_ids": tokenizer.special_ids(), "tokenizer_dir": "tokenizer",
        "config": resolved, "config_hash": PrepConfig(**resolved).hash(), "inputs": inputs,
        "counts": total.as_dict(cfg.seq_len) | {s: stats[s].as_dict(cfg.seq_len) for s in SPLITS},
        "splits": {s: {"examples": stats[s].examples, "shards": shards[s]} for s in SPLITS},
        "skipped": {k: v for k, v in sorted(skipped.items()) if v}, "errors": errors,
    }


def run(cfg: PrepConfig) -> dict:
    """Prepare shards into `cfg.out` and return the manifest (also written, last, to manifest.json)."""
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    cfg.validate()
    files = expand_inputs(cfg.inputs)
    tokenizer = load_tokenizer(cfg.vocab, cfg.lowercase)
    out = Path(cfg.out)
    prepare_out_dir(out, cfg.overwrite)
    tokenizer.save(out / "tokenizer")
    sinks, skipped, errors, inputs = Sinks.create(out, tokenizer.vocab_size, cfg.shard_size), Counter(), [], []
    docs_left = cfg.max_docs
    for n, path in enumerate(files, start=1):
        report = process_file(path, cfg, tokenizer, sinks, skipped, docs_left)
        _progress(n, len(files), report)
        inputs.append(_describe_input(path, report))
        if report.error:
            errors.append({"file": str(path), "message": report.error})
            skipped["file_error"] += 1
        if docs_left is not None:
            docs_left -= report.documents_read
            if docs_left <= 0:
                break
    manifest = _build_manifest(cfg, tokenizer, sinks.close(), sinks.stats, inputs, skipped, errors)
    manifest |= {"created": started.isoformat(timespec="seconds"),
                 "elapsed_s": round(time.perf_counter() - t0, 3), "tool_version": _tool_version()}
    write_manifest(out, manifest)
    return manifest
