"""BioASQ yes/no questions as (question, snippet) pair classification: read, encode, pool.

As BioBERT's BioASQ follow-up (Yoon et al. 2019; dmis-lab/bioasq-biobert `run_yesno.py` and
`biocodes/transform_n2b_yesno.py`). Pure functions: no model, no loop.

Files: BioASQ-train-yesno-<v>.json / BioASQ-test-yesno-<v>[-<n>].json, SQuAD-like JSON with one paragraph
per (question, snippet): data[].paragraphs[].{context, qas[].{id "<qid>_<nnn>", question, <label>}}.
The label of a pair, as run_yesno.py reads it (and as its SQuAD-v2-style files carry it):
  * `answers`: "yes" or "no", a string rather than SQuAD's list (run_yesno.py's training field);
  * `is_impossible`: true for "no", false for "yes" (run_yesno.py asserts it agrees with `answers`);
  * also read: `answer` as a string, and SQuAD's `answers: [{"text": "yes"}]`.
Case and surrounding spaces are ignored; any other value, or fields that disagree, is an error naming the
file and the record. Test files usually carry no label: their gold is the golden file.

Model input: [CLS] question [SEP] snippet [SEP], in windows as for factoid QA (`qa.encode_qa`; every
window of a training pair carries the pair's label). run_yesno.py has one sigmoid logit on [CLS]; here
it is the RE head, a two-way softmax over ("no", "yes") on the pooled [CLS].

Pooling (`pool_yesno`): a snippet's p(yes) is the mean over its windows (at BioBERT's 384 tokens a
snippet is one window; run_yesno.py reads only the first); a question's p(yes) is the MEAN over its
snippets, and the answer is "yes" iff it is >= 0.5. transform_n2b_yesno.py instead averages the raw
sigmoid logits and answers "yes" iff the mean is > 0; averaging probabilities bounds the pull of one
over-confident snippet. The majority vote of the snippets' own answers is recorded too (`vote`; a tie
takes the mean-probability answer), and scored beside it (`vote_accuracy`, `vote_macro_f1`).

Class balance: run_yesno.py trains on at most 500 randomly drawn pairs per class; here every pair is
trained on, and the counts per class are recorded (config.json `data.train.yes_pairs` / `no_pairs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from biobert.errors import UserError
from finetune.tasks.base import pad_rows
from finetune.tasks.qa import QAExample, encode_qa, iter_squad_qas, question_of

if TYPE_CHECKING:
    from biobert.tokenizer import WordPieceTokenizer

LABELS = ["no", "yes"]  # class ids of the head, fixed by name


@dataclass
class YesNoExample(QAExample):
    label: str = ""  # "yes", "no", or "" where the file gives none (test files)


@dataclass
class YesNoFeature:
    input_ids: list[int]
    token_type_ids: list[int]
    example_index: int
    label_id: int  # -100 for an unlabelled pair (never trained on)


@dataclass
class YesNoPrediction:
    qid: str
    batch: str
    answer: str  # from the mean p(yes) over the snippets
    probability_yes: float
    vote: str  # majority of the snippets' own answers
    snippets: int
    yes_votes: int


def read_yesno_json(path: str | Path, *, batch: str = "", training: bool = False) -> list[YesNoExample]:
    """Every (question, snippet) pair of a BioBERT yes/no file; a training file must label every pair."""
    path = Path(path)
    examples = []
    for where, context, qa in iter_squad_qas(path, "BioASQ yes/no file (SQuAD-like layout)"):
        label = yesno_label(qa, path, where)
        if training and not label:
            raise UserError(
                f'{path}: {where} has no yes/no answer; a training file needs `answers`: "yes" or "no" '
                "(or `is_impossible`) on every pair"
            )
        qid = question_of(qa["id"], pool_snippets=True)
        examples.append(YesNoExample(qa["id"], qid, qa["question"], context, [], str(path), batch, False, label))
    return examples


def yesno_label(qa: dict, path: Path, where: str) -> str:
    """ "yes", "no", or "" when the record has no label field (see the module docstring)."""
    found: dict[str, str] = {}
    for key in ("answers", "answer"):
        value = qa.get(key)
        if value in (None, "", []):
            continue
        if isinstance(value, list):  # SQuAD's [{"text": "yes"}, ...]: one distinct text
            # (texts kept as written, not in a set: an unhashable one, e.g. a nested list, must reach the
            # error below rather than crash with a TypeError)
            texts = [x.get("text") if isinstance(x, dict) else x for x in value]
            value = texts[0] if all(t == texts[0] for t in texts) else value
        text = value.strip().lower() if isinstance(value, str) else None
        if text not in LABELS:
            raise UserError(
                f'{path}: {where}: `{key}` is {qa.get(key)!r}; expected "yes" or "no" (or [{{"text": "yes"}}]). '
                "Fix the record."
            )
        found[key] = text
    if "is_impossible" in qa and qa["is_impossible"] is not None:
        if not isinstance(qa["is_impossible"], bool):
            raise UserError(f"{path}: {where}: `is_impossible` is {qa['is_impossible']!r}; expected true or false")
        found["is_impossible"] = "no" if qa["is_impossible"] else "yes"
    if len(set(found.values())) > 1:
        raise UserError(
            f'{path}: {where}: the answer fields disagree ({found}); `is_impossible` true means "no". Fix the record.'
        )
    return next(iter(found.values()), "")


def encode_yesno(
    examples: Sequence[YesNoExample],
    tokenizer: WordPieceTokenizer,
    max_len: int,
    stride: int,
    max_query_length: int = 64,
) -> tuple[list[YesNoFeature], dict]:
    """Windows of [CLS] question [SEP] snippet [SEP] (factoid QA's windows), each with its pair's label."""
    windows, qa_stats = encode_qa(examples, tokenizer, max_len, stride, max_query_length)
    ids = {label: i for i, label in enumerate(LABELS)}
    features = [
        YesNoFeature(w.input_ids, w.token_type_ids, w.example_index, ids.get(examples[w.example_index].label, -100))
        for w in windows
    ]
    stats = {k: qa_stats[k] for k in ("examples", "questions", "features", "split_contexts", "truncated_questions")}
    labels = [e.label for e in examples]
    by_question = {e.qid: e.label for e in examples}
    stats.update(
        yes_pairs=labels.count("yes"),
        no_pairs=labels.count("no"),
        unlabelled_pairs=labels.count(""),
        yes_questions=list(by_question.values()).count("yes"),
        no_questions=list(by_question.values()).count("no"),
    )
    return features, stats


def collate_yesno(features: Sequence[YesNoFeature], pad_id: int) -> dict[str, torch.Tensor]:
    input_ids, attention_mask = pad_rows([f.input_ids for f in features], pad_id)
    token_type_ids, _ = pad_rows([f.token_type_ids for f in features], 0)
    labels = torch.tensor([f.label_id for f in features], dtype=torch.long)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "labels": labels,
    }


def pool_yesno(
    examples: Sequence[YesNoExample], features: Sequence[YesNoFeature], probability_yes: Sequence[float]
) -> list[YesNoPrediction]:
    """One answer per question (in file order) from its snippets' p(yes): the mean, and the majority vote."""
    if len(features) != len(probability_yes):
        raise ValueError(f"got {len(probability_yes)} outputs for {len(features)} features")
    windows: list[list[float]] = [[] for _ in examples]
    for feature, p in zip(features, probability_yes):
        windows[feature.example_index].append(float(p))
    snippets: dict[str, list[float]] = {}
    batch_of: dict[str, str] = {}
    for example, ps in zip(examples, windows):
        if ps:
            snippets.setdefault(example.qid, []).append(sum(ps) / len(ps))
            batch_of.setdefault(example.qid, example.batch)
    predictions = []
    for qid, ps in snippets.items():
        mean = sum(ps) / len(ps)
        answer = "yes" if mean >= 0.5 else "no"
        yes_votes = sum(p >= 0.5 for p in ps)
        vote = "yes" if 2 * yes_votes > len(ps) else "no" if 2 * yes_votes < len(ps) else answer
        predictions.append(YesNoPrediction(qid, batch_of[qid], answer, mean, vote, len(ps), yes_votes))
    return predictions
