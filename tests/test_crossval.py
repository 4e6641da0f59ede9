"""finetune/crossval.py's Python API: a CrossvalConfig in, the folds' summary out; main(argv) only parses into
that config (the end-to-end run by the command line is tests/test_relation.py's)."""

import json
from pathlib import Path

import pytest

from biobert.errors import UserError
from finetune import crossval, run_task

FIXTURES = Path(__file__).parent / "fixtures" / "re"


def gad_job(model, *ds) -> run_task.Job:
    cfg = run_task.FinetuneConfig(
        task="gad_1",
        data_dir=str(FIXTURES),
        init_from=str(model),
        progress=False,
        max_seq_length=32,
        max_steps=1,
        eval_split="",  # the folds have no devel split
        export_hf=False,
    )
    return run_task.Job(cfg, ds=["train_batch_size=16", "optimizer.params.lr=1e-3", *ds])


def test_run_takes_a_config(tiny_assets, tmp_path, capsys):
    run = tmp_path / "cv"
    cfg = crossval.CrossvalConfig(task="gad", run_dir=str(run), job=gad_job(tiny_assets["model"]), folds=[2, 1])
    out = crossval.run(cfg)
    assert out["folds_run"] == [1, 2] and out["split"] == "test" and not out["complete"]
    record = json.loads((run / "crossval.json").read_text())
    assert record["task"] == "gad" and record["run_task"]["run"]["max_steps"] == 1
    assert record["run_task"]["ds"] == ["train_batch_size=16", "optimizer.params.lr=1e-3"]
    assert "task" not in record["run_task"]["run"] and "run_dir" not in record["run_task"]["run"]
    for k in (1, 2):
        fold = json.loads((run / f"fold_0{k}" / "results.json").read_text())
        assert fold["task"] == f"gad_{k}" and out["folds"][str(k)] == fold["scores"]["test"]
    # the same config again reads every fold back; another learning rate is refused
    capsys.readouterr()
    assert crossval.run(cfg)["folds"] == out["folds"]
    assert capsys.readouterr().out.count("not re-run") == 2
    other = crossval.CrossvalConfig("gad", str(run), gad_job(tiny_assets["model"], "optimizer.params.lr=1e-4"))
    with pytest.raises(UserError, match="not be averaged"):
        crossval.run(other)


def test_main_parses_into_a_config_and_calls_run(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(crossval, "run", lambda cfg: calls.append(cfg) or {"called": True})
    argv = ["--task", "euadr", "--run_dir", str(tmp_path), "--folds", "3,2", "--data_dir", "d", "--init_from", "m"]
    assert crossval.main.__wrapped__([*argv, "--epochs", "2", "--ds", "train_batch_size=8"]) == {"called": True}
    assert crossval.main.__wrapped__([*argv, "--eval_split", "test"]) == {"called": True}
    plain, chose = calls
    assert isinstance(plain, crossval.CrossvalConfig) and isinstance(plain.job, run_task.Job)
    assert (plain.task, plain.run_dir, plain.folds) == ("euadr", str(tmp_path), [3, 2])
    assert plain.job.cfg.epochs == 2.0 and plain.job.ds[-1] == "train_batch_size=8"
    assert plain.job.cfg.eval_split == "" and chose.job.cfg.eval_split == "test"  # the user's choice kept
    with pytest.raises(UserError, match="--resume is set by crossval.py"):
        crossval.main.__wrapped__([*argv, "--resume"])
    bad = crossval.CrossvalConfig("gad", str(tmp_path), run_task.Job(run_task.FinetuneConfig(test_split="")))
    with pytest.raises(UserError, match="--test_split"):
        bad.checked()  # what run() checks first
