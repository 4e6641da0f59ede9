"""Entity-level precision/recall/F1 exactly as conlleval.pl computes them, plus a strict IOB2 variant.

BioBERT's reported NER numbers come from the CoNLL shared task's Perl script, whose chunk rules are
lenient: an `I-X` after `O` (or after another type) opens a new entity instead of being discarded. Scores
are only comparable to the paper if the same rules are used, so `conlleval` is a line-for-line port of
the script's counting loop (version 2004-01-26). On IOB1/IOB2/IOE input the result is identical to the
Perl. Like the widely used Python port of the script, it also understands IOBES: `B-` and `S-` always
start a chunk and a chunk always ends after `E-`/`S-` (the Perl would merge `S-X S-X` into one chunk).

`strict_iob2` is seqeval's strict IOB2 mode, for typed corpora where an ill-formed `I-` should count
against the tagger rather than be repaired into an entity.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

_OUTSIDE_LIKE = ("O", ".")  # conlleval never lets these tags open or close a chunk by a type change


def split_tag(label: str) -> tuple[str, str]:
    """("B", "Disease") for "B-Disease"; untyped tags get the empty type, as in conlleval's regex."""
    tag, sep, chunk_type = label.partition("-")
    return (tag, chunk_type) if sep else (label, "")


def end_of_chunk(prev_tag: str, tag: str, prev_type: str, chunk_type: str) -> bool:
    """Did a chunk end between the previous and the current token? (conlleval's endOfChunk)."""
    if prev_tag in ("E", "S", "[", "]"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in _OUTSIDE_LIKE and prev_type != chunk_type


def start_of_chunk(prev_tag: str, tag: str, prev_type: str, chunk_type: str) -> bool:
    """Did a chunk start between the previous and the current token? (conlleval's startOfChunk)."""
    if tag in ("B", "S", "[", "]"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in _OUTSIDE_LIKE and prev_type != chunk_type


def conlleval(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """conlleval.pl's scores for per-sentence gold and predicted labels (sentence breaks end chunks).

    Returns fractions in 0..1: precision, recall, f1 (0 where undefined), token_accuracy, the counts
    true_chunks, pred_chunks, correct_chunks, tokens, and `by_type` {type: precision, recall, f1,
    support}; untyped B/I/O corpora report their single type as "".
    """
    _check_aligned(gold, pred)
    found_gold: Counter[str] = Counter()
    found_pred: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    correct_tags = tokens = 0
    last_g, last_p = ("O", ""), ("O", "")  # the script's initial state
    in_correct = False
    for g_label, p_label in _stream(gold, pred):
        # A sentence break (None) is the script's boundary line: an O for both, not counted as a token.
        g = split_tag(g_label) if g_label is not None else ("O", "")
        p = split_tag(p_label) if p_label is not None else ("O", "")
        g_end = end_of_chunk(last_g[0], g[0], last_g[1], g[1])
        p_end = end_of_chunk(last_p[0], p[0], last_p[1], p[1])
        if in_correct:
            if g_end and p_end and last_p[1] == last_g[1]:
                in_correct = False
                correct[last_g[1]] += 1
            elif g_end != p_end or p[1] != g[1]:
                in_correct = False
        g_start = start_of_chunk(last_g[0], g[0], last_g[1], g[1])
        p_start = start_of_chunk(last_p[0], p[0], last_p[1], p[1])
        if g_start and p_start and p[1] == g[1]:
            in_correct = True
        found_gold[g[1]] += g_start
        found_pred[p[1]] += p_start
        if g_label is not None:
            correct_tags += g == p
            tokens += 1
        last_g, last_p = g, p
    if in_correct:
        correct[last_g[1]] += 1
    return _scores(correct, found_gold, found_pred, correct_tags, tokens)


def _stream(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]):
    """(gold, pred) label pairs with a (None, None) sentence break after every sentence."""
    for gold_sentence, pred_sentence in zip(gold, pred):
        yield from zip(gold_sentence, pred_sentence)
        yield None, None


def strict_iob2(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Scores where an entity is `B-X` followed by `I-X`s only (seqeval's strict IOB2 mode).

    An `I-X` that does not continue a `B-X`/`I-X` run is not part of any entity: it is ignored rather
    than promoted to a chunk start as conlleval does. An entity is correct when span and type match.
    Same dictionary as `conlleval`.
    """
    _check_aligned(gold, pred)
    gold_chunks = {(i, *c) for i, s in enumerate(gold) for c in _iob2_chunks(s)}
    pred_chunks = {(i, *c) for i, s in enumerate(pred) for c in _iob2_chunks(s)}
    found_gold = Counter(c[3] for c in gold_chunks)
    found_pred = Counter(c[3] for c in pred_chunks)
    correct = Counter(c[3] for c in gold_chunks & pred_chunks)
    correct_tags = sum(g == p for gs, ps in zip(gold, pred) for g, p in zip(gs, ps))
    tokens = sum(len(s) for s in gold)
    return _scores(correct, found_gold, found_pred, correct_tags, tokens)


def _iob2_chunks(labels: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, end exclusive, type) of each well-formed IOB2 entity."""
    chunks = []
    start, current = -1, ""
    for i, label in enumerate([*labels, "O"]):
        tag, chunk_type = split_tag(label)
        if tag not in ("B", "I", "O"):
            raise ValueError(f"strict IOB2 scoring got label {label!r}; only O, B[-X] and I[-X] are valid")
        if start >= 0 and not (tag == "I" and chunk_type == current):
            chunks.append((start, i, current))
            start = -1
        if tag == "B":
            start, current = i, chunk_type
    return chunks


def _check_aligned(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted sentences")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold labels but {len(p)} predicted labels")


def _prf(correct: int, found_gold: int, found_pred: int) -> tuple[float, float, float]:
    precision = correct / found_pred if found_pred else 0.0
    recall = correct / found_gold if found_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _scores(
    correct: Counter[str], found_gold: Counter[str], found_pred: Counter[str], correct_tags: int, tokens: int
) -> dict:
    precision, recall, f1 = _prf(sum(correct.values()), sum(found_gold.values()), sum(found_pred.values()))
    by_type = {}
    for chunk_type in sorted(t for t in set(found_gold) | set(found_pred) if found_gold[t] or found_pred[t]):
        p, r, f = _prf(correct[chunk_type], found_gold[chunk_type], found_pred[chunk_type])
        by_type[chunk_type] = {
            "precision": p,
            "recall": r,
            "f1": f,
            "support": found_gold[chunk_type],
            "predicted": found_pred[chunk_type],
        }
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true_chunks": sum(found_gold.values()),
        "pred_chunks": sum(found_pred.values()),
        "correct_chunks": sum(correct.values()),
        "tokens": tokens,
        "token_accuracy": correct_tags / tokens if tokens else 0.0,
        "by_type": by_type,
    }
