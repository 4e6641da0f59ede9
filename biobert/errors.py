"""User-facing errors: one clear message naming the file, the record and what to do, no traceback soup."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input or configuration the user can fix. Entry points print it without a traceback."""


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point's `main` so a UserError becomes `error: <message>` and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return wrapper
