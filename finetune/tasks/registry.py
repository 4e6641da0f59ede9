"""Every task the CLI knows, by name. A task module adds its names here; nothing else changes."""

from __future__ import annotations

from biobert.errors import UserError
from finetune.tasks.ner_task import NER_DATASETS, NerTask


def task_names() -> dict[str, list[str]]:
    return {"ner": list(NER_DATASETS)}


def get_task(name: str):
    if name in NER_DATASETS:
        return NerTask(name=name, dataset=NER_DATASETS[name])
    known = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in task_names().items())
    raise UserError(f"unknown task {name!r}. Known tasks: {known}")
