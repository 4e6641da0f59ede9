"""The one training loop. Pre-training and every fine-tuning task call this `fit()`.

A training module's forward returns either an object with `.loss` (any Hugging Face model) or a dict
`{"loss": tensor, "metrics": {name: (numerator, denominator)}}` of device tensors; ratio metrics are summed
over micro-batches and ranks before dividing, so e.g. masked-LM accuracy is exact, not a mean of means.

The GPU never waits for the host (GUIDE rule 12). A step's numbers (loss, metrics, tokens, gradient norm,
each rank's "stop requested" flag) are summed on the device, all-reduced once, and copied to the host
without blocking; the loop reads them one step later, after the next step is already queued. So the
divergence guard judges step N while step N+1 runs (a diverged step is rolled back to the last checkpoint
either way), and all ranks read the same reduced numbers at the same step, so they agree on a rollback and
on the step at which a preemption signal is honoured. Log, evaluation and save steps read their own
numbers at once: a checkpoint never holds a step the guard has not judged.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Callable
from typing import Any

import torch

from biobert import checkpoint, integrity
from biobert.checkpoint import TrainState
from biobert.config import LoopConfig
from biobert.dist import derived_seed, seed_everything
from biobert.errors import Preempted, UserError
from biobert.faults import NO_FAULTS, Faults
from biobert.flops import device_peak_tflops
from biobert.sampler import BatchSource
from biobert.tracking import Tracker

Evaluate = Callable[[Any, TrainState], dict[str, float]]
_HOST = ("micro_batches", "tokens", "stop")  # host-known numbers, first in the reduced vector


class StopRequest:
    """SIGTERM / SIGUSR1 (Slurm's warning signal) ask the loop to finish the step, checkpoint and exit."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. an embedding application): no handler
                pass
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclasses.dataclass
class _Pending:
    """A step whose reduced numbers are on their way to the host."""

    step: int  # the optimizer step they belong to
    position: int  # its global batch's sample position (skipped from then on if it diverged)
    names: list[str]  # metric names, in the vector's order after loss and gradient norm
    values: Any  # Engine.reduce_async's handle
    seconds: float  # host time spent launching it


def _unpack(out: Any) -> tuple[torch.Tensor, dict[str, tuple[Any, Any]]]:
    if isinstance(out, dict) and "loss" in out:
        return out["loss"], out.get("metrics", {})
    return out.loss, {}


def _next_position(state: TrainState, global_batch: int) -> int:
    position = state.samples_seen + global_batch
    while position in state.skip_positions:
        position += global_batch
    return position


def _train_step(
    engine: Any, source: BatchSource, state: TrainState, seed: int, stop: int, faults: Faults, total_steps: int
) -> _Pending:
    """Launch one optimizer step (all of this rank's micro-batches) and the reduction of its numbers."""
    t0 = time.time()
    seed_everything(derived_seed(seed, "step", state.step, engine.rank))  # dropout; masks have their own
    batches = source.get(state.samples_seen, state.step)
    if state.step + 1 < total_steps:
        source.prefetch(_next_position(state, engine.train_batch), state.step + 1)
    acc, names = None, []
    for batch in batches.micro_batches:
        loss, metrics = _unpack(engine(batch))
        if faults.any:
            loss = faults.poison(loss, state.samples_seen)
        engine.backward(loss)
        engine.step()
        names = sorted(metrics)
        row = [loss.detach()] + [torch.as_tensor(v, device=loss.device) for n in names for v in metrics[n]]
        row = torch.stack([v.to(torch.float64) for v in row])
        acc = row if acc is None else acc + row
        state.micro_step += 1
    host = [float(len(batches.micro_batches)), float(batches.tokens), float(stop)]
    values = engine.reduce_async(host, acc, engine.grad_norm_tensor())
    return _Pending(state.step + 1, state.samples_seen, names, values, time.time() - t0)


def _settle(pending: _Pending, world: int) -> dict[str, float]:
    """The step's numbers, summed over micro-batches and ranks (waits for the copy if it is not done)."""
    v = pending.values.read()
    host, rest = dict(zip(_HOST, v[:3])), v[3:]
    norm = rest[0] / world if pending.values.has_norm else None  # every rank holds the same global norm
    rest = rest[1:] if pending.values.has_norm else rest
    out = {
        "loss": rest[0] / max(host["micro_batches"], 1.0),
        "tokens": host["tokens"],
        "stop": host["stop"],
        "grad_norm": norm,
    }
    for i, n in enumerate(pending.names):
        num, den = rest[1 + 2 * i], rest[2 + 2 * i]
        if den:
            out[n] = num / den
    return out


def _diverged(out: dict[str, float], state: TrainState, cfg: LoopConfig, check_norm: bool) -> str | None:
    loss, grad_norm = out["loss"], out["grad_norm"] if check_norm else None
    if not math.isfinite(loss):
        return f"non-finite loss {loss}"
    if grad_norm is not None and not math.isfinite(grad_norm):
        return f"non-finite gradient norm {grad_norm}"
    history = state.recent_losses
    if cfg.divergence_factor > 0 and len(history) >= max(3, cfg.divergence_window // 2):
        mean = sum(history) / len(history)
        if loss > cfg.divergence_factor * mean:
            return f"loss {loss:.4g} > {cfg.divergence_factor} x recent mean {mean:.4g}"
    return None


def _roll_back(
    engine: Any, state: TrainState, cfg: LoopConfig, reason: str, tracker: Tracker, bad: _Pending
) -> TrainState:
    """Reload the last good checkpoint and mark the offending global batch to be skipped from now on."""
    if state.rollbacks >= cfg.max_rollbacks:
        raise UserError(
            f"training diverged again at step {bad.step} ({reason}) after {state.rollbacks} "
            f"rollbacks; stopping. Lower the learning rate or raise warmup in the DeepSpeed "
            f"config, or inspect the data at sample position {bad.position}."
        )
    tag = checkpoint.latest_tag(cfg.run_dir)
    if tag is None:
        raise UserError(
            f"training diverged at step {bad.step} ({reason}) before any checkpoint was "
            "saved, so there is nothing to roll back to. Lower the learning rate or save earlier "
            "(--save_every)."
        )
    integrity.verify(checkpoint.checkpoint_dir(cfg.run_dir) / tag, cfg.trust_checkpoint)
    client = engine.load_checkpoint(checkpoint.checkpoint_dir(cfg.run_dir), tag)
    good = checkpoint.state_from_client(client, f"{cfg.run_dir}/checkpoints/{tag}")
    good.skip_positions = sorted(set(state.skip_positions) | {bad.position})
    good.rollbacks = state.rollbacks + 1
    tracker.log(
        bad.step,
        {"reason": reason, "rolled_back_to": good.step, "skipped_position": bad.position, "rollbacks": good.rollbacks},
        kind="rollback",
    )
    return good


def _log_step(engine, source, state, out, window, cfg, tracker, flops_per_token) -> None:
    dt = max(time.time() - window["t"], 1e-9)
    record = {k: v for k, v in out.items() if k not in ("tokens", "stop", "grad_norm")}
    record.update(
        lr=engine.lr,
        tokens_per_s=window["tokens"] / dt,
        samples_per_s=window["samples"] / dt,
        samples_seen=state.samples_seen,
        tokens_seen=state.tokens_seen,
        epoch=source.sampler.epoch_of(state.samples_seen),
    )
    peak = cfg.peak_tflops or device_peak_tflops(engine.device, engine.dtype)
    if flops_per_token and peak:
        record["mfu"] = record["tokens_per_s"] * flops_per_token / (peak * 1e12 * engine.world_size)
    if out["grad_norm"] is not None:
        record["grad_norm"] = out["grad_norm"]
    if engine.loss_scale is not None:
        record.update(loss_scale=engine.loss_scale, skipped_steps=engine.skipped_steps)
    tracker.log(state.step, record)
    done = cfg.log_every if state.step % cfg.log_every == 0 else state.step % cfg.log_every
    tracker.advance(done, {"loss": record["loss"], "tok/s": round(record["tokens_per_s"])})
    window.update(t=time.time(), tokens=0.0, samples=0)


class _Run:
    """fit()'s bookkeeping: settles steps (the divergence guard) and acts at log, eval and save steps."""

    def __init__(
        self, engine, source, state, cfg, total_steps, run_config, evaluate, exporter, tracker, flops_per_token, faults
    ):
        self.engine, self.source, self.state, self.cfg = engine, source, state, cfg
        self.total_steps, self.run_config, self.evaluate, self.exporter = total_steps, run_config, evaluate, exporter
        self.tracker, self.flops_per_token, self.faults = tracker, flops_per_token, faults
        self.window = {"t": time.time(), "tokens": 0.0, "samples": 0}
        # A resumed run starts at a step that was just saved (and evaluated if it was the last one).
        self.last_saved = self.last_eval = state.step if state.step else -1
        self.check_norm = engine.dtype != torch.float16  # fp16's loss scaler skips overflowing steps itself

    def settle(self, pending: _Pending) -> dict[str, float] | None:
        """The step's numbers, or None when it diverged and the run was rolled back."""
        out = _settle(pending, self.engine.world_size)
        reason = _diverged(out, self.state, self.cfg, self.check_norm)
        if reason:
            self.state = _roll_back(self.engine, self.state, self.cfg, reason, self.tracker, pending)
            self.last_saved = self.last_eval = self.state.step
            return None
        st = self.state
        st.tokens_seen += int(out["tokens"])
        st.elapsed_s += pending.seconds
        st.recent_losses = (st.recent_losses + [out["loss"]])[-self.cfg.divergence_window :]
        self.window["tokens"] += out["tokens"]
        self.window["samples"] += self.engine.train_batch
        return out

    def boundary(self, stop_seen: bool) -> bool:
        step, cfg = self.state.step, self.cfg
        return (
            step % cfg.log_every == 0
            or step == self.total_steps
            or stop_seen
            or bool(self.evaluate is not None and cfg.eval_every and step % cfg.eval_every == 0)
            or bool(cfg.save_every and step % cfg.save_every == 0)
        )

    def act(self, out: dict[str, float], stop: StopRequest) -> None:
        """Log, evaluate and save at a boundary step whose numbers are settled; raise Preempted on a stop."""
        st, cfg = self.state, self.cfg
        if st.step % cfg.log_every == 0 or st.step == self.total_steps:
            _log_step(self.engine, self.source, st, out, self.window, cfg, self.tracker, self.flops_per_token)
        if self.evaluate is not None and cfg.eval_every and st.step % cfg.eval_every == 0:
            _run_eval(self.engine, self.evaluate, st, self.tracker)
            self.last_eval = st.step
        if (cfg.save_every and st.step % cfg.save_every == 0) or out["stop"]:
            checkpoint.save(self.engine, cfg.run_dir, st, self.run_config, self.exporter, cfg.keep_last, self.faults)
            self.last_saved = st.step
        self.faults.after_step(st.step, self.engine.rank)
        if out["stop"]:
            self.tracker.log(st.step, {"signal": stop.signum or "peer"}, kind="preempted")
            self.tracker.close()
            raise Preempted(
                f"stop signal received: checkpointed {cfg.run_dir} at step {st.step}; "
                "run the same command with --resume to continue"
            )


def fit(
    engine: Any,
    source: BatchSource,
    state: TrainState,
    cfg: LoopConfig,
    *,
    total_steps: int,
    run_config: dict,
    evaluate: Evaluate | None = None,
    exporter: Any | None = None,
    tracker: Tracker | None = None,
    flops_per_token: float = 0.0,
    faults: Faults = NO_FAULTS,
) -> TrainState:
    """Train until `total_steps` optimizer steps, evaluating and checkpointing on the configured cadence.
    Raises Preempted after checkpointing when a stop signal arrived (the caller exits for a requeue)."""
    tracker = tracker or Tracker(cfg.run_dir, engine.rank == 0, total_steps, cfg.progress, state.step)
    engine.train(True)
    run = _Run(
        engine, source, state, cfg, total_steps, run_config, evaluate, exporter, tracker, flops_per_token, faults
    )
    previous: _Pending | None = None
    try:
        with StopRequest() as stop:
            while run.state.step < total_steps:
                st = run.state
                while st.samples_seen in st.skip_positions:  # batches that made training diverge
                    st.samples_seen += engine.train_batch
                launched = _train_step(engine, source, st, cfg.seed, stop.signum, faults, total_steps)
                st.step += 1
                st.samples_seen += engine.train_batch
                stop_seen = False
                if previous is not None:  # its copy finished while this step was being queued
                    out = run.settle(previous)
                    previous = None
                    if out is None:
                        continue  # rolled back: the step just launched is discarded with the weights
                    stop_seen = bool(out["stop"])
                if not run.boundary(stop_seen):
                    faults.after_step(st.step, engine.rank)
                    previous = launched
                    continue
                out = run.settle(launched)
                if out is not None:
                    out["stop"] = out["stop"] or stop_seen
                    run.act(out, stop)
    finally:
        source.close()
    st = run.state
    if evaluate is not None and run.last_eval != st.step:
        _run_eval(engine, evaluate, st, tracker)
    if run.last_saved != st.step:
        checkpoint.save(engine, cfg.run_dir, st, run_config, exporter, cfg.keep_last, faults)
    tracker.close()
    return st


def _run_eval(engine: Any, evaluate: Evaluate, state: TrainState, tracker: Tracker) -> None:
    engine.train(False)
    with torch.no_grad():
        metrics = evaluate(engine, state)
    engine.train(True)
    tracker.log(state.step, metrics, kind="eval")
