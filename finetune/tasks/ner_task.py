"""The NER TaskSpec: BioBERT's nine NER corpora, one linear layer over the last hidden states."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from finetune.conlleval import conlleval, strict_iob2
from finetune.tasks.base import SplitData, find_task_dir, token_outputs
from finetune.tasks.ner import collate_ner, decode_ner, encode_ner, label_list, read_ner_tsv, write_predictions

# CLI name -> folder name in BioBERT's released datasets bundle.
NER_DATASETS = {
    "ncbi_disease": "NCBI-disease",
    "bc5cdr_disease": "BC5CDR-disease",
    "bc5cdr_chem": "BC5CDR-chem",
    "bc4chemd": "BC4CHEMD",
    "bc2gm": "BC2GM",
    "jnlpba": "JNLPBA",
    "linnaeus": "linnaeus",
    "s800": "s800",
    "i2b2_2010": "i2b2_2010",
}


@dataclass
class NerTask:
    name: str
    dataset: str
    kind: str = "ner"
    headline: tuple[str, ...] = ("precision", "recall", "f1", "true_entities")
    scheme: str = "conlleval"  # "conlleval" (BioBERT's numbers) or "strict" (typed IOB2)
    labels: list[str] = field(default_factory=list)

    select_metric: str = "f1"  # the devel score the paper's protocol selects hyper-parameters by

    @property
    def recipe(self) -> str:
        """finetune/configs/<recipe>.json: this task's BioBERT hyper-parameters."""
        return self.name

    def splits(self, data_dir: Path) -> dict[str, Path]:
        folder = find_task_dir(data_dir, self.dataset, ("train.tsv", "test.tsv"))
        files = {"train": "train.tsv", "devel": "devel.tsv", "test": "test.tsv", "train_dev": "train_dev.tsv"}
        return {k: folder / f for k, f in files.items() if (folder / f).is_file()}

    def read(self, path: Path) -> list:
        return read_ner_tsv(path)

    def set_labels(self, examples_by_split: dict[str, list]) -> list[str]:
        """Labels by name over all splits; a fine-tuned checkpoint's own map is checked against it."""
        self.labels = label_list(*examples_by_split.values())
        return self.labels

    def build_model(self, init_from: str, attn_implementation: str) -> torch.nn.Module:
        from transformers import BertForTokenClassification

        from biobert.models import load_task_model

        return load_task_model(BertForTokenClassification, init_from, self.name, self.labels, attn_implementation)

    def encode(self, examples: list, tokenizer, max_len: int, stride: int) -> tuple[list, dict]:
        label2id = {label: i for i, label in enumerate(self.labels)}
        return encode_ner(examples, tokenizer, label2id, max_len=max_len, stride=stride)

    def collate(self, features: list, pad_id: int) -> dict[str, torch.Tensor]:
        return collate_ner(features, pad_id)

    def outputs(self, model_output, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        return token_outputs(model_output, batch)

    def decode(self, split: SplitData, outputs: list[np.ndarray]) -> list[list[str]]:
        return decode_ner(split.features, outputs, split.examples, self.labels)

    def score(self, split: SplitData, predictions: list[list[str]]) -> dict[str, float]:
        gold = [s.labels for s in split.examples]
        result = (strict_iob2 if self.scheme == "strict" else conlleval)(gold, predictions)
        return {
            "precision": 100 * result["precision"],
            "recall": 100 * result["recall"],
            "f1": 100 * result["f1"],
            "token_accuracy": 100 * result["token_accuracy"],
            "true_entities": result["true_chunks"],
            "predicted_entities": result["pred_chunks"],
            "correct_entities": result["correct_chunks"],
        }

    def write_predictions(self, path: Path, split: SplitData, predictions: list[list[str]]) -> None:
        write_predictions(path, split.examples, predictions)
