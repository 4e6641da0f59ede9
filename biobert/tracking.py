"""Metrics to `metrics.jsonl`, TensorBoard and a rank-0 progress bar; other ranks stay silent."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any


class Tracker:
    def __init__(
        self, run_dir: str | Path, enabled: bool, total_steps: int, progress: bool = True, start_step: int = 0
    ):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._tb = None
        self._bar = None
        self._jsonl = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        except ImportError:  # tensorboard is a declared dependency; keep training if a user removed it
            print("warning: tensorboard not installed; metrics go to metrics.jsonl only", file=sys.stderr)
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr, mininterval=1.0
            )

    def log(self, step: int, metrics: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **metrics}
        self._jsonl.write(json.dumps(record, default=float) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
            self._tb.flush()
        if kind != "train" or self._bar is None:
            line = " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
            self.write(f"[{kind} step {step}] {line}")

    def advance(self, steps: int, postfix: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.update(steps)
            self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)

    def write(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)
