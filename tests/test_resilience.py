"""Surviving the cluster: preemption signals, crashes mid-save, checkpoint retention, divergence rollback."""

import json
import shutil

import pytest

from biobert.errors import Preempted, UserError
from conftest import read_metrics
from pretrain.run import main

pretrain = main.__wrapped__

BASE = [
    "--deepspeed_config",
    "ds_configs/cpu.json",
    "--ds",
    "train_batch_size=8",
    "--ds",
    "train_micro_batch_size_per_gpu=4",
    "--ds",
    "scheduler.params.warmup_num_steps=2",
    "--progress",
    "false",
    "--log_every",
    "1",
    "--eval_batches",
    "0",
    "--export_hf",
    "false",
]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)


def args(assets, run_dir, *extra):
    return BASE + [
        "--data_dir",
        str(assets["shards"]),
        "--init_from",
        str(assets["model"]),
        "--run_dir",
        str(run_dir),
        *extra,
    ]


def losses(run_dir):
    return {s: r["loss"] for s, r in read_metrics(run_dir).items()}


@pytest.fixture(scope="module")
def reference(tiny_assets, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    pretrain(args(tiny_assets, run, "--max_steps", "8"))
    return losses(run)


def test_sigusr1_checkpoints_exits_75_and_resumes_exactly(tiny_assets, tmp_path, monkeypatch, reference):
    run = tmp_path / "run"
    monkeypatch.setenv("BIOBERT_FAULT_SIGNAL_AT_STEP", "3")
    with pytest.raises(Preempted, match="--resume"):
        pretrain(args(tiny_assets, run, "--max_steps", "8"))
    # the signal arrived after step 3; every rank agreed to stop after step 4, which was checkpointed
    assert (run / "checkpoints" / "latest").read_text() == "step_00000004"
    assert max(losses(run)) == 4
    monkeypatch.delenv("BIOBERT_FAULT_SIGNAL_AT_STEP")
    pretrain(args(tiny_assets, run, "--max_steps", "8", "--resume"))
    assert losses(run) == reference
    with pytest.raises(SystemExit) as exc:  # the CLI turns preemption into the requeue status
        monkeypatch.setenv("BIOBERT_FAULT_SIGNAL_AT_STEP", "1")
        main(args(tiny_assets, tmp_path / "again", "--max_steps", "4"))
    assert exc.value.code == 75


def test_keep_last_and_atomic_latest(tiny_assets, tmp_path, reference):
    run = tmp_path / "run"
    pretrain(args(tiny_assets, run, "--max_steps", "8", "--save_every", "2", "--keep_last", "2"))
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000006", "step_00000008"]
    assert (run / "checkpoints" / "latest").read_text() == "step_00000008"
    # a save that died half-way (shards written, pointer not moved) leaves the previous checkpoint in use
    (run / "checkpoints" / "latest").write_text("step_00000006")
    shutil.rmtree(run / "checkpoints" / "step_00000008" / "hf", ignore_errors=True)
    (run / "checkpoints" / "step_00000008" / "train_state.json").unlink()
    (run / "metrics.jsonl").write_text("")
    pretrain(args(tiny_assets, run, "--max_steps", "8", "--resume"))
    assert losses(run) == {s: reference[s] for s in (7, 8)}
    assert json.loads((run / "checkpoints" / "step_00000008" / "train_state.json").read_text())["step"] == 8


def test_non_finite_loss_rolls_back_and_skips_the_batch(tiny_assets, tmp_path, monkeypatch, reference):
    run = tmp_path / "run"
    monkeypatch.setenv("BIOBERT_FAULT_NAN_AT_SAMPLE", "40")  # the global batch of step 6
    pretrain(args(tiny_assets, run, "--max_steps", "8", "--save_every", "4"))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rollbacks = [r for r in records if r["kind"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["rolled_back_to"] == 4 and rollbacks[0]["skipped_position"] == 40
    state = json.loads((run / "checkpoints" / "step_00000008" / "train_state.json").read_text())
    assert state["skip_positions"] == [40] and state["samples_seen"] == 72  # 8 steps + one skipped batch
    steps = [r for r in records if r["kind"] == "train"]
    assert all(r["loss"] == r["loss"] for r in steps)  # no NaN was ever logged as a step
    # steps 5 replays exactly; the step after the skipped batch sees new data
    assert losses(run)[5] == reference[5]


def test_non_finite_gradient_under_a_finite_loss_rolls_back_in_bf16_zero1(tiny_assets, tmp_path, monkeypatch):
    """bf16 runs without DeepSpeed's overflow scan (ds_config.finalize), so DeepSpeed applies a NaN update;
    the loop must see the non-finite gradient norm, roll back and skip the batch."""
    run = tmp_path / "run"
    monkeypatch.setenv("BIOBERT_FAULT_NAN_GRAD_AT_SAMPLE", "40")  # the global batch of step 6
    extra = ["--ds", "bf16.enabled=true", "--ds", "zero_optimization.stage=1"]
    pretrain(args(tiny_assets, run, "--max_steps", "8", "--save_every", "4", *extra))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rollbacks = [r for r in records if r["kind"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["rolled_back_to"] == 4 and rollbacks[0]["skipped_position"] == 40
    assert "gradient norm" in rollbacks[0]["reason"]
    steps = [r for r in records if r["kind"] == "train"]
    assert steps and all(r["loss"] == r["loss"] and r["grad_norm"] == r["grad_norm"] for r in steps)
    assert json.loads((run / "ds_config.json").read_text())["bf16"]["check_grad_overflow"] is False


def test_divergence_without_checkpoint_or_repeated_stops_clearly(tiny_assets, tmp_path, monkeypatch):
    monkeypatch.setenv("BIOBERT_FAULT_NAN_AT_SAMPLE", "8")
    with pytest.raises(UserError, match="before any checkpoint"):
        pretrain(args(tiny_assets, tmp_path / "a", "--max_steps", "4"))
    with pytest.raises(UserError, match="after 0 rollbacks"):
        pretrain(args(tiny_assets, tmp_path / "b", "--max_steps", "4", "--save_every", "1", "--max_rollbacks", "0"))
