"""The per-file work: input file -> documents -> sentences -> token ids -> packed examples -> shards.

`process_file` is the unit of work and depends only on its arguments (no globals), so the driver in
parallel.py runs one per input file in worker processes, each file into its own shard folder, and the
output is the same whatever the number of workers. The driver owns the output directory and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from biobert.corpus.document import CorpusFileError, Document
from biobert.corpus.sentences import split_sentences
from biobert.errors import UserError
from biobert.tokenizer import WordPieceTokenizer
from data_prep.fast_wordpiece import SentenceEncoder
from data_prep.packing import MODES, NSP, Example, Packer
from data_prep.readers import read_documents
from data_prep.shards import SPLITS, ShardWriter, is_heldout

# Options that name machine-local paths or run behaviour, not the content of the output: kept in the
# manifest's `config` but left out of `config_hash` (inputs, vocabulary and decontamination lists are
# identified by their hashes).
_NOT_HASHED = ("inputs", "vocab", "out", "overwrite", "workers", "part", "decontaminate")
DECONTAMINATE_ACTIONS = ("drop", "flag")


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
    short_seq_prob: float | None = None  # None: 0.1 for NSP (BERT), 0.0 for MLM (RoBERTa: full-length)
    cross_document: bool = True  # MLM: pack the stream of documents into full examples (packing.py)
    require_abstract: bool = True  # title-only PubMed records give near-empty examples
    nsp_buffer_docs: int = 1000  # recent documents that random-next segments are drawn from
    encode_batch_sentences: int = 1000
    overwrite: bool = False
    workers: int = 1  # processes, one input file at a time each
    part: str | None = None  # "i/N": this Slurm array task's slice of the input files
    decontaminate: list[str] = field(default_factory=list)  # fine-tuning test sets (decontaminate.py)
    decontaminate_action: str = "drop"  # drop: leave such documents out; flag: keep them, only count

    @property
    def effective_short_seq_prob(self) -> float:
        if self.short_seq_prob is not None:
            return self.short_seq_prob
        return 0.1 if self.mode == NSP else 0.0

    def validate(self) -> None:
        checks = [
            (self.mode in MODES, f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}"),
            (8 <= self.seq_len <= 32767, f"--seq_len must be in [8, 32767], got {self.seq_len}"),
            (0.0 <= self.heldout_fraction < 1.0, f"--heldout_fraction must be in [0, 1), got {self.heldout_fraction}"),
            (
                0.0 <= self.effective_short_seq_prob <= 1.0,
                f"--short_seq_prob must be in [0, 1], got {self.short_seq_prob}",
            ),
            (self.shard_size >= 1, f"--shard_size must be >= 1, got {self.shard_size}"),
            (self.max_docs is None or self.max_docs >= 1, f"--max_docs must be >= 1, got {self.max_docs}"),
            (self.nsp_buffer_docs >= 1, f"nsp_buffer_docs must be >= 1, got {self.nsp_buffer_docs}"),
            (self.workers >= 1, f"--workers must be >= 1, got {self.workers}"),
            (
                self.decontaminate_action in DECONTAMINATE_ACTIONS,
                f"--decontaminate_action must be one of {', '.join(DECONTAMINATE_ACTIONS)}, "
                f"got {self.decontaminate_action!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def hash(self, extra: dict | None = None) -> str:
        """What decides the output's content; `extra` adds facts not in the config (list file hashes)."""
        content = {k: v for k, v in asdict(self).items() if k not in _NOT_HASHED}
        content["short_seq_prob"] = self.effective_short_seq_prob
        if self.mode == NSP:  # NSP output does not depend on it: earlier NSP preparations keep their hash
            del content["cross_document"]
        if extra:
            content["extra"] = extra
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
    def create(cls, out_dir: Path, vocab_size: int, shard_size: int, unit: str) -> Sinks:
        """Shards of input `unit` go to out_dir/<split>/<unit>/; manifest paths stay relative to out_dir."""
        return cls({s: ShardWriter(out_dir / s / unit, vocab_size, shard_size, root=out_dir) for s in SPLITS})

    def write(self, split: str, examples: list[Example]) -> None:
        stats = self.stats[split]
        stats.example_tokens += self.writers[split].write_examples(examples)
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
    error: str | None = None  # the first file-level failure
    file_errors: list[dict] = field(default_factory=list)  # all of them (a unit may group many files)

    def fail(self, path: Path, message: str) -> None:
        self.file_errors.append({"file": str(path), "message": message})
        self.error = self.error or message


def unreadable(path: Path, err: OSError) -> str:
    """The message for an input file the operating system will not let us read (permissions, I/O error)."""
    return (
        f"{path}: cannot read the file ({type(err).__name__}: {err.strerror or err}); make it readable "
        f"(e.g. `chmod a+r {path}`, or check the file system) or remove it from --input, then rerun with "
        "--overwrite"
    )


def _stream_seed(seed: int, name: str, split: str) -> int:
    # One RNG per (unit, split): output does not depend on which worker or in which order units run.
    return int.from_bytes(hashlib.blake2b(f"{seed}:{name}:{split}".encode(), digest_size=8).digest(), "big")


def _pack_pending(
    pending: list[tuple[str, list[str]]],
    encoder: SentenceEncoder,
    packers: dict[str, Packer],
    sinks: Sinks,
    skipped: Counter,
) -> int:
    """Tokenise the sentences of all pending documents in one batch, then pack document by document.

    Returns the documents' words (whitespace-separated, as `len(section.split())` would count them: sentence
    splitting only cuts at whitespace), counted by the tokenising pass that splits at spaces anyway.
    """
    flat = [s for _, sentences in pending for s in sentences]
    ids, words = encoder.encode(flat)
    pos = 0
    for split, sentences in pending:
        end = pos + len(sentences)
        doc_ids = ids[pos:end]
        examples = packers[split].pack(doc_ids)
        if examples is None:
            skipped["too_short"] += 1
            pos = end
            continue
        if examples:
            sinks.write(split, examples)
        stats = sinks.stats[split]
        stats.documents += 1
        stats.sentences += len(sentences)
        stats.words += sum(words[pos:end])
        stats.tokens += sum(map(len, doc_ids))
        pos = end
    pending.clear()
    return sum(words)


# Decides, per document, whether it is used; it counts what it drops (superseded, deleted, decontaminated).
DocGate = Callable[[Document], bool]


def _sentences(doc: Document) -> list[str]:
    # Plain-text readers deliver one sentence per section (meta["presplit"]): splitting again would cut
    # at their abbreviations differently from the corpus' own boundaries.
    if doc.meta.get("presplit"):
        return [s for s in doc.sections if s and not s.isspace()]
    return [s for section in doc.sections for s in split_sentences(section)]


def _documents(paths: list[Path], cfg: PrepConfig, skipped: Counter, report: FileReport) -> Iterator[Document]:
    """The documents of every file in turn; a file that fails is recorded and the next one read.

    An OSError here comes from reading the input (the pipeline's own writes happen in the caller, outside
    this generator): one unreadable file is one file error, as a corrupt one is, not the end of the run.
    """
    for path in paths:
        try:
            yield from read_documents(path, skipped, require_abstract=cfg.require_abstract)
        except CorpusFileError as e:
            report.fail(path, str(e))
        except OSError as e:
            report.fail(path, unreadable(path, e))


def process_file(
    paths: Path | Sequence[Path],
    cfg: PrepConfig,
    tokenizer: WordPieceTokenizer,
    sinks: Sinks,
    skipped: Counter,
    max_docs: int | None = None,
    gate: DocGate | None = None,
    encoder: SentenceEncoder | None = None,
    stream: str | None = None,
) -> FileReport:
    """Read, split, tokenise and pack one input file, or a group of them in order, into `sinks`.

    A file-level failure (CorpusFileError) is recorded in the report, not raised: documents read before
    the failure are complete records and are kept, later files of a group are still read; the caller
    records the errors and goes on. `documents_read` counts the documents the gate let through (what
    --max_docs limits). The packers' random streams are seeded from `stream` (default: the first file's
    name), so that they do not depend on which worker or in which order units run. `encoder` (one per
    worker, its cache stays warm across files) defaults to a new one for `tokenizer`.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    report, start = FileReport(str(paths[0])), time.perf_counter()
    encoder = encoder or SentenceEncoder(tokenizer)
    stream = stream or paths[0].name
    packers = {
        split: Packer(
            seq_len=cfg.seq_len,
            mode=cfg.mode,
            cls_id=tokenizer.cls_id,
            sep_id=tokenizer.sep_id,
            seed=_stream_seed(cfg.seed, stream, split),
            short_seq_prob=cfg.effective_short_seq_prob,
            buffer_docs=cfg.nsp_buffer_docs,
            cross_document=cfg.cross_document,
        )
        for split in SPLITS
    }
    pending: list[tuple[str, list[str]]] = []  # (split, sentences) of documents not yet packed
    n_sentences = 0
    docs = _documents(paths, cfg, skipped, report)
    for doc in docs:
        if gate is not None and not gate(doc):
            continue
        sentences = _sentences(doc)
        split = "heldout" if is_heldout(doc.doc_id, cfg.heldout_fraction) else "train"
        pending.append((split, sentences))
        n_sentences += len(sentences)
        report.documents_read += 1
        if n_sentences >= cfg.encode_batch_sentences:
            report.words += _pack_pending(pending, encoder, packers, sinks, skipped)
            n_sentences = 0
        if max_docs is not None and report.documents_read >= max_docs:
            report.stopped_early = True
            docs.close()
            break
    report.words += _pack_pending(pending, encoder, packers, sinks, skipped)
    for split, packer in packers.items():
        last = packer.flush()
        if last:
            sinks.write(split, last)
        sinks.stats[split].nsp_fallbacks += packer.no_random_doc
    report.seconds = time.perf_counter() - start
    return report
