"""Embeddings of your sentences from any BERT directory (BioBERT's extract_features), memory-mappable.

    python finetune/embed.py --model runs/ncbi/hf --input sentences.txt --out emb/           # a sentence per line
    python finetune/embed.py --model export/ --input pairs.tsv --column text --header --out emb/
    python finetune/embed.py --model export/ --input pubmed26n0001.xml.gz --pooling none --layers -4,-3,-2,-1 \\
        --out emb/

Model: any Hugging Face BERT directory (a pre-training export, a fine-tuned run's `run_dir/hf`, BERT or
BioBERT); only the encoder is loaded, heads are ignored. Plain torch (no DeepSpeed), SDPA attention.

Input (`.gz` and `-` for stdin as in predict.py): `lines`, one sentence per non-blank line, id `line:N`;
`tsv`, the column `--column` (0-based, or a name from the first line with `--header`) of every non-blank
row, id `line:N`; `pubmed` (`.xml`/`.xml.gz`), each record's title and abstract, each split into sentences,
id `pmid:N:sent:K` (K from 1), with the sentence's character span in the record's text (title + " " + abstract).
`--format auto` picks pubmed for XML, tsv when `--column` is given or the name ends in .tsv[.gz], else lines.

Output in `--out` (a new or empty directory):
  vectors.npy  float32/float16 [rows, dim]; `numpy.load(path, mmap_mode="r")` maps it without reading it;
  index.arrow  Arrow IPC file, one row per vector: pooled modes `row, id, text, start, end, truncated`;
               `--pooling none` `row, sentence_id, token, start, end, sentence_start` (the piece's span
               in the sentence, and the sentence's start in its document);
  meta.json    model, pooling, layers, dim, dtype, counts and timing; written last, so it marks a complete
               output.
Pooling and memory bounds: finetune/embedding.py. dim = hidden size x number of layers for
`--layer_combine concat`, the hidden size for `mean`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biobert.errors import UserError, exit_on_user_error  # noqa: E402
from finetune.embedding import POOLINGS, Embedder, EmbedSettings, parse_layers  # noqa: E402
from finetune.inference import load_encoder  # noqa: E402
from finetune.inputs import read_sentences, resolve_format  # noqa: E402

OUTPUTS = ("vectors.npy", "index.arrow", "meta.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face BERT directory (config.json, weights, vocab.txt)")
    p.add_argument("--input", required=True, help="text file (a sentence per line), TSV, PubMed XML, or -")
    p.add_argument("--out", required=True, help="output directory (new or empty)")
    p.add_argument("--format", choices=("auto", "lines", "tsv", "pubmed"), default="auto")
    p.add_argument("--column", default=None, help="TSV column: 0-based number, or a name with --header")
    p.add_argument("--header", action="store_true", help="the TSV's first line names the columns")
    p.add_argument("--pooling", choices=POOLINGS, default="mean")
    p.add_argument("--layers", default="-1", help="hidden-state indices, e.g. -1 or -4,-3,-2,-1 (0: embeddings)")
    p.add_argument("--layer_combine", choices=("concat", "mean"), default="concat")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_seq_length", type=int, default=128, help="pieces with [CLS] and [SEP]; longer: truncated")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv[:-1]):  # argparse would read "-4,-3" as an option, not as a value
        if arg == "--layers":
            argv[i : i + 2] = [f"--layers={argv[i + 1]}"]
            break
    args = p.parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch_size {args.batch_size}: must be at least 1")
    return args


def input_format(args: argparse.Namespace) -> str:
    fmt = resolve_format(args.input, "text" if args.format in ("lines", "tsv") else args.format)
    if fmt == "text":
        tsv = args.column is not None or args.input.endswith((".tsv", ".tsv.gz"))
        fmt = args.format if args.format != "auto" else "tsv" if tsv else "lines"
    if (args.column is not None or args.header) and fmt != "tsv":
        flag = "--header" if args.column is None else f"--column {args.column}"
        raise UserError(f"{flag}: only a TSV input has columns, and {args.input} is read as {fmt}")
    if fmt == "tsv" and args.column is None:
        raise UserError(f"{args.input}: a TSV input needs --column N (0-based) or --column NAME with --header")
    return fmt


def prepare_out(out: Path) -> None:
    """A new or empty directory: an earlier output is never mixed with or silently replaced by this one."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty directory; pass a new --out or remove it")
    out.mkdir(parents=True, exist_ok=True)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    fmt = input_format(args)
    model, tokenizer = load_encoder(args.model, args.device, args.dtype)
    limit = model.config.max_position_embeddings
    if not 3 <= args.max_seq_length <= limit:
        raise UserError(f"--max_seq_length {args.max_seq_length}: must be between 3 and the model's {limit}")
    names = ("pooling", "layer_combine", "batch_size", "max_seq_length", "dtype")
    layers = parse_layers(args.layers, model.config.num_hidden_layers)
    settings = EmbedSettings(layers=layers, **{k: getattr(args, k) for k in names})
    out = Path(args.out)
    prepare_out(out)
    meta = {"model": args.model, "input": args.input, "format": fmt, **settings.describe(model.config.hidden_size)}
    meta.update(lowercase=tokenizer.lowercase, vocab_hash=tokenizer.vocab_hash)
    counts: Counter = Counter()  # reader skips
    embedder = Embedder(model, tokenizer, settings, out, meta)
    try:
        embedder.run(read_sentences(args.input, fmt, counts, args.column, args.header))
        embedder.close()
    except BaseException:
        embedder.close()
        for name in OUTPUTS:  # a half-written output is removed, so that rerunning needs no clean-up
            (out / name).unlink(missing_ok=True)
        raise
    skipped = {k: v for k, v in counts.items() if v}
    meta["counts"] = {
        "sentences": embedder.sentences,
        "vectors": embedder.vectors.rows,
        "truncated": embedder.truncated,
        "skipped": skipped,
    }
    meta.update(seconds=round(time.time() - t0, 2), **embedder.timing())
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    c = meta["counts"]
    note = f"; skipped {skipped}" if skipped else ""
    print(
        f"embed: {c['sentences']:,} sentences -> {c['vectors']:,} vectors of dim {meta['dim']} in {out}; "
        f"{c['truncated']:,} truncated to {settings.max_seq_length} pieces{note}",
        file=sys.stderr,
    )
    return meta


if __name__ == "__main__":
    main()
