"""`python -m data_prep` / `biobert-data-prep`: corpus files -> packed WordPiece examples in Arrow shards.

Subcommands: (none) or `prepare` prepares shards; `merge OUT` joins the parts of a `--part i/N` run;
`download ...` and `train-vocab ...` run data_prep/download.py and data_prep/vocab.py.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from biobert.errors import UserError, exit_on_user_error
from data_prep import prepare
from data_prep.outdir import merge
from data_prep.packing import MODES
from data_prep.pipeline import PrepConfig

EXIT_FILES_SKIPPED = 3  # finished, manifest written, but some input files were unreadable


def build_parser() -> argparse.ArgumentParser:
    d = PrepConfig(inputs=[], vocab="", out="")
    p = argparse.ArgumentParser(
        prog="python -m data_prep [prepare]", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="PubMed .xml.gz/.xml files, directories (searched recursively) or quoted glob patterns",
    )
    p.add_argument("--vocab", required=True, help="WordPiece vocab.txt or a BERT model/tokenizer directory")
    p.add_argument("--out", required=True, help="output directory (train/, heldout/, manifest.json)")
    p.add_argument("--seq_len", type=int, default=d.seq_len)
    p.add_argument(
        "--mode",
        choices=MODES,
        default=d.mode,
        help="nsp: BERT sentence pairs with next-sentence labels; mlm: single segments, no NSP",
    )
    p.add_argument("--heldout_fraction", type=float, default=d.heldout_fraction)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--short_seq_prob",
        type=float,
        default=d.short_seq_prob,
        help="probability of a shorter target length per example (default: 0.1 for nsp as BERT, 0 for mlm)",
    )
    p.add_argument(
        "--within_documents",
        action="store_true",
        help="mlm: end every example at its document's end, at a sentence boundary (default: pack "
        "the stream of documents into full seq_len examples, [SEP] between documents)",
    )
    case = p.add_mutually_exclusive_group()
    case.add_argument(
        "--lowercase",
        dest="lowercase",
        action="store_true",
        default=None,
        help="lower-case text before WordPiece (default: inferred from the vocabulary)",
    )
    case.add_argument("--cased", dest="lowercase", action="store_false")
    p.add_argument("--max_docs", type=int, default=None, help="stop after N documents (quick demos)")
    p.add_argument("--shard_size", type=int, default=d.shard_size, help="examples per shard file")
    p.add_argument(
        "--keep_title_only", action="store_true", help="also use PubMed records that have a title but no abstract"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing prepared --out directory")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes, each preparing one input file at a time (default: all cores); the output "
        "does not depend on it",
    )
    p.add_argument(
        "--part",
        metavar="I/N",
        default=None,
        help="prepare only input files k with k mod N == I (a Slurm array task: --part "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); writes manifest.part-I-of-N.json; "
        "then run `python -m data_prep merge OUT`",
    )
    p.add_argument(
        "--decontaminate",
        nargs="+",
        default=[],
        metavar="PATH",
        help="fine-tuning test sets (files or folders, see data_prep/decontaminate.py): documents "
        "that overlap them are dropped or flagged",
    )
    p.add_argument(
        "--decontaminate_action",
        choices=("drop", "flag"),
        default=d.decontaminate_action,
        help="drop: leave overlapping documents out; flag: keep them and only count them",
    )
    return p


def _summary(manifest: dict) -> str:
    c = manifest["counts"]
    where = f"{manifest['config']['out']}" + (
        f" (part {manifest['part']['index']}/{manifest['part']['count']})" if "part" in manifest else ""
    )
    lines = [
        f"wrote {where}: {c['examples']:,} examples "
        f"(train {c['train']['examples']:,}, heldout {c['heldout']['examples']:,}) from "
        f"{c['documents']:,} documents, {c['sentences']:,} sentences, {c['words']:,} words, "
        f"{c['tokens']:,} tokens; padding {c['padding_fraction']:.1%}; {manifest['elapsed_s']:.1f}s"
    ]
    if manifest.get("decontamination"):
        d = manifest["decontamination"]
        found = d.get("dropped", d.get("flagged", {}))
        counted = ", ".join(f"{k}={v:,}" for k, v in found.items()) or "none"
        lines.append(f"decontamination ({d['action']}): {counted}")
    if manifest["skipped"]:
        lines.append("skipped: " + ", ".join(f"{k}={v:,}" for k, v in manifest["skipped"].items()))
    for err in manifest["errors"]:
        lines.append(f"error: {err['message']}")
    return "\n".join(lines)


SUBCOMMANDS = {"download": "data_prep.download", "train-vocab": "data_prep.vocab"}


def _delegate(command: str, argv: list[str]):
    """Hand over to another module's `main(argv)`, imported only when asked for."""
    module_name = SUBCOMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        if e.name != module_name:
            raise
        raise UserError(
            f"`python -m data_prep {command}` needs {module_name.replace('.', '/')}.py, which is not in "
            "this checkout; update the checkout"
        ) from None
    return module.main(argv)


def _merge(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m data_prep merge",
        description="Check that every part of a --part i/N run is finished and consistent, "
        "and write OUT/manifest.json for all of them.",
    )
    p.add_argument("out", help="the --out directory shared by the parts")
    manifest = merge(p.parse_args(argv).out)
    print(_summary(manifest), flush=True)
    return manifest


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    """Run the preparation (or a subcommand) and return the manifest.

    Exit status 3 (SystemExit, also in-process) when any input file was skipped, because a partial corpus
    must not pass silently in a batch job; the manifest is still written. Called without `argv` (as a
    console script, whose wrapper passes the return value to sys.exit) it exits 0 instead of returning.
    """
    args_list = sys.argv[1:] if argv is None else list(argv)
    command = args_list[0] if args_list else ""
    if command in SUBCOMMANDS:
        result = _delegate(command, args_list[1:])
        if argv is None:  # console script: its wrapper would pass a dict to sys.exit
            raise SystemExit(result if isinstance(result, int) else 0)
        return result
    if command == "merge":
        manifest = _merge(args_list[1:])
    else:
        manifest = _prepare(args_list[1:] if command == "prepare" else args_list)
    if manifest["errors"]:
        print(
            f"{len(manifest['errors'])} input file(s) skipped; exit status {EXIT_FILES_SKIPPED}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(EXIT_FILES_SKIPPED)
    if argv is None:
        raise SystemExit(0)
    return manifest


def _prepare(argv: list[str]) -> dict:
    args = build_parser().parse_args(argv)
    cfg = PrepConfig(
        inputs=args.input,
        vocab=args.vocab,
        out=args.out,
        seq_len=args.seq_len,
        mode=args.mode,
        heldout_fraction=args.heldout_fraction,
        seed=args.seed,
        lowercase=args.lowercase,
        max_docs=args.max_docs,
        shard_size=args.shard_size,
        short_seq_prob=args.short_seq_prob,
        cross_document=not args.within_documents,
        require_abstract=not args.keep_title_only,
        overwrite=args.overwrite,
        workers=args.workers,
        part=args.part,
        decontaminate=args.decontaminate,
        decontaminate_action=args.decontaminate_action,
    )
    manifest = prepare(cfg)
    print(_summary(manifest), flush=True)
    return manifest
