"""The BioASQ yes/no TaskSpec: `bioasq_yesno_<v>` (4b ... 8b; `bioasq_yesno` for the only version found).

Data, model and pooling: `finetune/tasks/yesno.py`. Files are found as for factoid (`qa_task.find_bioasq`):
`train` = BioASQ-train-yesno-<v>.json, `test` = BioASQ-test-yesno-<v>.json with <V>_golden.json or the
per-batch BioASQ-test-yesno-<v>-<n>.json with <V><n>_golden.json (scored per batch, averaged over batches).
The golden file's yes/no answers are the gold when it is there, else the labels in the test file (a test
file without either is an error). No `devel` split: pass `--eval_split ""`.

Scores (`bioasq_eval.yesno_scores`, as the official evaluator): accuracy, F1 of "yes", F1 of "no", macro F1,
with the majority-class baseline beside them (`baseline_accuracy`, `baseline_macro_f1`), and the same
measures of the snippets' majority vote (`vote_accuracy`, `vote_macro_f1`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from biobert.config import write_json
from biobert.errors import UserError
from finetune.bioasq_eval import GoldenQuestion, average_batches, yesno_scores
from finetune.tasks.base import SplitData
from finetune.tasks.qa_task import VERSIONS, TestBatch, file_digests, find_bioasq, read_test_batches
from finetune.tasks.yesno import LABELS, YesNoPrediction, collate_yesno, encode_yesno, pool_yesno, read_yesno_json

BIOASQ_YESNO_TASKS = {"bioasq_yesno": "", **{f"bioasq_yesno_{v}": v for v in VERSIONS}}


@dataclass
class YesNoTask:
    name: str
    version: str = ""  # BioASQ version, "" = the only one in --data_dir
    kind: str = "qa"
    headline: tuple[str, ...] = ("accuracy", "macro_f1", "f1_yes", "f1_no", "baseline_accuracy", "questions")
    max_query_length: int = 64  # question tokens kept (BioBERT/BERT default)
    labels: list[str] = field(default_factory=lambda: list(LABELS))

    display: str = ""  # summarize.py's row name (the paper's)
    table: ClassVar[str] = "qa_yesno"
    options: ClassVar[tuple[str, ...]] = ("max_query_length",)
    select_metric: str = "accuracy"  # the devel score the paper's protocol selects hyper-parameters by

    @property
    def summary_key(self) -> str:
        return self.name

    def check_options(self, source: str) -> None:
        if self.max_query_length < 1:
            raise UserError(f"{source}: max_query_length must be at least 1, got {self.max_query_length}")

    @property
    def recipe(self) -> str:
        """finetune/configs/<recipe>.json."""
        return "bioasq_yesno"

    _files: dict[str, Path] = field(default_factory=dict, repr=False)
    _batches: list[TestBatch] = field(default_factory=list, repr=False)
    _golden: dict[str, dict[str, GoldenQuestion] | None] = field(default_factory=dict, repr=False)

    def splits(self, data_dir: Path) -> dict[str, Path]:
        train, self._batches = find_bioasq(data_dir, self.version, "yesno")
        files = {"train": train} if train else {}
        if self._batches:
            files["test"] = self._batches[0].test
        self._files = dict(files)
        return files

    def read(self, path: Path) -> list:
        """Pairs of one split; the `test` split reads every batch, with its golden file where there is one."""
        training = path == self._files.get("train")
        if path != self._files.get("test"):
            return read_yesno_json(path, training=training)
        examples, self._golden = read_test_batches(
            self._batches, lambda b: read_yesno_json(b.test, batch=b.batch, training=training), golden_required=False
        )
        for b in self._batches:
            unlabelled = next((e for e in examples if e.batch == b.batch and not e.label), None)
            if self._golden[b.batch] is None and unlabelled is not None:
                raise UserError(
                    f"{b.test}: {unlabelled.qas_id} has no yes/no answer and there is no golden file {b.golden}; "
                    "put the official golden file next to the test file"
                )
        return examples

    def set_labels(self, examples_by_split: dict[str, list]) -> list[str]:
        """Fixed by name ("no", "yes"); `read` has already refused any other answer."""
        return self.labels

    def build_model(self, init_from: str, attn_implementation: str) -> torch.nn.Module:
        from transformers import BertForSequenceClassification

        from biobert.models import load_task_model

        return load_task_model(
            BertForSequenceClassification,
            init_from,
            self.name,
            self.labels,
            attn_implementation,
            problem_type="single_label_classification",
        )

    def encode(self, examples: list, tokenizer, max_len: int, stride: int) -> tuple[list, dict]:
        features, stats = encode_yesno(examples, tokenizer, max_len, stride, self.max_query_length)
        stats["files"] = file_digests(examples, self._batches)
        return features, stats

    def collate(self, features: list, pad_id: int) -> dict[str, torch.Tensor]:
        return collate_yesno(features, pad_id)

    def outputs(self, model_output, batch: dict[str, torch.Tensor]) -> list[float]:
        """p(yes) of each window."""
        return torch.softmax(model_output.logits.float(), dim=-1)[:, LABELS.index("yes")].cpu().tolist()

    def decode(self, split: SplitData, outputs: list[float]) -> list[YesNoPrediction]:
        return pool_yesno(split.examples, split.features, outputs)

    def score(self, split: SplitData, predictions: list[YesNoPrediction]) -> dict:
        answers = {p.qid: p.answer for p in predictions}
        votes = {p.qid: p.vote for p in predictions}
        per_batch = []
        for batch in dict.fromkeys(e.batch for e in split.examples):
            qids = list(dict.fromkeys(e.qid for e in split.examples if e.batch == batch))
            golden, files, gold_from = self._gold_for(split, batch)
            scores = yesno_scores(answers, golden, qids, **files)
            vote = yesno_scores(votes, golden, qids, **files)
            scores.update(vote_accuracy=vote["accuracy"], vote_macro_f1=vote["macro_f1"], gold_from=gold_from)
            per_batch.append((batch or "all", scores))
        return average_batches(per_batch)

    def _gold_for(self, split: SplitData, batch: str) -> tuple[dict[str, GoldenQuestion], dict[str, str], str]:
        """The golden file of a test batch, else the labels in the split's own file (every snippet of a
        question must then carry the same one)."""
        if split.path == self._files.get("test") and self._golden.get(batch) is not None:
            b = next(b for b in self._batches if b.batch == batch)
            return self._golden[batch], {"test_file": str(b.test), "golden_file": str(b.golden)}, "golden file"
        golden: dict[str, GoldenQuestion] = {}
        for e in split.examples:
            if e.batch != batch:
                continue
            g = golden.setdefault(e.qid, GoldenQuestion(e.qid, "yesno", [], answer=e.label))
            if g.answer != e.label:
                raise UserError(
                    f"{e.source}: the snippets of question {e.qid} carry different yes/no answers "
                    f"({g.answer!r} and {e.label!r} at {e.qas_id}); fix the file or score against a golden file"
                )
        source = split.examples[0].source if split.examples else str(split.path)
        return golden, {"test_file": source, "golden_file": f"the labels in {source}"}, "test file"

    def write_predictions(self, path: Path, split: SplitData, predictions: list[YesNoPrediction]) -> None:
        """`predictions_<split>.json`: a BioASQ phase-B submission ({"questions": [{"id", "type": "yesno",
        "exact_answer": "yes"}]}) plus p(yes), the vote, the number of snippets pooled and the batch.

        The extra keys must be ones the official reader skips: it reads `snippets`, `documents`, `concepts`,
        `triples`, `body`, `type`, `id` and `exact_answer` with fixed types (Task1bData.readData), so the
        snippet count is `pooled_snippets`; a number under `snippets` stops it ("Expected BEGIN_ARRAY").
        `bioasq_eval.read_submission` reads the file as the official reader does."""
        questions = [
            {
                "id": p.qid,
                "type": "yesno",
                "exact_answer": p.answer,
                "probability_yes": round(p.probability_yes, 6),
                "vote": p.vote,
                "pooled_snippets": p.snippets,
                "yes_votes": p.yes_votes,
                **({"batch": p.batch} if p.batch else {}),
            }
            for p in predictions
        ]
        write_json(Path(path).with_suffix(".json"), {"questions": questions})
