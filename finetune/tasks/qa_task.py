"""The QA TaskSpec: BioASQ factoid (BioBERT's SQuAD-layout release) and SQuAD v1.1, start/end heads.

Splits. BioASQ: `train` = BioASQ-train-factoid-<v>.json; `test` = BioASQ-test-factoid-<v>.json with
<V>_golden.json, or BioBERT's per-batch files BioASQ-test-factoid-<v>-<n>.json with <V><n>_golden.json
(all batches form the one `test` split; scores are averaged over batches; per-batch files win when both
layouts are present). SQuAD: `train` = train-v1.1.json, `test` = dev-v1.1.json (the official test set is
hidden). There is NO `devel` split: pass `--eval_split ""` (or `--eval_split test` to watch the test score,
which is not a model-selection protocol). run_task.py's default `--eval_split devel` stops before any work
with "has no `devel` split".
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from biobert import dist
from biobert.config import write_json
from biobert.errors import UserError
from finetune.bioasq_eval import GoldenQuestion, average_batches, factoid_scores, read_golden
from finetune.tasks.base import SplitData
from finetune.tasks.qa import QuestionPrediction, collate_qa, decode_qa, encode_qa, read_squad_json, squad_scores

# CLI name -> BioASQ version ("" = the only version found in --data_dir).
BIOASQ_TASKS = {"bioasq_factoid": "", "bioasq_4b": "4b", "bioasq_5b": "5b", "bioasq_6b": "6b", "bioasq_7b": "7b",
                "bioasq_8b": "8b"}
QA_TASKS = [*BIOASQ_TASKS, "squad"]
_FILE_RE = re.compile(r"^BioASQ-(?P<split>train|test)-factoid-(?P<v>\d+b)(?:-(?P<batch>\d+))?\.json$", re.I)


@dataclass
class TestBatch:
    batch: str  # "" for a single test file, else "1", "2", ...
    test: Path
    golden: Path


def find_bioasq(data_dir: str | Path, version: str) -> tuple[Path | None, list[TestBatch]]:
    """The train file and the test batches of one BioASQ version under `data_dir` (BioBERT's bundle root,
    its QA/BioASQ folder, or a folder holding the files)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such data directory; pass --data_dir pointing at the folder with "
                        "BioASQ-train-factoid-<v>.json (or BioBERT's datasets bundle root)")
    for folder in (root, root / "BioASQ", root / "QA" / "BioASQ", root / "qa" / "bioasq", root / "bioasq"):
        files = {m: p for p in sorted(folder.glob("*.json")) if (m := _FILE_RE.match(p.name))} \
            if folder.is_dir() else {}
        versions = sorted({m["v"].lower() for m in files})
        if not versions:
            continue
        if not version and len(versions) > 1:
            raise UserError(f"{folder}: BioASQ versions {versions} found; pick one with --task "
                            f"{' or '.join('bioasq_' + v for v in versions)}")
        v = version or versions[0]
        mine = {m: p for m, p in files.items() if m["v"].lower() == v}
        if not mine:
            raise UserError(f"{folder}: no BioASQ {v} files (found versions {versions})")
        train = next((p for m, p in mine.items() if m["split"].lower() == "train"), None)
        tests = {m["batch"] or "": p for m, p in mine.items() if m["split"].lower() == "test"}
        if len(tests) > 1:  # per-batch files (BioBERT's release) win over a combined file
            tests.pop("", None)
        names = {p.name.lower(): p for p in folder.glob("*.json")}
        batches = [TestBatch(b, tests[b], names.get(f"{v.upper()}{b}_golden.json".lower(),
                                                    folder / f"{v.upper()}{b}_golden.json"))
                   for b in sorted(tests, key=lambda b: int(b or 0))]
        return train, batches
    raise UserError(f"{root}: found no BioASQ-(train|test)-factoid-<v>.json files (looked in {root}, "
                    f"{root / 'BioASQ'}, {root / 'QA' / 'BioASQ'}, {root / 'qa' / 'bioasq'}, {root / 'bioasq'})")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@dataclass
class QATask:
    name: str
    dataset: str  # "bioasq" or "squad"
    version: str = ""  # BioASQ version, "" = the only one in --data_dir
    kind: str = "qa"
    headline: tuple[str, ...] = ()
    max_query_length: int = 64  # question tokens kept (BioBERT/BERT default)
    n_best: int = 20  # spans per snippet considered (BioBERT's n_best_size)
    max_answer_tokens: int = 30  # BioBERT's max_answer_length
    top_k: int = 5  # answers per BioASQ question
    max_answer_chars: int = 100  # longer pooled answers are dropped (BioBERT's transform)
    softmax_scope: str = "snippet"  # see qa.pool_answers
    labels: list[str] = field(default_factory=list)  # no label map; kept for run_task's config.json
    _files: dict[str, Path] = field(default_factory=dict, repr=False)
    _batches: list[TestBatch] = field(default_factory=list, repr=False)
    _golden: dict[str, dict[str, GoldenQuestion]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.headline:
            self.headline = ("strict_acc", "lenient_acc", "mrr", "questions") if self.pooled else \
                ("exact_match", "f1", "questions")

    @property
    def pooled(self) -> bool:
        return self.dataset == "bioasq"

    def splits(self, data_dir: Path) -> dict[str, Path]:
        if self.pooled:
            train, self._batches = find_bioasq(data_dir, self.version)
            files = {"train": train} if train else {}
            if self._batches:
                files["test"] = self._batches[0].test
        else:
            folder = next((f for f in (Path(data_dir), Path(data_dir) / "SQuAD", Path(data_dir) / "squad")
                           if (f / "train-v1.1.json").is_file() or (f / "dev-v1.1.json").is_file()), None)
            if folder is None:
                raise UserError(f"{data_dir}: found no SQuAD v1.1 files train-v1.1.json / dev-v1.1.json")
            files = {k: folder / f for k, f in (("train", "train-v1.1.json"), ("test", "dev-v1.1.json"))
                     if (folder / f).is_file()}
        self._files = dict(files)
        return files

    def read(self, path: Path) -> list:
        """Examples of one split; the BioASQ `test` split reads every batch and checks its golden file."""
        training = path == self._files.get("train")
        if not (self.pooled and path == self._files.get("test")):
            return read_squad_json(path, pool_snippets=self.pooled, training=training)
        examples = []
        for b in self._batches:
            batch_examples = read_squad_json(b.test, pool_snippets=True, batch=b.batch, training=training)
            self._golden[b.batch] = golden = read_golden(b.golden)
            missing = next((e.qid for e in batch_examples if e.qid not in golden), None)
            if missing:
                raise UserError(f"question {missing} of test file {b.test} is not in golden file {b.golden}; "
                                "pair each test file with its own golden file")
            examples.extend(batch_examples)
        return examples

    def set_labels(self, examples_by_split: dict[str, list]) -> list[str]:
        return self.labels

    def build_model(self, init_from: str, attn_implementation: str) -> torch.nn.Module:
        from transformers import BertForQuestionAnswering

        from biobert.models import load_task_model

        # num_labels 2 = start and end; it also resets a token-classification export's label map
        return load_task_model(BertForQuestionAnswering, init_from, self.name, None, attn_implementation,
                               num_labels=2)

    def encode(self, examples: list, tokenizer, max_len: int, stride: int) -> tuple[list, dict]:
        features, stats = encode_qa(examples, tokenizer, max_len, stride, self.max_query_length)
        sources = {Path(e.source) for e in examples}
        sources |= {b.golden for b in self._batches if b.test in sources and b.golden.is_file()}
        stats["files"] = {str(p): _sha256(p) for p in sorted(sources)}
        if stats["excluded_pairs"] and dist.is_main():
            print(f"{self.name}: left out {stats['excluded_pairs']} training pairs of "
                  f"{stats['excluded_questions']} questions whose answer text is not in their snippet",
                  file=sys.stderr, flush=True)
        return features, stats

    def collate(self, features: list, pad_id: int) -> dict[str, torch.Tensor]:
        return collate_qa(features, pad_id)

    def outputs(self, model_output, batch: dict[str, torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
        start = model_output.start_logits.float().cpu().numpy()
        end = model_output.end_logits.float().cpu().numpy()
        lengths = batch["attention_mask"].sum(1).tolist()
        return [(start[i, :n], end[i, :n]) for i, n in enumerate(lengths)]

    def decode(self, split: SplitData, outputs: list) -> list[QuestionPrediction]:
        return decode_qa(split.examples, split.features, outputs, pool=self.pooled, n_best=self.n_best,
                         max_answer_tokens=self.max_answer_tokens, top_k=self.top_k,
                         max_chars=self.max_answer_chars, scope=self.softmax_scope)

    def score(self, split: SplitData, predictions: list[QuestionPrediction]) -> dict[str, float]:
        if not self.pooled:
            gold: dict[str, list[str]] = {}
            for e in split.examples:
                gold.setdefault(e.qid, []).extend(text for text, _ in e.answers)
            return squad_scores({p.qid: p.answers[0][0] if p.answers else "" for p in predictions}, gold)
        ranked = {p.qid: [text for text, _ in p.answers] for p in predictions}
        per_batch = []
        for batch in dict.fromkeys(e.batch for e in split.examples):
            qids = list(dict.fromkeys(e.qid for e in split.examples if e.batch == batch))
            golden, where = self._gold_for(split, batch)
            per_batch.append((batch or "all", factoid_scores(ranked, golden, qids, test_file=str(where[0]),
                                                               golden_file=str(where[1]))))
        return average_batches(per_batch)

    def _gold_for(self, split: SplitData, batch: str) -> tuple[dict[str, GoldenQuestion], tuple]:
        """The golden file of a test batch; for another split (e.g. --eval_split train) the answers in
        the file itself, all snippets' answer texts of a question being its synonyms."""
        if split.path == self._files.get("test") and batch in self._golden:
            b = next(b for b in self._batches if b.batch == batch)
            return self._golden[batch], (b.test, b.golden)
        golden: dict[str, GoldenQuestion] = {}
        for e in split.examples:
            g = golden.setdefault(e.qid, GoldenQuestion(e.qid, "factoid", [[]]))
            g.synonyms[0].extend(t.lower() for t, _ in e.answers if t.lower() not in g.synonyms[0])
        return golden, (split.path, split.path)

    def write_predictions(self, path: Path, split: SplitData, predictions: list[QuestionPrediction]) -> None:
        """JSON next to run_task's `predictions_<split>.txt` name: `predictions_<split>.json`.

        BioASQ: a phase-B submission ({"questions": [{"id", "type", "exact_answer": [[a1], [a2], ...]}]},
        readable by the official evaluator) plus each answer's probability and the test batch. SQuAD:
        {id: answer}, the input of the official evaluate-v1.1.py.
        """
        path = Path(path).with_suffix(".json")
        if not self.pooled:
            write_json(path, {p.qid: p.answers[0][0] if p.answers else "" for p in predictions})
            return
        questions = [{"id": p.qid, "type": "factoid", "exact_answer": [[text] for text, _ in p.answers],
                      "answers_with_probability": [{"text": t, "probability": round(prob, 6)}
                                                   for t, prob in p.answers],
                      **({"batch": p.batch} if p.batch else {})} for p in predictions]
        write_json(path, {"questions": questions})
