"""The NER TaskSpec: BioBERT's nine NER corpora, one linear layer over the last hidden states."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from biobert.errors import UserError
from finetune.conlleval import conlleval, strict_iob2
from finetune.tasks.base import SplitData, find_task_dir, token_outputs
from finetune.tasks.ner import (
    _LABEL_RE,
    OUTSIDE,
    collate_ner,
    decode_ner,
    encode_ner,
    label_list,
    read_ner_tsv,
    write_predictions,
)

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

# CLI name -> entity type (the paper's Table 2 categories). BioBERT's corpora tag plain B/I/O; exports name
# their labels B-<type>/I-<type> so that a token-classification pipeline returns whole, typed entities.
NER_ENTITY_TYPES = {
    "ncbi_disease": "Disease",
    "bc5cdr_disease": "Disease",
    "i2b2_2010": "Disease",
    "bc5cdr_chem": "Chemical",
    "bc4chemd": "Chemical",
    "bc2gm": "Gene/Protein",
    "jnlpba": "Gene/Protein",
    "linnaeus": "Species",
    "s800": "Species",
}


def typed_labels(labels: list[str], entity_type: str) -> list[str]:
    """`labels` with every untyped tag (B, I, E, S) given `entity_type`; typed tags and O are kept. A map that
    would then name two classes alike (B and B-<type> both present) is returned unchanged."""
    out = [f"{x}-{entity_type}" if _LABEL_RE.match(x) and "-" not in x else x for x in labels]
    return out if len(set(out)) == len(out) else list(labels)


def untyped_labels(labels: list[str]) -> list[str] | None:
    """The plain B/I/O map of a map whose tags all carry one type (an export's `B-Disease` -> `B`), else None."""
    types = {m["type"] for x in labels if (m := _LABEL_RE.match(x))}
    if len(types) != 1 or None in types:
        return None
    return [x if x == OUTSIDE else x.split("-", 1)[0] for x in labels]


@dataclass
class NerTask:
    name: str
    dataset: str
    kind: str = "ner"
    headline: tuple[str, ...] = ("precision", "recall", "f1", "true_entities")
    scheme: str = "conlleval"  # "conlleval" (BioBERT's numbers) or "strict" (typed IOB2)
    labels: list[str] = field(default_factory=list)

    display: str = ""  # summarize.py's row name (the paper's)
    entity_type: str = ""  # what its B/I labels mark (exports are typed B-<type>); "" = NER_ENTITY_TYPES' entry
    table: ClassVar[str] = "ner"
    options: ClassVar[tuple[str, ...]] = ("scheme",)
    select_metric: str = "f1"  # the devel score the paper's protocol selects hyper-parameters by

    @property
    def recipe(self) -> str:
        """finetune/configs/<recipe>.json: this task's BioBERT hyper-parameters."""
        return self.name

    def __post_init__(self) -> None:
        self.entity_type = self.entity_type or NER_ENTITY_TYPES.get(self.name, self.dataset)

    @property
    def summary_key(self) -> str:
        return self.name

    def check_options(self, source: str) -> None:
        if self.scheme not in ("conlleval", "strict"):
            raise UserError(f'{source}: scheme must be "conlleval" or "strict", got {self.scheme!r}')

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

    def export_labels(self) -> list[str]:
        """The label names an export's config.json carries (id2label): typed, in the order of `labels`."""
        return typed_labels(self.labels, self.entity_type)

    def build_model(self, init_from: str, attn_implementation: str) -> torch.nn.Module:
        """The tagger trains and scores with the corpus's own labels (`labels`); only its exports are typed. A
        fine-tuned export whose labels are these up to one type (B-Disease for B: every export since typing,
        and plain B/I/O ones from before) is the same label map, so it is accepted for further training or
        evaluation (--train_split "") and the model's config is set back to the corpus's names."""
        from transformers import BertForTokenClassification

        from biobert.models import load_bert_config, load_task_model

        config = load_bert_config(init_from)
        theirs = [config.id2label[i] for i in sorted(config.id2label)]
        same = "BertForTokenClassification" in (config.architectures or [])
        given = theirs if same and theirs != self.labels and untyped_labels(theirs) == self.labels else self.labels
        model = load_task_model(BertForTokenClassification, init_from, self.name, given, attn_implementation)
        model.config.id2label = dict(enumerate(self.labels))
        model.config.label2id = {label: i for i, label in enumerate(self.labels)}
        return model

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
