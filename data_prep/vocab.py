"""`python -m data_prep train-vocab`: learn an in-domain WordPiece vocabulary from a corpus.

BioBERT kept Google's general-domain cased vocabulary so that it could start from BERT's weights; a model
trained from scratch on PubMed (as SciBERT and PubMedBERT did) does better with a vocabulary learned from
biomedical text, where "lymphadenopathy" is one or two pieces instead of six. Documents are streamed
through the same readers registry as the shard preparation, so every corpus format it reads can be used
here, and normalisation (BertNormalizer, BertPreTokenizer, accents stripped only when lower-casing)
matches `biobert.tokenizer.load_tokenizer` exactly: a word is split at training time as it will be split
when the vocabulary is used.

The special tokens take ids 0-4 ([PAD] [UNK] [CLS] [SEP] [MASK]); Google's vocabularies put [PAD] at 0
and the others at 100-103, but no code here depends on the ids (the tokenizer looks them up by name).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.trainers import WordPieceTrainer

from biobert.corpus.document import CorpusFileError
from biobert.errors import UserError, exit_on_user_error
from biobert.tokenizer import SPECIAL_TOKENS, load_tokenizer
from data_prep.readers import expand_inputs, read_documents

MANIFEST = "vocab_manifest.json"
# Characters every biomedical vocabulary should know even when the training sample lacks them (older
# MEDLINE records have no Greek letters: a vocabulary learned from them turned "±", "≥" and "TNFα" into [UNK]).
BIOMEDICAL_ALPHABET = (
    "".join(chr(c) for c in range(33, 127))  # printable ASCII: "_", "~", "@", "#" too
    + "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ"
    "±≥≤×÷°µ·•′″‰∼≈≠→←↑↓∞√∆‑–—®™©§†‡½¼¾²³¹⁰₀₁₂₃₄₅"
)


class CorpusStream:
    """Iterates the text blocks of every document in `files`, counting documents and words as it goes.

    A file that turns out to be unreadable is recorded in `errors` and skipped, as in the shard pipeline.
    """

    def __init__(self, files: list[Path], max_docs: int | None, log_every: int = 100_000) -> None:
        self.files, self.max_docs, self.log_every = files, max_docs, log_every
        self.counts: Counter = Counter()  # documents, words, and records skipped by reason
        self.errors: list[dict] = []

    def __iter__(self) -> Iterator[str]:
        for path in self.files:
            try:
                for doc in read_documents(path, self.counts):
                    if self.max_docs is not None and self.counts["documents"] >= self.max_docs:
                        return
                    self.counts["documents"] += 1
                    for text in doc.sections:
                        self.counts["words"] += text.count(" ") + 1
                        yield text
                    if self.counts["documents"] % self.log_every == 0:
                        print(
                            f"{self.counts['documents']:,} documents, {self.counts['words']:,} words",
                            file=sys.stderr,
                            flush=True,
                        )
            except CorpusFileError as e:
                self.errors.append({"file": str(path), "message": str(e)})
                print(f"skipping: {e}", file=sys.stderr, flush=True)


def build_tokenizer(lowercase: bool) -> Tokenizer:
    """An untrained WordPiece tokenizer with exactly `load_tokenizer`'s normaliser and pre-tokeniser."""
    tokenizer = Tokenizer(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = BertPreTokenizer()
    return tokenizer


def train_vocab(
    texts, vocab_size: int, lowercase: bool, min_frequency: int = 2, limit_alphabet: int = 1000
) -> list[str]:
    """The learned vocabulary in id order, special tokens first."""
    tokenizer = build_tokenizer(lowercase)
    alphabet = BIOMEDICAL_ALPHABET.lower() if lowercase else BIOMEDICAL_ALPHABET
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        limit_alphabet=limit_alphabet,
        initial_alphabet=sorted(set(alphabet)),
        continuing_subword_prefix="##",
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return _complete_alphabet([token for token, _ in vocab], vocab_size)


def _complete_alphabet(tokens: list[str], vocab_size: int) -> list[str]:
    """Give every single character both its word-initial form "c" and its continuation form "##c".

    The trainer only adds the forms it saw, so "α" may exist without "##α", and then "TNFα" is [UNK]
    although each of its characters is known; Google's vocabularies have both forms of every character.
    Room is made by dropping the last-learned (least frequent) merged pieces, so the size stays as asked.
    """
    present = set(tokens)
    chars = {t.removeprefix("##") for t in tokens if len(t.removeprefix("##")) == 1 and t not in SPECIAL_TOKENS}
    missing = sorted({c for c in chars if c not in present} | {"##" + c for c in chars if "##" + c not in present})
    excess = len(tokens) + len(missing) - vocab_size
    if excess > 0:
        removable = [i for i, t in enumerate(tokens) if len(t.removeprefix("##")) > 1 and t not in SPECIAL_TOKENS]
        drop = set(removable[-excess:])
        tokens = [t for i, t in enumerate(tokens) if i not in drop]
    return tokens + missing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep train-vocab", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="corpus files, directories (searched recursively) or quoted glob patterns",
    )
    p.add_argument("--out", required=True, help="output directory: vocab.txt, tokenizer_config.json, ...")
    p.add_argument("--vocab_size", type=int, default=30522)
    case = p.add_mutually_exclusive_group(required=True)
    case.add_argument("--lowercase", dest="lowercase", action="store_true", help="uncased vocabulary")
    case.add_argument("--cased", dest="lowercase", action="store_false", help="cased vocabulary (BioBERT's)")
    p.add_argument("--min_frequency", type=int, default=2, help="ignore pieces seen fewer times")
    p.add_argument("--limit_alphabet", type=int, default=1000, help="most frequent characters kept")
    p.add_argument("--max_docs", type=int, default=None, help="stop after N documents")
    p.add_argument("--overwrite", action="store_true", help="replace a vocabulary already in --out")
    return p


def _validate(args: argparse.Namespace, out: Path) -> None:
    checks = [
        (
            args.vocab_size > len(SPECIAL_TOKENS) + 1,
            f"--vocab_size must be > {len(SPECIAL_TOKENS) + 1}, got {args.vocab_size}",
        ),
        (args.min_frequency >= 1, f"--min_frequency must be >= 1, got {args.min_frequency}"),
        (args.max_docs is None or args.max_docs >= 1, f"--max_docs must be >= 1, got {args.max_docs}"),
        (
            args.overwrite or not (out / "vocab.txt").exists(),
            f"{out / 'vocab.txt'} already exists; pass --overwrite to replace it or choose another --out",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    """Train, write the tokenizer directory and `vocab_manifest.json`; return the manifest."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    _validate(args, out)
    files = expand_inputs(args.input)
    stream = CorpusStream(files, args.max_docs)
    start = time.perf_counter()
    tokens = train_vocab(stream, args.vocab_size, args.lowercase, args.min_frequency, args.limit_alphabet)
    elapsed = time.perf_counter() - start
    if stream.counts["documents"] == 0:
        raise UserError(
            f"no documents read from {', '.join(args.input)}; check --input "
            f"(skipped: {dict(stream.counts) or 'nothing'}, errors: {len(stream.errors)})"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    tokenizer = load_tokenizer(out / "vocab.txt", lowercase=args.lowercase)
    tokenizer.save(out)  # rewrites vocab.txt identically, adds tokenizer_config.json (do_lower_case) + tokenizer.json
    counts = {k: v for k, v in stream.counts.items() if k not in ("documents", "words")}
    manifest = {
        "vocab_size": tokenizer.vocab_size,
        "requested_vocab_size": args.vocab_size,
        "lowercase": args.lowercase,
        "vocab_hash": tokenizer.vocab_hash,
        "min_frequency": args.min_frequency,
        "limit_alphabet": args.limit_alphabet,
        "max_docs": args.max_docs,
        "inputs": [str(f) for f in files],
        "documents": stream.counts["documents"],
        "words": stream.counts["words"],
        "skipped": counts,
        "errors": stream.errors,
        "elapsed_s": round(elapsed, 2),
        "words_per_s": round(stream.counts["words"] / max(elapsed, 1e-9)),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    print(
        f"wrote {out}/vocab.txt: {tokenizer.vocab_size:,} pieces ({'uncased' if args.lowercase else 'cased'}) "
        f"from {manifest['documents']:,} documents, {manifest['words']:,} words in {elapsed:.1f}s "
        f"({manifest['words_per_s']:,} words/s)",
        flush=True,
    )
    for err in stream.errors:
        print(f"error: {err['message']}", file=sys.stderr, flush=True)
    return manifest


if __name__ == "__main__":
    main()
