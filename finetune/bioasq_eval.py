"""BioASQ Task B (phase B) measures in Python: factoid, yes/no and list questions, as BioBERT reports them.

Follows the official Java evaluator, `EvaluatorTask1b -phaseB -e 5` (since BioASQ5) of github.com/BioASQ/
Evaluation-Measures, flat/BioASQEvaluation/src/: evaluation/EvaluatorTask1b.java (EvaluatePhaseB and the
averages), evaluation/QuestionAnswerEvaluator.java (per-question measures), data/Task1bData.java (the JSON
reader, the same for golden and submitted files), data/ExactAnswer.java (containsAnswerSynonym),
data/CalculatedMeasures.java (every measure starts at 0). The comments below name the method deciding each rule.

* Reading (`read_questions`, Task1bData.readData with Gson's strict JsonReader). Every string of an
  `exact_answer` is lower-cased (readExactAnswerArray: Java's `toLowerCase()`, here `str.lower()`) and
  compared by exact equality: no stripping, no article removal. A JSON number where a string is read is
  taken as its literal text (Gson's nextString). A factoid or list `exact_answer` is a list of items, each a
  list of strings; an empty item is skipped (the inner loop of readExactAnswerListOfArraysv2/v3 never runs).
  Of a SUBMITTED item only the first string counts (readExactAnswerListOfArraysv3: no synonyms in
  submissions since BioASQ5); a golden item keeps all its synonyms (v2). A string `exact_answer` is read as
  "yes" if it contains "yes", else "no" if it contains "no", else "none" (for any question type: a factoid
  answered by a string has no answer list and scores 0). A file the Java reader cannot read is refused here
  with the reason: a flat list of strings as `exact_answer` (v3's beginArray meets a STRING), a null or
  number `exact_answer`, `snippets`/`documents`/`concepts`/`triples` of the wrong shape (e.g. `"snippets": 3`:
  readSnippets' beginArray), a snippet key other than its six (readSnippets does not skip its value), NaN.
  Keys are read in file order with repeats (a second `questions` list adds its questions).
* Which questions (EvaluatePhaseB). Each golden question is paired with the FIRST submitted question of its
  id (Task1bData.getQuestion scans in order); a golden question without one is not scored at all (not
  scored 0). A submitted question without `id` stops the Java scan with a NullPointerException when a
  golden id is looked up past it: refused. The golden type decides the measures; golden questions of
  other types (summary) are skipped. Each average is over its type's scored questions (0 when none).
* Factoid (strictAccuracyForLists, lenientAccuracyForLists, meanReciprocalRankForLists). A submitted answer
  is correct if it equals any synonym of any golden item (containsAnswerSynonym). Strict accuracy: the
  first answer is correct. Lenient accuracy: any answer is. MRR: 1/rank of the first correct answer, else
  0. Every submitted answer counts (BioASQ asks for at most 5; the Java code does not cut the list, nor do
  we), and an empty string takes its rank like any other answer.
* Yes/no (accuracyYesNo, F1ExactAnswersYesNo, macroF1ExactAnswersYesNo). Accuracy; F1 of "yes" and of "no",
  each 2TP / (2TP + FP + FN) with that golden class as the positive one, where every wrong answer is an
  FP or an FN (0 when nothing is counted); macro F1 = their mean. A submitted list for a yes/no question
  stops the Java code (response.getAnswer() is null): refused. BioASQ yes/no is mostly "yes" (7b: 94 of
  140), so the majority-class baseline is reported beside them (`baseline_*`; not an official measure).
* List (calculatePRFforListQuestions). In submission order a submitted answer is a true positive if it
  equals a synonym of a golden item not matched yet (the item is removed), else a false positive: a
  repeated answer is a false positive. False negatives: each golden item left that no submitted answer
  names (containsAnswerSynonym on the submission, which removes the answer it finds). Precision
  TP/(TP+FP), recall TP/(TP+FN), F1 (0 when either is 0); an empty answer list scores 0, counted. Reported:
  the means over the list questions (`mean_precision`, `mean_recall`, `mean_f1`).
* Golden files. A golden file must be readable by the Java reader too; a golden question it cannot score
  (no id, an id twice, a factoid or list `exact_answer` with no item, a yes/no answer that is neither) is an
  error naming the file and the question: the Java code would score every submission 0 on it, count it
  twice, or stop. A factoid one stops at once; a list or yes/no one only when that type is scored.
* The scores are percentages (the Java tool prints fractions). In training runs (`factoid_scores` ... with
  the test file's questions) a test question without a prediction is counted (`missing_predictions`) and
  scores as unanswered; a test question absent from the golden file is an error naming both files.
* Several test batches (BioASQ-test-factoid-6b-1.json ... with 6B1_golden.json ...): each batch is
  scored on its own and the percentages are averaged over batches, as the BioBERT paper reports them.

    python finetune/bioasq_eval.py predictions_test.json 7B_golden.json [--list_threshold 0.3]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biobert.errors import UserError, exit_on_user_error  # noqa: E402
from finetune.bioasq_json import (  # noqa: E402, F401  (re-exported: the scorer's callers read through it)
    GOLDEN_HINT,
    QUESTION_TYPES,
    SUBMISSION_LAYOUT,
    GoldenQuestion,
    Submitted,
    pair_submission,
    read_golden,
    read_questions,
    read_submission,
    read_yesno_answer,
)

LIST_THRESHOLD = 0.42  # dmis-lab/bioasq-biobert biocodes/transform_n2b_list.py `--threshold` default
LIST_MAX_ANSWERS = 100  # a guard; BioBERT's transform sets no cap
# averaged over batches (percentages); every other number is a count and is summed
MEASURES = (
    "strict_acc",
    "lenient_acc",
    "mrr",
    "accuracy",
    "f1_yes",
    "f1_no",
    "macro_f1",
    "baseline_accuracy",
    "baseline_macro_f1",
    "vote_accuracy",
    "vote_macro_f1",
    "mean_precision",
    "mean_recall",
    "mean_f1",
)
PER_BATCH = (
    "strict_acc",
    "lenient_acc",
    "mrr",
    "accuracy",
    "macro_f1",
    "mean_precision",
    "mean_recall",
    "mean_f1",
    "questions",
)


def is_correct(answer: str, synonyms: Sequence[Sequence[str]]) -> bool:
    """ExactAnswer.containsAnswerSynonym: lower-cased exact equality with any synonym of any golden item
    (synonyms already lower-cased)."""
    answer = answer.lower()
    return any(answer == s for group in synonyms for s in group)


def _gold_of(golden: Mapping[str, GoldenQuestion], qid: str, test_file: str, golden_file: str) -> GoldenQuestion:
    gold = golden.get(qid)
    if gold is None:
        raise UserError(
            f"question {qid} of test file {test_file or '?'} is not in golden file "
            f"{golden_file or '?'}; pair each test batch with its own golden file "
            "(BioASQ-test-factoid-7b-3.json with 7B3_golden.json)"
        )
    return gold


# ------------------------------------------------------------------------------------- measures


def factoid_scores(
    predictions: Mapping[str, Sequence[str]],
    golden: Mapping[str, GoldenQuestion],
    qids: Sequence[str],
    *,
    test_file: str = "",
    golden_file: str = "",
) -> dict[str, float]:
    """Strict/lenient accuracy and MRR (in %) over the factoid questions `qids` of one test batch.

    `predictions[qid]` is the ranked answer list (missing or empty: scores 0); every answer counts, as in
    meanReciprocalRankForLists (which has no top-5 cut).
    """
    strict = lenient = rr = 0.0
    scored = skipped = 0
    for qid in qids:
        gold = _gold_of(golden, qid, test_file, golden_file)
        if gold.type != "factoid":
            skipped += 1
            continue
        scored += 1
        ranked = predictions.get(qid, ())
        rank = next((r for r, answer in enumerate(ranked, start=1) if is_correct(answer, gold.synonyms)), 0)
        strict += rank == 1
        lenient += rank > 0
        rr += 1.0 / rank if rank else 0.0
    n = max(scored, 1)
    return {
        "strict_acc": 100 * strict / n,
        "lenient_acc": 100 * lenient / n,
        "mrr": 100 * rr / n,
        "questions": scored,
        "strict_correct": int(strict),
        "lenient_correct": int(lenient),
        "non_factoid_skipped": skipped,
    }


def _yesno_measures(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    correct = [g == p for g, p in zip(gold, predicted)]
    out = {"accuracy": 100 * sum(correct) / max(len(gold), 1)}
    for label in ("yes", "no"):  # F1ExactAnswersYesNo: a wrong answer is an FP or an FN of either label
        tp = sum(c and g == label for g, c in zip(gold, correct))
        errors = sum(not c for c in correct)
        out[f"f1_{label}"] = 100 * 2 * tp / (2 * tp + errors) if 2 * tp + errors else 0.0
    out["macro_f1"] = (out["f1_yes"] + out["f1_no"]) / 2
    return out


def _of_type(
    golden: Mapping[str, GoldenQuestion], qids: Sequence[str], qtype: str, test_file: str, golden_file: str
) -> tuple[list[tuple[str, GoldenQuestion]], int]:
    """The questions of `qids` whose golden type is `qtype`, and how many others were skipped. A golden
    answer this type cannot read (see GoldenQuestion.problem) is an error naming the file and question."""
    chosen, skipped = [], 0
    for qid in qids:
        g = _gold_of(golden, qid, test_file, golden_file)
        if g.type != qtype:
            skipped += 1
            continue
        if g.problem:
            raise UserError(g.problem)
        chosen.append((qid, g))
    return chosen, skipped


def yesno_scores(
    predictions: Mapping[str, str],
    golden: Mapping[str, GoldenQuestion],
    qids: Sequence[str],
    *,
    test_file: str = "",
    golden_file: str = "",
) -> dict:
    """Accuracy, F1 of yes / of no, macro F1 (in %) over the yes/no questions `qids`, and the
    majority-class baseline; `predictions[qid]` is the submitted answer string."""
    gold, predicted = [], []
    missing = 0
    questions, skipped = _of_type(golden, qids, "yesno", test_file, golden_file)
    for qid, g in questions:
        missing += qid not in predictions
        gold.append(g.answer)
        predicted.append(read_yesno_answer(predictions.get(qid, "")))
    majority = "no" if gold.count("no") > gold.count("yes") else "yes"
    baseline = _yesno_measures(gold, [majority] * len(gold))
    return {
        **_yesno_measures(gold, predicted),
        "baseline_answer": majority,
        "baseline_accuracy": baseline["accuracy"],
        "baseline_macro_f1": baseline["macro_f1"],
        "questions": len(gold),
        "correct": sum(g == p for g, p in zip(gold, predicted)),
        "gold_yes": gold.count("yes"),
        "predicted_yes": predicted.count("yes"),
        "missing_predictions": missing,
        "non_yesno_skipped": skipped,
    }


def list_counts(answers: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> tuple[int, int, int]:
    """(TP, FP, FN) of one list question, in calculatePRFforListQuestions' two passes (module docstring).
    Each answer is matched by all its strings (a submission read by `read_questions` has one per answer)."""
    remaining = [{s.lower() for s in item} for item in gold]
    submitted = [{s.lower() for s in answer} for answer in answers]
    tp = fp = 0
    for names in submitted:
        hit = next((i for i, item in enumerate(remaining) if item & names), None)
        if hit is None:
            fp += 1
        else:
            tp += 1
            del remaining[hit]
    fn = 0
    pool = list(submitted)
    for item in remaining:
        hit = next((i for i, names in enumerate(pool) if names & item), None)
        if hit is None:
            fn += 1
        else:
            del pool[hit]
    return tp, fp, fn


def list_scores(
    predictions: Mapping[str, Sequence[Sequence[str]]],
    golden: Mapping[str, GoldenQuestion],
    qids: Sequence[str],
    *,
    test_file: str = "",
    golden_file: str = "",
) -> dict:
    """Mean precision, recall and F1 (in %) over the list questions `qids`; `predictions[qid]` is the list
    of submitted answers, each a list of strings (ours and a read submission's: one string each)."""
    precision = recall = f1 = 0.0
    scored = missing = 0
    questions, skipped = _of_type(golden, qids, "list", test_file, golden_file)
    for qid, g in questions:
        scored += 1
        missing += qid not in predictions
        answers = [[a] if isinstance(a, str) else list(a) for a in predictions.get(qid, ())]
        if not answers:
            continue
        tp, fp, fn = list_counts(answers, g.synonyms)
        p = tp / (tp + fp)
        r = tp / (tp + fn) if tp + fn else 0.0
        precision, recall = precision + p, recall + r
        f1 += 2 * p * r / (p + r) if p and r else 0.0
    n = max(scored, 1)
    return {
        "mean_precision": 100 * precision / n,
        "mean_recall": 100 * recall / n,
        "mean_f1": 100 * f1 / n,
        "questions": scored,
        "missing_predictions": missing,
        "non_list_skipped": skipped,
    }


def select_list_answers(
    candidates: Sequence[tuple[str, float]], threshold: float = LIST_THRESHOLD, max_answers: int = LIST_MAX_ANSWERS
) -> list[str]:
    """A list question's answers from its pooled candidates (ranked by probability): every one with
    probability >= `threshold`, at most `max_answers`, and at least the most probable one."""
    ranked = sorted(candidates, key=lambda c: -c[1])
    chosen = [text for text, p in ranked if p >= threshold][: max(1, max_answers)]
    return chosen or [text for text, _ in ranked[:1]]


def average_batches(batches: Sequence[tuple[str, dict]]) -> dict:
    """Mean of the per-batch percentages (BioBERT's protocol); counts are summed; a text value is kept
    (values joined by "," where batches differ); per-batch values kept as `<measure>_<batch>` when there
    is more than one batch."""
    if len(batches) == 1:
        return dict(batches[0][1])
    out: dict = {}
    for key, value in batches[0][1].items():
        values = [scores[key] for _, scores in batches if key in scores]
        if key in MEASURES:
            out[key] = sum(values) / len(values)
        elif isinstance(value, (int, float)):
            out[key] = sum(values)
        elif isinstance(value, str):
            out[key] = ",".join(dict.fromkeys(values))
    out["batches"] = len(batches)
    for name, scores in batches:
        for key in PER_BATCH:
            if key in scores:
                out[f"{key}_{name}"] = scores[key]
    return out


# ---------------------------------------------------------------------------------- submissions


def submitted_answer(question: Submitted, qtype: str, path: str | Path):
    """What QuestionAnswerEvaluator scores for a question of golden type `qtype`: factoid, the ranked
    answers (first string of each item); list, the items; yesno, the answer string ("" when absent)."""
    if qtype == "yesno":
        if question.lists is not None:
            raise UserError(
                f"{path}: {question.where()} is a yes/no question of the golden file, but its "
                "`exact_answer` is a list; the official evaluator stops here (accuracyYesNo: "
                'response.getAnswer() is null, a NullPointerException). Answer "yes" or "no".'
            )
        return question.answer or ""
    items = question.lists or []  # a string answer to a factoid or list question has no items: it scores 0
    return [item[0] for item in items] if qtype == "factoid" else [list(item) for item in items]


def _reselect(question: Submitted, args: argparse.Namespace, path: str) -> list[list[str]]:
    candidates = question.fields.get("answers_with_probability")
    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
        raise UserError(
            f"{path}: list question {question.qid} has no `answers_with_probability` list, which "
            "--list_threshold re-selects from (predictions_test.json of a bioasq_list task has it)"
        )
    try:
        pairs = [(str(c.get("text", "")), float(c.get("probability", 0.0))) for c in candidates]
    except (TypeError, ValueError):
        raise UserError(
            f"{path}: list question {question.qid}: `answers_with_probability` needs "
            '{"text": ..., "probability": <number>} objects'
        ) from None
    return [[a] for a in select_list_answers(pairs, args.list_threshold, args.list_max_answers)]


def _score_types(
    submission: dict[str, Submitted], golden: dict[str, GoldenQuestion], answered: list[str], args: argparse.Namespace
) -> dict:
    files = {"test_file": args.submission, "golden_file": args.golden}
    scores: dict = {}
    for qtype, scorer in (("factoid", factoid_scores), ("yesno", yesno_scores), ("list", list_scores)):
        qids = [qid for qid in answered if golden[qid].type == qtype]
        if not qids:
            continue
        answers = {qid: submitted_answer(submission[qid], qtype, args.submission) for qid in qids}
        if qtype == "list" and args.list_threshold is not None:
            answers = {qid: _reselect(submission[qid], args, args.submission) for qid in qids}
        result = scorer(answers, golden, qids, **files)
        if qtype != "yesno":  # official: a string answer to a factoid or list question scores 0
            result["string_answers"] = sum(submission[qid].answer is not None for qid in qids)
        if qtype == "factoid":  # the factoid measures stay at the top level, as before
            scores.update(result)
        else:
            scores[qtype] = result
    return scores


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", help="predictions_test.json or any BioASQ phase B submission")
    parser.add_argument("golden", help="the official golden file, e.g. 7B_golden.json")
    parser.add_argument(
        "--list_threshold",
        type=float,
        default=None,
        help=f"re-select list answers from `answers_with_probability` with this threshold "
        f"(run_task uses {LIST_THRESHOLD})",
    )
    parser.add_argument("--list_max_answers", type=int, default=LIST_MAX_ANSWERS)
    args = parser.parse_args(argv)
    questions = read_submission(args.submission)
    golden = read_golden(args.golden)
    submission, repeats = pair_submission(questions, list(golden), args.submission)
    answered = [qid for qid in golden if qid in submission]
    if not answered:
        raise UserError(
            f"no question of {args.submission} is in {args.golden}; pair the submission with the "
            "golden file of its test set"
        )
    scores = _score_types(submission, golden, answered, args)
    present = {golden[qid].type for qid in answered}  # a factoid-only submission lacks no yes/no question
    missing = sum(1 for qid, g in golden.items() if g.type in present and qid not in submission)
    scores.update(
        missing_predictions=missing,
        not_in_golden=sum(1 for qid in submission if qid not in golden),
        repeated_ids=repeats,
    )
    if missing or scores["not_in_golden"]:
        print(
            f"note: {missing} {'/'.join(sorted(present))} questions of {args.golden} are not in {args.submission} "
            f"(not scored, as the official evaluator does); {scores['not_in_golden']} submitted ids are not in "
            "the golden file (ignored)",
            file=sys.stderr,
            flush=True,
        )
    if repeats:
        print(
            f"note: {repeats} submitted questions repeat an earlier id; the first of each is scored, as the "
            "official evaluator does",
            file=sys.stderr,
            flush=True,
        )
    strings = scores.get("string_answers", 0) + scores.get("list", {}).get("string_answers", 0)
    if strings:
        print(
            f'note: {strings} factoid/list questions are answered by a string, not [["answer"], ...]; they '
            "score 0, as in the official evaluator",
            file=sys.stderr,
            flush=True,
        )
    print(json.dumps(scores, indent=2))
    return scores


if __name__ == "__main__":
    main()
