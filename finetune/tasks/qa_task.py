"""The QA TaskSpec: BioASQ factoid and list (BioBERT's SQuAD-layout release) and SQuAD v1.1, start/end heads.

Splits. BioASQ: `train` = BioASQ-train-<type>-<v>.json; `test` = BioASQ-test-<type>-<v>.json with
<V>_golden.json, or BioBERT's per-batch files BioASQ-test-<type>-<v>-<n>.json with <V><n>_golden.json
(all batches form the one `test` split; scores are averaged over batches; per-batch files win when both
layouts are present). A variant suffix as in BioBERT's release (`-snippet`, `-full-annotated`,
`-snippet-annotated`) is accepted, one variant per folder. SQuAD: `train` = train-v1.1.json, `test` =
dev-v1.1.json (the official test set is hidden). There is NO `devel` split: pass `--eval_split ""` (or
`--eval_split test` to watch the test score, which is not a model-selection protocol). run_task.py's default
`--eval_split devel` stops before any work with "has no `devel` split".

List questions (`bioasq_list_<v>`) use the factoid model, windows and span pooling unchanged; then every
pooled candidate with probability >= `list_threshold` (0.42, the default of BioBERT's
`biocodes/transform_n2b_list.py`, which thresholds the same summed-over-snippets probability) is an answer,
at most `list_max_answers`, at least the top one. Training reads the list training file like a factoid one,
each answer occurrence of a pair becoming its own training span. To answer list questions with a
factoid-trained model without list training: `--init_from <factoid run>/hf --max_steps 1 --ds
optimizer.params.lr=0` (run_task always reads a training file and takes at least one optimizer step; at
learning rate 0 the step changes no weight).
Without a golden file the list and yes/no test splits are scored against the answers in the test file.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from biobert import dist
from biobert.config import write_json
from biobert.errors import UserError
from biobert.files import short_sha256
from finetune.bioasq_eval import (
    LIST_MAX_ANSWERS,
    LIST_THRESHOLD,
    GoldenQuestion,
    average_batches,
    factoid_scores,
    list_scores,
    read_golden,
    select_list_answers,
)
from finetune.tasks.base import SplitData
from finetune.tasks.qa import collate_qa, encode_qa, excluded_summary, read_squad_json
from finetune.tasks.qa_decode import QuestionPrediction, decode_qa, squad_scores

VERSIONS = ("4b", "5b", "6b", "7b", "8b")
# CLI name -> BioASQ version ("" = the only version found in --data_dir); the prefix names a version's task.
TASK_PREFIX = {"factoid": "bioasq_", "list": "bioasq_list_", "yesno": "bioasq_yesno_"}
BIOASQ_TASKS = {"bioasq_factoid": "", **{f"bioasq_{v}": v for v in VERSIONS}}
BIOASQ_LIST_TASKS = {"bioasq_list": "", **{f"bioasq_list_{v}": v for v in VERSIONS}}
QA_TASKS = [*BIOASQ_TASKS, *BIOASQ_LIST_TASKS, "squad"]
_FILE_RE = re.compile(
    r"^BioASQ-(?P<split>train|test)-(?P<type>factoid|yesno|list)-(?P<v>\d+b)(?:-(?P<batch>\d+))?"
    r"(?:-(?P<variant>[a-z][a-z-]*))?\.json$",
    re.I,
)


@dataclass
class TestBatch:
    batch: str  # "" for a single test file, else "1", "2", ...
    test: Path
    golden: Path


def find_bioasq(data_dir: str | Path, version: str, qtype: str = "factoid") -> tuple[Path | None, list[TestBatch]]:
    """The train file and the test batches of one BioASQ version and question type under `data_dir`
    (BioBERT's bundle root, its QA/BioASQ folder, or a folder holding the files)."""
    root = Path(data_dir)
    pattern = f"BioASQ-(train|test)-{qtype}-<v>.json"
    if not root.is_dir():
        raise UserError(
            f"{root}: no such data directory; pass --data_dir pointing at the folder with "
            f"{pattern} (or BioBERT's datasets bundle root)"
        )
    folders = (root, root / "BioASQ", root / "QA" / "BioASQ", root / "qa" / "bioasq", root / "bioasq")
    for folder in folders:
        files = (
            {
                p: m
                for p in sorted(folder.glob("*.json"))
                if (m := _FILE_RE.match(p.name)) and m["type"].lower() == qtype
            }
            if folder.is_dir()
            else {}
        )
        versions = sorted({m["v"].lower() for m in files.values()})
        if not versions:
            continue
        if not version and len(versions) > 1:
            raise UserError(
                f"{folder}: BioASQ versions {versions} found; pick one with --task "
                f"{' or '.join(TASK_PREFIX[qtype] + v for v in versions)}"
            )
        v = version or versions[0]
        groups: dict[tuple[str, str], list[Path]] = {}
        for p, m in files.items():
            if m["v"].lower() == v:
                groups.setdefault((m["split"].lower(), m["batch"] or ""), []).append(p)
        if not groups:
            raise UserError(f"{folder}: no BioASQ {v} {qtype} files (found versions {versions})")
        for paths in groups.values():
            if len(paths) > 1:
                raise UserError(
                    f"{folder}: {[p.name for p in paths]} are variants of one file; keep one per "
                    "folder (BioBERT's release keeps Snippet-as-is and Full-Abstract apart)"
                )
        train = groups.get(("train", ""), [None])[0]
        tests = {b: paths[0] for (split, b), paths in groups.items() if split == "test"}
        if len(tests) > 1:  # per-batch files (BioBERT's release) win over a combined file
            tests.pop("", None)
        names = {p.name.lower(): p for p in folder.glob("*.json")}
        batches = [
            TestBatch(
                b, tests[b], names.get(f"{v.upper()}{b}_golden.json".lower(), folder / f"{v.upper()}{b}_golden.json")
            )
            for b in sorted(tests, key=lambda b: int(b or 0))
        ]
        return train, batches
    raise UserError(f"{root}: found no {pattern} files (looked in {', '.join(str(f) for f in folders)})")


def read_test_batches(
    batches: list[TestBatch], read_one, golden_required: bool
) -> tuple[list, dict[str, dict[str, GoldenQuestion] | None]]:
    """Examples of every test batch (`read_one(batch)`) and each batch's golden questions; a batch without
    a golden file gets None unless `golden_required`. Every test question must be in its golden file."""
    examples, golden_of = [], {}
    for b in batches:
        batch_examples = read_one(b)
        golden = read_golden(b.golden) if golden_required or b.golden.is_file() else None
        golden_of[b.batch] = golden
        missing = next((e.qid for e in batch_examples if golden is not None and e.qid not in golden), None)
        if missing:
            raise UserError(
                f"question {missing} of test file {b.test} is not in golden file {b.golden}; "
                "pair each test file with its own golden file"
            )
        examples.extend(batch_examples)
    return examples, golden_of


def file_digests(examples: list, batches: list[TestBatch]) -> dict[str, str]:
    """sha256 (16 hex) of the files the examples came from and of their test batches' golden files."""
    sources = {Path(e.source) for e in examples}
    sources |= {b.golden for b in batches if b.test in sources and b.golden.is_file()}
    return {str(p): short_sha256(p) for p in sorted(sources)}


@dataclass
class QATask:
    name: str
    dataset: str  # "bioasq" or "squad"
    version: str = ""  # BioASQ version, "" = the only one in --data_dir
    qtype: str = "factoid"  # BioASQ question type: "factoid" or "list"
    kind: str = "qa"
    headline: tuple[str, ...] = ()
    max_query_length: int = 64  # question tokens kept (BioBERT/BERT default)
    n_best: int = 20  # spans per snippet considered (BioBERT's n_best_size)
    max_answer_tokens: int = 30  # BioBERT's max_answer_length
    top_k: int = 5  # answers per BioASQ factoid question

    display: str = ""  # summarize.py's row name (the paper's); "" for no row (SQuAD)
    options: ClassVar[tuple[str, ...]] = (
        "max_query_length",
        "n_best",
        "max_answer_tokens",
        "top_k",
        "max_answer_chars",
        "softmax_scope",
        "list_threshold",
        "list_max_answers",
    )
    select_metric: str = "strict_acc"  # the devel score the paper's protocol selects hyper-parameters by

    @property
    def table(self) -> str:
        return "" if not self.pooled else {"factoid": "qa", "list": "qa_list"}[self.qtype]

    @property
    def summary_key(self) -> str:
        return self.name

    def check_options(self, source: str) -> None:
        if self.softmax_scope not in ("snippet", "question"):
            raise UserError(f'{source}: softmax_scope must be "snippet" or "question", got {self.softmax_scope!r}')
        for key in ("max_query_length", "n_best", "max_answer_tokens", "top_k", "max_answer_chars"):
            if getattr(self, key) < 1:
                raise UserError(f"{source}: {key} must be at least 1, got {getattr(self, key)}")

    @property
    def recipe(self) -> str:
        """finetune/configs/<recipe>.json: one per question type, every BioASQ version alike."""
        return "squad" if self.dataset == "squad" else f"bioasq_{self.qtype}"

    max_answer_chars: int = 100  # longer pooled answers are dropped (BioBERT's transform)
    softmax_scope: str = "snippet"  # see qa_decode.pool_answers
    list_threshold: float = LIST_THRESHOLD  # list answers: pooled probability >= this (bioasq_eval)
    list_max_answers: int = LIST_MAX_ANSWERS
    labels: list[str] = field(default_factory=list)  # no label map; kept for run_task's config.json
    _files: dict[str, Path] = field(default_factory=dict, repr=False)
    _batches: list[TestBatch] = field(default_factory=list, repr=False)
    _golden: dict[str, dict[str, GoldenQuestion] | None] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.headline:
            self.headline = (
                {
                    "factoid": ("strict_acc", "lenient_acc", "mrr", "questions"),
                    "list": ("mean_precision", "mean_recall", "mean_f1", "questions"),
                }[self.qtype]
                if self.pooled
                else ("exact_match", "f1", "questions")
            )

    @property
    def pooled(self) -> bool:
        return self.dataset == "bioasq"

    def splits(self, data_dir: Path) -> dict[str, Path]:
        if self.pooled:
            train, self._batches = find_bioasq(data_dir, self.version, self.qtype)
            files = {"train": train} if train else {}
            if self._batches:
                files["test"] = self._batches[0].test
        else:
            folder = next(
                (
                    f
                    for f in (Path(data_dir), Path(data_dir) / "SQuAD", Path(data_dir) / "squad")
                    if (f / "train-v1.1.json").is_file() or (f / "dev-v1.1.json").is_file()
                ),
                None,
            )
            if folder is None:
                raise UserError(f"{data_dir}: found no SQuAD v1.1 files train-v1.1.json / dev-v1.1.json")
            files = {
                k: folder / f
                for k, f in (("train", "train-v1.1.json"), ("test", "dev-v1.1.json"))
                if (folder / f).is_file()
            }
        self._files = dict(files)
        return files

    def read(self, path: Path) -> list:
        """Examples of one split; the BioASQ `test` split reads every batch and checks its golden file
        (required for factoid; list falls back to the answers in the test file)."""
        training = path == self._files.get("train")
        if not (self.pooled and path == self._files.get("test")):
            examples = read_squad_json(path, pool_snippets=self.pooled, training=training)
            if self.qtype == "list" and training:  # one training span per answer occurrence of a pair
                # (scoring this split, e.g. --eval_split train, then pools a pair once per answer; a pair
                # without an answer stays, for encode_qa to leave out and count)
                examples = [
                    dataclasses.replace(e, answers=[a] if a else []) for e in examples for a in e.answers or [None]
                ]
            return examples
        examples, self._golden = read_test_batches(
            self._batches,
            lambda b: read_squad_json(b.test, pool_snippets=True, batch=b.batch, training=training),
            golden_required=self.qtype == "factoid",
        )
        answered = {e.qid for e in examples if any(text for text, _ in e.answers)}
        unanswered = next((e for e in examples if self._golden[e.batch] is None and e.qid not in answered), None)
        if unanswered:
            b = next(b for b in self._batches if b.batch == unanswered.batch)
            raise UserError(
                f"{b.test}: question {unanswered.qid} has no answers and there is no golden file "
                f"{b.golden}; put the official golden file next to the test file"
            )
        return examples

    def set_labels(self, examples_by_split: dict[str, list]) -> list[str]:
        return self.labels

    def build_model(self, init_from: str, attn_implementation: str) -> torch.nn.Module:
        from transformers import BertForQuestionAnswering

        from biobert.models import load_task_model

        # num_labels 2 = start and end; it also resets a token-classification export's label map
        return load_task_model(BertForQuestionAnswering, init_from, self.name, None, attn_implementation, num_labels=2)

    def encode(self, examples: list, tokenizer, max_len: int, stride: int) -> tuple[list, dict]:
        features, stats = encode_qa(examples, tokenizer, max_len, stride, self.max_query_length)
        stats["files"] = file_digests(examples, self._batches)
        if stats["excluded_pairs"] and dist.is_main():  # one count per reason: nothing is dropped unsaid
            print(
                f"{self.name}: left out {stats['excluded_pairs']} of {stats['examples']} training pairs "
                f"({stats['excluded_questions']} questions): {excluded_summary(stats)}",
                file=sys.stderr,
                flush=True,
            )
        return features, stats

    def collate(self, features: list, pad_id: int) -> dict[str, torch.Tensor]:
        return collate_qa(features, pad_id)

    def outputs(self, model_output, batch: dict[str, torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
        start = model_output.start_logits.float().cpu().numpy()
        end = model_output.end_logits.float().cpu().numpy()
        lengths = batch["attention_mask"].sum(1).tolist()
        return [(start[i, :n], end[i, :n]) for i, n in enumerate(lengths)]

    def decode(self, split: SplitData, outputs: list) -> list[QuestionPrediction]:
        """Factoid: the top 5 pooled answers; list: all pooled candidates (up to `list_max_answers`), from
        which `list_answers` selects."""
        top_k = self.top_k if self.qtype == "factoid" else max(self.top_k, self.list_max_answers)
        return decode_qa(
            split.examples,
            split.features,
            outputs,
            pool=self.pooled,
            n_best=self.n_best,
            max_answer_tokens=self.max_answer_tokens,
            top_k=top_k,
            max_chars=self.max_answer_chars,
            scope=self.softmax_scope,
        )

    def list_answers(self, prediction: QuestionPrediction) -> list[str]:
        return select_list_answers(prediction.answers, self.list_threshold, self.list_max_answers)

    def score(self, split: SplitData, predictions: list[QuestionPrediction]) -> dict[str, float]:
        if not self.pooled:
            gold: dict[str, list[str]] = {}
            for e in split.examples:
                gold.setdefault(e.qid, []).extend(text for text, _ in e.answers)
            return squad_scores({p.qid: p.answers[0][0] if p.answers else "" for p in predictions}, gold)
        if self.qtype == "list":
            answers, scorer = {p.qid: [[a] for a in self.list_answers(p)] for p in predictions}, list_scores
        else:
            answers, scorer = {p.qid: [text for text, _ in p.answers] for p in predictions}, factoid_scores
        per_batch = []
        for batch in dict.fromkeys(e.batch for e in split.examples):
            qids = list(dict.fromkeys(e.qid for e in split.examples if e.batch == batch))
            golden, where = self._gold_for(split, batch)
            per_batch.append(
                (batch or "all", scorer(answers, golden, qids, test_file=str(where[0]), golden_file=str(where[1])))
            )
        return average_batches(per_batch)

    def _gold_for(self, split: SplitData, batch: str) -> tuple[dict[str, GoldenQuestion], tuple]:
        """The golden file of a test batch; for another split (e.g. --eval_split train) or a list test batch
        without a golden file the answers in the file itself: factoid, all answer texts of a question are
        synonyms of its one answer; list, each distinct answer text (any case) is an item."""
        if split.path == self._files.get("test") and self._golden.get(batch) is not None:
            b = next(b for b in self._batches if b.batch == batch)
            return self._golden[batch], (b.test, b.golden)
        golden: dict[str, GoldenQuestion] = {}
        for e in split.examples:
            if e.batch == batch:
                g = golden.setdefault(e.qid, GoldenQuestion(e.qid, self.qtype, [[]] if self.qtype == "factoid" else []))
                for text in dict.fromkeys(t.lower() for t, _ in e.answers if t):
                    if self.qtype == "factoid" and text not in g.synonyms[0]:
                        g.synonyms[0].append(text)
                    elif self.qtype == "list" and [text] not in g.synonyms:
                        g.synonyms.append([text])
        return golden, (split.path, f"the answers in {split.path}")

    def write_predictions(self, path: Path, split: SplitData, predictions: list[QuestionPrediction]) -> None:
        """JSON next to run_task's `predictions_<split>.txt` name: `predictions_<split>.json`.

        BioASQ: a phase-B submission ({"questions": [{"id", "type", "exact_answer": [[a1], [a2], ...]}]}: one
        single-string item per answer, the layout the official reader takes since BioASQ5, see
        `bioasq_eval.read_questions`) plus the test batch and each answer's probability (list: every pooled
        candidate's, so `bioasq_eval.py --list_threshold` can re-select), under keys the official reader
        skips. SQuAD: {id: answer}, the input of the official evaluate-v1.1.py.
        """
        path = Path(path).with_suffix(".json")
        if not self.pooled:
            write_json(path, {p.qid: p.answers[0][0] if p.answers else "" for p in predictions})
            return
        questions = []
        for p in predictions:
            exact = self.list_answers(p) if self.qtype == "list" else [text for text, _ in p.answers]
            questions.append(
                {
                    "id": p.qid,
                    "type": self.qtype,
                    "exact_answer": [[text] for text in exact],
                    "answers_with_probability": [{"text": t, "probability": round(prob, 6)} for t, prob in p.answers],
                    **({"batch": p.batch} if p.batch else {}),
                }
            )
        write_json(path, {"questions": questions})
