"""What a fine-tuning task is: a TaskSpec (reader, encoder, head, decoder, metric) on the one loop.

A task never owns a training loop. `run_task.py` builds the engine from the task's model, feeds `fit()`
from the task's encoded features, and calls the task back to predict, decode and score a split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from biobert.errors import UserError


@dataclass
class SplitData:
    """One split: the task's raw examples and the model inputs encoded from them."""

    name: str
    path: Path
    examples: list[Any]
    features: list[Any]
    stats: dict = field(default_factory=dict)


class TaskSpec(Protocol):
    name: str  # CLI name, e.g. "ncbi_disease"
    kind: str  # "ner", "re" or "qa": the head, the encoder and which inference command handles it
    headline: tuple[str, ...]  # score keys printed at the end of a run, e.g. ("precision", "recall", "f1")
    select_metric: str  # the devel score the paper's protocol selects hyper-parameters by
    table: str  # summarize.py's table ("ner", "re", "qa", "qa_yesno", "qa_list"); "" for none
    display: str  # its row name there (the paper's), e.g. "NCBI disease"
    options: tuple[str, ...]  # the task's knobs: field names settable through the run config's task_options

    @property
    def recipe(self) -> str: ...  # finetune/configs/<recipe>.json
    @property
    def summary_key(self) -> str: ...  # the row a result counts for ("gad" for every GAD fold)

    def splits(self, data_dir: Path) -> dict[str, Path]: ...
    def read(self, path: Path) -> list[Any]: ...
    def set_labels(self, examples_by_split: dict[str, list[Any]]) -> list[str]: ...
    def build_model(self, init_from: str, attn_implementation: str) -> torch.nn.Module: ...
    def encode(self, examples: list[Any], tokenizer: Any, max_len: int, stride: int) -> tuple[list, dict]: ...
    def collate(self, features: list[Any], pad_id: int) -> dict[str, torch.Tensor]: ...
    def outputs(self, model_output: Any, batch: dict[str, torch.Tensor]) -> list[Any]: ...
    def decode(self, split: SplitData, outputs: list[Any]) -> list[Any]: ...
    def score(self, split: SplitData, predictions: list[Any]) -> dict[str, float]: ...
    def write_predictions(self, path: Path, split: SplitData, predictions: list[Any]) -> None: ...


def configure(task: TaskSpec, options: dict, source: str = "task_options") -> dict:
    """Set the task's knobs (its `options` fields) from the run config; returns every knob's resolved value
    for config.json, so a run's config says how it decoded and scored."""
    known = tuple(getattr(task, "options", ()))
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(
            f"{source}: task {task.name} has no option(s) {unknown}; its options are "
            f"{', '.join(f'{k} (now {getattr(task, k)!r})' for k in known) or 'none'}"
        )
    for key, value in options.items():
        current = getattr(task, key)
        kind = type(current)
        try:
            if kind is bool and not isinstance(value, bool):
                raise ValueError
            coerced = float(value) if kind is float and not isinstance(value, bool) else value
            if kind is int and (isinstance(value, bool) or int(value) != value):
                raise ValueError
            if kind is str and not isinstance(value, str):
                raise ValueError
        except (TypeError, ValueError):
            raise UserError(f"{source}: {key} of task {task.name} expects {kind.__name__}, got {value!r}") from None
        setattr(task, key, kind(coerced))
    check = getattr(task, "check_options", None)
    if check is not None:
        check(source)
    return {k: getattr(task, k) for k in known}


def find_task_dir(data_dir: str | Path, dataset: str, required: tuple[str, ...]) -> Path:
    """Accept the dataset's own folder or the root of BioBERT's datasets bundle (NER/, ner/ or flat)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(
            f"{root}: no such data directory. Pass --data_dir pointing at BioBERT's datasets "
            f"(the folder holding {dataset}/, or NER/ and RE/) or at {dataset}/ itself, or set "
            "BIOBERT_HOME to the folder whose datasets/ holds them (the recipes' layout)."
        )
    for candidate in (
        root,
        root / dataset,
        root / "NER" / dataset,
        root / "ner" / dataset,
        root / "RE" / dataset,
        root / "re" / dataset,
    ):
        if all((candidate / f).is_file() for f in required):
            return candidate
    raise UserError(
        f"{root}: found no {dataset} data with files {list(required)} (looked in {root}, "
        f"{root / dataset}, {root / 'NER' / dataset}, {root / 'ner' / dataset})"
    )


def pad_rows(rows: list[list[int]], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad integer rows to the longest one: (padded [batch, width], attention mask)."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return out, mask


def token_outputs(model_output: Any, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """Per-token logits of each feature without its padding (NER)."""
    logits = model_output.logits.float().cpu().numpy()
    lengths = batch["attention_mask"].sum(1).tolist()
    return [logits[i, : lengths[i]] for i in range(len(lengths))]


@torch.no_grad()
def predict_outputs(engine: Any, task: TaskSpec, features: list[Any], pad_id: int, batch_size: int) -> list[Any]:
    """`task.outputs` for every feature, each rank computing a contiguous share, gathered on every rank.

    A rank batches its share by length (inference.length_batches), so a batch pads to about its own length
    rather than to the longest of 64 neighbours in file order, and returns the outputs in input order."""
    from finetune.inference import length_batches

    world, rank = engine.world_size, engine.rank
    share = -(-len(features) // world)
    mine = features[rank * share : (rank + 1) * share]
    outputs: list[Any] = [None] * len(mine)
    for ix in length_batches([len(f.input_ids) for f in mine], batch_size):
        batch = task.collate([mine[i] for i in ix], pad_id)
        for key in [k for k in batch if k in ("labels", "start_positions", "end_positions")]:
            batch.pop(key)
        for i, row in zip(ix, task.outputs(engine(batch), batch), strict=True):
            outputs[i] = row
    gathered = engine.gather_objects(outputs)
    return [x for part in gathered for x in part]
