"""Annotation agrees with evaluation on real data: the raw text of an NER test set, annotated by
`python -m finetune.annotate`, scores the entity F1 that `finetune/run_task.py` reported for the same model.

    .venv/bin/python bench/annotate_consistency.py --run runs/ncbi_disease            # the run's hf/ and results.json
    .venv/bin/python bench/annotate_consistency.py --run runs/ncbi_disease --data_dir ../shared/data

Each test sentence's words (BioBERT's `word<TAB>label` file) are joined by single spaces into one document
(a blank line between documents, so the sentence splitter sees one sentence); the annotations' character
spans are mapped back to the words they cover (B on the first, I on the rest) and scored by conlleval, as
run_task scores. Differences can only come from words that BERT's pre-tokenizer splits (`IL-2` as a word of
the file): annotation labels each pre-token, evaluation the word; the script counts such words. Appends its
result to bench/results/annotate_consistency.json (--out).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def word_labels(text: str, words: list[str], entities: list[dict]) -> list[str]:
    """BIO labels of `words` (joined by single spaces into `text`) from character-span entities."""
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    labels = ["O"] * len(words)
    for e in sorted(entities, key=lambda e: e["start"]):
        first = max(i for i, s in enumerate(starts) if s <= e["start"])
        last = max(i for i, s in enumerate(starts) if s < e["end"])
        labels[first : last + 1] = ["B"] + ["I"] * (last - first)
    return labels


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a run_task NER run folder (hf/, results.json, config.json)")
    p.add_argument("--data_dir", default="", help="the datasets folder (default: the run's, from config.json)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "annotate_consistency.json"))
    a = p.parse_args(argv)
    import pyarrow.parquet as pq

    from biobert.tokenizer import load_tokenizer
    from finetune.annotate import main as annotate
    from finetune.conlleval import conlleval
    from finetune.tasks.ner import read_ner_tsv
    from finetune.tasks.registry import get_task

    run = Path(a.run)
    config = json.loads((run / "config.json").read_text())
    task = get_task(config["run"]["task"])
    test = task.splits(Path(a.data_dir or config["run"]["data_dir"]))["test"]
    sentences = read_ner_tsv(test)
    pre = load_tokenizer(run / "hf").backend.pre_tokenizer
    split_words = sum(len(pre.pre_tokenize_str(w)) > 1 for s in sentences for w in s.words)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "test_text.txt"
        src.write_text("".join(" ".join(s.words) + "\n\n" for s in sentences), encoding="utf-8")
        t0 = time.perf_counter()
        manifest = annotate.__wrapped__(["--input", str(src), "--ner", str(run / "hf"), "--out", str(Path(tmp) / "a")])
        seconds = time.perf_counter() - t0
        rows = pq.read_table(Path(tmp) / "a" / "test_text.parquet").to_pylist()
    if len(rows) != len(sentences):
        raise SystemExit(f"{len(rows)} annotated documents for {len(sentences)} test sentences")
    predicted = [word_labels(r["text"], s.words, r["entities"]) for r, s in zip(rows, sentences)]
    gold = [[label.split("-")[0] if label != "O" else "O" for label in s.labels] for s in sentences]
    ours = 100 * conlleval(gold, predicted)["f1"]
    reported = json.loads((run / "results.json").read_text())["scores"]["test"]["f1"]
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "task": task.name,
        "model": str(run / "hf"),
        "test_file": str(test),
        "sentences": len(sentences),
        "words_split_by_pre_tokenizer": split_words,
        "annotate_f1": round(ours, 2),
        "run_task_f1": round(reported, 2),
        "difference": round(ours - reported, 2),
        "annotate_seconds": round(seconds, 1),
        "annotate_counts": manifest["counts"],
        "annotate_settings": manifest["settings"],
    }
    out = Path(a.out)
    history = json.loads(out.read_text()) if out.is_file() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([*history, result], indent=1) + "\n")
    print(
        f"{task.name} test: annotate F1 {ours:.2f} vs run_task {reported:.2f} ({ours - reported:+.2f}); "
        f"{split_words} words split by the pre-tokenizer; {len(sentences)} sentences in {seconds:.0f} s"
    )
    return result


if __name__ == "__main__":
    main()
