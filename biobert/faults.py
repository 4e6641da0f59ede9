"""Fault injection for the crash, preemption and divergence tests: one explicit object, parsed once.

The entry points read the environment here, once, and pass the result to `fit()` and `checkpoint.save()`;
nothing in the training loop reads the environment, so a variable left in a user's shell cannot change a
step, and a run without faults pays nothing for them (GUIDE rule 13). The variables exist for tests that
launch real processes (two ranks, Slurm), where an object cannot be handed over:

    BIOBERT_FAULT_NAN_AT_SAMPLE=P       the loss of the global batch at sample position P becomes NaN
    BIOBERT_FAULT_NAN_GRAD_AT_SAMPLE=P  ... its gradients become NaN under a finite loss
    BIOBERT_FAULT_KILL_AT_STEP=N        rank 0 SIGKILLs itself after step N (and its save)
    BIOBERT_FAULT_SIGNAL_AT_STEP=N      rank 0 sends itself SIGUSR1 after step N, as Slurm would
    BIOBERT_FAULT_KILL_IN_SAVE=TAG      rank 0 SIGKILLs itself inside the save of checkpoint TAG
    BIOBERT_FAULT_DATA_PREP=crash:UNIT  a data_prep worker raises inside UNIT (a file, or a PMC group);
                         hang:UNIT      ... or sleeps there for an hour (resume-after-kill tests)
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Mapping
from typing import Any

from biobert.errors import UserError

_VARS = {
    "nan_at_sample": "BIOBERT_FAULT_NAN_AT_SAMPLE",
    "nan_grad_at_sample": "BIOBERT_FAULT_NAN_GRAD_AT_SAMPLE",
    "kill_at_step": "BIOBERT_FAULT_KILL_AT_STEP",
    "signal_at_step": "BIOBERT_FAULT_SIGNAL_AT_STEP",
    "kill_in_save": "BIOBERT_FAULT_KILL_IN_SAVE",
    "data_prep": "BIOBERT_FAULT_DATA_PREP",
}


@dataclasses.dataclass(frozen=True)
class Faults:
    nan_at_sample: int | None = None
    nan_grad_at_sample: int | None = None
    kill_at_step: int | None = None
    signal_at_step: int | None = None
    kill_in_save: str | None = None
    data_prep: str | None = None  # "crash:<unit>" or "hang:<unit>"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Faults:
        environ = os.environ if environ is None else environ
        values: dict = {}
        for field, var in _VARS.items():
            raw = environ.get(var)
            if not raw:
                continue
            if field == "data_prep" and raw.partition(":")[0] not in ("crash", "hang"):
                raise UserError(f"{var}={raw!r}: expected crash:<unit> or hang:<unit> (a test hook; unset it)")
            if field in ("kill_in_save", "data_prep"):
                values[field] = raw
                continue
            try:
                values[field] = int(raw)
            except ValueError:
                raise UserError(f"{var}={raw!r}: expected an integer (a test hook; unset it)") from None
        return cls(**values)

    @property
    def any(self) -> bool:
        return any(getattr(self, f) is not None for f in _VARS)

    def poison(self, loss: Any, samples_seen: int) -> Any:
        """The micro-batch loss, made NaN (or given NaN gradients) at the configured global batch."""
        if self.nan_at_sample == samples_seen:
            loss = loss * float("nan")
        if self.nan_grad_at_sample == samples_seen:
            loss = _nan_gradient().apply(loss)
        return loss

    def after_step(self, step: int, rank: int) -> None:
        if rank != 0:
            return
        if self.kill_at_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.signal_at_step == step:
            os.kill(os.getpid(), signal.SIGUSR1)

    def in_save(self, tag: str, rank: int) -> None:
        if rank == 0 and self.kill_in_save == tag:
            os.kill(os.getpid(), signal.SIGKILL)

    def in_unit(self, unit: str) -> None:
        action, _, target = (self.data_prep or "").partition(":")
        if target == unit and action == "crash":
            raise RuntimeError(f"BIOBERT_FAULT_DATA_PREP: simulated crash in {unit}")
        if target == unit and action == "hang":
            import time

            time.sleep(3600)


NO_FAULTS = Faults()


def _nan_gradient() -> type:
    """Identity forward, NaN backward: every gradient becomes NaN while the loss stays finite (torch is
    imported here, not at module import: entry points read the faults before anything heavy loads)."""
    import torch

    class NanGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
            return grad * float("nan")

    return NanGradient
