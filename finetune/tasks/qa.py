"""Extractive question answering on SQuAD-v1.1-layout JSON (SQuAD, BioBERT's BioASQ factoid and list files).

Pure functions (no model, no loop): read, encode into windows with a document stride, and turn start/end
logits back into answer strings. Answers are always cut from the ORIGINAL context through the
tokenizer's character offsets, so lower-casing, accent stripping and WordPiece never leak into the text
that is scored. BioASQ gives one paragraph per (question, snippet) with ids `<qid>_<nnn>`; its
post-processing pools the n-best spans of all snippets of a question, as BioBERT's
`transform_n2b_factoid.py` does (`pool_answers` in finetune/tasks/qa_decode.py, with the rest of decoding).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from biobert.errors import UserError

if TYPE_CHECKING:
    from biobert.tokenizer import WordPieceTokenizer

_SNIPPET_ID = re.compile(r"^(?P<qid>.+)_(?P<n>\d+)$")


@dataclass
class QAExample:
    """One (question, context) pair as read from the file."""

    qas_id: str  # the file's id: "<qid>_<nnn>" for BioASQ pairs, the question's own id for SQuAD
    qid: str  # the question it belongs to; BioASQ pools its snippets' answers by it
    question: str
    context: str
    answers: list[tuple[str, int]]  # (text, character start) as in the file; empty in BioASQ test files
    source: str = ""  # the file it came from
    batch: str = ""  # BioASQ test batch ("" for a single test file)
    training: bool = False  # answers become start/end targets (and unusable pairs are left out)


@dataclass
class QAFeature:
    """One model input: [CLS] question [SEP] window of the context [SEP]."""

    input_ids: list[int]
    token_type_ids: list[int]
    example_index: int
    window_index: int
    context_start: int  # position in input_ids of the window's first context token
    offsets: list[tuple[int, int]]  # character span in the example's context of each window token
    max_context: list[bool]  # whether this window is the one with most context around each token
    start_position: int = 0  # targets; 0 ([CLS]) when the answer is not inside this window
    end_position: int = 0


# --------------------------------------------------------------------------------------------- reading


def read_squad_json(
    path: str | Path, *, pool_snippets: bool, batch: str = "", training: bool = False
) -> list[QAExample]:
    """Read a SQuAD-v1.1-layout file: data[].paragraphs[].{context, qas[].{id, question, answers}}.

    With `pool_snippets` (BioASQ), ids `<qid>_<nnn>` belong to question `<qid>`; otherwise each id is its
    own question.
    """
    examples: list[QAExample] = []
    for where, context, qa in iter_squad_qas(Path(path), "SQuAD-layout QA file"):
        qas_id = qa["id"]
        answers = read_answers(qa, Path(path), where)
        examples.append(
            QAExample(
                qas_id, question_of(qas_id, pool_snippets), qa["question"], context, answers, str(path), batch, training
            )
        )
    return examples


_ANSWER_LAYOUT = '{"text": "<answer as it appears in context>", "answer_start": <its character offset in context>}'


def read_answers(qa: dict, path: Path, where: str) -> list[tuple[str, int]]:
    """(text, answer_start) of each answer of a record: SQuAD v1.1's `answers` list of objects.

    Every other shape is an error naming the file and the record (with its question id): a null or textual
    `answer_start` used to crash deep in the reader with a bare TypeError, and an answer given as a plain
    string was dropped without a word, so a file made only of such answers trained on nothing. A missing,
    null or empty `answers` is a record without an answer (BioBERT's test files), which training leaves out
    and counts (`encode_qa`). A wrong but integer `answer_start` is relocated there, and counted.
    """
    value = qa.get("answers")
    if value is None:
        return []
    if not isinstance(value, list):
        raise UserError(
            f"{path}: {where}: `answers` is {_short(value)}; expected a list of {_ANSWER_LAYOUT} "
            "objects ([] for none). Fix the record."
        )
    answers = []
    for k, answer in enumerate(value):
        if not isinstance(answer, dict):
            raise UserError(
                f"{path}: {where}: answers[{k}] is {_short(answer)}, not an object; expected "
                f"{_ANSWER_LAYOUT}. An answer given as a plain string has no position: write it as "
                "that object."
            )
        text, start = answer.get("text"), answer.get("answer_start")
        if not isinstance(text, str) or not text:
            raise UserError(
                f"{path}: {where}: answers[{k}].text is {_short(text)}; expected the answer as a "
                f"non-empty string ({_ANSWER_LAYOUT}). Fix the record."
            )
        if not isinstance(start, int) or isinstance(start, bool):
            raise UserError(
                f"{path}: {where}: answers[{k}].answer_start is {_short(start)}; expected an integer, "
                f"the character offset of {text!r} in `context` ({_ANSWER_LAYOUT}). Fix the record."
            )
        answers.append((text, start))
    return answers


def _short(value) -> str:
    """A JSON value as the file writes it, cut to fit in a message."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def question_of(qas_id: str, pool_snippets: bool) -> str:
    """The question a (question, snippet) id `<qid>_<nnn>` belongs to (BioASQ), else the id itself."""
    match = _SNIPPET_ID.match(qas_id) if pool_snippets else None
    return match["qid"] if match else qas_id


def iter_squad_qas(path: Path, what: str) -> Iterator[tuple[str, str, dict]]:
    """(record location, context, qa object) of every question of a SQuAD-layout file, in file order.

    Structure errors name the file and the record; duplicate ids are an error because predictions are
    keyed by them; a file without questions is an error.
    """
    data = _load_json(path, what)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UserError(
            f"{path}: expected a JSON object with a `data` list (SQuAD v1.1 layout: data[]."
            "paragraphs[].qas[]); is this a BioASQ golden file instead of a test file?"
        )
    seen: set[str] = set()
    for a, article in enumerate(data["data"]):
        for p, paragraph in enumerate(_records(article, "paragraphs", path, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise UserError(f"{path}: {where} has no `context` string; expected SQuAD v1.1 layout")
            for q, qa in enumerate(_records(paragraph, "qas", path, where)):
                qas_id, question = qa.get("id"), qa.get("question")
                if not isinstance(qas_id, str) or not isinstance(question, str):
                    raise UserError(f"{path}: {where}.qas[{q}] needs string `id` and `question` fields")
                if qas_id in seen:
                    raise UserError(f"{path}: {where}.qas[{q}]: duplicate id {qas_id!r}; ids must be unique")
                seen.add(qas_id)
                yield f"{where}.qas[{q}] (id {qas_id})", context, qa
    if not seen:
        raise UserError(f"{path}: no questions found (data[].paragraphs[].qas[] is empty)")


def _load_json(path: Path, what: str):
    if not path.is_file():
        raise UserError(f"{path}: no such file; expected a {what}. Check --data_dir.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a valid UTF-8 JSON {what} ({e})") from None


def _records(obj, key: str, path: Path, where: str) -> list[dict]:
    items = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise UserError(f"{path}: {where} needs a `{key}` list of objects (SQuAD v1.1 layout)")
    return items


# ------------------------------------------------------------------------------------------- encoding


# why a training pair is left out: stats key -> reason, as `excluded_summary` prints it
EXCLUDED = {
    "excluded_no_answer": "without an answer",
    "excluded_answer_not_in_context": "whose answer text is not in their snippet",
    "excluded_answer_without_tokens": "whose answer covers no token (only characters the tokenizer drops)",
}


def excluded_summary(stats: dict) -> str:
    """ "3 without an answer, 1 whose answer text is not in their snippet": the left-out pairs by reason."""
    return ", ".join(f"{stats[key]} {reason}" for key, reason in EXCLUDED.items() if stats.get(key))


def encode_qa(
    examples: Sequence[QAExample],
    tokenizer: WordPieceTokenizer,
    max_len: int = 384,
    stride: int = 128,
    max_query_length: int = 64,
) -> tuple[list[QAFeature], dict]:
    """Windows of [CLS] question [SEP] context [SEP] over every example.

    `stride` is the overlap in tokens between neighbouring windows (this project's `--doc_stride`
    meaning, as for NER; BERT's run_squad.py calls the step between window starts its doc_stride). Each
    context token is "max context" in the window where min(left, right) context is largest, plus 0.01 x
    window length (BERT's rule); answers may only start at such tokens.

    Training examples (`example.training`) get start/end targets; a window without the whole answer
    points both at [CLS] (SQuAD v1 convention, as in BioBERT). A training pair without an answer, or whose
    answer text does not occur in its context (or covers no token), is left out and counted per reason
    (`EXCLUDED`), never trained on garbage; when that leaves nothing to train on, the error says why.
    """
    stats = {
        "examples": len(examples),
        "questions": len({e.qid for e in examples}),
        "features": 0,
        "split_contexts": 0,
        "truncated_questions": 0,
        "excluded_pairs": 0,
        "excluded_questions": 0,
        **dict.fromkeys(EXCLUDED, 0),
        "relocated_answers": 0,
        "windows_without_answer": 0,
    }
    questions = tokenizer.backend.encode_batch([e.question for e in examples], add_special_tokens=False)
    contexts = tokenizer.backend.encode_batch([e.context for e in examples], add_special_tokens=False)
    features: list[QAFeature] = []
    excluded: set[str] = set()
    for index, (example, q_enc, c_enc) in enumerate(zip(examples, questions, contexts)):
        q_ids = q_enc.ids[:max_query_length]
        stats["truncated_questions"] += len(q_enc.ids) > max_query_length
        budget = max_len - len(q_ids) - 3
        if budget < 1 or not 0 <= stride < budget:
            raise UserError(
                f"{example.source}: question {example.qas_id}: max_seq_length {max_len} leaves "
                f"{budget} context tokens after its {len(q_ids)} question tokens, which does not "
                f"allow a doc_stride (window overlap) of {stride}; raise --max_seq_length or lower "
                "--doc_stride"
            )
        target = None
        if example.training:
            target = _answer_tokens(example, c_enc.offsets, stats)
            if target is None:
                excluded.add(example.qid)
                continue
        windows = plan_windows(len(c_enc.ids), budget, stride)
        best = max_context_owner(windows, len(c_enc.ids))
        stats["split_contexts"] += len(windows) > 1
        for k, (lo, hi) in enumerate(windows):
            feature = _build_feature(tokenizer, q_ids, c_enc, lo, hi, index, k, best)
            if target is not None:
                if lo <= target[0] and target[1] < hi:
                    feature.start_position = feature.context_start + target[0] - lo
                    feature.end_position = feature.context_start + target[1] - lo
                else:
                    stats["windows_without_answer"] += 1
            features.append(feature)
    stats["features"] = len(features)
    stats["excluded_questions"] = len(excluded)
    if not features and any(e.training for e in examples):
        raise UserError(
            f"{examples[0].source}: every one of its {len(examples)} training pairs was left out "
            f"({excluded_summary(stats)}), so there is nothing to train on. A training pair needs "
            "an answer whose text occurs in its snippet; is this a test file?"
        )
    return features, stats


def _answer_tokens(example: QAExample, offsets: list[tuple[int, int]], stats: dict) -> tuple[int, int] | None:
    """First and last context token of the (first) answer, or None when the pair cannot be trained on
    (counted under its reason, see `EXCLUDED`)."""
    reason, tokens = _locate_answer(example, offsets, stats)
    if reason:
        stats[reason] += 1
        stats["excluded_pairs"] += 1
    return tokens


def _locate_answer(
    example: QAExample, offsets: list[tuple[int, int]], stats: dict
) -> tuple[str, tuple[int, int] | None]:
    if not example.answers:
        return "excluded_no_answer", None
    text, start = example.answers[0]
    if start < 0 or example.context[start : start + len(text)] != text:
        start = example.context.find(text)  # a wrong answer_start: the first occurrence of the text
        if start < 0:
            return "excluded_answer_not_in_context", None
        stats["relocated_answers"] += 1
    end = start + len(text)
    covered = [t for t, (a, b) in enumerate(offsets) if a < end and b > start]
    if not covered:  # e.g. an answer made only of characters the tokenizer drops
        return "excluded_answer_without_tokens", None
    return "", (covered[0], covered[-1])


def plan_windows(n_tokens: int, budget: int, stride: int) -> list[tuple[int, int]]:
    """[lo, hi) token windows of at most `budget` tokens covering 0..n_tokens, neighbours overlapping by
    `stride`; an empty context still gets one (empty) window so that its question is predicted."""
    windows = []
    lo = 0
    while True:
        hi = min(lo + budget, n_tokens)
        windows.append((lo, hi))
        if hi >= n_tokens:
            return windows
        lo = hi - stride


def max_context_owner(windows: list[tuple[int, int]], n_tokens: int) -> list[int]:
    """For each token, the window where it has the most context (BERT's `_check_is_max_context`)."""
    owner = [0] * n_tokens
    best = [-1.0] * n_tokens
    for k, (lo, hi) in enumerate(windows):
        for t in range(lo, hi):
            score = min(t - lo, hi - 1 - t) + 0.01 * (hi - lo)
            if score > best[t]:
                best[t], owner[t] = score, k
    return owner


def _build_feature(
    tokenizer, q_ids: list[int], c_enc, lo: int, hi: int, index: int, k: int, owner: list[int]
) -> QAFeature:
    head = [tokenizer.cls_id, *q_ids, tokenizer.sep_id]
    input_ids = head + c_enc.ids[lo:hi] + [tokenizer.sep_id]
    token_type_ids = [0] * len(head) + [1] * (hi - lo + 1)
    return QAFeature(
        input_ids,
        token_type_ids,
        index,
        k,
        len(head),
        list(c_enc.offsets[lo:hi]),
        [owner[t] == k for t in range(lo, hi)],
    )


def collate_qa(features: Sequence[QAFeature], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest feature (BioASQ snippets are far shorter than max_seq_length)."""
    from finetune.tasks.base import pad_rows

    input_ids, attention_mask = pad_rows([f.input_ids for f in features], pad_id)
    token_type_ids, _ = pad_rows([f.token_type_ids for f in features], 0)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "start_positions": torch.tensor([f.start_position for f in features], dtype=torch.long),
        "end_positions": torch.tensor([f.end_position for f in features], dtype=torch.long),
    }
