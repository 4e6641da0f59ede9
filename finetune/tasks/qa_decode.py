"""Extractive QA post-processing: start/end logits back into answer strings, cut from the ORIGINAL context
through the tokenizer's character offsets (finetune/tasks/qa.py reads and encodes), BioASQ's pooling of the
n-best spans of all snippets of a question as BioBERT's `transform_n2b_factoid.py` does (`pool_answers`), and
SQuAD's exact-match/F1.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from finetune.tasks.qa import QAExample, QAFeature

_PUNCTUATION = frozenset(string.punctuation)


@dataclass
class Span:
    text: str  # cut from the original context
    score: float  # start logit + end logit
    probability: float = 0.0  # softmax over the example's n-best scores


@dataclass
class QuestionPrediction:
    qid: str
    batch: str
    answers: list[tuple[str, float]] = field(default_factory=list)  # ranked (text, probability)


def softmax(scores: Sequence[float]) -> list[float]:
    if not len(scores):
        return []
    x = np.asarray(scores, dtype=np.float64)
    e = np.exp(x - x.max())
    return (e / e.sum()).tolist()


def example_nbest(
    example: QAExample,
    parts: Sequence[tuple[QAFeature, np.ndarray, np.ndarray]],
    n_best: int = 20,
    max_answer_tokens: int = 30,
) -> list[Span]:
    """The n best distinct spans of one example over all its windows, with per-example softmax.

    As BERT/BioBERT: per window the `n_best` highest start and end logits (here among context tokens
    only), start <= end, at most `max_answer_tokens` tokens, start in a max-context token; candidates
    sorted by start + end logit, the same text kept once, probabilities a softmax over the kept scores.
    """
    candidates = []
    for feature, start_logits, end_logits in parts:
        lo, n = feature.context_start, len(feature.offsets)
        starts, ends = start_logits[lo : lo + n], end_logits[lo : lo + n]
        top_s = np.argsort(-starts, kind="stable")[:n_best]
        top_e = np.argsort(-ends, kind="stable")[:n_best]
        for i in top_s:
            if not feature.max_context[i]:
                continue
            for j in top_e:
                if i <= j < i + max_answer_tokens:
                    candidates.append((float(starts[i] + ends[j]), feature, int(i), int(j)))
    candidates.sort(key=lambda c: -c[0])
    spans: list[Span] = []
    seen: set[str] = set()
    for score, feature, i, j in candidates:
        text = example.context[feature.offsets[i][0] : feature.offsets[j][1]]
        if text in seen:
            continue
        seen.add(text)
        spans.append(Span(text, score))
        if len(spans) == n_best:
            break
    for span, p in zip(spans, softmax([s.score for s in spans])):
        span.probability = p
    return spans


def strip_answer(text: str) -> str:
    """BioBERT's `textrip`: drop one trailing ',', '.' or ' '; unwrap "(x)"; drop unbalanced parentheses."""
    if not text:
        return text
    if text[-1] in ",. ":
        return text[:-1]
    if len(text) > 2 and text[0] == "(" and text[-1] == ")" and text.count("(") == 1 and text.count(")") == 1:
        return text[1:-1]
    if ("(" in text) != (")" in text):
        return ""
    return text


def pool_answers(
    snippet_spans: Sequence[Sequence[Span]],
    top_k: int = 5,
    max_chars: int = 100,
    scope: str = "snippet",
    strip: bool = True,
) -> list[tuple[str, float]]:
    """BioASQ answers of one question from the n-best spans of all its snippets.

    `scope="snippet"` keeps each snippet's own softmax (what BioBERT does: probabilities come from
    run_factoid's per-example n-best, so every snippet holds mass 1 and an answer found in several
    snippets accumulates votes); `scope="question"` re-normalises with one softmax over the pooled
    scores. Then, in decreasing probability: `strip_answer`, drop empty answers and answers longer than
    `max_chars` characters, merge case-insensitive duplicates by SUMMING their probabilities (the
    spelling of the most probable one is kept), re-rank by the sums and keep `top_k`.
    """
    if scope not in ("snippet", "question"):
        raise ValueError(f"scope must be 'snippet' or 'question', not {scope!r}")
    spans = [s for group in snippet_spans for s in group]
    probs = softmax([s.score for s in spans]) if scope == "question" else [s.probability for s in spans]
    merged: dict[str, list] = {}
    for k in sorted(range(len(spans)), key=lambda k: -probs[k]):
        text = strip_answer(spans[k].text) if strip else spans[k].text
        if not text or len(text) > max_chars:
            continue
        key = text.lower()
        if key in merged:
            merged[key][1] += probs[k]
        else:
            merged[key] = [text, probs[k]]
    ranked = sorted(merged.values(), key=lambda item: -item[1])
    return [(text, float(p)) for text, p in ranked[:top_k]]


def decode_qa(
    examples: Sequence[QAExample],
    features: Sequence[QAFeature],
    outputs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    pool: bool,
    n_best: int = 20,
    max_answer_tokens: int = 30,
    top_k: int = 5,
    max_chars: int = 100,
    scope: str = "snippet",
) -> list[QuestionPrediction]:
    """Per question (in file order) its ranked answers: pooled over snippets (BioASQ) or the single best
    span by logit (SQuAD). A question with no usable span gets an empty list, which scores 0."""
    if len(features) != len(outputs):
        raise ValueError(f"got {len(outputs)} outputs for {len(features)} features")
    parts: list[list] = [[] for _ in examples]
    for feature, (start, end) in zip(features, outputs):
        parts[feature.example_index].append((feature, np.asarray(start), np.asarray(end)))
    by_question: dict[str, list[list[Span]]] = {}
    batch_of: dict[str, str] = {}
    for example, example_parts in zip(examples, parts):
        spans = example_nbest(example, example_parts, n_best, max_answer_tokens) if example_parts else []
        by_question.setdefault(example.qid, []).append(spans)
        batch_of.setdefault(example.qid, example.batch)
    predictions = []
    for qid, groups in by_question.items():
        if pool:
            answers = pool_answers(groups, top_k, max_chars, scope)
        else:
            best = max((s for g in groups for s in g), key=lambda s: s.score, default=None)
            answers = [(best.text, best.probability)] if best else []
        predictions.append(QuestionPrediction(qid, batch_of[qid], answers))
    return predictions


# ---------------------------------------------------------------------------- SQuAD v1.1's official metric


def normalize_squad(text: str) -> str:
    """evaluate-v1.1.py: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_squad(prediction).split(), normalize_squad(truth).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], gold: dict[str, list[str]]) -> dict[str, float]:
    """Exact match and F1 in %, each the max over a question's gold answers, averaged over ALL gold
    questions (a missing prediction scores 0, as the official script does after its warning)."""
    em = f1 = 0.0
    for qid, truths in gold.items():
        if qid in predictions and truths:
            em += max(float(normalize_squad(predictions[qid]) == normalize_squad(t)) for t in truths)
            f1 += max(squad_f1(predictions[qid], t) for t in truths)
    n = max(len(gold), 1)
    return {"exact_match": 100 * em / n, "f1": 100 * f1 / n, "questions": len(gold)}
