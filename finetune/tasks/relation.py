"""Sentence-level relation extraction on BioBERT's released RE data: read, encode, collate, decode.

BioBERT classifies each candidate pair from one sentence in which the two entities are anonymised
(`@GENE$` / `@DISEASE$` in GAD and EU-ADR; `BC6ENTC` / `BC6ENTG` for ChemProt's target pair, `BC6OTHER`
for other mentions), with one linear layer over BERT's pooled [CLS] output. Everything here is pure (no
model, no loop), so the tests pin down what RE pipelines get wrong: labels mapped by sort order, rows
silently dropped or mis-split, and sentences truncated without anyone noticing.

Files (tab separated, no quoting, as BioBERT's `csv.reader(delimiter="\\t", quotechar=None)` reads them):
    `sentence<TAB>label`                     GAD/EU-ADR train.tsv, no header
    `index<TAB>sentence<TAB>label` + header  GAD/EU-ADR test.tsv
    `sentence<TAB>label` + header            ChemProt train/dev/test.tsv (CRLF line ends)
A header is recognised by its column names; the columns of every other row must match it.

WordPiece and the markers: BERT's pre-tokenizer splits on punctuation, so `@GENE$` becomes `@ gene $`
(uncased) or `@ GE ##NE $` (cased) and `BC6ENTC` becomes `bc ##6 ##ent ##c` / `BC ##6 ##EN ##TC`. BioBERT
feeds the text exactly like this, so we add no tokens; the marker survives as a distinct piece sequence.
What would lose a marker is a vocabulary that maps it to [UNK] (e.g. an uncased vocab read cased) or a
truncation that cuts it off; `encode_relations` warns about the first and counts the second.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from biobert.errors import UserError
from finetune.tasks.base import pad_rows

if TYPE_CHECKING:
    from biobert.tokenizer import WordPieceTokenizer

HEADERS = (("index", "sentence", "label"), ("sentence", "label"))
NO_HEADER = ("sentence", "label")


@dataclass
class RelationExample:
    """One candidate pair: the anonymised sentence, its gold label (a string, mapped by name later)."""

    sentence: str
    label: str
    line_no: int  # 1-based line in `source`
    index: str  # the file's own `index` column where it has one, else the 0-based row number
    source: str = ""


@dataclass
class RelationFeature:
    input_ids: list[int]
    label_id: int
    example_index: int


# --------------------------------------------------------------------------------------------- reading


def read_re_tsv(
    path: str | Path, labels: Sequence[str], *, allow_empty: bool = False, empty_hint: str = ""
) -> list[RelationExample]:
    """Read one BioBERT RE file; every label must be one of `labels` (the task's fixed label set).

    Tolerates `\\r\\n` line ends and blank lines (skipped; they hold no row). An empty file is an error
    unless `allow_empty`, with `empty_hint` appended to say what to do (e.g. GAD's empty dev.tsv).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: no such file; expected a BioBERT RE file (`sentence<TAB>label` rows). "
            "Check the task's data directory."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e}); re-encode the file as UTF-8.") from None
    allowed = set(labels)
    columns: tuple[str, ...] | None = None
    examples: list[RelationExample] = []
    # Split on "\n" only: str.splitlines() would also split inside sentences on \x1c, \x85, \u2028 and co.
    for line_no, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        cells = line.split("\t")
        if columns is None:
            columns = _header(cells)
            if columns is not None:
                continue
            columns = NO_HEADER
        if len(cells) != len(columns):
            layout = "<TAB>".join(columns)
            raise UserError(
                f"{path}:{line_no}: found {len(cells)} tab-separated column(s) in {line[:80]!r}; "
                f"expected {len(columns)}, `{layout}`. A tab inside a sentence or a missing "
                "label breaks the row: fix the line."
            )
        row = dict(zip(columns, cells))
        sentence, label = row["sentence"].strip(), row["label"].strip()
        if not sentence:
            raise UserError(f"{path}:{line_no}: empty sentence; expected `sentence<TAB>label`. Fix the line.")
        if label not in allowed:
            raise UserError(
                f"{path}:{line_no}: label {label!r} is not one of the task's labels "
                f"{list(labels)}; fix the label or run the task the file belongs to."
            )
        index = row.get("index", str(len(examples))).strip()
        examples.append(RelationExample(sentence, label, line_no, index, str(path)))
    if not examples and not allow_empty:
        raise UserError(f"{path}: no rows found; expected `sentence<TAB>label` lines. {empty_hint}".rstrip())
    return examples


def _header(cells: list[str]) -> tuple[str, ...] | None:
    names = tuple(c.strip().lower() for c in cells)
    return names if names in HEADERS else None


# ------------------------------------------------------------------------------------------- encoding


def encode_relations(
    examples: Sequence[RelationExample],
    tokenizer: WordPieceTokenizer,
    label2id: dict[str, int],
    max_len: int,
    markers: Sequence[str] = (),
) -> tuple[list[RelationFeature], dict]:
    """`[CLS] sentence [SEP]`, truncated to `max_len` pieces as BioBERT does (RE is sentence-level).

    Stats count the truncated examples and, among them, those where an occurrence of an entity marker
    fell past the cut (the model then cannot see that entity). `marker_pieces` records what each marker
    became; a marker read as [UNK] is warned about (it would look like any other unknown word).
    """
    budget = max_len - 2
    if budget < 1:
        raise UserError(
            f"max_seq_length={max_len} leaves no room for the sentence after [CLS] and [SEP]; "
            "use at least 3 (BioBERT uses 128 for RE)"
        )
    marker_ids = _marker_pieces(tokenizer, markers)
    stats = {
        "level": "sentence",
        "examples": len(examples),
        "truncated": 0,
        "truncated_lost_marker": 0,
        "max_pieces": 0,
        "max_seq_length": max_len,
        "marker_pieces": {m: _piece_names(tokenizer, ids) for m, ids in marker_ids.items()},
    }
    features = []
    ids_per_example = tokenizer.encode_batch([ex.sentence for ex in examples]) if examples else []
    for i, (example, ids) in enumerate(zip(examples, ids_per_example)):
        stats["max_pieces"] = max(stats["max_pieces"], len(ids))
        if len(ids) > budget:
            stats["truncated"] += 1
            kept = ids[:budget]
            stats["truncated_lost_marker"] += any(_count(ids, m) > _count(kept, m) for m in marker_ids.values())
            ids = kept
        features.append(RelationFeature([tokenizer.cls_id, *ids, tokenizer.sep_id], label2id[example.label], i))
    if stats["truncated"] and examples:
        print(
            f"note: {examples[0].source}: {stats['truncated']} of {len(examples)} sentences are longer than "
            f"max_seq_length={max_len} and were truncated ({stats['truncated_lost_marker']} lost an entity "
            "marker); raise --max_seq_length to keep them whole",
            file=sys.stderr,
            flush=True,
        )
    return features, stats


def _marker_pieces(tokenizer: WordPieceTokenizer, markers: Sequence[str]) -> dict[str, list[int]]:
    """Each marker's pieces; a warning where the vocabulary reads (part of) a marker as [UNK]."""
    out = dict(zip(markers, tokenizer.encode_batch(list(markers)) if markers else []))
    lost = {m: _piece_names(tokenizer, ids) for m, ids in out.items() if tokenizer.unk_id in ids}
    if lost:
        case = "lower-cased" if tokenizer.lowercase else "cased"
        print(
            f"warning: {tokenizer.vocab_file} (read {case}) turns entity markers into [UNK]: {lost}; the "
            "anonymised entities are then hard to tell apart. Check the casing (tokenizer_config.json "
            "`do_lower_case`) or use the model's own vocab.txt.",
            file=sys.stderr,
            flush=True,
        )
    return out


def _piece_names(tokenizer: WordPieceTokenizer, ids: list[int]) -> list[str]:
    inverse = {i: t for t, i in tokenizer.vocab.items()}
    return [inverse[i] for i in ids]


def _count(ids: list[int], pattern: list[int]) -> int:
    n = len(pattern)
    return sum(ids[i : i + n] == pattern for i in range(len(ids) - n + 1)) if n else 0


# ------------------------------------------------------------------------------- batching and decoding


def collate_relations(features: Sequence[RelationFeature], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest sentence; `labels` is one class id per row."""
    input_ids, attention_mask = pad_rows([f.input_ids for f in features], pad_id)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "labels": torch.tensor([f.label_id for f in features], dtype=torch.long),
    }


def decode_relations(
    features: Sequence[RelationFeature], logits: Sequence[np.ndarray], n_examples: int, labels: Sequence[str]
) -> list[str]:
    """One predicted label name per example, in input order (features are one per example)."""
    if len(features) != len(logits) or len(features) != n_examples:
        raise ValueError(
            f"{len(logits)} logit rows, {len(features)} features, {n_examples} examples; "
            "RE has exactly one feature per example"
        )
    predictions: list[str | None] = [None] * n_examples
    for feature, scores in zip(features, logits):
        predictions[feature.example_index] = labels[int(np.asarray(scores).argmax())]
    return predictions  # type: ignore[return-value]


def write_predictions(path: str | Path, examples: Sequence[RelationExample], predictions: Sequence[str]) -> None:
    """`index<TAB>sentence<TAB>label<TAB>prediction` with a header, one row per input row, in input order."""
    if len(examples) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    lines = ["index\tsentence\tlabel\tprediction\n"]
    lines.extend(f"{e.index}\t{e.sentence}\t{e.label}\t{p}\n" for e, p in zip(examples, predictions))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
