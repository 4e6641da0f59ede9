"""User-facing errors: one clear message naming the file, the record and what to do, no traceback soup."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input or configuration the user can fix. Entry points print it without a traceback."""


class Preempted(Exception):
    """Training stopped on SIGTERM/SIGUSR1 after writing a checkpoint; exit so the job can be requeued."""


EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again"; slurm/*.sbatch requeue on it


def close_process_group() -> None:
    """Destroy the default process group, if this process made one. Without it, gloo's worker threads are
    still joinable when the interpreter exits, and a rank can abort after its work is done ("terminate
    called without an active exception", exit status 250 instead of 0 or 75). Only for a coordinated end
    (success, or every rank preempted after the collective checkpoint): a rank that failed alone must not
    wait in a teardown that its peers, still in a collective, never reach. A single-rank group has no peer
    threads and is kept: DeepSpeed caches the world group, so a process that calls an entry point again
    (a notebook, the tests) could not build a second engine after it was destroyed."""
    torch_dist = sys.modules.get("torch.distributed")  # never imported: nothing to close
    if (
        torch_dist is not None
        and torch_dist.is_available()
        and torch_dist.is_initialized()
        and torch_dist.get_world_size() > 1
    ):
        torch_dist.destroy_process_group()


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point's `main`: a UserError becomes `error: <message>` and exit status 2, a preemption
    exit status 75; on a normal or preempted end the process group is closed (`close_process_group`).
    A test of the command line calls the unwrapped function (`__wrapped__`), which keeps the group for the next
    call; an orchestrator does not parse argv at all: it builds the entry's config and calls its run()."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            result = main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None
        except Preempted as e:
            print(f"preempted: {e}", file=sys.stderr, flush=True)
            close_process_group()
            raise SystemExit(EXIT_PREEMPTED) from None
        close_process_group()
        return result

    return wrapper
