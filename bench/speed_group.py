"""The orchestrator side of the lockstep speed benchmark (bench/pretrain_speed.py): one process per side
(bench/speed_workers.py), each released for one optimizer step at a time, round-robin with the order rotated
every round, so a shared machine's load hits every side equally.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Worker:
    def __init__(self, name: str, spec: dict, log_dir: Path):
        self.name, self.spec = name, spec
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR", "LOCAL_WORLD_SIZE")
        }
        env.update(spec.get("env", {}))
        env.update(
            OMP_NUM_THREADS=str(spec["threads"]), TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", TQDM_DISABLE="1"
        )
        self.log_path = log_dir / f"{spec['group']}_{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "speed_workers.py"),
                json.dumps(spec),
                str(to_child_r),
                str(from_child_w),
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            pass_fds=(to_child_r, from_child_w),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._reader = os.fdopen(self._from_child, "r")
        self.steps: list[dict] = []
        self.events: list[dict] = []
        self.exit: dict | None = None
        self.started = time.time()

    def next_report(self, timeout_s: float) -> dict | None:
        """The next step report (None once the worker has exited or timed out)."""
        while True:
            ready, _, _ = select.select([self._reader], [], [], timeout_s)
            if not ready:
                self.exit = {"ok": False, "error": f"no report within {timeout_s:.0f} s"}
                self.proc.kill()
                return None
            line = self._reader.readline()
            if not line:
                self.proc.wait()
                self.exit = self.exit or {"ok": False, "error": f"exited with {self.proc.returncode}"}
                return None
            msg = json.loads(line)
            if "step" in msg:
                self.steps.append(msg)
                return msg
            if msg.get("event") == "exit":
                self.exit = msg
            else:
                self.events.append(msg)

    def go(self) -> None:
        try:
            os.write(self._to_child, b"go\n")
        except BrokenPipeError:
            pass

    def finish(self, timeout_s: float) -> None:
        if self.exit is None:
            self.go()
            self.next_report(timeout_s)  # reads through to the exit message
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()

    @property
    def alive(self) -> bool:
        return self.exit is None

    def log_tail(self, n: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]


_LIVE: list[Worker] = []


def kill_workers(*_args) -> None:
    """Workers hold GBs each and ignore SIGTERM for a step (our loop checkpoints on it): SIGKILL them."""
    for w in _LIVE:
        if w.proc.poll() is None:
            w.proc.kill()
    if _args:  # called as a signal handler
        raise SystemExit(128 + _args[0])


def run_group(model: str, specs: dict[str, dict], steps: int, log_dir: Path, timeout_s: float) -> dict:
    """All sides of one model, one step each in turn (order rotated every round)."""
    workers = [Worker(name, spec, log_dir) for name, spec in specs.items()]
    _LIVE[:] = workers
    for w in workers:  # step 1 runs unpaced, during the others' start-up: it is a warm-up step
        if w.next_report(timeout_s) is None:
            print(f"  {model}/{w.name} failed: {w.exit}\n{w.log_tail()}", file=sys.stderr)
    for r in range(1, steps):
        live = [w for w in workers if w.alive]
        k = r % max(1, len(live))
        for w in live[k:] + live[:k]:
            w.go()
            rep = w.next_report(timeout_s)
            if rep is None:
                print(f"  {model}/{w.name} failed: {w.exit}\n{w.log_tail()}", file=sys.stderr)
        print(f"  {model}: round {r + 1}/{steps} done", file=sys.stderr, flush=True)
    for w in workers:
        w.finish(timeout_s)
    return {w.name: w for w in workers}
