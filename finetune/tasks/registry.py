"""Every task the CLI knows, by name. A task module adds its names here; nothing else changes."""

from __future__ import annotations

from biobert.errors import UserError
from finetune.tasks.ner_task import NER_DATASETS, NerTask
from finetune.tasks.qa_task import BIOASQ_LIST_TASKS, BIOASQ_TASKS, QA_TASKS, QATask
from finetune.tasks.re_task import get_re_task, re_task_names
from finetune.tasks.yesno_task import BIOASQ_YESNO_TASKS, YesNoTask


def task_names() -> dict[str, list[str]]:
    return {"ner": list(NER_DATASETS), "re": re_task_names(), "qa": [*QA_TASKS, *BIOASQ_YESNO_TASKS]}


def get_task(name: str):
    if name in NER_DATASETS:
        return NerTask(name=name, dataset=NER_DATASETS[name])
    if name in BIOASQ_YESNO_TASKS:
        return YesNoTask(name=name, version=BIOASQ_YESNO_TASKS[name])
    if name in BIOASQ_LIST_TASKS:
        return QATask(name=name, dataset="bioasq", version=BIOASQ_LIST_TASKS[name], qtype="list")
    if name in QA_TASKS:
        return QATask(name=name, dataset="squad" if name == "squad" else "bioasq", version=BIOASQ_TASKS.get(name, ""))
    task = get_re_task(name)  # raises for a bare `gad` / `euadr`: they need a fold
    if task is not None:
        return task
    known = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in task_names().items())
    raise UserError(f"unknown task {name!r}. Known tasks: {known}")
