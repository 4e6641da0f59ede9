"""summarize.py on hand-made results.json files of every kind: run_task, protocol (seeds, folds), crossval."""

import json
import os

import pytest

from biobert.errors import UserError
from finetune.summarize import main

summarize = main.__wrapped__


def write(path, data, mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def single(task, kind, init_from, **test):
    return {"task": task, "kind": kind, "init_from": init_from, "scores": {"test": test}}


def protocol(task, kind, init_from, mean, std, seeds=(1, 2, 3), std_over="seeds"):
    return {
        "protocol": "paper",
        "task": task,
        "kind": kind,
        "init_from": init_from,
        "seeds": list(seeds),
        "mean": mean,
        "std": std,
        "std_over": std_over,
        "split": "test",
    }


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    base, bio = "models/bert-base/hf", "runs/biobert/hf"
    # Base: single run_task runs; an older duplicate of NCBI is superseded by the newer one
    write(
        root / "base" / "ncbi_old" / "results.json",
        single("ncbi_disease", "ner", base, precision=80.0, recall=80.0, f1=80.0),
        mtime=1_000_000,
    )
    write(
        root / "base" / "ncbi" / "results.json",
        single("ncbi_disease", "ner", base, precision=84.0, recall=86.0, f1=85.0, true_entities=960),
    )
    write(
        root / "base" / "chemprot" / "results.json",
        single("chemprot", "re", base, precision=70.0, recall=60.0, f1=64.6, stats={"truncated": 3}),
    )
    # Bio: a protocol run with seeds (its seed sub-runs are parts, not rows), another NER set, QA
    write(root / "bio" / "ncbi" / "protocol.json", {"protocol": "paper"})
    write(
        root / "bio" / "ncbi" / "results.json",
        protocol(
            "ncbi_disease",
            "ner",
            bio,
            {"precision": 88.0, "recall": 89.0, "f1": 88.5},
            {"precision": 0.5, "recall": 0.25, "f1": 0.3},
        ),
    )
    write(
        root / "bio" / "ncbi" / "seed_1" / "results.json",
        single("ncbi_disease", "ner", bio, precision=1.0, recall=1.0, f1=1.0),
    )
    write(
        root / "bio" / "chem" / "results.json",
        protocol(
            "bc5cdr_chem",
            "ner",
            bio,
            {"precision": 93.0, "recall": 93.5, "f1": 93.25},
            {"precision": None, "recall": None, "f1": None},
            seeds=(1,),
        ),
    )
    write(
        root / "bio" / "bioasq7b" / "results.json",
        protocol(
            "bioasq_7b",
            "qa",
            bio,
            {"strict_acc": 40.0, "lenient_acc": 55.0, "mrr": 46.0},
            {"strict_acc": 2.0, "lenient_acc": 1.0, "mrr": 1.5},
        ),
    )
    # Bio: GAD by crossval.py (no kind / init_from in its results.json: read from a fold)
    write(root / "bio" / "gad" / "crossval.json", {"task": "gad", "run_task": {"run": {"init_from": bio}}})
    write(
        root / "bio" / "gad" / "results.json",
        {
            "task": "gad",
            "split": "test",
            "folds_run": list(range(1, 11)),
            "complete": True,
            "mean": {"precision": 77.0, "recall": 90.0, "f1": 83.0, "accuracy": 79.0},
            "std": {"precision": 1.0, "recall": 2.0, "f1": 1.5, "accuracy": 1.1},
            "folds": {str(k): {"f1": 83.0} for k in range(1, 11)},
        },
    )
    write(
        root / "bio" / "gad" / "fold_01" / "results.json", single("gad_1", "re", bio, precision=1.0, recall=1.0, f1=1.0)
    )
    # left out: a selection run (devel only), an unfinished protocol, a single fold, SQuAD
    write(
        root / "bio" / "sel" / "results.json",
        {"task": "s800", "kind": "ner", "init_from": bio, "scores": {"devel": {"f1": 50.0}}},
    )
    write(root / "bio" / "unfinished" / "protocol.json", {"protocol": "paper"})
    write(
        root / "bio" / "unfinished" / "seed_1" / "results.json",
        single("s800", "ner", bio, precision=1.0, recall=1.0, f1=1.0),
    )
    write(root / "bio" / "gad3" / "results.json", single("gad_3", "re", bio, precision=1.0, recall=1.0, f1=1.0))
    write(root / "bio" / "squad" / "results.json", single("squad", "qa", bio, exact_match=80.0, f1=88.0))
    return root


def test_tables_like_the_paper(runs, tmp_path, capsys):
    out_md, png = tmp_path / "out" / "summary.md", tmp_path / "out" / "summary.png"
    result = summarize(
        [str(runs), "--out", str(out_md), "--plot", str(png), "--label", f"Base={runs / 'base'},Bio={runs / 'bio'}"]
    )
    text = result["markdown"]
    assert capsys.readouterr().out == text == out_md.read_text()
    assert result["models"] == ["Base", "Bio"]
    lines = text.splitlines()
    ner = lines.index("### NER (entity-level, test)")
    assert lines[ner + 2 : ner + 13] == [
        "| Dataset | Metric | Base | Bio |",
        "|---|---|---:|---:|",
        "| NCBI disease | P | 84.00 | **88.00 ± 0.50** |",
        "| NCBI disease | R | 86.00 | **89.00 ± 0.25** |",
        "| NCBI disease | F | 85.00 | **88.50 ± 0.30** |",
        "| BC5CDR chem | P | – | 93.00 |",
        "| BC5CDR chem | R | – | 93.50 |",
        "| BC5CDR chem | F | – | 93.25 |",
        "| Average | P | 84.00* | 90.50 |",  # Base lacks BC5CDR chem: no best is marked
        "| Average | R | 86.00* | 91.25 |",
        "| Average | F | 85.00* | 90.88 |",
    ]
    re_ = lines.index("### RE (test)")
    assert lines[re_ + 4 : re_ + 7] == [
        "| GAD | P | – | 77.00 ± 1.00 |",
        "| GAD | R | – | 90.00 ± 2.00 |",
        "| GAD | F | – | 83.00 ± 1.50 |",
    ]
    assert "| CHEMPROT | F | 64.60 | – |" in lines
    qa = lines.index("### QA: BioASQ factoid (test)")
    assert lines[qa + 4 : qa + 7] == [
        "| BioASQ 7b | S | – | 40.00 ± 2.00 |",
        "| BioASQ 7b | L | – | 55.00 ± 1.00 |",
        "| BioASQ 7b | M | – | 46.00 ± 1.50 |",
    ]
    # what was shown, and what was left out and why
    assert "- Bio / gad: crossval, 10 folds" in text and "- Bio / ncbi_disease: protocol paper, 3 seeds" in text
    left = "\n".join(result["notes"])
    assert "ncbi_old" in left and "also in" in left
    assert "sel/results.json: no test scores" in left
    assert "unfinished: protocol/crossval run without results.json" in left
    assert "gad_3' has no row" in left and "one fold" in left and "'squad' has no row" in left
    assert "seed_1" not in text.split("Left out")[0] and "fold_01" not in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_models_named_by_init_from(runs):
    result = summarize([str(runs)])
    assert result["models"] == ["bert-base", "biobert"]  # the `hf` export folder is skipped
    assert "| NCBI disease | F | 85.00 | **88.50 ± 0.30** |" in result["markdown"]


def test_bad_input(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        summarize([str(tmp_path / "nope")])
    with pytest.raises(UserError, match="NAME=DIR"):
        summarize([str(tmp_path), "--label", "base"])
    write(tmp_path / "r" / "results.json", {"task": "s800", "scores": {"devel": {"f1": 1.0}}})
    with pytest.raises(UserError, match="(?s)no results.json with test scores.*devel-only"):
        summarize([str(tmp_path)])
