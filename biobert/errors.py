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


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point's `main`: a UserError becomes `error: <message>` and exit status 2, a preemption
    exit status 75."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None
        except Preempted as e:
            print(f"preempted: {e}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_PREEMPTED) from None

    return wrapper
