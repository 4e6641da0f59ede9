"""bioasq_eval against the official BioASQ evaluator, `EvaluatorTask1b -phaseB -e 5`.

Each case is a submission and either the numbers the official tool prints for it (the ten of
EvaluatorTask1b.EvaluatePhaseB, as fractions; 0 for a measure not listed) or the reason it refuses the file.
The expected values are derived by hand from the official source, github.com/BioASQ/Evaluation-Measures,
flat/BioASQEvaluation/src/: data/Task1bData.java (readData and its readers, getQuestion),
evaluation/QuestionAnswerEvaluator.java (per-question measures), evaluation/EvaluatorTask1b.java
(EvaluatePhaseB and the averages), data/ExactAnswer.java (containsAnswerSynonym). The comment above each
case quotes the statement that decides it.
"""

import json

import pytest

from biobert.errors import UserError
from finetune.bioasq_eval import main as bioasq_eval_main
from finetune.bioasq_eval import read_golden, read_submission
from finetune.tasks.qa_decode import QuestionPrediction
from finetune.tasks.registry import get_task
from finetune.tasks.yesno import YesNoPrediction

bioasq_eval = bioasq_eval_main.__wrapped__

GOLDEN = {
    "questions": [
        {"id": "f1", "type": "factoid", "body": "Which one?", "exact_answer": [["IL-6", "interleukin 6"], ["IL6"]]},
        {"id": "f2", "type": "factoid", "exact_answer": [["aspirin"]]},
        {"id": "f3", "type": "factoid", "exact_answer": [["5"]]},
        {"id": "l1", "type": "list", "exact_answer": [["liver"], ["brain", "cerebrum"], ["kidney"]]},
        {"id": "l2", "type": "list", "exact_answer": [["a", "b"], ["b"]]},
        {
            "id": "y1",
            "type": "yesno",
            "exact_answer": "yes",
            "ideal_answer": ["Yes."],
            "documents": ["http://www.ncbi.nlm.nih.gov/pubmed/1"],
            "concepts": [],
            "triples": [{"s": None, "p": "rdf:type", "o": "x"}],
            "snippets": [
                {
                    "document": "http://www.ncbi.nlm.nih.gov/pubmed/1",
                    "text": "Yes it is.",
                    "offsetInBeginSection": 0,
                    "offsetInEndSection": 10,
                    "beginSection": "sections.0",
                    "endSection": "sections.0",
                }
            ],
        },
        {"id": "y2", "type": "yesno", "exact_answer": "no"},
        {"id": "s1", "type": "summary", "ideal_answer": ["..."]},
    ]
}

# The ten numbers EvaluatePhaseB prints, in its order.
ORDER = ("yesno_acc", "strict", "lenient", "mrr", "list_p", "list_r", "list_f1", "yesno_macro_f1", "f1_yes", "f1_no")


def official_numbers(scores: dict) -> dict:
    """bioasq_eval's percentages as the official tool's fractions (0 where it has no question of a type)."""
    y, lst = scores.get("yesno", {}), scores.get("list", {})
    values = (
        y.get("accuracy", 0),
        scores.get("strict_acc", 0),
        scores.get("lenient_acc", 0),
        scores.get("mrr", 0),
        lst.get("mean_precision", 0),
        lst.get("mean_recall", 0),
        lst.get("mean_f1", 0),
        y.get("macro_f1", 0),
        y.get("f1_yes", 0),
        y.get("f1_no", 0),
    )
    return {name: value / 100 for name, value in zip(ORDER, values)}


def q(qid, exact=None, **extra) -> dict:
    return {"id": qid, **({} if exact is None else {"exact_answer": exact}), **extra}


ALL_GOLD_IDS = [
    q("f1", [["IL-6"]]),
    q("f2", [["x"]]),
    q("f3", [[5]]),
    q("l1", []),
    q("l2", []),
    q("y1", "yes"),
    q("y2", "yes"),
    q("s1"),
]

CASES = [
    # --- departures of the old scorer -----------------------------------------------------------------------------
    # Task1bData.readExactAnswerListOfArraysv3 (submissions, -e 5): `temp_ans_fisrt_item.add(temp_ans.get(0))`:
    # only "heart" and "brain" are read. heart FP, brain TP; liver and kidney FN -> P 1/2, R 1/3, F 0.4.
    (
        "list item: only its first string",
        [q("l1", [["heart", "liver"], ["Brain"]])],
        {"list_p": 1 / 2, "list_r": 1 / 3, "list_f1": 0.4},
    ),
    # Task1bData.getQuestion: `for(...) if(qst.getId().equals(id)) return qst;` -- the first entry of the id.
    ("repeated id: the first entry", [q("f2", [["ibuprofen"]]), q("f2", [["aspirin"]])], {}),
    # QuestionAnswerEvaluator.strictAccuracyForLists: `gold_answer.containsAnswerSynonym(listsOfFactAnswers.get(0)`
    # tests the "" at rank 1; meanReciprocalRankForLists: `1.0/(double)(i+1)` gives the synonym at rank 2 1/2.
    ("empty string ranked first", [q("f1", [[""], ["Interleukin 6"]])], {"lenient": 1, "mrr": 1 / 2}),
    # meanReciprocalRankForLists / lenientAccuracyForLists loop over every submitted item: no top-5 cut.
    ("sixth answer counts", [q("f2", [["a"], ["b"], ["c"], ["d"], ["e"], ["ASPIRIN"]])], {"lenient": 1, "mrr": 1 / 6}),
    # readExactAnswerArray: `reader.nextString()`, which Gson answers with a number's text: 5 is "5".
    ("a number answer is its text", [q("f3", [[5]])], {"strict": 1, "lenient": 1, "mrr": 1}),
    # readData: `else if(peek == JsonToken.STRING) //yesno` sets only the yes/no answer; the factoid has no items
    # (strictAccuracyForLists: `!listsOfFactAnswers.isEmpty()` fails) and still counts in EvaluatePhaseB's k.
    (
        "string answer to a factoid: 0, counted",
        [q("f2", "aspirin"), q("f1", [["il6"]])],
        {"strict": 1 / 2, "lenient": 1 / 2, "mrr": 1 / 2},
    ),
    # readData: `while(reader.hasNext())` over the top-level names reads each "questions" array; a dict kept one.
    (
        "two `questions` arrays are both read",
        '{"questions": [{"id": "f1", "exact_answer": [["x"]]}], '
        '"questions": [{"id": "f2", "exact_answer": [["aspirin"]]}]}',
        {"strict": 1 / 2, "lenient": 1 / 2, "mrr": 1 / 2},
    ),
    # getQuestion returns at the first match, so a question without id after every golden id is never reached.
    (
        "no id after every golden id: accepted",
        [*ALL_GOLD_IDS, {"exact_answer": [["x"]]}],
        {"strict": 2 / 3, "lenient": 2 / 3, "mrr": 2 / 3, "yesno_acc": 1 / 2, "f1_yes": 2 / 3, "yesno_macro_f1": 1 / 3},
    ),
    # --- agreements kept --------------------------------------------------------------------------------------
    # readExactAnswerListOfArraysv3: the inner `while (reader.hasNext())` never runs for [], so no item is added.
    ("empty item skipped", [q("f1", [[], ["IL6"]])], {"strict": 1, "lenient": 1, "mrr": 1}),
    # strictAccuracyForLists: `if(system_answer==null) return;` -- 0, and EvaluatePhaseB still adds it to k.
    (
        "no exact_answer: 0, counted",
        [q("f1"), q("f2", [["Aspirin"]])],
        {"strict": 1 / 2, "lenient": 1 / 2, "mrr": 1 / 2},
    ),
    # EvaluatePhaseB: `if(resp==null) continue;` -- a golden question not submitted is not scored at all.
    ("golden question not submitted: not scored", [q("f1", [["il-6"]])], {"strict": 1, "lenient": 1, "mrr": 1}),
    # EvaluatePhaseB: `new QuestionAnswerEvaluator(gold.getId(), gold.getType(), ...)`: the golden type decides.
    ("submitted type ignored", [q("f2", [["aspirin"]], type="list")], {"strict": 1, "lenient": 1, "mrr": 1}),
    # calculatePRFforListQuestions: containsAnswerSynonym(..., true) does `lists.remove(i)`, so "Liver" again is
    # an FP; cerebrum/brain is FN. TP 2, FP 1, FN 1.
    (
        "list repeat is a false positive",
        [q("l1", [["liver"], ["Liver"], ["kidney"]])],
        {"list_p": 2 / 3, "list_r": 2 / 3, "list_f1": 2 / 3},
    ),
    # calculatePRFforListQuestions, FN pass: `response.containsAnswerSynonym(golden.getLists().get(i),true)` finds
    # "b" again for the golden item ["b"] left after "b" took ["a", "b"]: FN 0.
    ("list second pass", [q("l2", [["b"]])], {"list_p": 1, "list_r": 1, "list_f1": 1}),
    # `if(response==null||response.getLists().isEmpty()) return;` -- l1 scores 0 and counts; l2: P 1, R 1/2.
    (
        "empty list answer: 0, counted",
        [q("l1", []), q("l2", [["a"]])],
        {"list_p": 1 / 2, "list_r": 1 / 4, "list_f1": 1 / 3},
    ),
    # readData: `if(yesno_answer.contains("yes")) ... else if(yesno_answer.contains("no"))` -- "Unknown" holds "no".
    (
        "yes/no by substring",
        [q("y1", "Yes, it is."), q("y2", "Unknown")],
        {"yesno_acc": 1, "yesno_macro_f1": 1, "f1_yes": 1, "f1_no": 1},
    ),
    # F1ExactAnswersYesNo: a wrong answer is counted as FP (or FN) of both labels: F1 yes 0/1, F1 no 2/3.
    ("yes/no F1", [q("y1", "no"), q("y2", "no")], {"yesno_acc": 1 / 2, "f1_no": 2 / 3, "yesno_macro_f1": 1 / 3}),
    # --- files the official tool refuses ----------------------------------------------------------------------
    # readSnippets: `reader.beginArray()` on a NUMBER throws IllegalStateException, which nothing catches
    # (the yes/no predictions_test.json used to write "snippets": 3).
    ("snippets: a number", [q("y1", "yes", snippets=3)], r"`snippets`: is a NUMBER.*Expected BEGIN_ARRAY"),
    # readSnippets: `else { }` leaves an unknown key's value unread; the next nextName() throws.
    (
        "snippet with another key",
        [q("y1", "yes", snippets=[{"document": "d", "score": 1}])],
        r"snippets`\[0\]\.score: is not a snippet field",
    ),
    # readData, peek1 == STRING under -e 5: readExactAnswerListOfArraysv3's `reader.beginArray()` meets a STRING.
    ("flat list of strings", [q("f2", ["aspirin"])], r"is a flat list of strings.*Expected BEGIN_ARRAY but was STRING"),
    # readExactAnswerListOfArraysv3: `reader.beginArray()` on the second element, a STRING.
    ("item not a list", [q("f2", [["aspirin"], "x"])], r"exact_answer`\[1\]: is a STRING, not a list"),
    # readData reads neither branch for NULL, then `reader.nextName()` throws "Expected a name but was NULL".
    ("exact_answer null", [q("f2", None, exact_answer=None)], r"is a NULL.*Expected a name but was NULL"),
    ("yes/no answer a number", [q("y1", 1)], r"is a NUMBER.*Expected a name but was NUMBER"),
    # QuestionAnswerEvaluator.accuracyYesNo: `response.getAnswer().isEmpty()` with no answer string: NPE.
    ("yes/no answered by a list", [q("y1", [["yes"]])], r"yes/no question of the golden file.*NullPointerException"),
    # Task1bData.getQuestion: `qst.getId().equals(id)` on a question without id, before golden f2 is found.
    (
        "no id before a golden id",
        [q("f1", [["x"]]), {"exact_answer": [["x"]]}, q("f2", [["x"]])],
        r"questions\[1\] has no `id`.*golden question f2.*NullPointerException",
    ),
    # Gson's strict JsonReader refuses NaN (MalformedJsonException).
    ("NaN", '{"questions": [{"id": "f2", "exact_answer": [[NaN]]}]}', r"malformed JSON.*NaN"),
]


@pytest.mark.parametrize("submission, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_scores_as_the_official_evaluator(tmp_path, submission, expected):
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(GOLDEN))
    path = tmp_path / "submission.json"
    path.write_text(submission if isinstance(submission, str) else json.dumps({"questions": submission}))
    if isinstance(expected, str):
        with pytest.raises(UserError, match=expected):
            bioasq_eval([str(path), str(golden)])
        return
    numbers = official_numbers(bioasq_eval([str(path), str(golden)]))
    assert numbers == pytest.approx({name: expected.get(name, 0) for name in ORDER})


def test_every_prediction_file_is_an_official_submission(tmp_path):
    """The factoid, list and yes/no predictions_test.json, read as the official reader reads them (and
    refused where it would stop), scored against a golden file."""
    factoid, lists, yesno = get_task("bioasq_7b"), get_task("bioasq_list_7b"), get_task("bioasq_yesno_7b")
    factoid.write_predictions(
        tmp_path / "f.json",
        None,
        [QuestionPrediction("f2", "1", [("Aspirin", 0.7), ("x", 0.3)]), QuestionPrediction("f1", "1", [])],
    )
    lists.write_predictions(
        tmp_path / "l.json", None, [QuestionPrediction("l1", "", [("liver", 0.9), ("kidney", 0.5), ("heart", 0.1)])]
    )
    yesno.write_predictions(
        tmp_path / "y.json",
        None,
        [YesNoPrediction("y1", "", "yes", 0.8, "yes", 3, 2), YesNoPrediction("y2", "", "yes", 0.6, "no", 2, 1)],
    )
    read = {name: read_submission(tmp_path / f"{name}.json") for name in "fly"}
    assert [(s.qid, s.lists) for s in read["f"]] == [("f2", [["aspirin"], ["x"]]), ("f1", [])]
    assert read["l"][0].lists == [["liver"], ["kidney"]] and [s.answer for s in read["y"]] == ["yes", "yes"]
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(GOLDEN))
    merged = {"questions": [json.loads((tmp_path / f"{name}.json").read_text())["questions"] for name in "fly"]}
    merged["questions"] = [question for part in merged["questions"] for question in part]
    (tmp_path / "all.json").write_text(json.dumps(merged))
    numbers = official_numbers(bioasq_eval([str(tmp_path / "all.json"), str(golden)]))
    # factoid f2 right at rank 1, f1 empty; list l1: liver and kidney of three; yes/no: y1 right, y2 wrong
    assert numbers == pytest.approx(
        {
            "yesno_acc": 1 / 2,
            "strict": 1 / 2,
            "lenient": 1 / 2,
            "mrr": 1 / 2,
            "list_p": 1,
            "list_r": 2 / 3,
            "list_f1": 0.8,
            "yesno_macro_f1": 1 / 3,
            "f1_yes": 2 / 3,
            "f1_no": 0,
        }
    )


def test_golden_file_read_as_the_official_reader(tmp_path):
    """A golden file the official reader stops on, or a golden question it cannot score, is an error naming
    the question; the Java code would stop, or score every submission 0 on it, or count it twice."""
    path = tmp_path / "golden.json"
    for questions, message in (
        ([{"id": "a", "type": "yesno", "exact_answer": ["yes"]}], r"questions\[0\] \(id a\): `exact_answer`: is a fl"),
        ([{"id": "a", "type": "factoid", "exact_answer": [["x"]]}] * 2, "question a appears twice"),
        ([{"id": "a", "type": "list", "exact_answer": "x", "snippets": {}}], r"`snippets`: is a BEGIN_OBJECT"),
    ):
        path.write_text(json.dumps({"questions": questions}))
        with pytest.raises(UserError, match=message):
            read_golden(path)
