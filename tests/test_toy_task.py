"""A task is registered in one place: a toy NER corpus and a toy cross-validated RE dataset, each added by one
`registry.TASKS` entry (what `register` does), flow through run_task, the protocol, cross-validation,
summarize (fed the results.json files those real runs wrote) and predict, with nothing else changed."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import pytest
from test_finetune import write_ner_split

from finetune import crossval, predict, protocol, run_task, summarize
from finetune.tasks import registry
from finetune.tasks.ner_task import NerTask
from finetune.tasks.re_task import BINARY_LABELS, ReDataset, RelationTask

GAD = Path(__file__).parent / "fixtures" / "re" / "GAD"
TOY_RE = ReDataset(("ToyRE",), BINARY_LABELS, "0", ("@GENE$", "@DISEASE$"), True, ("gene", "disease"))


@pytest.fixture
def toy_tasks(monkeypatch):
    """Register the toy tasks for this test only (monkeypatch removes them again)."""
    tasks = {"toy_ner": partial(NerTask, name="toy_ner", dataset="Toy-corpus", display="Toy corpus", entity_type="Toy")}
    for k in (1, 2):
        tasks[f"toyre_{k}"] = partial(RelationTask, name=f"toyre_{k}", dataset=TOY_RE, fold=k, display="Toy RE")
    for name, factory in tasks.items():
        monkeypatch.setitem(registry.TASKS, name, factory)
    return tasks


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "datasets"
    ner = root / "Toy-corpus"
    ner.mkdir(parents=True)
    write_ner_split(ner / "train.tsv", 40, 1)
    write_ner_split(ner / "devel.tsv", 10, 2)
    write_ner_split(ner / "test.tsv", 10, 3)
    for k in (1, 2):
        shutil.copytree(GAD / str(k), root / "ToyRE" / str(k))
    return root


def job(tiny_assets, data: Path, task: str, run_dir: Path, **changes) -> run_task.Job:
    cfg = run_task.FinetuneConfig(
        task=task,
        data_dir=str(data),
        init_from=str(tiny_assets["model"]),
        run_dir=str(run_dir),
        progress=False,
        max_seq_length=32,
        doc_stride=8,
        log_every=1000,
        **changes,
    )
    return run_task.Job(cfg, ds=["train_batch_size=16", "optimizer.params.lr=1e-3"])


def test_a_registered_task_runs_everywhere(toy_tasks, data, tiny_assets, tmp_path):
    assert "toy_ner" in registry.task_names()["ner"] and registry.folds_of("toyre") == {1: "toyre_1", 2: "toyre_2"}
    assert ("toy_ner", "Toy corpus") in registry.summary_rows()["ner"]
    runs = tmp_path / "runs"

    # run_task: trains, scores, exports with the task's entity type
    single = run_task.run(job(tiny_assets, data, "toy_ner", runs / "single", epochs=2.0))
    assert single["task"] == "toy_ner" and single["scores"]["test"]["true_entities"] > 0
    id2label = json.loads((runs / "single" / "hf" / "config.json").read_text())["id2label"]
    assert set(id2label.values()) == {"O", "B-Toy", "I-Toy"}

    # the protocol: seeds on the toy corpus (fixed epochs, as BioBERT's released code)
    proto = protocol.run(
        protocol.ProtocolConfig(
            task="toy_ner",
            run_dir=str(runs / "protocol"),
            job=job(tiny_assets, data, "toy_ner", runs / "protocol"),
            protocol="biobert-code",
            seeds=[1, 2],
            epochs=1.0,
            keep_checkpoints=False,
        )
    )
    assert proto["task"] == "toy_ner" and len(proto["runs"]) == 2

    # cross-validation over the toy dataset's registered folds (all of them by default)
    cv_job = job(tiny_assets, data, "toyre_1", runs / "cv", max_steps=1, eval_split="", export_hf=False)
    cv = crossval.run(crossval.CrossvalConfig(task="toyre", run_dir=str(runs / "cv"), job=cv_job))
    assert cv["folds_run"] == [1, 2] and cv["complete"]

    # summarize, on what those runs wrote: the toy rows appear under their display names
    out = summarize.main.__wrapped__([str(runs)])
    text = out["markdown"]
    assert "| Toy corpus | F |" in text and "| Toy RE | F |" in text, text
    assert f"{proto['mean']['f1']:.2f} ± {proto['std']['f1']:.2f}" in text
    assert f"{cv['mean']['f1']:.2f} ± {cv['std']['f1']:.2f}" in text
    assert "single/results.json: tiny_bert / toy_ner also in" in "\n".join(out["notes"])  # the aggregate wins

    # predict: entities typed by the toy task's entity type
    (tmp_path / "docs.txt").write_text("The cancer disease was observed in the tumor cells.\n")
    predict.main.__wrapped__(
        ["--model", str(runs / "single" / "hf"), "--input", str(tmp_path / "docs.txt"), "--out", str(tmp_path / "p")]
    )
    row = json.loads((tmp_path / "p").read_text())
    assert all(e["label"] == "Toy" for e in row["entities"]), row


def test_an_unregistered_task_is_refused_with_the_known_ones(toy_tasks):
    from biobert.errors import UserError

    with pytest.raises(UserError, match="unknown task 'toy_nerr'.*toy_ner"):
        registry.get_task("toy_nerr")
    with pytest.raises(UserError, match="cross-validation runs gad or euadr or toyre"):
        crossval.CrossvalConfig("toy_ner", "r", run_task.Job(run_task.FinetuneConfig())).checked()
