"""Counting what a training step asks of the host: GPU->host synchronisations and dispatched ATen ops.

A GPU step is host-bound when the Python side launches more kernels than the GPU can absorb, or waits for
the GPU (`.item()`, `bool(t)`, `.tolist()`, ...) before it can launch the next ones. Neither needs a GPU to
be counted: the same calls happen on a CPU, so tests and bench/ count them there (GUIDE rule 12).

Only the calling thread is counted: the background collator (host data, no device tensors) runs in its own
thread and is not part of the device step.
"""

from __future__ import annotations

import collections
import threading
import traceback
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Tensor methods that read device data on the host (each a stream synchronisation on a GPU).
SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")


class SyncCounter:
    """Counts calls of SYNC_METHODS on tensors, in this thread, while active; `where` keeps the innermost
    project (or DeepSpeed/transformers) frame of each call so a failing test says who synchronised."""

    def __init__(self) -> None:
        self.count = 0
        self.where: collections.Counter[str] = collections.Counter()
        self.active = False
        self._thread = threading.get_ident()
        self._saved: dict[str, Any] = {}

    def _wrap(self, name: str, original: Any) -> Any:
        counter = self

        def wrapper(tensor, *args, **kwargs):
            if counter.active and threading.get_ident() == counter._thread:
                counter.count += 1
                counter.where[f"{name} at {_caller()}"] += 1
            return original(tensor, *args, **kwargs)

        return wrapper

    def __enter__(self) -> SyncCounter:
        for name in SYNC_METHODS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original
            setattr(torch.Tensor, name, self._wrap(name, original))
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved.clear()


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _caller() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "probe.py" not in frame.filename and "/torch/" not in frame.filename:
            parts = frame.filename.split("/")
            return f"{'/'.join(parts[-2:])}:{frame.lineno} ({frame.name})"
    return "?"


class OpCounter(TorchDispatchMode):
    """Counts ATen ops dispatched in this thread while active (a proxy for kernel launches on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.by_op: collections.Counter[str] = collections.Counter()
        self.active = False

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        """Compiled code runs as compiled (fused kernels), and this mode sees only what it still dispatches
        (extern matmuls, allocations); without this, torch.compile falls back to eager under any mode."""
        return True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.active:
            self.count += 1
            self.by_op[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


class StepWindow:
    """Counts syncs and ops over optimizer steps [first, first + n) of a run on `engine_cls`: wraps its
    `step` (called once per micro-batch) so the window opens after the first-th optimizer step's last
    micro-batch and closes after the (first + n)-th's. Use around a whole run:

        with StepWindow(Engine, first=4, n=3, grad_accum=1) as w:
            pretrain(...)
        w.syncs.count / 3, w.ops.count / 3
    """

    def __init__(self, engine_cls: type, first: int, n: int, grad_accum: int = 1) -> None:
        self.engine_cls, self.first, self.n, self.accum = engine_cls, first, n, grad_accum
        self.syncs, self.ops = SyncCounter(), OpCounter()
        self.calls = 0
        self.compiled_in_window = 0  # graphs torch.compile made inside the window (their tracing reads the host)
        self._original = None

    def __enter__(self) -> StepWindow:
        self._original = self.engine_cls.step
        window = self

        def step(engine, *args, **kwargs):
            out = window._original(engine, *args, **kwargs)
            window.calls += 1
            if window.calls == window.first * window.accum:
                window.ops.__enter__()  # pushed only now: an active dispatch mode keeps torch.compile from compiling
                window.syncs.active = window.ops.active = True
                window.compiled_in_window = -_graphs_compiled()
            elif window.calls == (window.first + window.n) * window.accum:
                window.syncs.active = window.ops.active = False
                window.ops.__exit__(None, None, None)
                window.compiled_in_window += _graphs_compiled()
            return out

        self.engine_cls.step = step
        self.syncs.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.ops.active:
            self.ops.active = False
            self.ops.__exit__(*exc)
        self.syncs.__exit__(*exc)
        self.engine_cls.step = self._original
