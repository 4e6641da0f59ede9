"""finetune/predict.py on models fine-tuned here: offsets into the original text, every document, NER and RE
predictions equal to what run_task.py's evaluation predicted for the same sentences, and the errors."""

import functools
import gzip
import io
import json
import random
from pathlib import Path

import pytest

import conftest
from biobert.errors import UserError
from conftest import WORDS, write_pubmed_xml
from finetune.predict import main as predict_main
from finetune.predict_tasks import entity_spans
from finetune.run_task import main as run_task_main

predict = predict_main.__wrapped__
finetune = run_task_main.__wrapped__
RE_FIXTURES = Path(__file__).parent / "fixtures" / "re"
# entity-dense sentences of up to 14 words (test_hf_exports and test_annotate use the same)
write_ner_split = functools.partial(conftest.write_ner_split, lengths=(4, 14), entity_rate=0.3)
SEQ = ["--max_seq_length", "24", "--doc_stride", "4"]  # short windows: long sentences get several


@pytest.fixture(scope="module")
def ner_run(tiny_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_ner")
    data = root / "NCBI-disease"
    data.mkdir()
    write_ner_split(data / "train.tsv", 80, 1)
    write_ner_split(data / "devel.tsv", 8, 2)
    write_ner_split(data / "test.tsv", 16, 3, long_every=4)
    run = root / "run"
    finetune(
        [
            "--task",
            "ncbi_disease",
            "--data_dir",
            str(root),
            "--init_from",
            str(tiny_assets["model"]),
            "--run_dir",
            str(run),
            "--progress",
            "false",
            *SEQ,
            "--epochs",
            "10",
            "--ds",
            "train_batch_size=16",
            "--ds",
            "optimizer.params.lr=3e-3",
            "--eval_split",
            "",
        ]
    )
    return {"hf": run / "hf", "run": run, "test": data / "test.tsv"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_offsets(rows: list[dict]) -> int:
    n = 0
    for row in rows:
        last_end = 0
        for e in row["entities"]:
            assert row["text"][e["start"] : e["end"]] == e["text"] and e["text"] == e["text"].strip()
            assert e["start"] >= last_end and e["end"] > e["start"] and 0 < e["score"] <= 1
            assert e["label"] == "Disease"  # the export's typed B-Disease/I-Disease (NCBI-disease's type)
            last_end = e["end"]
            n += 1
    return n


def test_ner_text_offsets_and_every_line(ner_run, tmp_path):
    rng = random.Random(7)
    lines = []
    for i in range(12):
        words = [rng.choice(WORDS) for _ in range(30 if i % 4 == 0 else rng.randint(5, 12))]
        words[rng.randrange(len(words))] = "cancer"
        sep = "  " if i % 3 == 0 else " "
        text = sep.join(words).capitalize() + ". Tumor (cancer) growth, naïve\tcells."
        lines.append(("  " if i == 5 else "") + text + ("\r" if i == 2 else ""))
    lines.insert(4, "")  # blank lines are not documents
    lines.insert(9, "   ")
    src = tmp_path / "text.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "preds.jsonl"
    summary = predict(
        ["--model", str(ner_run["hf"]), "--input", str(src), "--out", str(out), "--batch_size", "5", *SEQ]
    )
    rows = read_jsonl(out)
    expected = [(f"line:{k}", line.removesuffix("\r")) for k, line in enumerate(lines, start=1) if line.strip()]
    assert [(r["id"], r["text"]) for r in rows] == expected
    assert summary["documents"] == 12 and summary["task"] == "ner" and summary["skipped"] == {"blank_lines": 2}
    assert summary["stats"]["split_sentences"] > 0  # long sentences went through several windows
    assert check_offsets(rows) == summary["entities"] > 0
    found = {e["text"].split()[0].lower().strip("(") for r in rows for e in r["entities"]}
    assert found & {"cancer", "tumor"}


def test_ner_predictions_match_run_task_evaluation(ner_run, tmp_path):
    """Each test sentence as one line: the entities equal the chunks of run_task's predictions_test.txt."""
    blocks = [b for b in ner_run["test"].read_text().split("\n\n") if b.strip()]
    sentences = [[x.split("\t")[0] for x in b.splitlines()] for b in blocks]
    src = tmp_path / "test.txt"
    src.write_text("".join(" ".join(words) + "\n" for words in sentences))
    out = tmp_path / "preds.jsonl"
    summary = predict(["--model", str(ner_run["hf"]), "--input", str(src), "--out", str(out)])
    assert (summary["max_seq_length"], summary["doc_stride"]) == (24, 4)  # the fine-tuning run's, by default
    rows = read_jsonl(out)
    assert len(rows) == len(sentences)
    ours = set()
    for k, (row, words) in enumerate(zip(rows, sentences)):
        starts = [sum(len(w) + 1 for w in words[:i]) for i in range(len(words))]
        for e in row["entities"]:
            first = starts.index(e["start"])
            last = first + len(e["text"].split()) - 1
            assert starts[last] + len(words[last]) == e["end"]
            ours.add((k, first, last))
    pred_blocks = [b for b in (ner_run["run"] / "predictions_test.txt").read_text().split("\n\n") if b.strip()]
    theirs = set()
    for k, b in enumerate(pred_blocks):
        labels = [x.split("\t")[2] for x in b.splitlines()]
        spans = entity_spans([("w", (i, i + 1)) for i in range(len(labels))], labels, [1.0] * len(labels), 0, "x")
        theirs |= {(k, s["start"], s["end"] - 1) for s in spans}
    assert ours == theirs and ours


def test_ner_pubmed_documents(ner_run, tiny_assets, tmp_path):
    from collections import Counter

    from biobert.corpus.pubmed import read_pubmed

    xml = write_pubmed_xml(tmp_path / "abstracts.xml.gz", 6, seed=3, first_pmid=700)
    out = tmp_path / "preds.jsonl"
    summary = predict(["--model", str(ner_run["hf"]), "--input", str(xml), "--out", str(out), *SEQ])
    rows = read_jsonl(out)
    docs = list(read_pubmed(xml, Counter()))
    assert [(r["id"], r["text"]) for r in rows] == [(d.doc_id, " ".join(d.sections)) for d in docs]
    assert [r["id"] for r in rows] == [f"pmid:{700 + i}" for i in range(6)]
    assert summary["stats"]["sentences"] > 6  # titles and abstracts were split into sentences
    check_offsets(rows)
    # plain XML named .txt is recognised by its content; stdin and stdout work for text
    plain = tmp_path / "abstracts.txt"
    plain.write_bytes(gzip.decompress(xml.read_bytes()))
    out2 = tmp_path / "preds2.jsonl"
    predict(["--model", str(ner_run["hf"]), "--input", str(plain), "--out", str(out2), *SEQ])
    assert read_jsonl(out2) == rows


def test_stdin_stdout(ner_run, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"The cancer cells.\n\nA tumor.\n")))
    predict(["--model", str(ner_run["hf"]), "--input", "-", "--out", "-", *SEQ])
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == ["line:1", "line:3"]
    check_offsets(rows)


def test_entity_spans_rules():
    words = [(w, (i * 2, i * 2 + 1)) for i, w in enumerate("abcdefgh")]
    labels = ["B-Chem", "I-Chem", "I-Gene", "O", "I-Chem", "B-Chem", "S-Dis", "E-Dis"]
    spans = entity_spans(words, labels, [0.5] * 8, 10, "unused")
    assert [(s["start"], s["end"], s["label"]) for s in spans] == [
        (10, 13, "Chem"),
        (14, 15, "Gene"),
        (18, 19, "Chem"),
        (20, 21, "Chem"),
        (22, 23, "Dis"),
        (24, 25, "Dis"),
    ]
    untyped = entity_spans(words[:4], ["B", "I", "B", "I"], [0.2, 0.4, 1.0, 1.0], 0, "NCBI-disease")
    assert [(s["start"], s["end"], s["label"], s["score"]) for s in untyped] == [
        (0, 3, "NCBI-disease", 0.3),
        (4, 7, "NCBI-disease", 1.0),
    ]


def test_re_labels_match_run_task(tiny_assets, tmp_path):
    run = tmp_path / "gad"
    finetune(
        [
            "--task",
            "gad_1",
            "--data_dir",
            str(RE_FIXTURES / "GAD"),
            "--init_from",
            str(tiny_assets["model"]),
            "--run_dir",
            str(run),
            "--progress",
            "false",
            "--max_seq_length",
            "32",
            "--epochs",
            "1",
            "--eval_split",
            "",
            "--ds",
            "train_batch_size=16",
            "--ds",
            "optimizer.params.lr=1e-3",
        ]
    )
    rows = [x.split("\t") for x in (run / "predictions_test.txt").read_text().splitlines()[1:]]
    src = tmp_path / "pairs.txt"
    src.write_text("".join(r[1] + "\n" for r in rows))
    out = tmp_path / "re.jsonl"
    summary = predict(["--model", str(run / "hf"), "--input", str(src), "--out", str(out), "--max_seq_length", "32"])
    preds = read_jsonl(out)
    assert summary["task"] == "re" and summary["documents"] == len(rows)
    assert [p["text"] for p in preds] == [r[1] for r in rows]
    assert [p["label"] for p in preds] == [r[3] for r in rows]  # what run_task's evaluation predicted
    for p in preds:
        assert set(p["probabilities"]) == {"0", "1"} and abs(sum(p["probabilities"].values()) - 1) < 1e-3
        assert p["probabilities"][p["label"]] == max(p["probabilities"].values())
    with pytest.raises(UserError, match="anonymised"):
        predict(
            [
                "--model",
                str(run / "hf"),
                "--input",
                str(write_pubmed_xml(tmp_path / "a.xml", 1)),
                "--out",
                str(tmp_path / "x.jsonl"),
            ]
        )


def test_errors(ner_run, tiny_assets, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("The cancer.\n")
    out = tmp_path / "o.jsonl"
    with pytest.raises(UserError, match=r"tiny_bert.*no token-classification.*sequence-classification"):
        predict(["--model", str(tiny_assets["model"]), "--input", str(text), "--out", str(out)])
    with pytest.raises(UserError, match="no config.json"):
        predict(["--model", str(tmp_path), "--input", str(text), "--out", str(out)])
    with pytest.raises(UserError, match=r"missing\.txt: no such file"):
        predict(["--model", str(ner_run["hf"]), "--input", str(tmp_path / "missing.txt"), "--out", str(out)])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("naïve cancer\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1\.txt: not UTF-8"):
        predict(["--model", str(ner_run["hf"]), "--input", str(latin1), "--out", str(out)])
    broken = tmp_path / "broken.xml.gz"
    broken.write_bytes(gzip.compress(b"<PubmedArticleSet><PubmedArticle><MedlineCitation>")[:-10])
    with pytest.raises(UserError, match=r"broken\.xml\.gz"):
        predict(["--model", str(ner_run["hf"]), "--input", str(broken), "--out", str(out)])
    assert not out.exists() and not (tmp_path / "o.jsonl.tmp").exists()  # nothing half-written is left


def test_eval_batching_benchmark_runs_both_orders(ner_run, tmp_path, monkeypatch):
    """bench/eval_batching.py on the fixture: evaluation in file order and by length, timed and compared; the
    test sets this data root lacks are named, not counted."""
    import shutil

    from conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import eval_batching

    data = tmp_path / "data" / "ner" / "NCBI-disease"
    shutil.copytree(ner_run["test"].parent, data)
    out = tmp_path / "eval_batching.json"
    argv = ["--model", str(ner_run["hf"]), "--tasks", "ncbi_disease", "--data_root", str(tmp_path / "data")]
    record = eval_batching.main([*argv, "--rounds", "2", "--dtype", "float32", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert set(record["padding"]) == {"ncbi_disease"}  # the other five test sets are not in this data root
    pad = record["padding"]["ncbi_disease"]
    assert pad["real_tokens"] <= pad["by_length_tokens"] <= pad["file_order_tokens"]
    timed = record["timed"]["ncbi_disease"]
    assert [len(v) for v in timed["predict_s"].values()] == [2, 2]
    assert timed["same_predictions"]  # float32: the order does not change a prediction
    assert len(set(timed["f1"]["file_order"] + timed["f1"]["by_length"])) == 1
