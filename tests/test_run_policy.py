"""The one skip / resume / restart policy (biobert.checkpoint.run_or_resume) and the orchestrators that own
runs by it: the protocol's sub-runs, cross-validation's folds and the reproduction's pre-training. They must
agree, notably on a run that stopped before its first checkpoint (nothing to continue: cleared, started again).
The training itself is replaced by a recorder here; the real runs are the other tests'."""

import json
import sys
from pathlib import Path

import pytest

from biobert import checkpoint
from conftest import REPO
from finetune import crossval, protocol, run_task

STATES = ("done", "checkpointed", "stopped", "absent")


def make(run_dir, state, finished_file="results.json", finished=None):
    """A run folder as a run leaves it: finished; checkpointed; stopped before its first checkpoint; none."""
    finished = finished or {"scores": {"test": {"f1": 50.0}}}
    if state == "absent":
        return
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    (run_dir / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    if state in ("done", "checkpointed"):
        (run_dir / "checkpoints" / "step_00000002").mkdir(parents=True)
        (run_dir / "checkpoints" / "latest").write_text("step_00000002")
    if state == "done":
        (run_dir / finished_file).write_text(json.dumps(finished))


EXPECTED = {"done": "done", "checkpointed": "resume", "stopped": "restart", "absent": "fresh"}


@pytest.mark.parametrize("state", STATES)
def test_the_policy(tmp_path, state):
    run_dir = tmp_path / "run"
    make(run_dir, state)
    assert checkpoint.run_done(run_dir) == (state == "done")
    assert checkpoint.run_or_resume(run_dir) == EXPECTED[state]
    if state in ("done", "checkpointed"):  # kept as they are
        assert (run_dir / "metrics.jsonl").is_file() and checkpoint.latest_tag(run_dir) == "step_00000002"
    else:  # nothing that a new run would mix with, nor be refused by (check_fresh_run_dir)
        assert not run_dir.exists()
        checkpoint.check_fresh_run_dir(run_dir)
    # a "finished" test instead of a file name: the same order of decisions
    assert checkpoint.run_or_resume(tmp_path / "other", done=lambda d: True) == "done"


@pytest.fixture
def fake_training(monkeypatch):
    """run_task.run replaced: records (run_dir, resume, what the folder held) and writes results.json."""
    calls = []

    def fake(job):
        folder = Path(job.cfg.run_dir)
        calls.append((folder, job.cfg.resume, sorted(p.name for p in folder.iterdir()) if folder.exists() else None))
        folder.mkdir(parents=True, exist_ok=True)
        results = {"scores": {"test": {"f1": 70.0}}, "train_batch_size": 16}
        (folder / "results.json").write_text(json.dumps(results))
        return results

    monkeypatch.setattr(run_task, "run", fake)
    return calls


def check_calls(state, calls, run_dir, result):
    if state == "done":  # read back, never re-run
        assert calls == [] and result["scores"]["test"]["f1"] == 50.0
        return
    ((where, resume, held),) = calls
    assert where == run_dir and result["scores"]["test"]["f1"] == 70.0
    assert resume == (state == "checkpointed")
    # continued with its folder as it was, or started on none (the stopped run's leftovers cleared first)
    assert held == (["checkpoints", "config.json", "metrics.jsonl"] if state == "checkpointed" else None)


@pytest.mark.parametrize("state", STATES)
def test_protocol_sub_runs_follow_it(tmp_path, fake_training, state):
    run_dir = tmp_path / "seed_1"
    make(run_dir, state)
    job = run_task.Job(run_task.FinetuneConfig(task="ncbi_disease"))
    result = protocol.sub_run(run_dir, job, keep_checkpoints=False)
    check_calls(state, fake_training, run_dir, result)
    assert not (run_dir / "checkpoints").exists()  # scored: its weights dropped


@pytest.mark.parametrize("state", STATES)
def test_crossval_folds_follow_it(tmp_path, fake_training, state):
    run_dir = tmp_path / "fold_03"
    make(run_dir, state)
    job = run_task.Job(run_task.FinetuneConfig(task="gad_1"))
    result, ran = crossval.run_fold("gad", 3, tmp_path, job)
    check_calls(state, fake_training, run_dir, result)
    assert ran == (state != "done")


@pytest.mark.parametrize("state", STATES)
def test_reproduce_pretraining_follows_it(tmp_path, monkeypatch, state):
    """launch_pretrain decides by the same policy, with the stage's own "finished" test (result.json at the
    planned step), and hands the launched ranks a written run config."""
    sys.path.insert(0, str(REPO / "bench"))
    import reproduce_stages

    run_dir = tmp_path / "pretrain"
    make(run_dir, state, "result.json", {"step": 5})
    launched = []

    def fake_launch(cmd, threads, what):
        config = json.loads((run_dir / "launch_config.json").read_text())
        launched.append((cmd, config, sorted(p.name for p in run_dir.iterdir())))

    monkeypatch.setattr(reproduce_stages, "run_child", fake_launch)
    plan = {
        "work_dir": str(tmp_path),
        "eval_batches": 2,
        "seq_len": 64,
        "nproc": 2,
        "gpus": 0,
        "launcher": "deepspeed",
        "ds_pretrain": "ds.json",
        "pretrain_args": "--log_every 7",
    }
    assert checkpoint.run_done(run_dir, reproduce_stages.pretrained(5)) == (state == "done")
    reproduce_stages.launch_pretrain(plan, run_dir, "base", 5, 2, {"train_only_heads": True}, ["--ds", "x=1"])
    if state == "done":
        assert launched == []
        # finished at another step count: not done for a plan of 6 steps, so its checkpoint is continued
        assert checkpoint.run_or_resume(run_dir, reproduce_stages.pretrained(6)) == "resume"
        return
    ((cmd, config, held),) = launched
    assert cmd[cmd.index("--config") + 1] == str(run_dir / "launch_config.json")
    assert cmd[-4:] == ["--log_every", "7", "--ds", "x=1"]  # the user's flags, then the phase's own
    assert config["resume"] == (state == "checkpointed") and config["train_only_heads"] is True
    assert (config["max_steps"], config["init_from"], config["run_dir"]) == (5, "base", str(run_dir))
    want = ["checkpoints", "config.json", "launch_config.json", "metrics.jsonl"]
    assert held == (want if state == "checkpointed" else ["launch_config.json"])
