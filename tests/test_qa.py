"""Question answering: BioASQ/SQuAD reading, windows, span post-processing, the BioASQ measures, end to end."""

import json
import random
import shutil
from pathlib import Path

import pytest

from biobert.errors import UserError
from conftest import SHARED_DATA
from finetune.bioasq_eval import average_batches, factoid_scores, read_golden
from finetune.run_task import main
from finetune.tasks.qa import encode_qa, max_context_owner, plan_windows, read_squad_json
from finetune.tasks.qa_decode import QuestionPrediction
from finetune.tasks.registry import get_task

finetune = main.__wrapped__
FIXTURES = Path(__file__).parent / "fixtures" / "qa"
TRAIN, TEST, GOLDEN = (
    FIXTURES / n for n in ("BioASQ-train-factoid-7b.json", "BioASQ-test-factoid-7b.json", "7B_golden.json")
)
T1, T2, T3 = (f"5c00000000000000000b000{i}" for i in (1, 2, 3))


def train_examples():
    return read_squad_json(TRAIN, pool_snippets=True, training=True)


# ------------------------------------------------------------------------------------ reading, encoding


def test_read_pools_snippet_ids_by_question():
    examples = train_examples()
    assert len(examples) == 11 and len({e.qid for e in examples}) == 6
    assert examples[0].qas_id == "5c00000000000000000a0001_001" and examples[0].qid == "5c00000000000000000a0001"
    squad = read_squad_json(TRAIN, pool_snippets=False)  # SQuAD ids are their own questions
    assert len({e.qid for e in squad}) == 11 and not squad[0].training


def test_encode_targets_land_on_the_answer_tokens(tiny):
    examples = train_examples()
    features, stats = encode_qa(examples, tiny["tokenizer"], max_len=48, stride=8)
    # q3's second snippet and q6's only one do not contain their answer: left out and counted
    assert stats["excluded_pairs"] == 2 and stats["excluded_questions"] == 2 and stats["relocated_answers"] == 1
    assert {examples[f.example_index].qas_id for f in features} == {e.qas_id for e in examples} - {
        "5c00000000000000000a0003_002",
        "5c00000000000000000a0006_001",
    }
    assert stats["split_contexts"] == 1 and stats["windows_without_answer"] > 0
    hits = 0
    for f in features:
        example = examples[f.example_index]
        assert f.input_ids[0] == tiny["tokenizer"].cls_id and len(f.input_ids) <= 48
        assert f.token_type_ids[f.context_start - 1] == 0 and f.token_type_ids[f.context_start] == 1
        if f.start_position == 0:
            assert f.end_position == 0
            continue
        hits += 1
        a, b = f.start_position - f.context_start, f.end_position - f.context_start
        text = example.context[f.offsets[a][0] : f.offsets[b][1]]
        assert text == example.answers[0][0]  # original casing: "Kinase protein" stays capitalised
    assert hits == 9  # every kept pair has exactly one window holding its whole answer


def _squad_file(path: Path, *answer_lists) -> Path:
    """A BioASQ training file in SQuAD layout: one pair per answers value, ids q_001, q_002, ..."""
    paragraphs = [
        {
            "context": "The kinase protein binds.",
            "qas": [{"id": f"q_{i:03d}", "question": "Which?", "answers": answers}],
        }
        for i, answers in enumerate(answer_lists, start=1)
    ]
    path.write_text(json.dumps({"data": [{"paragraphs": paragraphs}]}))
    return path


def test_malformed_answers_are_errors_naming_file_and_question(tmp_path):
    """A null or textual answer_start used to end in a TypeError/ValueError traceback; an answer given as a
    plain string was dropped without a word."""
    good = {"text": "kinase", "answer_start": 4}
    for answers, message in (
        ([{"text": "kinase", "answer_start": None}], r"answers\[0\].answer_start is null; expected an integer"),
        ([{"text": "kinase", "answer_start": "abc"}], r'answers\[0\].answer_start is "abc"; expected an integer'),
        ([{"text": "kinase", "answer_start": 4.0}], r"answers\[0\].answer_start is 4.0; expected an integer"),
        ([{"text": "kinase", "answer_start": True}], r"answers\[0\].answer_start is true; expected an integer"),
        ([good, "kinase"], r'answers\[1\] is "kinase", not an object; expected \{"text".*plain string'),
        ([{"answer_start": 4}], r"answers\[0\].text is null; expected the answer as a non-empty string"),
        ([{"text": "", "answer_start": 4}], r'answers\[0\].text is ""'),
        ("kinase", r'`answers` is "kinase"; expected a list of'),
        ({"text": "kinase", "answer_start": 4}, r"`answers` is \{.*; expected a list of"),
    ):
        path = _squad_file(tmp_path / "BioASQ-train-factoid-7b.json", [good], answers)
        for training in (True, False):  # a test file's answers are gold where there is no golden file
            with pytest.raises(
                UserError,
                match=r"BioASQ-train-factoid-7b.json: data\[0\].paragraphs\[1\]"
                rf".qas\[0\] \(id q_002\): {message}",
            ):
                read_squad_json(path, pool_snippets=True, training=training)
    # no answer at all (BioBERT's test files, and pairs of its list files) is not an error
    path = _squad_file(tmp_path / "ok.json", [], None, [good])
    assert [e.answers for e in read_squad_json(path, pool_snippets=True)] == [[], [], [("kinase", 4)]]


def test_left_out_training_pairs_are_counted_per_reason_and_never_all(tiny, tmp_path, capsys):
    task = get_task("bioasq_7b")
    task.encode(train_examples(), tiny["tokenizer"], 48, 8)
    assert (
        "bioasq_7b: left out 2 of 11 training pairs (2 questions): 2 whose answer text is not in their "
        "snippet" in capsys.readouterr().err
    )
    path = _squad_file(
        tmp_path / "t.json", [], [{"text": "virus", "answer_start": 0}], [{"text": "kinase", "answer_start": 0}]
    )
    examples = read_squad_json(path, pool_snippets=True, training=True)
    features, stats = encode_qa(examples, tiny["tokenizer"], max_len=48, stride=8)
    assert (
        (stats["excluded_no_answer"], stats["excluded_answer_not_in_context"], stats["relocated_answers"]) == (1, 1, 1)
        and stats["excluded_pairs"] == 2
        and len(features) == 1
    )
    # every pair left out: the reason, not "EpochSampler needs at least one example" at the first step
    with pytest.raises(
        UserError,
        match=r"t.json: every one of its 2 training pairs was left out \(1 without an "
        r"answer, 1 whose answer text is not in their snippet\), so there is "
        "nothing to train on",
    ):
        encode_qa(examples[:2], tiny["tokenizer"], max_len=48, stride=8)


def test_windows_cover_the_context_with_the_stride_as_overlap(tiny):
    rng = random.Random(0)
    for _ in range(200):
        n, budget = rng.randint(0, 60), rng.randint(2, 12)
        stride = rng.randint(0, budget - 1)
        windows = plan_windows(n, budget, stride)
        assert windows[0][0] == 0 and windows[-1][1] == n
        assert all(hi - lo <= budget for lo, hi in windows)
        assert all(nxt[0] == prev[1] - stride for prev, nxt in zip(windows, windows[1:]))
        owner = max_context_owner(windows, n)
        assert all(windows[owner[t]][0] <= t < windows[owner[t]][1] for t in range(n))
    # through the encoder: the max-context tokens of the windows are the whole context, once each
    example = train_examples()[7]  # the long snippet
    features, _ = encode_qa([example], tiny["tokenizer"], max_len=48, stride=8)
    assert len(features) > 2
    owned = [off for f in features for off, mine in zip(f.offsets, f.max_context) if mine]
    full = tiny["tokenizer"].backend.encode(example.context, add_special_tokens=False).offsets
    assert owned == full
    with pytest.raises(UserError, match="doc_stride"):
        encode_qa([example], tiny["tokenizer"], max_len=24, stride=20)


# ------------------------------------------------------------------------------------- post-processing


def test_factoid_measures_by_hand():
    golden = read_golden(GOLDEN)
    assert (
        golden[T1].synonyms == [["kinase protein", "protein kinase"]]
        and golden["5c00000000000000000b0004"].type == "yesno"
    )
    predictions = {
        T1: ["PROTEIN KINASE", "receptor"],  # a synonym, any case: rank 1
        T2: ["aspirin ", "drug", "ASA", "acetylsalicylic acid"],  # trailing space is NOT normalised: rank 4
        # the second golden item at rank 6: counted, as the official evaluator has no top-5 cut
        T3: ["virus", "a", "b", "c", "d", "influenza"],
    }
    scores = factoid_scores(predictions, golden, [T1, T2, T3])
    assert scores["strict_acc"] == pytest.approx(100 / 3)
    assert scores["lenient_acc"] == pytest.approx(100.0)
    assert scores["mrr"] == pytest.approx(100 * (1 + 1 / 4 + 1 / 6) / 3)
    assert (scores["questions"], scores["strict_correct"], scores["lenient_correct"]) == (3, 1, 3)
    # a question without answers scores 0; a golden question of another type is ignored
    scores = factoid_scores({T3: ["Influenza"]}, golden, [T1, T3, "5c00000000000000000b0005"])
    assert scores["mrr"] == pytest.approx(50.0) and scores["non_factoid_skipped"] == 1
    with pytest.raises(UserError, match=r"question nope of test file t\.json is not in golden file g\.json"):
        factoid_scores({}, golden, ["nope"], test_file="t.json", golden_file="g.json")
    avg = average_batches(
        [
            (
                "1",
                {
                    "strict_acc": 50.0,
                    "lenient_acc": 100.0,
                    "mrr": 75.0,
                    "questions": 2,
                    "strict_correct": 1,
                    "lenient_correct": 2,
                    "non_factoid_skipped": 0,
                },
            ),
            (
                "2",
                {
                    "strict_acc": 0.0,
                    "lenient_acc": 0.0,
                    "mrr": 0.0,
                    "questions": 1,
                    "strict_correct": 0,
                    "lenient_correct": 0,
                    "non_factoid_skipped": 0,
                },
            ),
        ]
    )
    assert (avg["strict_acc"], avg["mrr"], avg["questions"], avg["mrr_1"]) == (25.0, 37.5, 3, 75.0)


def test_evaluator_command_line(tmp_path):
    from finetune.bioasq_eval import main as bioasq_eval

    submission = tmp_path / "submission.json"
    submission.write_text(
        json.dumps(
            {
                "questions": [
                    {"id": T1, "exact_answer": [["Protein kinase"], ["x"]]},
                    {"id": T2, "exact_answer": [["drug"], ["ASPIRIN"]]},
                    {"id": T3, "exact_answer": []},
                ]
            }
        )
    )
    scores = bioasq_eval.__wrapped__([str(submission), str(GOLDEN)])
    assert (scores["strict_acc"], scores["lenient_acc"], scores["mrr"]) == pytest.approx((100 / 3, 200 / 3, 50.0))


def test_golden_answer_shapes(tmp_path):
    """Golden answers as the official reader (-e 5) takes them: a list of synonym lists; an empty item is
    skipped. A flat list of strings stops it; a string leaves a factoid with no golden item (every
    submission would score 0): both refused, naming the question."""
    path = tmp_path / "g.json"
    path.write_text(
        json.dumps(
            {
                "questions": [
                    {"id": "a", "type": "factoid", "exact_answer": [["X", "y"], []]},
                    {"id": "b", "type": "factoid", "exact_answer": [["Z"]]},
                    {"id": "c", "type": "summary"},
                ]
            }
        )
    )
    golden = read_golden(path)
    assert golden["a"].synonyms == [["x", "y"]] and golden["b"].synonyms == [["z"]] and golden["c"].synonyms == []
    for exact, message in (
        (None, r"has no `exact_answer` list \(missing\)"),
        ("Z", r"\(a string\)"),
        ([], r"\(an empty list\)"),
        (["X", "y"], r"`exact_answer`: is a flat list of strings"),
    ):
        path.write_text(
            json.dumps(
                {"questions": [{"id": "a", "type": "factoid", **({} if exact is None else {"exact_answer": exact})}]}
            )
        )
        with pytest.raises(UserError, match=message):
            read_golden(path)


# ------------------------------------------------------------------------------------------ data layout


def _batch_layout(root: Path) -> Path:
    """BioBERT's release layout: per-batch test files and golden files (batch 1: T1, batch 2: T2 and T3)."""
    folder = root / "QA" / "BioASQ"
    folder.mkdir(parents=True)
    shutil.copy(TRAIN, folder / TRAIN.name)
    test, golden = json.loads(TEST.read_text()), json.loads(GOLDEN.read_text())
    for b, qids in (("1", {T1}), ("2", {T2, T3})):
        paragraphs = [p for p in test["data"][0]["paragraphs"] if p["qas"][0]["id"][:24] in qids]
        (folder / f"BioASQ-test-factoid-7b-{b}.json").write_text(json.dumps({"data": [{"paragraphs": paragraphs}]}))
        questions = [q for q in golden["questions"] if q["id"] in qids or q["type"] != "factoid"]
        (folder / f"7B{b}_golden.json").write_text(json.dumps({"questions": questions}))
    shutil.copy(TEST, folder / TEST.name)  # a combined file too: the per-batch files win
    return folder


def test_per_batch_files_are_scored_per_batch_and_averaged(tmp_path):
    folder = _batch_layout(tmp_path)
    task = get_task("bioasq_factoid")
    files = task.splits(tmp_path)  # the bundle root: QA/BioASQ is found
    assert files["train"] == folder / TRAIN.name and [b.batch for b in task._batches] == ["1", "2"]
    examples = task.read(files["test"])
    assert {e.batch for e in examples} == {"1", "2"} and len(examples) == 7
    from finetune.tasks.base import SplitData

    predictions = [
        QuestionPrediction(T1, "1", [("receptor", 0.6), ("Protein kinase", 0.4)]),
        QuestionPrediction(T2, "2", [("Aspirin", 1.0)]),
        QuestionPrediction(T3, "2", []),
    ]
    scores = task.score(SplitData("test", files["test"], examples, []), predictions)
    # batch 1: S 0, L 100, MRR 50; batch 2: S 50, L 50, MRR 50 -> averaged over the two batches
    assert (scores["strict_acc"], scores["lenient_acc"], scores["mrr"]) == (25.0, 75.0, 50.0)
    assert scores["batches"] == 2 and scores["questions"] == 3 and scores["strict_acc_2"] == 50.0
    (folder / "7B2_golden.json").write_text(
        json.dumps({"questions": [{"id": T2, "type": "factoid", "exact_answer": [["aspirin"]]}]})
    )
    with pytest.raises(
        UserError, match=f"question {T3} of test file .*7b-2.json is not in golden file .*7B2_golden.json"
    ):
        task.read(files["test"])
    (folder / "7B2_golden.json").unlink()
    with pytest.raises(UserError, match="7B2_golden.json: golden file not found"):
        task.read(files["test"])
    (folder / "BioASQ-train-factoid-6b.json").write_text("{}")
    with pytest.raises(UserError, match="versions .'6b', '7b'.* found; pick one with --task bioasq_6b or bioasq_7b"):
        get_task("bioasq_factoid").splits(tmp_path)


# ---------------------------------------------------------------------------------------------- end to end


def run_args(model, data_dir, run_dir, task="bioasq_7b", *extra):
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


def test_bioasq_end_to_end(tiny, tmp_path):
    run = tmp_path / "run"
    results = finetune(run_args(tiny["model"], FIXTURES, run, "bioasq_7b", "--epochs", "1"))
    assert results["kind"] == "qa" and results["steps"] == 3  # 11 windows of the 9 usable pairs, batch 4
    scores = results["scores"]["test"]
    assert scores["questions"] == 3 and 0 <= scores["strict_acc"] <= scores["lenient_acc"] <= 100
    assert scores["strict_acc"] <= scores["mrr"] <= scores["lenient_acc"]
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["train"]["excluded_pairs"] == 2 and config["data"]["train"]["excluded_questions"] == 2
    assert str(GOLDEN) in config["data"]["test"]["files"]
    submission = json.loads((run / "predictions_test.json").read_text())["questions"]
    contexts = {}
    for e in read_squad_json(TEST, pool_snippets=True):
        contexts.setdefault(e.qid, []).append(e.context)
    assert [q["id"] for q in submission] == [T1, T2, T3]
    for q in submission:
        assert 1 <= len(q["exact_answer"]) <= 5 and q["type"] == "factoid"
        probs = [a["probability"] for a in q["answers_with_probability"]]
        assert probs == sorted(probs, reverse=True)
        assert [[a["text"]] for a in q["answers_with_probability"]] == q["exact_answer"]
        assert all(any(a[0] in c for c in contexts[q["id"]]) for a in q["exact_answer"])
    # evaluation only, from the run's export: the same answers and scores
    evaluated = finetune(run_args(run / "hf", FIXTURES, tmp_path / "eval", "bioasq_7b", "--train_split", ""))
    assert evaluated["steps"] == 0 and evaluated["scores"]["test"] == pytest.approx(scores)
    assert json.loads((tmp_path / "eval" / "predictions_test.json").read_text())["questions"] == submission
    # the default --eval_split devel names the problem before any work
    with pytest.raises(UserError, match="has no `devel` split"):
        args = run_args(tiny["model"], FIXTURES, tmp_path / "r2", "bioasq_7b", "--max_steps", "1")
        at = args.index("--eval_split")
        finetune(args[:at] + args[at + 2 :])


def test_squad_then_bioasq_from_its_export(tiny, tmp_path):
    squad_dir = tmp_path / "squad"
    squad_dir.mkdir()
    data = json.loads(TRAIN.read_text())
    for paragraph in data["data"][0]["paragraphs"]:  # SQuAD ids are plain question ids
        paragraph["qas"][0]["id"] = paragraph["qas"][0]["id"].replace("_", "")
    (squad_dir / "train-v1.1.json").write_text(json.dumps(data))
    (squad_dir / "dev-v1.1.json").write_text(json.dumps(data))
    results = finetune(run_args(tiny["model"], squad_dir, tmp_path / "squad_run", "squad", "--max_steps", "2"))
    scores = results["scores"]["test"]
    assert scores["questions"] == 11 and 0 <= scores["exact_match"] <= scores["f1"] <= 100
    predictions = json.loads((tmp_path / "squad_run" / "predictions_test.json").read_text())
    assert len(predictions) == 11 and all(isinstance(v, str) for v in predictions.values())
    from transformers import AutoModelForQuestionAnswering

    AutoModelForQuestionAnswering.from_pretrained(str(tmp_path / "squad_run" / "hf"))  # a QA export
    results = finetune(
        run_args(tmp_path / "squad_run" / "hf", FIXTURES, tmp_path / "bioasq", "bioasq_7b", "--max_steps", "1")
    )
    assert results["scores"]["test"]["questions"] == 3


# ------------------------------------------------------------------------------- real data (opt-in)

BIOASQ = SHARED_DATA / "qa" / "bioasq"


@pytest.mark.skipif(not (BIOASQ / "7B_golden.json").is_file(), reason=f"no BioASQ data in {BIOASQ}")
def test_real_bioasq_7b_files():
    task = get_task("bioasq_7b")
    files = task.splits(BIOASQ)
    train, test = task.read(files["train"]), task.read(files["test"])
    assert (len(train), len({e.qid for e in train})) == (4231, 530)
    assert (len(test), len({e.qid for e in test})) == (512, 162)
    golden = read_golden(BIOASQ / "7B_golden.json")
    assert all(golden[e.qid].type == "factoid" for e in test)  # every test qid is in the golden file
    assert all(e.training for e in train) and not any(e.training for e in test)
