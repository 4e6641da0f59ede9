"""Relation extraction: reader, metrics by hand, end-to-end runs on BioBERT-format fixtures, cross-validation."""

import json
import shutil
import statistics
from pathlib import Path

import pytest

from biobert.errors import UserError
from conftest import SHARED_DATA
from finetune.crossval import main as crossval_main
from finetune.crossval import summarize
from finetune.re_metrics import binary_scores, micro_scores
from finetune.run_task import main
from finetune.tasks.re_task import CHEMPROT_LABELS, get_re_task
from finetune.tasks.registry import get_task
from finetune.tasks.relation import encode_relations, read_re_tsv

finetune = main.__wrapped__
crossval = crossval_main.__wrapped__
FIXTURES = Path(__file__).parent / "fixtures" / "re"
CPR = list(CHEMPROT_LABELS[1:])


def args(tiny_assets, task, data_dir, run_dir, *extra):
    return [
        "--task",
        task,
        "--data_dir",
        str(data_dir),
        "--init_from",
        str(tiny_assets["model"]),
        "--run_dir",
        str(run_dir),
        "--progress",
        "false",
        "--max_seq_length",
        "32",
        "--ds",
        "train_batch_size=16",
        "--ds",
        "optimizer.params.lr=1e-3",
        "--export_hf",
        "false",
        *extra,
    ]


# ------------------------------------------------------------------------------------------- metrics


def test_binary_scores_by_hand():
    gold = ["1", "1", "1", "0", "0", "0", "0", "1"]
    pred = ["1", "0", "1", "1", "0", "0", "0", "0"]  # tp 2, fn 2, fp 1, tn 3
    s = binary_scores(gold, pred)
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (2, 1, 2, 3)
    assert s["precision"] == pytest.approx(100 * 2 / 3) and s["recall"] == pytest.approx(50.0)
    assert s["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5) * 100)
    assert s["accuracy"] == pytest.approx(62.5)
    none = binary_scores(["0", "1"], ["0", "0"])  # nothing predicted positive: 0, not a division error
    assert none["precision"] == 0.0 and none["recall"] == 0.0 and none["f1"] == 0.0
    with pytest.raises(ValueError, match="3 predictions for 2"):
        binary_scores(["0", "1"], ["0", "0", "1"])


def test_micro_scores_exclude_false_by_hand():
    gold = ["CPR:3", "CPR:3", "CPR:4", "False", "False", "CPR:9", "CPR:5", "False"]
    pred = ["CPR:3", "CPR:4", "CPR:4", "CPR:6", "False", "False", "CPR:5", "False"]
    # correct CPR: CPR:3, CPR:4, CPR:5 -> tp 3; predicted CPR: 5 (incl. CPR:3->CPR:4 and False->CPR:6);
    # gold CPR: 5 (incl. CPR:3 missed as CPR:4 and CPR:9 missed as False)
    s = micro_scores(gold, pred, CPR)
    assert (s["tp"], s["fp"], s["fn"]) == (3, 2, 2)
    assert s["precision"] == pytest.approx(60.0) and s["recall"] == pytest.approx(60.0)
    assert s["f1"] == pytest.approx(60.0) and s["accuracy"] == pytest.approx(100 * 5 / 8)
    assert s["per_class"]["CPR:3"] == {
        "precision": 100.0,
        "recall": 50.0,
        "f1": pytest.approx(200 / 3),
        "tp": 1,
        "predicted": 1,
        "support": 2,
    }
    assert s["per_class"]["CPR:6"]["predicted"] == 1 and s["per_class"]["CPR:6"]["precision"] == 0.0
    assert s["per_class"]["CPR:9"]["recall"] == 0.0
    # all-False predictions score 0, and True negatives do not count at all
    assert micro_scores(["False", "CPR:3"], ["False", "False"], CPR)["f1"] == 0.0
    with pytest.raises(ValueError, match="negative class"):
        micro_scores(gold, pred, CHEMPROT_LABELS)


def test_micro_matches_confusion_matrix_definition():
    """sklearn's micro average restricted to the CPR labels, written as a confusion matrix."""
    import random

    import numpy as np

    rng = random.Random(0)
    gold = [rng.choice(CHEMPROT_LABELS) for _ in range(300)]
    pred = [g if rng.random() < 0.6 else rng.choice(CHEMPROT_LABELS) for g in gold]
    ix = {label: i for i, label in enumerate(CHEMPROT_LABELS)}
    cm = np.zeros((6, 6), dtype=int)
    for g, p in zip(gold, pred):
        cm[ix[g], ix[p]] += 1
    tp = np.trace(cm[1:, 1:])
    precision, recall = tp / cm[:, 1:].sum(), tp / cm[1:, :].sum()
    s = micro_scores(gold, pred, CPR)
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx(
        (100 * precision, 100 * recall, 100 * 2 * precision * recall / (precision + recall))
    )


# --------------------------------------------------------------------------------------------- reading


def test_reader_formats():
    train = read_re_tsv(FIXTURES / "GAD" / "1" / "train.tsv", ["0", "1"])  # no header
    test = read_re_tsv(FIXTURES / "GAD" / "1" / "test.tsv", ["0", "1"])  # index header
    assert len(train) == 40 and train[0].line_no == 1 and train[0].index == "0"
    assert len(test) == 12 and test[0].line_no == 2 and [e.index for e in test[:3]] == ["0", "1", "2"]
    chem = read_re_tsv(FIXTURES / "chemprot" / "test.tsv", CHEMPROT_LABELS)  # header, CRLF
    assert len(chem) == 20 and not any(e.label.endswith("\r") or e.sentence.endswith("\r") for e in chem)


def test_reader_errors(tmp_path):
    bad = tmp_path / "train.tsv"
    bad.write_text("A @GENE$ and @DISEASE$.\t1\nNo label here\n")
    with pytest.raises(UserError, match=r"train.tsv:2: found 1 tab-separated column\(s\).*expected 2"):
        read_re_tsv(bad, ["0", "1"])
    bad.write_text("index\tsentence\tlabel\n0\tA @GENE$ and @DISEASE$.\t1\textra\n")
    with pytest.raises(UserError, match=r"train.tsv:2: found 4 .*expected 3, `index<TAB>sentence<TAB>label`"):
        read_re_tsv(bad, ["0", "1"])
    bad.write_text("sentence\tlabel\nA BC6ENTC binds BC6ENTG.\tCPR:10\n")
    with pytest.raises(UserError, match=r"train.tsv:2: label 'CPR:10' is not one of .*'False', 'CPR:3'"):
        read_re_tsv(bad, CHEMPROT_LABELS)
    bad.write_text("")
    with pytest.raises(UserError, match="no rows found"):
        read_re_tsv(bad, ["0", "1"])


def test_task_names_and_folds(tmp_path):
    assert get_task("gad_3").fold == 3 and get_task("euadr_10").dataset.folders[0] == "euadr"
    assert get_task("chemprot").labels == list(CHEMPROT_LABELS)
    with pytest.raises(UserError, match=r"gad has 10 cross-validation folds.*gad_1 \.\.\. gad_10.*crossval"):
        get_task("gad")
    for name in ("gad_0", "gad_11", "gad_01", "chemprot_1"):
        assert get_re_task(name) is None
    task = get_task("gad_2")
    for data_dir in (FIXTURES, FIXTURES / "GAD", FIXTURES / "GAD" / "2"):
        assert task.splits(data_dir)["test"] == FIXTURES / "GAD" / "2" / "test.tsv"
    with pytest.raises(UserError, match="found no gad_3 data"):
        get_task("gad_3").splits(FIXTURES / "GAD" / "2")  # another fold's folder is never used


def test_markers_and_truncation_counted(tiny_assets):
    from biobert.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_assets["model"])
    examples = read_re_tsv(FIXTURES / "chemprot" / "test.tsv", CHEMPROT_LABELS)
    label2id = {label: i for i, label in enumerate(CHEMPROT_LABELS)}
    feats, stats = encode_relations(examples, tok, label2id, 32, ("BC6ENTC", "BC6ENTG"))
    assert len(feats) == len(examples) and all(len(f.input_ids) <= 32 for f in feats)
    assert [f.label_id for f in feats] == [label2id[e.label] for e in examples]
    long_row = feats[3]  # the fixture's 40-word sentence ends with BC6ENTC, past the cut
    assert long_row.input_ids[0] == tok.cls_id and long_row.input_ids[-1] == tok.sep_id
    assert stats["truncated"] >= 1 and stats["truncated_lost_marker"] >= 1 and stats["level"] == "sentence"
    assert stats["marker_pieces"]["BC6ENTC"] == ["b", "##c", "##6", "##e", "##n", "##t", "##c"]
    _, whole = encode_relations(examples, tok, label2id, 128, ("BC6ENTC",))
    assert whole["truncated"] == 0


# ------------------------------------------------------------------------------------------ end to end


def test_chemprot_end_to_end(tiny_assets, tmp_path):
    run = tmp_path / "chem"
    results = finetune(args(tiny_assets, "chemprot", FIXTURES, run, "--epochs", "1", "--export_hf", "true"))
    assert results["steps"] == 4 and set(results["scores"]) == {"devel", "test"}
    test = results["scores"]["test"]
    for key in ("precision", "recall", "f1", "accuracy"):
        assert 0 <= test[key] <= 100
    assert set(test["per_class"]) == set(CPR) and test["examples"] == 20
    assert test["stats"]["level"] == "sentence" and test["stats"]["truncated"] >= 1
    assert json.loads((run / "results.json").read_text())["scores"] == results["scores"]
    assert json.loads((run / "config.json").read_text())["labels"] == list(CHEMPROT_LABELS)
    rows = (run / "predictions_test.txt").read_text().splitlines()
    gold = (FIXTURES / "chemprot" / "test.tsv").read_text().splitlines()
    assert rows[0] == "index\tsentence\tlabel\tprediction" and len(rows) == len(gold)
    preds = []
    for i, (row, line) in enumerate(zip(rows[1:], gold[1:])):
        index, sentence, label, pred = row.split("\t")
        assert index == str(i) and [sentence, label] == line.split("\t") and pred in CHEMPROT_LABELS
        preds.append(pred)
    assert micro_scores([g.split("\t")[1] for g in gold[1:]], preds, CPR)["f1"] == pytest.approx(test["f1"])
    # evaluation only, from the run's export: the same predictions
    again = args(tiny_assets, "chemprot", FIXTURES, tmp_path / "eval", "--train_split", "")
    again[again.index("--init_from") + 1] = str(run / "hf")
    evaluated = finetune(again)
    assert evaluated["steps"] == 0 and evaluated["scores"]["test"]["f1"] == pytest.approx(test["f1"])
    assert (tmp_path / "eval" / "predictions_test.txt").read_text() == (run / "predictions_test.txt").read_text()


def test_gad_fold_with_empty_dev(tiny_assets, tmp_path, capsys):
    with pytest.raises(UserError, match=r"dev.tsv: no rows found.*no development split.*--eval_split ''"):
        finetune(args(tiny_assets, "gad_1", FIXTURES, tmp_path / "a", "--max_steps", "1"))
    run = tmp_path / "b"
    results = finetune(args(tiny_assets, "gad_1", FIXTURES / "GAD", run, "--epochs", "1", "--eval_split", ""))
    assert set(results["scores"]) == {"test"} and results["steps"] == 3
    test = results["scores"]["test"]
    assert test["tp"] + test["fp"] + test["fn"] + test["tn"] == 12
    rows = (run / "predictions_test.txt").read_text().splitlines()
    gold = (FIXTURES / "GAD" / "1" / "test.tsv").read_text().splitlines()
    assert len(rows) == len(gold) and all(r.split("\t")[:3] == g.split("\t") for r, g in zip(rows[1:], gold[1:]))
    assert "gad_1 test: precision" in capsys.readouterr().out
    with pytest.raises(UserError, match="gad has 10 cross-validation folds"):
        finetune(args(tiny_assets, "gad", FIXTURES, tmp_path / "c"))


def test_empty_required_split_is_an_error(tiny_assets, tmp_path):
    fold = tmp_path / "GAD" / "1"
    shutil.copytree(FIXTURES / "GAD" / "1", fold)
    (fold / "test.tsv").write_text("index\tsentence\tlabel\n")
    with pytest.raises(UserError, match=r"GAD/1/test.tsv: no rows found"):
        finetune(args(tiny_assets, "gad_1", tmp_path, tmp_path / "run", "--eval_split", ""))


def test_crossval_folds_mean_std_and_resume(tiny_assets, tmp_path, capsys):
    run = tmp_path / "cv"

    def cv(folds, steps="1"):
        return args(tiny_assets, "gad", FIXTURES, run, "--max_steps", steps) + ["--folds", folds]

    out = crossval(cv("1,3"))
    assert out["folds_run"] == [1, 3] and not out["complete"] and out["split"] == "test"
    fold_f1 = [json.loads((run / f"fold_0{k}" / "results.json").read_text())["scores"]["test"]["f1"] for k in (1, 3)]
    assert [out["folds"][k]["f1"] for k in ("1", "3")] == fold_f1
    assert out["mean"]["f1"] == pytest.approx(sum(fold_f1) / 2)
    assert out["std"]["f1"] == pytest.approx(abs(fold_f1[0] - fold_f1[1]) / 2**0.5)  # sample std, n - 1
    assert json.loads((run / "results.json").read_text())["mean"] == out["mean"]
    assert "mean ± std" in capsys.readouterr().out
    # a second run re-runs nothing finished and says so; fold 2 is new
    again = crossval(cv("1,2,3"))
    printed = capsys.readouterr().out
    assert "fold 1:" in printed and "exists, not re-run" in printed and "fold 2: training" in printed
    assert again["folds"]["1"] == out["folds"]["1"] and again["folds_run"] == [1, 2, 3]
    with pytest.raises(UserError, match="not be averaged"):
        crossval(cv("1", steps="2"))  # different settings, same run_dir


def test_summarize_sample_std():
    folds = {
        1: {"precision": 80.0, "recall": 70.0, "f1": 74.0},
        2: {"precision": 90.0, "recall": 60.0, "f1": 72.0},
        3: {"precision": 85.0, "recall": 65.0, "f1": 70.0},
    }
    s = summarize(folds)
    assert s["mean"]["precision"] == pytest.approx(85.0) and s["std"]["precision"] == pytest.approx(5.0)
    assert s["std"]["f1"] == pytest.approx(statistics.stdev([74.0, 72.0, 70.0])) == pytest.approx(2.0)
    assert "accuracy" not in s["mean"] and summarize({1: folds[1]})["std"]["f1"] is None


# ------------------------------------------------------------------------------------- real data (opt-in)

RE_DATA = SHARED_DATA / "re"


@pytest.mark.skipif(not RE_DATA.is_dir(), reason=f"no real RE data at {RE_DATA} (set BIOBERT_SHARED_DATA)")
def test_real_re_files_read():
    expected = {"train": 16522, "dev": 10362, "test": 14397}  # lines incl. header (data README)
    for split, lines in expected.items():
        assert len(read_re_tsv(RE_DATA / "chemprot" / f"{split}.tsv", CHEMPROT_LABELS)) == lines - 1
    for name in ("gad", "euadr"):
        for fold in range(1, 11):
            task = get_task(f"{name}_{fold}")
            files = task.splits(RE_DATA)
            assert files["devel"].stat().st_size == 0  # empty, as in BioBERT's bundle
            for split in ("train", "test"):
                rows = task.read(files[split])
                n_lines = len(files[split].read_text().strip("\n").split("\n"))
                assert len(rows) == n_lines - (split == "test")  # test.tsv has a header
                assert {r.label for r in rows} == {"0", "1"}
