"""Extractive QA post-processing (finetune/tasks/qa_decode.py): n-best spans and their softmax, BioASQ's pooling
of every snippet of a question, decode_qa, SQuAD's exact match and F1."""

import numpy as np
import pytest
from test_qa import FIXTURES, T1, T2, T3, TEST

from finetune.tasks.qa import QAExample, QAFeature, encode_qa, read_squad_json
from finetune.tasks.qa_decode import Span, decode_qa, example_nbest, pool_answers, squad_scores, strip_answer
from finetune.tasks.registry import get_task


def _feature(context: str, tokenizer) -> QAFeature:
    enc = tokenizer.backend.encode(context, add_special_tokens=False)
    n = len(enc.ids)
    return QAFeature([2, 3] + enc.ids + [3], [0, 0] + [1] * (n + 1), 0, 0, 2, list(enc.offsets), [True] * n)


def _tokens(f: QAFeature, context: str, text: str) -> tuple[int, int]:
    """Input positions of the first and last token of `text` in the feature's context."""
    a = context.find(text)
    inside = [k for k, (s, e) in enumerate(f.offsets) if s < a + len(text) and e > a]
    return f.context_start + inside[0], f.context_start + inside[-1]


def test_example_nbest_spans_and_softmax(tiny):
    context = "The kinase protein binds the receptor."
    f = _feature(context, tiny["tokenizer"])
    start, end = np.full(len(f.input_ids), -10.0), np.full(len(f.input_ids), -10.0)
    start[0] = end[0] = 50.0  # [CLS] and the question are never answers
    (s1, e1), (s2, e2) = _tokens(f, context, "kinase protein"), _tokens(f, context, "receptor")
    start[s1], end[e1] = 5.0, 4.0
    start[s2], end[e2] = 3.0, 1.0
    end[s1 - 1] = 9.0  # an end before every good start is never paired with them
    example = QAExample("q_001", "q", "?", context, [])
    spans = example_nbest(example, [(f, start, end)], n_best=3)
    # every start pairs with every later end: 5+4, 5+1, 3+1 (then -10-ish pairs, beyond n_best)
    assert [s.text for s in spans] == ["kinase protein", "kinase protein binds the receptor", "receptor"]
    assert [s.score for s in spans] == [9.0, 6.0, 4.0] and sum(s.probability for s in spans) == pytest.approx(1.0)
    short = example_nbest(example, [(f, start, end)], max_answer_tokens=e1 - s1)
    assert "kinase protein" not in [s.text for s in short]
    f.max_context[s1 - f.context_start] = False  # another window owns that token: no answer starts there
    assert "kinase protein" not in [s.text for s in example_nbest(example, [(f, start, end)])]


def test_pool_answers_merges_case_duplicates_and_drops_long_answers():
    long = "x" * 101
    snippet_a = [Span("IL-6", 3.0, 0.5), Span(long, 2.0, 0.3), Span("TNF.", 1.0, 0.2)]
    snippet_b = [Span("il-6", 2.0, 0.4), Span("TNF", 1.5, 0.35), Span("(CRP)", 0.0, 0.25)]
    snippet_c = [Span(f"a{i}", 0.0, 0.01 * (9 - i)) for i in range(8)] + [Span("x (y", 9.0, 0.001)]
    ranked = pool_answers([snippet_a, snippet_b, snippet_c])
    # IL-6 = 0.5 + 0.4 (spelling of the most probable), TNF = 0.35 + 0.2 ("TNF." stripped), CRP unwrapped
    assert [t for t, _ in ranked] == ["IL-6", "TNF", "CRP", "a0", "a1"]
    assert [p for _, p in ranked] == pytest.approx([0.9, 0.55, 0.25, 0.09, 0.08])
    assert len(pool_answers([snippet_a, snippet_b, snippet_c], top_k=10)) == 10
    assert long in [t for t, _ in pool_answers([snippet_a], max_chars=200)]
    # one softmax over all snippets' scores instead of each snippet's own
    question = pool_answers([[Span("a", 1.0, 1.0)], [Span("b", 0.0, 1.0)]], scope="question")
    assert question[0] == ("a", pytest.approx(np.e / (np.e + 1)))
    assert [strip_answer(t) for t in ("x,", "(a)", "(a) (b)", "a (b", "a b)", "", "a.b")] == [
        "x",
        "a",
        "(a) (b)",
        "",
        "",
        "",
        "a.b",
    ]


def test_decode_pools_every_snippet_of_a_question(tiny):
    tok = tiny["tokenizer"]
    examples = read_squad_json(TEST, pool_snippets=True)
    features, _ = encode_qa(examples, tok, max_len=48, stride=8)
    outputs = []
    for f in features:
        start, end = np.zeros(len(f.input_ids)), np.zeros(len(f.input_ids))
        text = examples[f.example_index].context.lower()
        for needle in ("kinase protein", "aspirin", "influenza virus"):
            at = text.find(needle)
            inside = [k for k, (a, b) in enumerate(f.offsets) if a < at + len(needle) and b > at]
            if at >= 0 and inside and f.offsets[inside[0]][0] <= at and f.offsets[inside[-1]][1] >= at + len(needle):
                # a peaked guess on the gold answer wherever a window holds all of it
                start[f.context_start + inside[0]] = end[f.context_start + inside[-1]] = 10.0
        outputs.append((start, end))
    predictions = decode_qa(examples, features, outputs, pool=True)
    assert [p.qid for p in predictions] == [T1, T2, T3]
    top = {p.qid: p.answers[0] for p in predictions}
    assert top[T1][0] == "kinase protein" and top[T2][0].lower() == "aspirin"
    assert top[T2][1] > 1.0  # summed over both snippets that hold it ("Aspirin" and "aspirin")
    assert all(len(p.answers) <= 5 for p in predictions)
    task = get_task("bioasq_7b")
    task.splits(FIXTURES)
    from finetune.tasks.base import SplitData

    split = SplitData("test", TEST, task.read(TEST), features)
    scores = task.score(split, predictions)
    assert (scores["questions"], scores["strict_acc"], scores["mrr"]) == (3, 100.0, 100.0)


# ------------------------------------------------------------------------------------------- metrics


def test_squad_scores_as_the_official_script():
    gold = {"1": ["The Kinase", "kinase protein"], "2": ["aspirin"], "3": ["blood"]}
    scores = squad_scores({"1": "kinase.", "2": "an aspirin dose"}, gold)
    assert scores["exact_match"] == pytest.approx(100 / 3)  # "kinase." == "The Kinase" after normalising
    # "an aspirin dose" -> "aspirin dose": P 1/2, R 1, F1 2/3; question "3" unanswered scores 0
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
