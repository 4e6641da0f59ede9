"""Named-entity recognition on BioBERT's released NER data: read, label-map, encode, collate, decode.

Every function here is pure (no model, no training loop), so the same code serves training, evaluation
and prediction, and the tests can pin down the one thing NER pipelines most often get wrong: words that
are lost. BERT sees at most `max_len` WordPieces; a long sentence is therefore split into overlapping
windows, and every word is labelled (during training) and predicted (during evaluation) by exactly one of
them. Nothing is truncated and nothing is silently scored as "O".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from biobert.errors import UserError

if TYPE_CHECKING:
    from biobert.tokenizer import WordPieceTokenizer

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's default ignore_index
OUTSIDE = "O"
# Chunk prefixes in the order they are listed within a type: IOB2 first, IOBES's extra tags after.
PREFIX_ORDER = ("B", "I", "E", "S")
_LABEL_RE = re.compile(r"^(?P<prefix>[BIES])(?:-(?P<type>.+))?$")


@dataclass
class Sentence:
    """One sentence as read from the file; `labels` stay strings so any label map can be applied later."""

    words: list[str]
    labels: list[str]
    line_no: int  # 1-based line of the first word, so errors and predictions point back into the file
    source: str = ""  # the file it came from; names the file in encoding errors


# --------------------------------------------------------------------------------------------- reading


def read_ner_tsv(path: str | Path, label_set: set[str] | None = None, *, allow_empty: bool = False) -> list[Sentence]:
    """Read a BioBERT NER file: `word<TAB>label` per line, a blank line between sentences.

    Tolerates `\\r\\n` line ends, trailing spaces/tabs, extra blank lines and a missing final blank line;
    anything else that is not exactly two columns is an error naming `path:line`, because a file in
    another layout (4-column CoNLL, space separated) would otherwise be read as garbage labels. Without
    `label_set`, labels must still look like IOB/IOBES tags ("O", "B", "I-Disease", ...) since the
    metric derives entity spans from those prefixes.
    """
    path = Path(path)
    text = _read_text(path)
    sentences: list[Sentence] = []
    words: list[str] = []
    labels: list[str] = []
    first_line = 0
    # Split on "\n" only: str.splitlines() would also split inside words on \x1c, \x85, \u2028 and co.
    for line_no, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip(" \t\r")
        if not line.strip(" \t"):
            if words:
                sentences.append(Sentence(words, labels, first_line, str(path)))
                words, labels = [], []
            continue
        word, label = _parse_line(path, line_no, line, label_set)
        if not words:
            first_line = line_no
        words.append(word)
        labels.append(label)
    if words:
        sentences.append(Sentence(words, labels, first_line, str(path)))
    if not sentences and not allow_empty:
        raise UserError(
            f"{path}: no sentences found; expected `word<TAB>label` lines with a blank line "
            "between sentences. Check that the path points at the right split."
        )
    return sentences


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(
            f"{path}: no such file; expected a BioBERT NER file (train.tsv, devel.tsv or "
            "test.tsv with `word<TAB>label` lines). Check the task's data directory."
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e}); re-encode the file as UTF-8.") from None


def _parse_line(path: Path, line_no: int, line: str, label_set: set[str] | None) -> tuple[str, str]:
    columns = line.split("\t")
    if len(columns) != 2:
        hint = " (the line has no tab; is the file space separated?)" if len(columns) == 1 else ""
        raise UserError(
            f"{path}:{line_no}: found {len(columns)} tab-separated column(s){hint} in "
            f"{line[:80]!r}; expected exactly 2, `word<TAB>label`. Convert the file to "
            "BioBERT's two-column format (e.g. keep only the first and last column of CoNLL)."
        )
    word, label = columns[0], columns[1].strip(" ")
    if not word.strip():
        raise UserError(
            f"{path}:{line_no}: empty word before the tab in {line[:80]!r}; expected "
            "`word<TAB>label`. Remove the line or restore the word."
        )
    if label_set is not None and label not in label_set:
        raise UserError(
            f"{path}:{line_no}: label {label!r} is not one of the allowed labels "
            f"{sorted(label_set)}; fix the label in the file or add it to the task's labels."
        )
    if label_set is None and not _is_tag(label):
        raise UserError(
            f"{path}:{line_no}: label {label!r} is not an IOB/IOBES tag; expected 'O' or "
            "B/I/E/S optionally followed by '-Type' (e.g. 'B', 'I-Disease'). Fix the label."
        )
    return word, label


def _is_tag(label: str) -> bool:
    return label == OUTSIDE or _LABEL_RE.match(label) is not None


# ------------------------------------------------------------------------------------------ label map


def build_label_map(labels_seen: Iterable[str]) -> list[str]:
    """The label list (index = class id), ordered by NAME only so it never depends on data order.

    Order: "O" first (always present), then entity types sorted by name (the untyped "" of plain B/I/O
    corpora sorts first), and within a type the prefixes B, I (then E, S for IOBES). Pairs are completed:
    seeing only "I-Chemical" in one split still yields both "B-Chemical" and "I-Chemical", so the map is
    identical whichever split it is built from. If any E-/S- tag is seen, every type gets B, I, E and S.
    """
    types: set[str] = set()
    iobes = False
    for label in labels_seen:
        if label == OUTSIDE:
            continue
        match = _LABEL_RE.match(label)
        if match is None:
            raise ValueError(f"label {label!r} is not an IOB/IOBES tag ('O', 'B', 'I-Disease', ...)")
        types.add(match["type"] or "")
        iobes = iobes or match["prefix"] in ("E", "S")
    prefixes = PREFIX_ORDER if iobes else PREFIX_ORDER[:2]
    return [OUTSIDE] + [f"{p}-{t}" if t else p for t in sorted(types) for p in prefixes]


def label_list(*sentence_lists: Iterable[Sentence]) -> list[str]:
    """`build_label_map` over every label of every given split (pass train, devel and test together)."""
    return build_label_map(label for sentences in sentence_lists for s in sentences for label in s.labels)


# ------------------------------------------------------------------------------------------- encoding


@dataclass
class Feature:
    """One model input: a window of one sentence.

    `word_index[p]` is the sentence word whose label position `p` carries (its first WordPiece, in the
    window that owns the word), else -1; `label_ids` is -100 exactly where `word_index` is -1.
    """

    input_ids: list[int]
    label_ids: list[int]
    sentence_index: int
    word_index: list[int]
    window_index: int = 0  # position of this window within its sentence
    word_span: tuple[int, int] = (0, 0)  # [first, last) sentence words whose pieces are in the window
    owned: list[int] = field(default_factory=list)  # sentence words this window labels and predicts


@dataclass
class _Window:
    first_word: int
    end_word: int  # exclusive
    start_piece: int
    end_piece: int  # exclusive


def encode_ner(
    sentences: Sequence[Sentence],
    tokenizer: WordPieceTokenizer,
    label2id: Mapping[str, int],
    max_len: int = 128,
    stride: int = 32,
) -> tuple[list[Feature], dict]:
    """First-sub-token labelling with overlapping windows for sentences longer than `max_len`.

    A window holds [CLS] + at most `max_len - 2` pieces + [SEP], always whole words, and the next window
    starts at the last word boundary within `max_len - 2 - stride` pieces, so neighbours overlap by at
    least `stride` pieces (less only where a single word is longer than that step).

    Each word is owned by exactly one window: the one where it has the most context, i.e. the largest
    distance in pieces to the nearer window edge that cuts the sentence (a window edge at the sentence's
    own start or end costs no context) -- the "max context" rule of BERT's run_squad.py. Ties go to the
    earlier window. Words the tokenizer reduces to nothing (e.g. control characters) become one [UNK] so
    that they still get a prediction; a single word longer than the window keeps its first
    `max_len - 2` pieces (its label sits on the first one). Stats count both cases.
    """
    budget = max_len - 2
    if budget < 1:
        raise UserError(
            f"max_len={max_len} leaves no room for word pieces after [CLS] and [SEP]; use a "
            "max_len of at least 3 (BioBERT uses 128 or 384)"
        )
    if not 0 <= stride < budget:
        raise UserError(
            f"stride={stride} must be >= 0 and below max_len - 2 = {budget} so windows move "
            "forward; lower the stride or raise max_len"
        )
    features: list[Feature] = []
    stats = {
        "sentences": len(sentences),
        "windows": 0,
        "split_sentences": 0,
        "words": 0,
        "max_pieces": 0,
        "unk_words": 0,
        "cut_words": 0,
    }
    for s_idx, sentence in enumerate(sentences):
        pieces = _word_pieces(sentence, tokenizer, budget, stats)
        label_ids = [_label_id(sentence, w, label2id) for w in range(len(sentence.words))]
        windows = _plan_windows([len(p) for p in pieces], budget, budget - stride)
        owner = _assign_owners(windows, [len(p) for p in pieces])
        for k, window in enumerate(windows):
            features.append(_build_feature(tokenizer, pieces, label_ids, owner, window, s_idx, k))
        stats["windows"] += len(windows)
        stats["split_sentences"] += len(windows) > 1
        stats["words"] += len(sentence.words)
        stats["max_pieces"] = max(stats["max_pieces"], sum(len(p) for p in pieces))
    return features, stats


def _word_pieces(sentence: Sentence, tokenizer, budget: int, stats: dict) -> list[list[int]]:
    """WordPiece ids grouped per word, never empty, never longer than the window."""
    encoding = tokenizer.encode_words(sentence.words)
    pieces: list[list[int]] = [[] for _ in sentence.words]
    for token_id, word in zip(encoding.ids, encoding.word_ids):
        if word is not None:
            pieces[word].append(token_id)
    for word_pieces in pieces:
        if not word_pieces:
            word_pieces.append(tokenizer.unk_id)
            stats["unk_words"] += 1
        elif len(word_pieces) > budget:
            del word_pieces[budget:]
            stats["cut_words"] += 1
    return pieces


def _label_id(sentence: Sentence, word: int, label2id: Mapping[str, int]) -> int:
    label = sentence.labels[word]
    if label not in label2id:
        where = (
            f"{sentence.source}:{sentence.line_no + word}"
            if sentence.source
            else f"sentence starting at line {sentence.line_no}, word {word}"
        )
        raise UserError(
            f"{where}: label {label!r} is not in the model's label map {list(label2id)}; "
            "build the label map from all splits or fix the label in the file."
        )
    return label2id[label]


def _plan_windows(lengths: list[int], budget: int, step: int) -> list[_Window]:
    """Cover the words with windows of whole words that start on word boundaries."""
    starts = np.concatenate([[0], np.cumsum(lengths)]).tolist()  # starts[w] = first piece of word w
    n_words = len(lengths)
    windows: list[_Window] = []
    first = 0
    while first < n_words:
        end = first
        while end < n_words and starts[end + 1] - starts[first] <= budget:
            end += 1
        windows.append(_Window(first, end, starts[first], starts[end]))
        if end == n_words:
            break
        # The last word starting at or before `step` pieces in keeps >= stride pieces of overlap;
        # clamp so that the windows always move forward and never skip a word.
        target = starts[first] + step
        nxt = max(w for w in range(first, end + 1) if starts[w] <= target)
        first = min(max(nxt, first + 1), end)
    return windows


def _assign_owners(windows: list[_Window], lengths: list[int]) -> list[int]:
    """For each word, the index of the window that labels and predicts it (see `encode_ner`)."""
    n_words = len(lengths)
    total = sum(lengths)
    word_start = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    best_score = [-1.0] * n_words
    owner = [-1] * n_words
    for k, window in enumerate(windows):
        for w in range(window.first_word, window.end_word):
            left = word_start[w] - window.start_piece if window.start_piece > 0 else float("inf")
            right = window.end_piece - (word_start[w] + lengths[w]) if window.end_piece < total else float("inf")
            score = min(left, right)
            if score > best_score[w]:
                best_score[w], owner[w] = score, k
    return owner


def _build_feature(
    tokenizer, pieces: list[list[int]], label_ids: list[int], owner: list[int], window: _Window, s_idx: int, k: int
) -> Feature:
    input_ids = [tokenizer.cls_id]
    labels = [IGNORE_INDEX]
    word_index = [-1]
    owned = []
    for w in range(window.first_word, window.end_word):
        is_owner = owner[w] == k
        input_ids.extend(pieces[w])
        labels.extend([label_ids[w] if is_owner else IGNORE_INDEX] + [IGNORE_INDEX] * (len(pieces[w]) - 1))
        word_index.extend([w if is_owner else -1] + [-1] * (len(pieces[w]) - 1))
        if is_owner:
            owned.append(w)
    input_ids.append(tokenizer.sep_id)
    labels.append(IGNORE_INDEX)
    word_index.append(-1)
    return Feature(input_ids, labels, s_idx, word_index, k, (window.first_word, window.end_word), owned)


# ------------------------------------------------------------------------------- batching and decoding


def collate_ner(features: Sequence[Feature], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest window (not to max_len: most biomedical sentences are short)."""
    from finetune.tasks.base import pad_rows

    input_ids, attention_mask = pad_rows([f.input_ids for f in features], pad_id)
    labels, _ = pad_rows([f.label_ids for f in features], IGNORE_INDEX)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "labels": labels,
    }


def decode_ner(
    features: Sequence[Feature],
    logits: Sequence[np.ndarray],
    sentences: Sequence[Sentence],
    id2label: Mapping[int, str] | Sequence[str],
) -> list[list[str]]:
    """Per-word labels for every sentence, each word taken from its owning window's first sub-token.

    `logits[i]` is feature i's [len, num_labels] array; trailing padding rows are ignored. A word
    predicted twice or never is a bug in the encoder, not bad input, hence RuntimeError.
    """
    if len(features) != len(logits):
        raise ValueError(f"got {len(logits)} logit arrays for {len(features)} features")
    predictions: list[list[str | None]] = [[None] * len(s.words) for s in sentences]
    for i, (feature, scores) in enumerate(zip(features, logits)):
        scores = np.asarray(scores)
        if scores.ndim != 2 or scores.shape[0] < len(feature.input_ids):
            raise ValueError(
                f"logits[{i}] has shape {scores.shape}; expected [>= {len(feature.input_ids)}, num_labels]"
            )
        best = scores[: len(feature.input_ids)].argmax(axis=-1)
        row = predictions[feature.sentence_index]
        for pos, word in enumerate(feature.word_index):
            if word < 0:
                continue
            if row[word] is not None:
                raise RuntimeError(f"sentence {feature.sentence_index} word {word} predicted by two windows")
            row[word] = id2label[int(best[pos])]
    for s_idx, row in enumerate(predictions):
        missing = [w for w, label in enumerate(row) if label is None]
        if missing:
            raise RuntimeError(
                f"sentence {s_idx} (line {sentences[s_idx].line_no}): words {missing[:10]} "
                "got no prediction; were all its features passed to decode_ner?"
            )
    return predictions  # type: ignore[return-value]


def write_predictions(path: str | Path, sentences: Sequence[Sentence], predictions: Sequence[Sequence[str]]) -> None:
    """Write `word<TAB>gold<TAB>pred` lines, a blank line after each sentence: conlleval's input format."""
    if len(sentences) != len(predictions):
        raise ValueError(f"{len(predictions)} predicted sentences for {len(sentences)} sentences")
    lines: list[str] = []
    for s_idx, (sentence, predicted) in enumerate(zip(sentences, predictions)):
        if len(predicted) != len(sentence.words):
            raise ValueError(
                f"sentence {s_idx} (line {sentence.line_no}) has {len(sentence.words)} words "
                f"but {len(predicted)} predictions"
            )
        lines.extend(f"{w}\t{g}\t{p}\n" for w, g, p in zip(sentence.words, sentence.labels, predicted))
        lines.append("\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
