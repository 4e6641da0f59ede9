"""Two CPU ranks under the real `deepspeed` launcher: kill -9 after a checkpoint, resume, same losses."""

import subprocess
import sys

import pytest

from conftest import REPO, free_port, read_metrics, subprocess_env

STEPS, KILL_AT = 8, 4


def launch(tiny_assets, run_dir, *extra, env_extra=None, timeout=240):
    cmd = [
        str(REPO / ".venv" / "bin" / "deepspeed") if (REPO / ".venv" / "bin" / "deepspeed").exists() else "deepspeed",
        "--num_gpus",
        "2",
        "--master_port",
        str(free_port()),
        "pretrain/run.py",
        "--deepspeed_config",
        "ds_configs/cpu.json",
        "--data_dir",
        str(tiny_assets["shards"]),
        "--init_from",
        str(tiny_assets["model"]),
        "--run_dir",
        str(run_dir),
        "--max_steps",
        str(STEPS),
        "--save_every",
        str(KILL_AT),
        "--log_every",
        "1",
        "--progress",
        "false",
        "--eval_batches",
        "2",
        "--ds",
        "train_batch_size=8",
        "--ds",
        "train_micro_batch_size_per_gpu=2",
        "--ds",
        "scheduler.params.warmup_num_steps=2",
        "--ds",
        "optimizer.params.lr=2e-3",
        *extra,
    ]
    return subprocess.run(
        cmd, cwd=REPO, env=subprocess_env(**(env_extra or {})), capture_output=True, text=True, timeout=timeout
    )


def test_two_rank_kill_and_resume_reproduces_losses(tiny_assets, tmp_path):
    if sys.platform != "linux":
        pytest.skip("the deepspeed launcher test runs on Linux")
    full = launch(tiny_assets, tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    assert "world 2, micro 2 x accum 2 x ranks 2 = 8 sequences" in full.stderr
    killed = launch(tiny_assets, tmp_path / "crash", env_extra={"BIOBERT_FAULT_KILL_AT_STEP": str(KILL_AT)})
    assert killed.returncode != 0  # rank 0 was SIGKILLed right after its step-4 checkpoint
    crashed = read_metrics(tmp_path / "crash")
    assert max(crashed) == KILL_AT
    resumed = launch(tiny_assets, tmp_path / "crash", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed {tmp_path / 'crash'} at step {KILL_AT}" in resumed.stderr
    expected = {s: r["loss"] for s, r in read_metrics(tmp_path / "full").items()}
    got = {s: r["loss"] for s, r in read_metrics(tmp_path / "crash").items()}
    assert sorted(got) == list(range(1, STEPS + 1))
    assert got == expected  # bit-identical, not approximately equal
    samples = {s: r["samples_seen"] for s, r in read_metrics(tmp_path / "crash").items()}
    assert samples == {s: 8 * s for s in range(1, STEPS + 1)}


def test_torchrun_two_ranks(tiny_assets, tmp_path):
    torchrun = REPO / ".venv" / "bin" / "torchrun"
    cmd = [
        str(torchrun) if torchrun.exists() else "torchrun",
        "--standalone",
        "--nproc_per_node",
        "2",
        "pretrain/run.py",
        "--deepspeed_config",
        "ds_configs/cpu.json",
        "--data_dir",
        str(tiny_assets["shards"]),
        "--init_from",
        str(tiny_assets["model"]),
        "--run_dir",
        str(tmp_path / "run"),
        "--max_steps",
        "2",
        "--progress",
        "false",
        "--log_every",
        "1",
        "--eval_batches",
        "1",
        "--ds",
        "train_batch_size=8",
        "--ds",
        "train_micro_batch_size_per_gpu=4",
        "--ds",
        "scheduler.params.warmup_num_steps=1",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world 2, micro 4 x accum 1 x ranks 2" in proc.stderr
    assert sorted(read_metrics(tmp_path / "run")) == [1, 2]


@pytest.mark.parametrize("zero", [1, 2, "auto"])
def test_resume_on_a_different_number_of_ranks(tiny_assets, tmp_path, zero):
    """2 -> 1 and 1 -> 2 ranks: the checkpoint is converted to DeepSpeed's universal format once, and the
    run continues at the same global sample position (the global batch is unchanged). With "auto" (cpu.json)
    the 2-rank run writes ZeRO-1 and the 1-rank resume keeps ZeRO-1; the 1-rank run writes ZeRO-0, whose
    unpartitioned state loads on 2 ranks as it is (no conversion)."""
    import json

    from pretrain.run import main

    zero_flag = [] if zero == "auto" else ["--ds", f"zero_optimization.stage={zero}"]
    two_to_one = tmp_path / "two_to_one"
    killed = launch(tiny_assets, two_to_one, *zero_flag, env_extra={"BIOBERT_FAULT_KILL_AT_STEP": str(KILL_AT)})
    assert killed.returncode != 0
    main.__wrapped__(
        [
            "--deepspeed_config",
            "ds_configs/cpu.json",
            "--data_dir",
            str(tiny_assets["shards"]),
            "--init_from",
            str(tiny_assets["model"]),
            "--run_dir",
            str(two_to_one),
            "--max_steps",
            str(STEPS),
            "--log_every",
            "1",
            "--progress",
            "false",
            "--eval_batches",
            "2",
            "--resume",
            "--ds",
            "train_batch_size=8",
            "--ds",
            "train_micro_batch_size_per_gpu=4",
            "--ds",
            "scheduler.params.warmup_num_steps=2",
            "--ds",
            "optimizer.params.lr=2e-3",
            *zero_flag,
        ]
    )
    assert (two_to_one / "checkpoints" / "step_00000004" / "universal" / ".complete").is_file()
    metrics = read_metrics(two_to_one)
    assert sorted(metrics) == list(range(1, STEPS + 1))
    assert [metrics[s]["samples_seen"] for s in range(1, STEPS + 1)] == [8 * s for s in range(1, STEPS + 1)]
    assert metrics[STEPS]["loss"] == metrics[STEPS]["loss"]  # finite: optimizer state came through
    stage = lambda run: json.loads((run / "ds_config.json").read_text())["zero_optimization"]["stage"]  # noqa: E731
    assert stage(two_to_one) == (1 if zero == "auto" else zero)

    one_to_two = tmp_path / "one_to_two"
    main.__wrapped__(
        [
            "--deepspeed_config",
            "ds_configs/cpu.json",
            "--data_dir",
            str(tiny_assets["shards"]),
            "--init_from",
            str(tiny_assets["model"]),
            "--run_dir",
            str(one_to_two),
            "--max_steps",
            str(KILL_AT),
            "--log_every",
            "1",
            "--progress",
            "false",
            "--eval_batches",
            "2",
            "--ds",
            "train_batch_size=8",
            "--ds",
            "train_micro_batch_size_per_gpu=4",
            "--ds",
            "scheduler.params.warmup_num_steps=2",
            "--ds",
            "optimizer.params.lr=2e-3",
            *zero_flag,
        ]
    )
    assert stage(one_to_two) == (0 if zero == "auto" else zero)
    resumed = launch(tiny_assets, one_to_two, "--resume", *zero_flag)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = read_metrics(one_to_two)
    assert [metrics[s]["samples_seen"] for s in range(1, STEPS + 1)] == [8 * s for s in range(1, STEPS + 1)]
    assert stage(one_to_two) == (0 if zero == "auto" else zero)
    converted = (one_to_two / "checkpoints" / "step_00000004" / "universal").exists()
    assert converted == (zero != "auto")
    assert all(metrics[s]["loss"] == metrics[s]["loss"] for s in range(KILL_AT + 1, STEPS + 1))
