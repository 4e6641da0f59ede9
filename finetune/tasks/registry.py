"""Every task the CLI knows, by name: the one place a task is registered.

A new task is its module (a TaskSpec), one `register` line here and one recipe file
(finetune/configs/<recipe>.json); run_task, protocol, crossval, summarize and predict then know it
(tests/test_toy_task.py registers one and runs it through all of them). Rows of summarize.py's tables
come from the registration order, which is the paper's.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from biobert.errors import UserError
from finetune.tasks.ner_task import NER_DATASETS, NerTask
from finetune.tasks.qa_task import BIOASQ_LIST_TASKS, BIOASQ_TASKS, QATask
from finetune.tasks.re_task import N_FOLDS, RE_DATASETS, RelationTask, get_re_task
from finetune.tasks.yesno_task import BIOASQ_YESNO_TASKS, YesNoTask

TASKS: dict[str, Callable[[], object]] = {}  # CLI name -> a factory of its TaskSpec


def register(name: str, factory: Callable[[], object]) -> None:
    if name in TASKS:
        raise ValueError(f"task {name!r} is registered twice")
    TASKS[name] = factory


# NER, in the paper's row order (its Table 4)
for _name, _display in (
    ("ncbi_disease", "NCBI disease"),
    ("i2b2_2010", "2010 i2b2/VA"),
    ("bc5cdr_disease", "BC5CDR disease"),
    ("bc5cdr_chem", "BC5CDR chem"),
    ("bc4chemd", "BC4CHEMD"),
    ("bc2gm", "BC2GM"),
    ("jnlpba", "JNLPBA"),
    ("linnaeus", "LINNAEUS"),
    ("s800", "Species-800"),
):
    register(_name, partial(NerTask, name=_name, dataset=NER_DATASETS[_name], display=_display))

# RE (Table 5): GAD and EU-ADR one task per cross-validation fold, all counting for the dataset's row
for _key, _display in (("gad", "GAD"), ("euadr", "EU-ADR"), ("chemprot", "CHEMPROT")):
    _folds = [(f"{_key}_{k}", k) for k in range(1, N_FOLDS + 1)] if RE_DATASETS[_key].folds else [(_key, None)]
    for _name, _fold in _folds:
        register(_name, partial(RelationTask, name=_name, dataset=RE_DATASETS[_key], fold=_fold, display=_display))

# QA (Table 6): BioASQ factoid, then the follow-up's list and yes/no questions, then SQuAD (no row)
for _tasks, _qtype in ((BIOASQ_TASKS, "factoid"), (BIOASQ_LIST_TASKS, "list")):
    for _name, _version in sorted(_tasks.items(), key=lambda kv: kv[1] == ""):  # the pooled row last
        _display = f"BioASQ {_version}".strip()
        register(_name, partial(QATask, name=_name, dataset="bioasq", version=_version, qtype=_qtype, display=_display))
for _name, _version in sorted(BIOASQ_YESNO_TASKS.items(), key=lambda kv: kv[1] == ""):
    register(_name, partial(YesNoTask, name=_name, version=_version, display=f"BioASQ {_version}".strip()))
register("squad", partial(QATask, name="squad", dataset="squad"))


def task_names() -> dict[str, list[str]]:
    """Registered names by kind ("ner", "re", "qa"), in registration order."""
    out: dict[str, list[str]] = {}
    for name, factory in TASKS.items():
        out.setdefault(factory().kind, []).append(name)
    return out


def get_task(name: str):
    if name in TASKS:
        return TASKS[name]()
    get_re_task(name)  # raises for a bare `gad` / `euadr`: they need a fold
    known = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in task_names().items())
    raise UserError(f"unknown task {name!r}. Known tasks: {known}")


def summary_rows() -> dict[str, list[tuple[str, str]]]:
    """summarize.py's tables: table -> [(row key, row name)] in registration order; a task whose `table` is
    "" has no row, and the folds of a dataset share their dataset's row."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for factory in TASKS.values():
        task = factory()
        if task.table and (task.summary_key, task.display) not in rows.get(task.table, []):
            rows.setdefault(task.table, []).append((task.summary_key, task.display))
    return rows


def folds_of(dataset: str) -> dict[int, str]:
    """Fold number -> task name of a cross-validation dataset's registered folds (GAD: {1: "gad_1", ...}); {}
    for a name that is not such a dataset."""
    folds = {}
    for name, factory in TASKS.items():
        task = factory()
        if getattr(task, "fold", None) is not None and task.summary_key == dataset:
            folds[task.fold] = name
    return dict(sorted(folds.items()))


def folded_datasets() -> list[str]:
    """The datasets evaluated over cross-validation folds (crossval.py's tasks), in registration order."""
    names: dict[str, None] = {}
    for factory in TASKS.values():
        task = factory()
        if getattr(task, "fold", None) is not None:
            names[task.summary_key] = None
    return list(names)
