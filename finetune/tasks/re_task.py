"""The RE TaskSpec: GAD and EU-ADR (10 folds each) and ChemProt, a linear layer over the pooled [CLS].

Task names: `chemprot`; `gad_1` ... `gad_10` and `euadr_1` ... `euadr_10`, one per fold directory of
BioBERT's bundle (`GAD/1` ... `GAD/10`). A bare `gad` / `euadr` is refused with the list of folds rather
than silently meaning fold 1: the paper's number is the mean over all ten, which `finetune/crossval.py`
computes.

GAD and EU-ADR have no development split: their `dev.tsv` is empty in BioBERT's bundle. That is normal;
run them with `--eval_split ""` (crossval.py does). Left at the default, the run stops with that advice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from biobert.errors import UserError
from finetune.re_metrics import binary_scores, micro_scores
from finetune.tasks.base import SplitData
from finetune.tasks.relation import (
    collate_relations,
    decode_relations,
    encode_relations,
    read_re_tsv,
    write_predictions,
)

N_FOLDS = 10
CHEMPROT_LABELS = ("False", "CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9")  # fixed; index = class id
BINARY_LABELS = ("0", "1")


@dataclass(frozen=True)
class ReDataset:
    folders: tuple[str, ...]  # folder names tried in the bundle, the first is BioBERT's
    labels: tuple[str, ...]
    negative: str  # the class left out of the score ("0" in GAD/EU-ADR: binary F1 of "1")
    markers: tuple[str, ...]  # the anonymised target entities, checked through WordPiece and truncation
    folds: bool
    # the entity classes the two markers stand for, in order (annotation builds candidate pairs from them),
    # and the marker of the sentence's other mentions of either class (ChemProt), if the corpus has one
    classes: tuple[str, str] = ("", "")
    other_marker: str = ""


RE_DATASETS = {
    "gad": ReDataset(("GAD", "gad"), BINARY_LABELS, "0", ("@GENE$", "@DISEASE$"), True, ("gene", "disease")),
    "euadr": ReDataset(
        ("euadr", "EU-ADR", "EUADR"), BINARY_LABELS, "0", ("@GENE$", "@DISEASE$"), True, ("gene", "disease")
    ),
    "chemprot": ReDataset(
        ("chemprot", "ChemProt", "CHEMPROT"),
        CHEMPROT_LABELS,
        "False",
        ("BC6ENTC", "BC6ENTG"),
        False,
        ("chemical", "gene"),
        "BC6OTHER",
    ),
}


def re_task_names() -> list[str]:
    names = []
    for key, ds in RE_DATASETS.items():
        names.extend([f"{key}_{k}" for k in range(1, N_FOLDS + 1)] if ds.folds else [key])
    return names


def get_re_task(name: str) -> RelationTask | None:
    """The task for a CLI name, None when the name is not an RE task; a bare fold dataset is an error."""
    if name in RE_DATASETS and not RE_DATASETS[name].folds:
        return RelationTask(name=name, dataset=RE_DATASETS[name])
    if name in RE_DATASETS:
        raise UserError(
            f"{name} has {N_FOLDS} cross-validation folds; pick one ({name}_1 ... {name}_{N_FOLDS}) "
            f"or run all of them with `python finetune/crossval.py --task {name} ...`"
        )
    key, _, fold = name.rpartition("_")
    if (
        key in RE_DATASETS
        and RE_DATASETS[key].folds
        and fold.isdigit()
        and 1 <= int(fold) <= N_FOLDS
        and fold == str(int(fold))
    ):
        return RelationTask(name=name, dataset=RE_DATASETS[key], fold=int(fold))
    return None


@dataclass
class RelationTask:
    name: str
    dataset: ReDataset
    fold: int | None = None
    kind: str = "re"
    headline: tuple[str, ...] = ("precision", "recall", "f1", "accuracy")
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = list(self.dataset.labels)

    display: str = ""  # summarize.py's row name (the paper's)
    table: ClassVar[str] = "re"
    options: ClassVar[tuple[str, ...]] = ()
    select_metric: str = "f1"  # the devel score the paper's protocol selects hyper-parameters by

    @property
    def recipe(self) -> str:
        """finetune/configs/<recipe>.json: one recipe for every fold of a dataset (gad_3 -> gad)."""
        return self.name.rpartition("_")[0] if self.fold is not None else self.name

    @property
    def summary_key(self) -> str:
        """Every fold counts for its dataset's row (the paper's number is the mean over folds)."""
        return self.recipe

    def splits(self, data_dir: Path) -> dict[str, Path]:
        folder = self._folder(Path(data_dir))
        files = {"train": ("train.tsv",), "devel": ("dev.tsv", "devel.tsv"), "test": ("test.tsv",)}
        out = {}
        for split, names in files.items():
            found = [folder / n for n in names if (folder / n).is_file()]
            if found:
                out[split] = found[0]
        return out

    def _folder(self, root: Path) -> Path:
        """BioBERT's bundle root, its RE/ folder, the dataset folder, or (folds) the fold folder itself."""
        if not root.is_dir():
            raise UserError(
                f"{root}: no such data directory. Pass --data_dir pointing at BioBERT's datasets "
                f"(the folder holding {self.dataset.folders[0]}/) or at that folder itself."
            )
        sub = (str(self.fold),) if self.fold else ()
        candidates = [
            root.joinpath(*prefix, name, *sub) for prefix in ((), ("RE",), ("re",)) for name in self.dataset.folders
        ]
        names = {n.lower() for n in self.dataset.folders}
        if self.fold:  # the dataset folder, or the fold folder itself; named so GAD and EU-ADR never mix
            if root.name.lower() in names:
                candidates.append(root / str(self.fold))
            if root.name == str(self.fold) and root.parent.name.lower() in names:
                candidates.append(root)
        else:
            candidates.insert(0, root)
        for candidate in candidates:
            if (candidate / "train.tsv").is_file() and (candidate / "test.tsv").is_file():
                return candidate
        layout = f"{self.dataset.folders[0]}/{self.fold}/" if self.fold else f"{self.dataset.folders[0]}/"
        raise UserError(
            f"{root}: found no {self.name} data: expected {layout}{{train,test}}.tsv under it, in "
            f"its RE/ folder, or --data_dir pointing at {layout} itself (looked in "
            f"{', '.join(str(c) for c in candidates[:3])}, ...)"
        )

    def read(self, path: Path) -> list:
        hint = ""
        if self.dataset.folds and path.stem in ("dev", "devel"):
            hint = (
                f"{self.dataset.folders[0]} has no development split (dev.tsv is empty in BioBERT's bundle): "
                "pass --eval_split '' to train and test without one (finetune/crossval.py does)."
            )
        return read_re_tsv(path, self.labels, empty_hint=hint)

    def set_labels(self, examples_by_split: dict[str, list]) -> list[str]:
        """Fixed by the task, by name; `read` has already refused any other label."""
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
        label2id = {label: i for i, label in enumerate(self.labels)}
        return encode_relations(examples, tokenizer, label2id, max_len, self.dataset.markers)

    def collate(self, features: list, pad_id: int) -> dict[str, torch.Tensor]:
        return collate_relations(features, pad_id)

    def outputs(self, model_output, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        logits = model_output.logits.float().cpu().numpy()
        return list(logits)

    def decode(self, split: SplitData, outputs: list[np.ndarray]) -> list[str]:
        return decode_relations(split.features, outputs, len(split.examples), self.labels)

    def score(self, split: SplitData, predictions: list[str]) -> dict:
        gold = [e.label for e in split.examples]
        if len(self.labels) == 2:
            positive = next(label for label in self.labels if label != self.dataset.negative)
            scores = binary_scores(gold, predictions, positive=positive)
        else:
            classes = [label for label in self.labels if label != self.dataset.negative]
            scores = micro_scores(gold, predictions, classes, negative=self.dataset.negative)
        stats = {
            k: split.stats[k]
            for k in ("level", "truncated", "truncated_lost_marker", "max_pieces", "max_seq_length")
            if k in split.stats
        }
        return {**scores, "stats": stats}

    def write_predictions(self, path: Path, split: SplitData, predictions: list[str]) -> None:
        write_predictions(path, split.examples, predictions)
