"""BioASQ Task B factoid measures in Python: strict accuracy, lenient accuracy, MRR (what BioBERT reports).

Matches the official Java evaluator (BioASQ/Evaluation-Measures, `EvaluatorTask1b -phaseB -e 5`, i.e.
since BioASQ5) for factoid questions:

* Normalisation: golden and submitted answers are lower-cased (Java's `String.toLowerCase()`; here
  `str.lower()`) when read, and compared with exact string equality. Nothing else: no stripping of
  whitespace or punctuation, no article removal, no stemming. "IL-6" matches "il-6", not "IL 6".
* Golden `exact_answer` of a factoid question is a list of synonym lists; a submitted answer is correct
  if it equals ANY synonym of ANY of those lists. (A flat list of strings or a single string, seen in
  older releases, is read as one synonym list.) Of each submitted answer only the first string counts,
  as the evaluator does for submissions since BioASQ5.
* Strict accuracy: the first answer is correct. Lenient accuracy: any of the first 5 is. MRR: 1/rank of
  the first correct answer among the first 5, else 0. (BioASQ allows at most 5 answers; the Java code
  does not cut a longer list, we do, so an over-long list cannot gain.)
* Averaged over the factoid questions of the test set; a question with no answers scores 0. Golden
  questions that are not in the test set, or of another type (list, yesno, summary), are ignored.
* Several test batches (BioASQ-test-factoid-6b-1.json ... with 6B1_golden.json ...): each batch is
  scored on its own and the percentages are averaged over batches, as the BioBERT paper reports them.

    python -m finetune.bioasq_eval predictions_test.json 7B_golden.json
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

from biobert.errors import UserError, exit_on_user_error  # noqa: E402

TOP_K = 5


@dataclass
class GoldenQuestion:
    qid: str
    type: str  # "factoid", "list", "yesno", "summary"
    synonyms: list[list[str]]  # factoid: lower-cased synonym lists; [] for other types


def read_golden(path: str | Path) -> dict[str, GoldenQuestion]:
    """A BioASQ golden file: {"questions": [{"id", "type", "exact_answer", ...}]}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: golden file not found; BioASQ test sets are scored against the official "
                        "golden file (e.g. 7B_golden.json, or 7B1_golden.json for batch 1)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a valid UTF-8 JSON golden file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise UserError(f"{path}: expected a BioASQ golden file, a JSON object with a `questions` list")
    golden: dict[str, GoldenQuestion] = {}
    for i, q in enumerate(data["questions"]):
        if not isinstance(q, dict) or not isinstance(q.get("id"), str):
            raise UserError(f"{path}: questions[{i}] has no string `id`")
        qtype = str(q.get("type", ""))
        synonyms = _synonyms(q.get("exact_answer"), path, q["id"]) if qtype == "factoid" else []
        golden[q["id"]] = GoldenQuestion(q["id"], qtype, synonyms)
    return golden


def _synonyms(exact, path: Path, qid: str) -> list[list[str]]:
    if isinstance(exact, str):
        exact = [exact]
    if not isinstance(exact, list) or not exact:
        raise UserError(f"{path}: factoid question {qid} has no `exact_answer` list")
    if all(isinstance(x, str) for x in exact):
        exact = [exact]
    lists = []
    for item in exact:
        if not isinstance(item, list) or not all(isinstance(x, str) for x in item):
            raise UserError(f"{path}: factoid question {qid}: `exact_answer` must be a list of synonym "
                            f"lists of strings, found {item!r}")
        lists.append([x.lower() for x in item])
    return lists


def is_correct(answer: str, synonyms: Sequence[Sequence[str]]) -> bool:
    """Official matching: lower-cased exact equality with any synonym (synonyms already lower-cased)."""
    answer = answer.lower()
    return any(answer == s for group in synonyms for s in group)


def factoid_scores(predictions: Mapping[str, Sequence[str]], golden: Mapping[str, GoldenQuestion],
                   qids: Sequence[str], *, test_file: str = "", golden_file: str = "") -> dict[str, float]:
    """Strict/lenient accuracy and MRR (in %) over the factoid questions `qids` of one test batch.

    `predictions[qid]` is the ranked answer list (missing or empty: scores 0). A qid absent from the
    golden file is an error naming both files, because scoring it as wrong would hide a mismatched pair
    of files.
    """
    strict = lenient = rr = 0.0
    scored = skipped = 0
    for qid in qids:
        gold = golden.get(qid)
        if gold is None:
            raise UserError(f"question {qid} of test file {test_file or '?'} is not in golden file "
                            f"{golden_file or '?'}; pair each test batch with its own golden file "
                            "(BioASQ-test-factoid-7b-3.json with 7B3_golden.json)")
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


def average_batches(batches: Sequence[tuple[str, dict[str, float]]]) -> dict[str, float]:
    """Mean of the per-batch percentages (BioBERT's protocol); counts are summed; per-batch values kept
    as `<measure>_<batch>` when there is more than one batch."""
    if len(batches) == 1:
        return dict(batches[0][1])
    out: dict[str, float] = {}
    for key in ("strict_acc", "lenient_acc", "mrr"):
        out[key] = sum(scores[key] for _, scores in batches) / len(batches)
    for key in ("questions", "strict_correct", "lenient_correct", "non_factoid_skipped"):
        out[key] = sum(scores[key] for _, scores in batches)
    out["batches"] = len(batches)
    for name, scores in batches:
        for key in ("strict_acc", "lenient_acc", "mrr", "questions"):
            out[f"{key}_{name}"] = scores[key]
    return out


def read_submission(path: str | Path) -> dict[str, list[str]]:
    """A BioASQ submission (or our predictions_test.json): {"questions": [{"id", "exact_answer": [[a], ...]}]}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {q["id"]: [a[0] if isinstance(a, list) else a for a in q.get("exact_answer") or [] if a]
                for q in data["questions"]}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise UserError(f"{path}: cannot read a BioASQ submission ({e!r}); expected {{\"questions\": "
                        "[{\"id\": ..., \"exact_answer\": [[\"answer\"], ...]}]}") from None


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", help="predictions_test.json or any BioASQ phase B submission")
    parser.add_argument("golden", help="the official golden file, e.g. 7B_golden.json")
    args = parser.parse_args(argv)
    submission = read_submission(args.submission)
    golden = read_golden(args.golden)
    scores = factoid_scores(submission, golden, list(submission),
                            test_file=args.submission, golden_file=args.golden)
    print(json.dumps(scores, indent=2))
    return scores


if __name__ == "__main__":
    main()
