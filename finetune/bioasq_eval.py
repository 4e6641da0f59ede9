"""BioASQ Task B (phase B) measures in Python: factoid, yes/no and list questions, as BioBERT reports them.

Matches the official Java evaluator (BioASQ/Evaluation-Measures, `EvaluatorTask1b -phaseB -e 5`, i.e.
since BioASQ5; `QuestionAnswerEvaluator.java`, `Task1bData.java`, `ExactAnswer.java`):

* Normalisation: golden and submitted answers are lower-cased (Java's `String.toLowerCase()`; here
  `str.lower()`) when read, and compared with exact string equality. Nothing else: no stripping of
  whitespace or punctuation, no article removal, no stemming. "IL-6" matches "il-6", not "IL 6".
* Factoid. Golden `exact_answer` is a list of synonym lists; a submitted answer is correct if it equals
  ANY synonym of ANY of those lists. (A flat list of strings or a single string, seen in older releases,
  is read as one synonym list.) Of each submitted answer only the first string counts, as the evaluator
  does for submissions since BioASQ5. Strict accuracy: the first answer is correct. Lenient accuracy:
  any of the first 5 is. MRR: 1/rank of the first correct answer among the first 5, else 0. (BioASQ
  allows at most 5 answers; the Java code does not cut a longer list, we do, so it cannot gain.)
* Yes/no. Golden `exact_answer` is "yes" or "no" (any case). A submitted answer is lower-cased and read
  as "yes" if it contains "yes", else "no" if it contains "no", else it is wrong (the evaluator's rule).
  Accuracy; F1 of "yes" and F1 of "no", each 2TP / (2TP + FP + FN) with that class as the positive one
  (0 when nothing is counted); macro F1 = their mean. BioASQ yes/no is mostly "yes" (7b: 94 of 140), so
  the majority-class baseline is reported beside them: the constant answer most frequent among the scored
  questions' gold answers (ties: "yes"), scored the same way (`baseline_*`).
* List. Golden `exact_answer` is a list of items, each a synonym list. Per question, in submission order,
  a submitted answer (all strings of a submitted item are its synonyms) is a true positive if it equals
  a synonym of a golden item not matched yet (that item is used up), else a false positive: a repeated
  answer is a false positive. False negatives are the golden items left unmatched that no submitted
  answer names (the evaluator's second pass, each submitted answer used once). Precision TP/(TP+FP),
  recall TP/(TP+FN), F1 (0 when either is 0); an empty answer list scores 0. Reported: the mean
  precision, recall and F1 over the list questions (`mean_precision`, `mean_recall`, `mean_f1`).
* Which questions. The scores of a test file average over its questions of that type; golden questions of
  other types (summary, ...) are skipped and counted. A test question absent from the golden file is an
  error naming both files (a mismatched pair of files must not pass as a low score). A test question
  without a prediction is counted (`missing_predictions`) and scores as unanswered. The command line
  scores the golden questions the submission answers, as the evaluator does, and reports how many it
  lacks and how many submitted ids the golden file does not know.
* Several test batches (BioASQ-test-factoid-6b-1.json ... with 6B1_golden.json ...): each batch is
  scored on its own and the percentages are averaged over batches, as the BioBERT paper reports them.

    python finetune/bioasq_eval.py predictions_test.json 7B_golden.json [--list_threshold 0.3]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biobert.config import read_json  # noqa: E402
from biobert.errors import UserError, exit_on_user_error  # noqa: E402

TOP_K = 5
LIST_THRESHOLD = 0.42  # dmis-lab/bioasq-biobert biocodes/transform_n2b_list.py `--threshold` default
LIST_MAX_ANSWERS = 100  # a guard; BioBERT's transform sets no cap
GOLDEN_HINT = "pass the official golden file of this test set (e.g. 7B_golden.json, or 7B1_golden.json for batch 1)"
# averaged over batches (percentages); every other number is a count and is summed
MEASURES = ("strict_acc", "lenient_acc", "mrr", "accuracy", "f1_yes", "f1_no", "macro_f1", "baseline_accuracy",
            "baseline_macro_f1", "vote_accuracy", "vote_macro_f1", "mean_precision", "mean_recall", "mean_f1")
PER_BATCH = ("strict_acc", "lenient_acc", "mrr", "accuracy", "macro_f1", "mean_precision", "mean_recall",
             "mean_f1", "questions")


@dataclass
class GoldenQuestion:
    qid: str
    type: str  # "factoid", "list", "yesno", "summary"
    synonyms: list[list[str]]  # factoid: one list of lower-cased synonyms per item (list: per item); else []
    answer: str = ""  # yes/no: "yes" or "no"
    problem: str = ""  # why this question's answer cannot be used; raised only when its type is scored


def read_golden(path: str | Path) -> dict[str, GoldenQuestion]:
    """A BioASQ golden file: {"questions": [{"id", "type", "exact_answer", ...}]}.

    A malformed factoid answer is an error at once; a malformed list or yes/no answer only when that
    type is scored, so a factoid run is never stopped by a question it does not use.
    """
    path = Path(path)
    try:
        data = read_json(path, "golden")
    except UserError as e:
        raise UserError(f"{e}; {GOLDEN_HINT}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e}); {GOLDEN_HINT}") from None
    if not isinstance(data.get("questions"), list):
        raise UserError(f"{path}: expected a BioASQ golden file, a JSON object with a `questions` list")
    golden: dict[str, GoldenQuestion] = {}
    for i, q in enumerate(data["questions"]):
        if not isinstance(q, dict) or not isinstance(q.get("id"), str):
            raise UserError(f"{path}: questions[{i}] has no string `id`")
        qid, qtype = q["id"], str(q.get("type", ""))
        gold = GoldenQuestion(qid, qtype, [])
        try:
            if qtype in ("factoid", "list"):
                gold.synonyms = _synonyms(q.get("exact_answer"), path, qid, qtype)
            elif qtype == "yesno":
                gold.answer = _golden_yesno(q.get("exact_answer"), path, qid)
        except UserError as e:
            if qtype == "factoid":
                raise
            gold.problem = str(e)
        golden[qid] = gold
    return golden


def _synonyms(exact, path: Path, qid: str, qtype: str) -> list[list[str]]:
    if isinstance(exact, str):
        exact = [exact]
    if not isinstance(exact, list) or not exact:
        raise UserError(f"{path}: {qtype} question {qid} has no `exact_answer` list; fix the golden file")
    if all(isinstance(x, str) for x in exact):
        exact = [exact] if qtype == "factoid" else [[x] for x in exact]
    lists = []
    for item in exact:
        if not isinstance(item, list) or not all(isinstance(x, str) for x in item):
            raise UserError(f"{path}: {qtype} question {qid}: `exact_answer` must be a list of synonym "
                            f"lists of strings, found {item!r}")
        lists.append([x.lower() for x in item])
    return lists


def _golden_yesno(exact, path: Path, qid: str) -> str:
    if isinstance(exact, list) and len(exact) == 1:
        exact = exact[0]
    text = exact.strip().lower() if isinstance(exact, str) else None
    if text not in ("yes", "no"):
        raise UserError(f"{path}: yes/no question {qid}: `exact_answer` is {exact!r}, expected \"yes\" or "
                        "\"no\"; fix the golden file")
    return text


def is_correct(answer: str, synonyms: Sequence[Sequence[str]]) -> bool:
    """Official matching: lower-cased exact equality with any synonym (synonyms already lower-cased)."""
    answer = answer.lower()
    return any(answer == s for group in synonyms for s in group)


def _gold_of(golden: Mapping[str, GoldenQuestion], qid: str, test_file: str, golden_file: str) -> GoldenQuestion:
    gold = golden.get(qid)
    if gold is None:
        raise UserError(f"question {qid} of test file {test_file or '?'} is not in golden file "
                        f"{golden_file or '?'}; pair each test batch with its own golden file "
                        "(BioASQ-test-factoid-7b-3.json with 7B3_golden.json)")
    return gold


def factoid_scores(predictions: Mapping[str, Sequence[str]], golden: Mapping[str, GoldenQuestion],
                   qids: Sequence[str], *, test_file: str = "", golden_file: str = "") -> dict[str, float]:
    """Strict/lenient accuracy and MRR (in %) over the factoid questions `qids` of one test batch.

    `predictions[qid]` is the ranked answer list (missing or empty: scores 0).
    """
    strict = lenient = rr = 0.0
    scored = skipped = 0
    for qid in qids:
        gold = _gold_of(golden, qid, test_file, golden_file)
        if gold.type != "factoid":
            skipped += 1
            continue
        scored += 1
        ranked = list(predictions.get(qid, ()))[:TOP_K]
        rank = next((r for r, answer in enumerate(ranked, start=1) if is_correct(answer, gold.synonyms)), 0)
        strict += rank == 1
        lenient += rank > 0
        rr += 1.0 / rank if rank else 0.0
    n = max(scored, 1)
    return {"strict_acc": 100 * strict / n, "lenient_acc": 100 * lenient / n, "mrr": 100 * rr / n,
            "questions": scored, "strict_correct": int(strict), "lenient_correct": int(lenient),
            "non_factoid_skipped": skipped}


def read_yesno_answer(answer) -> str:
    """The evaluator's reading of a submitted yes/no answer: "yes", "no", or "" (wrong either way)."""
    text = answer.lower() if isinstance(answer, str) else ""
    return "yes" if "yes" in text else "no" if "no" in text else ""


def _yesno_measures(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    correct = [g == p for g, p in zip(gold, predicted)]
    out = {"accuracy": 100 * sum(correct) / max(len(gold), 1)}
    for label in ("yes", "no"):
        tp = sum(c and g == label for g, c in zip(gold, correct))
        errors = sum(not c for c in correct)  # a miss of this class (FN) or a false alarm of it (FP)
        out[f"f1_{label}"] = 100 * 2 * tp / (2 * tp + errors) if 2 * tp + errors else 0.0
    out["macro_f1"] = (out["f1_yes"] + out["f1_no"]) / 2
    return out


def _of_type(golden: Mapping[str, GoldenQuestion], qids: Sequence[str], qtype: str, test_file: str,
             golden_file: str) -> tuple[list[tuple[str, GoldenQuestion]], int]:
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


def yesno_scores(predictions: Mapping[str, str], golden: Mapping[str, GoldenQuestion], qids: Sequence[str], *,
                 test_file: str = "", golden_file: str = "") -> dict:
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
    return {**_yesno_measures(gold, predicted), "baseline_answer": majority,
            "baseline_accuracy": baseline["accuracy"], "baseline_macro_f1": baseline["macro_f1"],
            "questions": len(gold), "correct": sum(g == p for g, p in zip(gold, predicted)),
            "gold_yes": gold.count("yes"), "predicted_yes": predicted.count("yes"),
            "missing_predictions": missing, "non_yesno_skipped": skipped}


def list_counts(answers: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> tuple[int, int, int]:
    """(TP, FP, FN) of one list question, in the evaluator's two passes (see the module docstring)."""
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


def list_scores(predictions: Mapping[str, Sequence[Sequence[str]]], golden: Mapping[str, GoldenQuestion],
                qids: Sequence[str], *, test_file: str = "", golden_file: str = "") -> dict:
    """Mean precision, recall and F1 (in %) over the list questions `qids`; `predictions[qid]` is the list
    of submitted answers, each a list of synonyms (ours: one string each)."""
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
    return {"mean_precision": 100 * precision / n, "mean_recall": 100 * recall / n, "mean_f1": 100 * f1 / n,
            "questions": scored, "missing_predictions": missing, "non_list_skipped": skipped}


def select_list_answers(candidates: Sequence[tuple[str, float]], threshold: float = LIST_THRESHOLD,
                        max_answers: int = LIST_MAX_ANSWERS) -> list[str]:
    """A list question's answers from its pooled candidates (ranked by probability): every one with
    probability >= `threshold`, at most `max_answers`, and at least the most probable one."""
    ranked = sorted(candidates, key=lambda c: -c[1])
    chosen = [text for text, p in ranked if p >= threshold][:max(1, max_answers)]
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


def read_submission(path: str | Path) -> dict[str, dict]:
    """A BioASQ submission (or our predictions_test.json): {"questions": [{"id", "exact_answer", ...}]},
    as {id: question}; the answer is read by its golden question's type (`submitted_answer`)."""
    path = Path(path)
    layout = "expected {\"questions\": [{\"id\": ..., \"exact_answer\": ...}]}"
    try:
        data = read_json(path, "BioASQ submission")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e}); {layout}") from None
    if not isinstance(data.get("questions"), list):
        raise UserError(f"{path}: no `questions` list; {layout}")
    out = {}
    for i, q in enumerate(data["questions"]):
        if not isinstance(q, dict) or not isinstance(q.get("id"), str):
            raise UserError(f"{path}: questions[{i}] has no string `id`; {layout}")
        out[q["id"]] = q
    return out


def submitted_answer(question: dict, qtype: str, path: str | Path):
    """factoid: ranked first strings; list: synonym lists; yesno: the string."""
    exact = question.get("exact_answer")
    if qtype == "yesno":
        return exact if isinstance(exact, str) else ""
    if exact in (None, ""):
        return []
    if not isinstance(exact, list):
        raise UserError(f"{path}: {qtype} question {question['id']}: `exact_answer` must be a list of answers "
                        f"([[\"a\"], [\"b\"]]), found {exact!r}")
    items = [[a] if isinstance(a, str) else [x for x in a if isinstance(x, str)] for a in exact
             if isinstance(a, (str, list))]
    items = [item for item in items if item and item[0]]
    return [item[0] for item in items] if qtype == "factoid" else items


def _reselect(question: dict, args: argparse.Namespace, path: str) -> list[list[str]]:
    candidates = question.get("answers_with_probability")
    if not isinstance(candidates, list):
        raise UserError(f"{path}: list question {question['id']} has no `answers_with_probability`, which "
                        "--list_threshold re-selects from (predictions_test.json of a bioasq_list task has it)")
    pairs = [(str(c.get("text", "")), float(c.get("probability", 0.0))) for c in candidates if isinstance(c, dict)]
    return [[a] for a in select_list_answers(pairs, args.list_threshold, args.list_max_answers)]


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", help="predictions_test.json or any BioASQ phase B submission")
    parser.add_argument("golden", help="the official golden file, e.g. 7B_golden.json")
    parser.add_argument("--list_threshold", type=float, default=None,
                        help=f"re-select list answers from `answers_with_probability` with this threshold "
                             f"(run_task uses {LIST_THRESHOLD})")
    parser.add_argument("--list_max_answers", type=int, default=LIST_MAX_ANSWERS)
    args = parser.parse_args(argv)
    submission = read_submission(args.submission)
    golden = read_golden(args.golden)
    answered = [qid for qid in golden if qid in submission]
    if not answered:
        raise UserError(f"no question of {args.submission} is in {args.golden}; pair the submission with the "
                        "golden file of its test set")
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
        if qtype == "factoid":  # the factoid measures stay at the top level, as before
            scores.update(result)
        else:
            scores[qtype] = result
    present = {golden[qid].type for qid in answered}  # a factoid-only submission lacks no yes/no question
    missing = sum(1 for qid, g in golden.items() if g.type in present and qid not in submission)
    scores["missing_predictions"] = missing
    scores["not_in_golden"] = sum(1 for qid in submission if qid not in golden)
    if missing or scores["not_in_golden"]:
        print(f"note: {missing} {'/'.join(sorted(present))} questions of {args.golden} are not in {args.submission} "
              f"(not scored, as the official evaluator does); {scores['not_in_golden']} submitted ids are not in "
              "the golden file (ignored)", file=sys.stderr, flush=True)
    print(json.dumps(scores, indent=2))
    return scores


if __name__ == "__main__":
    main()
