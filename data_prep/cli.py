"""`python -m data_prep` / `biobert-data-prep`: PubMed XML -> packed WordPiece examples in Arrow shards."""

from __future__ import annotations

import argparse
import sys

from biobert.errors import exit_on_user_error
from data_prep.packing import MODES
from data_prep.pipeline import PrepConfig, run

EXIT_FILES_SKIPPED = 3  # finished, manifest written, but some input files were unreadable


def build_parser() -> argparse.ArgumentParser:
    d = PrepConfig(inputs=[], vocab="", out="")
    p = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="PubMed .xml.gz/.xml files, directories (searched recursively) or quoted glob patterns")
    p.add_argument("--vocab", required=True, help="WordPiece vocab.txt or a BERT model/tokenizer directory")
    p.add_argument("--out", required=True, help="output directory (train/, heldout/, manifest.json)")
    p.add_argument("--seq_len", type=int, default=d.seq_len)
    p.add_argument("--mode", choices=MODES, default=d.mode,
                   help="nsp: BERT sentence pairs with next-sentence labels; mlm: single segments, no NSP")
    p.add_argument("--heldout_fraction", type=float, default=d.heldout_fraction)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--short_seq_prob", type=float, default=d.short_seq_prob)
    case = p.add_mutually_exclusive_group()
    case.add_argument("--lowercase", dest="lowercase", action="store_true", default=None,
                      help="lower-case text before WordPiece (default: inferred from the vocabulary)")
    case.add_argument("--cased", dest="lowercase", action="store_false")
    p.add_argument("--max_docs", type=int, default=None, help="stop after N documents (quick demos)")
    p.add_argument("--shard_size", type=int, default=d.shard_size, help="examples per shard file")
    p.add_argument("--keep_title_only", action="store_true",
                   help="also use PubMed records that have a title but no abstract")
    p.add_argument("--overwrite", action="store_true", help="replace an existing prepared --out directory")
    return p


def _summary(manifest: dict) -> str:
    c = manifest["counts"]
    lines = [f"wrote {manifest['config']['out']}: {c['examples']:,} examples "
             f"(train {c['train']['examples']:,}, heldout {c['heldout']['examples']:,}) from "
             f"{c['documents']:,} documents, {c['sentences']:,} sentences, {c['words']:,} words, "
             f"{c['tokens']:,} tokens; padding {c['padding_fraction']:.1%}; {manifest['elapsed_s']:.1f}s"]
    if manifest["skipped"]:
        lines.append("skipped: " + ", ".join(f"{k}={v:,}" for k, v in manifest["skipped"].items()))
    for err in manifest["errors"]:
        lines.append(f"error: {err['message']}")
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    """Run the preparation and return the manifest.

    Exit status 3 (SystemExit, also in-process) when any input file was skipped, because a partial corpus
    must not pass silently in a batch job; the manifest is still written. Called without `argv` (as a
    console script, whose wrapper passes the return value to sys.exit) it exits 0 instead of returning.
    """
    args = build_parser().parse_args(argv)
    cfg = PrepConfig(inputs=args.input, vocab=args.vocab, out=args.out, seq_len=args.seq_len, mode=args.mode,
                     heldout_fraction=args.heldout_fraction, seed=args.seed, lowercase=args.lowercase,
                     max_docs=args.max_docs, shard_size=args.shard_size, short_seq_prob=args.short_seq_prob,
                     require_abstract=not args.keep_title_only, overwrite=args.overwrite)
    manifest = run(cfg)
    print(_summary(manifest), flush=True)
    if manifest["errors"]:
        print(f"{len(manifest['errors'])} input file(s) skipped; exit status {EXIT_FILES_SKIPPED}",
              file=sys.stderr, flush=True)
        raise SystemExit(EXIT_FILES_SKIPPED)
    if argv is None:
        raise SystemExit(0)
    return manifest
