"""BioASQ yes/no and list questions: readers, pooling, the official measures by hand, end to end, tables."""

import json
from pathlib import Path

import pytest
import torch

from biobert.errors import UserError
from conftest import SHARED_DATA
from finetune.bioasq_eval import (
    GoldenQuestion,
    average_batches,
    list_counts,
    list_scores,
    read_golden,
    select_list_answers,
    yesno_scores,
)
from finetune.bioasq_eval import main as bioasq_eval_main
from finetune.run_task import main
from finetune.summarize import main as summarize_main
from finetune.tasks.base import SplitData
from finetune.tasks.registry import get_task, task_names
from finetune.tasks.yesno import YesNoExample, YesNoFeature, pool_yesno, read_yesno_json

finetune, bioasq_eval, summarize = main.__wrapped__, bioasq_eval_main.__wrapped__, summarize_main.__wrapped__
Y = [f"5c00000000000000000c000{i}" for i in range(1, 8)]  # yes/no questions: 4 train, 3 test
L = [f"5c00000000000000000d000{i}" for i in range(1, 6)]  # list questions: 3 train, 2 test
FACTOID = "5c00000000000000000b0001"


def squad_file(path: Path, pairs: list[tuple[str, str, str, dict]]) -> Path:
    """BioBERT's SQuAD-like layout: one paragraph per (question, snippet); `pairs` = (id, question, context,
    extra qa fields)."""
    paragraphs = [{"context": c, "qas": [{"id": i, "question": q, **extra}]} for i, q, c, extra in pairs]
    path.write_text(json.dumps({"version": "BioASQ7b", "data": [{"title": "BioASQ7b", "paragraphs": paragraphs}]}))
    return path


def write_data(folder: Path) -> Path:
    """Yes/no and list files of BioASQ 7b and their golden file, as BioBERT's release lays them out."""
    folder.mkdir(parents=True, exist_ok=True)
    yes, no = {"answers": "yes", "is_impossible": False}, {"answers": "no", "is_impossible": True}
    squad_file(
        folder / "BioASQ-train-yesno-7b.json",
        [
            (f"{Y[0]}_001", "Is the gene associated with cancer?", "The gene expression was increased in cancer.", yes),
            (f"{Y[0]}_002", "Is the gene associated with cancer?", "Gene mutation is a cancer risk factor.", yes),
            (f"{Y[1]}_001", "Is the drug toxic to the liver?", "The drug dose had no effect on the liver.", no),
            (f"{Y[1]}_002", "Is the drug toxic to the liver?", "Liver levels were not increased by the drug.", no),
            (
                f"{Y[2]}_001",
                "Does the virus infect the lung?",
                "The virus infection of the lung was observed.",
                {"is_impossible": False},
            ),  # the SQuAD-v2 field alone
            (
                f"{Y[3]}_001",
                "Is the protein in the blood?",
                "No protein was observed in the blood.",
                {"answers": [{"text": "No", "answer_start": 0}]},
            ),  # SQuAD's list of answers
        ],
    )
    squad_file(
        folder / "BioASQ-test-yesno-7b.json",
        [
            (f"{Y[4]}_001", "Is the receptor in the brain?", "The receptor binding in the brain was increased.", {}),
            (f"{Y[4]}_002", "Is the receptor in the brain?", "Brain receptor levels were observed in mice.", {}),
            (f"{Y[5]}_001", "Is the acid a drug?", "The acid was not a drug in the study.", {}),
            (f"{Y[6]}_001", "Is the dna damaged in the heart?", "Dna damage in the heart was increased.", {}),
            (f"{Y[6]}_002", "Is the dna damaged in the heart?", "Heart cells with dna damage were observed.", {}),
        ],
    )

    def answers(context: str, *texts: str) -> dict:
        return {"answers": [{"text": t, "answer_start": context.index(t)} for t in texts]}

    c1, c2, c3 = (
        "The liver and the kidney were affected in patients.",
        "Blood and brain cells were observed.",
        "The lung was affected.",
    )
    squad_file(
        folder / "BioASQ-train-list-7b.json",
        [
            (f"{L[0]}_001", "Which organs were affected?", c1, answers(c1, "liver", "kidney")),  # two spans
            (f"{L[1]}_001", "Which cells were observed?", c2, answers(c2, "Blood", "brain")),
            (f"{L[2]}_001", "Which organ was affected?", c3, {"answers": []}),  # no answer: left out, counted
        ],
    )
    squad_file(
        folder / "BioASQ-test-list-7b.json",
        [
            (f"{L[3]}_001", "Which organs were affected?", "The heart and the lung were affected.", {}),
            (f"{L[3]}_002", "Which organs were affected?", "Lung and liver cells were affected.", {}),
            (f"{L[4]}_001", "Which cells were observed?", "Immune cells and blood cells were observed.", {}),
        ],
    )
    golden = [
        {"id": FACTOID, "type": "factoid", "exact_answer": [["kinase"]]},
        {"id": Y[4], "type": "yesno", "exact_answer": "yes"},
        {"id": Y[5], "type": "yesno", "exact_answer": "no"},
        {"id": Y[6], "type": "yesno", "exact_answer": "Yes"},
        {"id": L[3], "type": "list", "exact_answer": [["heart"], ["lung", "lungs"], ["liver"]]},
        {"id": L[4], "type": "list", "exact_answer": [["blood cells", "blood"], ["immune cells"]]},
        {"id": "5c00000000000000000e0001", "type": "summary", "ideal_answer": ["..."]},
    ]
    (folder / "7B_golden.json").write_text(json.dumps({"questions": golden}))
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("bioasq") / "QA" / "BioASQ")


# ------------------------------------------------------------------------------------------- measures


def yesno_golden(*answers: str) -> dict[str, GoldenQuestion]:
    return {f"q{i}": GoldenQuestion(f"q{i}", "yesno", [], answer=a) for i, a in enumerate(answers)}


def test_yesno_measures_by_hand():
    golden = yesno_golden("yes", "yes", "yes", "no", "no")
    golden["f"] = GoldenQuestion("f", "factoid", [["x"]])
    # correct: q0 ("Yes." reads as yes), q1, q3 ("NO"); wrong: q2, q4; "extra" is not asked for
    predictions = {"q0": "Yes.", "q1": "yes", "q2": "no", "q3": "NO", "q4": "yes", "extra": "yes"}
    scores = yesno_scores(predictions, golden, ["q0", "q1", "q2", "q3", "q4", "f"])
    assert scores["accuracy"] == pytest.approx(60.0)
    assert scores["f1_yes"] == pytest.approx(100 * 4 / 6)  # TP 2; one yes missed, one no called yes
    assert scores["f1_no"] == pytest.approx(50.0)  # TP 1 of 2 (2*1 / (2*1 + 2))
    assert scores["macro_f1"] == pytest.approx((100 * 4 / 6 + 50) / 2)
    # the majority class (yes, 3 of 5) always: accuracy 60, F1 yes 6/8, F1 no 0
    assert (scores["baseline_answer"], scores["baseline_accuracy"]) == ("yes", pytest.approx(60.0))
    assert scores["baseline_macro_f1"] == pytest.approx(37.5)
    assert (scores["questions"], scores["correct"], scores["non_yesno_skipped"]) == (5, 3, 1)
    # a missing prediction and an answer that is neither are wrong, and the missing one is counted
    scores = yesno_scores({"q0": "maybe"}, golden, ["q0", "q3"])
    assert (scores["accuracy"], scores["missing_predictions"], scores["f1_yes"], scores["f1_no"]) == (0, 1, 0, 0)
    with pytest.raises(UserError, match="question nope of test file t.json is not in golden file g.json"):
        yesno_scores({}, golden, ["nope"], test_file="t.json", golden_file="g.json")


def test_yesno_pooling_mean_probability_and_vote_differ(tmp_path):
    pairs = [("q1", 0.6), ("q1", 0.6), ("q1", 0.1), ("q2", 0.9), ("q2", 0.2), ("q3", 0.2), ("q3", 0.8)]
    examples = [
        YesNoExample(f"{q}_{i:03d}", q, "?", "c", [], "f.json", "", False, "yes") for i, (q, _) in enumerate(pairs)
    ]
    examples[-1].label = examples[-2].label = "no"
    features = [YesNoFeature([2, 3], [0, 0], i, 1) for i in range(len(pairs))]
    features.append(YesNoFeature([2, 3], [0, 0], 5, 1))  # q3's first snippet has a second window
    probs = [p for _, p in pairs] + [0.4]
    predictions = pool_yesno(examples, features, probs)
    by_q = {p.qid: p for p in predictions}
    # q1: mean 0.433 -> no, but two of three snippets say yes; q2: a tie keeps the mean's answer
    assert (by_q["q1"].answer, by_q["q1"].vote, by_q["q1"].yes_votes) == ("no", "yes", 2)
    assert by_q["q1"].probability_yes == pytest.approx(1.3 / 3)
    assert (by_q["q2"].answer, by_q["q2"].vote) == ("yes", "yes")
    # q3: snippet 1 = mean of its windows (0.2, 0.4) = 0.3, snippet 2 = 0.8: mean 0.55 -> yes, vote tie -> yes
    assert (by_q["q3"].answer, by_q["q3"].probability_yes) == ("yes", pytest.approx(0.55))
    task = get_task("bioasq_yesno_7b")  # not the test split: scored against the labels in the file
    scores = task.score(SplitData("devel", Path("f.json"), examples, features), predictions)
    # gold q1 yes, q2 yes, q3 no: mean pooling gets only q2 right, the vote gets q1 and q2
    assert (scores["accuracy"], scores["vote_accuracy"]) == (pytest.approx(100 / 3), pytest.approx(200 / 3))
    assert scores["gold_from"] == "test file" and scores["questions"] == 3
    examples[1].label = "no"
    with pytest.raises(UserError, match="f.json: the snippets of question q1 carry different yes/no answers"):
        task.score(SplitData("devel", Path("f.json"), examples, features), predictions)


def test_list_measures_by_hand():
    golden = {
        "a": GoldenQuestion("a", "list", [["il-6", "interleukin 6"], ["tnf"], ["crp"]]),
        "b": GoldenQuestion("b", "list", [["liver"], ["brain"]]),
        "c": GoldenQuestion("c", "list", [["kidney"]]),
        "y": GoldenQuestion("y", "yesno", [], answer="yes"),
    }
    # a: a synonym in another case matches item 1; "IL-6" names the same, used-up item: a false positive
    assert list_counts([["Interleukin 6"], ["IL-6"], ["tnf"], ["liver"]], golden["a"].synonyms) == (2, 2, 1)
    predictions = {"a": [["Interleukin 6"], ["IL-6"], ["tnf"], ["liver"]], "c": ["KIDNEY"]}
    scores = list_scores(predictions, golden, ["a", "b", "c", "y"])
    # a: P 2/4, R 2/3, F 4/7; b (no prediction): 0, 0, 0; c: 1, 1, 1
    assert scores["mean_precision"] == pytest.approx(100 * (0.5 + 0 + 1) / 3)
    assert scores["mean_recall"] == pytest.approx(100 * (2 / 3 + 0 + 1) / 3)
    assert scores["mean_f1"] == pytest.approx(100 * (4 / 7 + 0 + 1) / 3)
    assert (scores["questions"], scores["missing_predictions"], scores["non_list_skipped"]) == (3, 1, 1)
    # the evaluator's second pass: an answer naming two golden items covers the second one's recall
    assert list_counts([["x"]], [["x"], ["x", "y"]]) == (1, 0, 0)
    assert select_list_answers([("b", 0.42), ("a", 0.9), ("c", 0.41)]) == ["a", "b"]
    assert select_list_answers([("b", 0.42), ("a", 0.9)], max_answers=1) == ["a"]
    assert select_list_answers([("b", 0.2), ("a", 0.3)]) == ["a"] and select_list_answers([]) == []
    avg = average_batches(
        [
            ("1", {"mean_f1": 50.0, "questions": 2, "gold_from": "golden file"}),
            ("2", {"mean_f1": 100.0, "questions": 1, "gold_from": "golden file"}),
        ]
    )
    assert avg == {
        "mean_f1": 75.0,
        "questions": 3,
        "gold_from": "golden file",
        "batches": 2,
        "mean_f1_1": 50.0,
        "questions_1": 2,
        "mean_f1_2": 100.0,
        "questions_2": 1,
    }


# -------------------------------------------------------------------------------------- readers, errors


def test_readers_and_their_errors(data, tmp_path):
    train = read_yesno_json(data / "BioASQ-train-yesno-7b.json", training=True)
    assert [e.label for e in train] == ["yes", "yes", "no", "no", "yes", "no"] and train[0].qid == Y[0]
    assert all(e.label == "" for e in read_yesno_json(data / "BioASQ-test-yesno-7b.json"))
    bad = tmp_path / "bad.json"
    for extra, message in (
        ({"answers": "maybe"}, '`answers` is \'maybe\'; expected "yes" or "no"'),
        ({"answers": "yes", "is_impossible": True}, "the answer fields disagree"),
        ({"is_impossible": "no"}, "`is_impossible` is 'no'; expected true or false"),
        # nested values used to crash with "TypeError: unhashable type: 'list'"
        ({"answers": [["yes"]]}, r"`answers` is \[\['yes'\]\]; expected \"yes\" or \"no\""),
        ({"answers": [{"text": ["yes"]}]}, r"`answers` is \[\{'text': \['yes'\]\}\]; expected"),
    ):
        squad_file(bad, [("q_001", "?", "c", {"answers": "no"}), ("q_002", "?", "c", extra)])
        with pytest.raises(UserError, match=rf"bad.json: data\[0\].paragraphs\[1\].qas\[0\] \(id q_002\): {message}"):
            read_yesno_json(bad)
    squad_file(bad, [("q_001", "?", "c", {})])
    with pytest.raises(UserError, match=r"\(id q_001\) has no yes/no answer; a training file needs"):
        read_yesno_json(bad, training=True)
    # golden: a bad yes/no or list answer stops only the scoring of that type, naming file and question
    golden = tmp_path / "7B_golden.json"
    golden.write_text(
        json.dumps(
            {
                "questions": [
                    {"id": "y", "type": "yesno", "exact_answer": "maybe"},
                    {"id": "l", "type": "list"},
                    {"id": "f", "type": "factoid", "exact_answer": [["x"]]},
                ]
            }
        )
    )
    read = read_golden(golden)
    with pytest.raises(UserError, match="7B_golden.json: yes/no question y: `exact_answer` is 'maybe'"):
        yesno_scores({"y": "yes"}, read, ["y"])
    with pytest.raises(UserError, match="7B_golden.json: list question l has no `exact_answer` list"):
        list_scores({"l": [["x"]]}, read, ["l"])
    golden.write_text("{")
    with pytest.raises(UserError, match=r"7B_golden.json:1:2: malformed JSON in golden.*pass the official golden"):
        read_golden(golden)
    with pytest.raises(UserError, match="nope.json: golden file not found; pass the official golden file"):
        read_golden(tmp_path / "nope.json")


def test_files_found_per_type_and_test_files_without_golden(data, tmp_path):
    task = get_task("bioasq_yesno")  # the only version; the bundle root is searched down to QA/BioASQ
    files = task.splits(data.parents[1])
    assert files == {"train": data / "BioASQ-train-yesno-7b.json", "test": data / "BioASQ-test-yesno-7b.json"}
    assert get_task("bioasq_list_7b").splits(data)["train"] == data / "BioASQ-train-list-7b.json"
    assert {"bioasq_yesno_4b", "bioasq_yesno_8b", "bioasq_list_5b", "bioasq_7b"} <= set(task_names()["qa"])
    # BioBERT's variant names; two variants of one file in one folder are refused
    folder = tmp_path / "variants"
    folder.mkdir()
    for name in ("BioASQ-train-yesno-6b-snippet.json", "BioASQ-test-yesno-6b-3-snippet.json"):
        (folder / name).write_text((data / "BioASQ-test-yesno-7b.json").read_text())
    files = get_task("bioasq_yesno_6b").splits(folder)
    assert files["test"].name == "BioASQ-test-yesno-6b-3-snippet.json"
    (folder / "BioASQ-train-yesno-6b-full-annotated.json").write_text("{}")
    with pytest.raises(UserError, match="are variants of one file; keep one per folder"):
        get_task("bioasq_yesno_6b").splits(folder)
    # no golden file: yes/no needs labels in the test file, list needs answers there
    (folder / "BioASQ-train-yesno-6b-full-annotated.json").unlink()
    task = get_task("bioasq_yesno_6b")
    files = task.splits(folder)
    with pytest.raises(
        UserError,
        match=f"6b-3-snippet.json: {Y[4]}_001 has no yes/no answer and there is no golden file .*6B3_golden.json",
    ):
        task.read(files["test"])
    list_dir = tmp_path / "list"
    list_dir.mkdir()
    for name in ("BioASQ-train-list-7b.json", "BioASQ-test-list-7b.json"):
        (list_dir / name).write_text((data / name).read_text())
    task = get_task("bioasq_list_7b")
    with pytest.raises(UserError, match=f"question {L[3]} has no answers and there is no golden file"):
        task.read(task.splits(list_dir)["test"])
    # a test question the golden file lacks
    golden = json.loads((data / "7B_golden.json").read_text())
    golden["questions"] = [q for q in golden["questions"] if q["id"] != L[4]]
    (list_dir / "7B_golden.json").write_text(json.dumps(golden))
    with pytest.raises(UserError, match=f"question {L[4]} of test file .* is not in golden file .*7B_golden.json"):
        task.read(task.splits(list_dir)["test"])


def test_evaluator_command_line_scores_every_type(data, tmp_path, capsys):
    submission = tmp_path / "submission.json"
    submission.write_text(
        json.dumps(
            {
                "questions": [
                    {"id": Y[4], "type": "yesno", "exact_answer": "yes"},
                    {"id": Y[5], "type": "yesno", "exact_answer": "yes"},  # Y[6] not submitted: not scored, reported
                    {
                        "id": L[3],
                        "type": "list",
                        "exact_answer": [["Lung"], ["lungs"], ["brain"]],
                        "answers_with_probability": [
                            {"text": "Lung", "probability": 0.9},
                            {"text": "heart", "probability": 0.5},
                            {"text": "brain", "probability": 0.3},
                        ],
                    },
                    {"id": "5c00000000000000000f0001", "type": "yesno", "exact_answer": "no"},  # not in golden
                ]
            }
        )
    )
    scores = bioasq_eval([str(submission), str(data / "7B_golden.json")])
    assert scores["yesno"]["accuracy"] == 50.0 and scores["yesno"]["questions"] == 2
    # Lung: TP; lungs: the same item again, FP; brain: FP -> P 1/3; heart and liver missed -> R 1/3
    assert scores["list"]["mean_precision"] == pytest.approx(100 / 3)
    assert scores["list"]["mean_recall"] == pytest.approx(100 / 3)
    assert (scores["missing_predictions"], scores["not_in_golden"], "strict_acc" in scores) == (2, 1, False)
    assert "2 list/yesno questions of" in capsys.readouterr().err
    scores = bioasq_eval([str(submission), str(data / "7B_golden.json"), "--list_threshold", "0.5"])
    assert scores["list"]["mean_precision"] == 100.0 and scores["list"]["mean_recall"] == pytest.approx(200 / 3)


# ------------------------------------------------------------------------------------------- end to end


def run_args(model, data_dir, run_dir, task, *extra):
    return [
        "--task",
        task,
        "--data_dir",
        str(data_dir),
        "--init_from",
        str(model),
        "--run_dir",
        str(run_dir),
        "--progress",
        "false",
        "--max_seq_length",
        "48",
        "--doc_stride",
        "8",
        "--eval_split",
        "",
        "--ds",
        "train_batch_size=4",
        "--ds",
        "optimizer.params.lr=1e-3",
        *extra,
    ]


def test_yesno_end_to_end(tiny, data, tmp_path):
    run = tmp_path / "yesno"
    results = finetune(run_args(tiny["model"], data, run, "bioasq_yesno_7b", "--max_steps", "2"))
    assert results["kind"] == "qa" and results["steps"] == 2
    scores = results["scores"]["test"]
    assert scores["questions"] == 3 and scores["gold_from"] == "golden file" and scores["gold_yes"] == 2
    assert scores["baseline_answer"] == "yes" and scores["baseline_accuracy"] == pytest.approx(200 / 3)
    assert scores["baseline_macro_f1"] == pytest.approx(40.0)  # F1 yes 4/5, F1 no 0
    for key in ("accuracy", "f1_yes", "f1_no", "macro_f1", "vote_accuracy", "vote_macro_f1"):
        assert 0 <= scores[key] <= 100
    assert json.loads((run / "results.json").read_text())["scores"]["test"] == scores
    config = json.loads((run / "config.json").read_text())
    assert (config["data"]["train"]["yes_pairs"], config["data"]["train"]["no_pairs"]) == (3, 3)
    assert config["labels"] == ["no", "yes"] and str(data / "7B_golden.json") in config["data"]["test"]["files"]
    submission = json.loads((run / "predictions_test.json").read_text())["questions"]
    assert [q["id"] for q in submission] == Y[4:] and all(q["exact_answer"] in ("yes", "no") for q in submission)
    # the snippet count under a key the official reader skips (a number under `snippets` stops it)
    assert [q["pooled_snippets"] for q in submission] == [2, 1, 2] and not any("snippets" in q for q in submission)
    assert bioasq_eval([str(run / "predictions_test.json"), str(data / "7B_golden.json")])["yesno"][
        "accuracy"
    ] == pytest.approx(scores["accuracy"])


def test_list_end_to_end_and_from_a_factoid_model(tiny, data, tmp_path):
    from safetensors.torch import load_file

    run = tmp_path / "list"
    results = finetune(run_args(tiny["model"], data, run, "bioasq_list_7b", "--max_steps", "3"))
    scores = results["scores"]["test"]
    assert scores["questions"] == 2 and {"mean_precision", "mean_recall", "mean_f1"} <= set(scores)
    config = json.loads((run / "config.json").read_text())
    # four spans from the two answered pairs (each answer its own span); the pair without one left out
    assert config["data"]["train"]["examples"] == 5 and config["data"]["train"]["excluded_pairs"] == 1
    assert config["data"]["train"]["excluded_no_answer"] == 1  # counted under its reason
    submission = json.loads((run / "predictions_test.json").read_text())["questions"]
    for q in submission:
        probs = {a["text"]: a["probability"] for a in q["answers_with_probability"]}
        chosen = [a[0] for a in q["exact_answer"]]
        assert q["type"] == "list" and chosen and all(probs[a] >= 0.42 for a in chosen[1:])
    # three steps train (the warm-up's first two run at learning rate 0): the encoder has moved
    tiny_weights, trained = load_file(tiny["model"] / "model.safetensors"), load_file(run / "hf" / "model.safetensors")
    assert any(not torch.equal(tiny_weights[k], trained[k]) for k in trained if k in tiny_weights)
    # a factoid-trained model answers list questions with no list training: one step at learning rate 0
    factoid = tmp_path / "factoid_data"
    factoid.mkdir()
    (factoid / "BioASQ-train-factoid-7b.json").write_text((data / "BioASQ-train-list-7b.json").read_text())
    finetune(
        run_args(tiny["model"], factoid, tmp_path / "factoid", "bioasq_7b", "--max_steps", "1", "--test_split", "")
    )
    args = run_args(tmp_path / "factoid" / "hf", data, tmp_path / "zero", "bioasq_list_7b", "--max_steps", "3")
    results = finetune([*args, "--ds", "optimizer.params.lr=0"])
    assert results["scores"]["test"]["questions"] == 2
    before = load_file(tmp_path / "factoid" / "hf" / "model.safetensors")
    after = load_file(tmp_path / "zero" / "hf" / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_summarize_shows_yesno_and_list(tmp_path):
    def write(path, task, **scores):
        path.parent.mkdir(parents=True, exist_ok=True)
        results = {"task": task, "kind": "qa", "init_from": "runs/bio/hf", "scores": {"test": scores}}
        path.write_text(json.dumps(results))

    write(tmp_path / "f" / "results.json", "bioasq_7b", strict_acc=40.0, lenient_acc=55.0, mrr=46.0)
    write(tmp_path / "y" / "results.json", "bioasq_yesno_7b", accuracy=80.0, macro_f1=75.5, baseline_accuracy=67.1)
    write(tmp_path / "y6" / "results.json", "bioasq_yesno_6b", accuracy=70.0, macro_f1=65.5, baseline_accuracy=60.0)
    write(tmp_path / "l" / "results.json", "bioasq_list_7b", mean_precision=40.0, mean_recall=30.0, mean_f1=33.3)
    lines = summarize([str(tmp_path)])["markdown"].splitlines()
    assert "| BioASQ 7b | S | 40.00 |" in lines and "| Average | M | 46.00 |" in lines  # factoid unchanged
    at = lines.index("### QA: BioASQ yes/no (test)")
    assert lines[at + 2 : at + 13] == [
        "| Dataset | Metric | bio |",
        "|---|---|---:|",
        "| BioASQ 6b | Acc | 70.00 |",
        "| BioASQ 6b | MaF1 | 65.50 |",
        "| BioASQ 6b | Acc base | 60.00 |",
        "| BioASQ 7b | Acc | 80.00 |",
        "| BioASQ 7b | MaF1 | 75.50 |",
        "| BioASQ 7b | Acc base | 67.10 |",
        "| Average | Acc | 75.00 |",
        "| Average | MaF1 | 70.50 |",
        "| Average | Acc base | 63.55 |",
    ]
    at = lines.index("### QA: BioASQ list (test)")
    assert lines[at + 4 : at + 7] == [
        "| BioASQ 7b | P | 40.00 |",
        "| BioASQ 7b | R | 30.00 |",
        "| BioASQ 7b | F | 33.30 |",
    ]


# ---------------------------------------------------------------------------------- real data (opt-in)

GOLDEN_7B = SHARED_DATA / "qa" / "bioasq" / "7B_golden.json"


@pytest.mark.skipif(not GOLDEN_7B.is_file(), reason=f"no BioASQ golden file at {GOLDEN_7B}")
def test_real_7b_golden_yesno_and_list():
    golden = read_golden(GOLDEN_7B)
    yesno = [g for g in golden.values() if g.type == "yesno"]
    lists = [g for g in golden.values() if g.type == "list"]
    assert (len(yesno), sum(g.answer == "yes" for g in yesno), len(lists)) == (140, 94, 88)
    assert not any(g.problem for g in golden.values()) and all(g.synonyms for g in lists)
