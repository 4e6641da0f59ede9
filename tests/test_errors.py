"""Entry-point wrapper: exit statuses, and a multi-rank process group closed on a coordinated end only."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import os, sys
    import torch.distributed as dist
    from biobert.errors import Preempted, UserError, exit_on_user_error

    outcome, port, rank, world = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)

    @exit_on_user_error
    def main():
        if outcome == "user_error":
            raise UserError("bad.json line 3: fix it")
        if outcome == "preempted":
            raise Preempted("checkpoint at step 4")
        return 7

    try:
        assert main() == 7
    except SystemExit as e:
        print("exit", e.code)
    print("initialized", dist.is_initialized())
    if dist.is_initialized():  # this test's own clean exit
        dist.destroy_process_group()
""")


def _run(outcome: str, world: int) -> list[str]:
    """The script on `world` ranks at once; each rank's output."""
    from biobert.dist import free_port

    port = str(free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, outcome, port, str(r), str(world)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
        for r in range(world)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * world, outs
    return outs


@pytest.mark.parametrize("outcome,status", [("ok", None), ("preempted", 75)])
def test_a_coordinated_end_closes_a_multi_rank_group(outcome, status):
    for out in _run(outcome, 2):
        assert "initialized False" in out, out
        if status:
            assert f"exit {status}" in out and "preempted: checkpoint at step 4" in out


def test_user_error_and_single_rank_keep_the_group():
    # a rank that failed alone leaves the teardown to the exit: its peers may still be in a collective
    for out in _run("user_error", 2):
        assert "exit 2" in out and "error: bad.json line 3: fix it" in out and "initialized True" in out
    # one rank: kept, so that an in-process caller can build its next engine
    (out,) = _run("ok", 1)
    assert "initialized True" in out
