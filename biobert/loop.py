"""The one training loop. Pre-training and every fine-tuning task call this `fit()`.

A training module's forward returns either an object with `.loss` (any Hugging Face model) or a dict
`{"loss": tensor, "metrics": {name: (numerator, denominator)}}`; ratio metrics are summed over
micro-batches and ranks before dividing, so e.g. masked-LM accuracy is exact, not a mean of means.

Every step ends with one all-reduce that also carries each rank's "stop requested" flag, so all ranks
agree on the step at which a preemption signal is honoured, and on the (reduced) loss that the divergence
guard judges.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import torch

from biobert import checkpoint
from biobert.checkpoint import TrainState
from biobert.config import LoopConfig
from biobert.dist import derived_seed, seed_everything
from biobert.errors import Preempted, UserError
from biobert.flops import device_peak_tflops
from biobert.sampler import BatchSource
from biobert.tracking import Tracker

Evaluate = Callable[[Any, TrainState], dict[str, float]]


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


class _NanGradient(torch.autograd.Function):
    """Fault injection for the divergence tests: identity forward, NaN backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return grad * float("nan")


def _unpack(out: Any) -> tuple[torch.Tensor, dict[str, tuple[Any, Any]]]:
    if isinstance(out, dict) and "loss" in out:
        return out["loss"], out.get("metrics", {})
    return out.loss, {}


def _tokens(batch: dict[str, Any]) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def _train_step(engine: Any, source: BatchSource, state: TrainState, seed: int, stop: int) -> dict[str, float]:
    """One optimizer step: all micro-batches of this rank, then one all-reduce of the step's numbers."""
    seed_everything(derived_seed(seed, "step", state.step, engine.rank))
    micro_batches = source.micro_batches(state.samples_seen)
    poison = os.environ.get("BIOBERT_FAULT_NAN_AT_SAMPLE")  # divergence tests: a NaN loss at this position
    poison_grad = os.environ.get("BIOBERT_FAULT_NAN_GRAD_AT_SAMPLE")  # ... NaN gradients under a finite loss
    loss_sum = torch.zeros((), dtype=torch.float64)
    tokens = 0
    sums: dict[str, list[float]] = {}
    for batch in micro_batches:
        loss, metrics = _unpack(engine(batch))
        if poison and int(poison) == state.samples_seen:
            loss = loss * float("nan")
        if poison_grad and int(poison_grad) == state.samples_seen:
            loss = _NanGradient.apply(loss)  # the loss stays finite; every gradient becomes NaN
        engine.backward(loss)
        engine.step()
        loss_sum += loss.detach().double().cpu()
        tokens += _tokens(batch)
        for name, (num, den) in metrics.items():
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += float(num)
            acc[1] += float(den)
        state.micro_step += 1
    names = sorted(sums)
    flat = [float(loss_sum), float(len(micro_batches)), float(tokens), float(stop)]
    flat += [v for n in names for v in sums[n]]
    reduced = engine.all_reduce_sum(flat)
    out = {"loss": reduced[0] / max(reduced[1], 1.0), "tokens": reduced[2], "stop": reduced[3]}
    for i, n in enumerate(names):
        num, den = reduced[4 + 2 * i], reduced[5 + 2 * i]
        out[n] = num / den if den else float("nan")
    return out


def _diverged(loss: float, state: TrainState, cfg: LoopConfig, grad_norm: float | None = None) -> str | None:
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


def _roll_back(engine: Any, state: TrainState, cfg: LoopConfig, reason: str, tracker: Tracker) -> TrainState:
    """Reload the last good checkpoint and mark the offending global batch to be skipped from now on."""
    bad_position = state.samples_seen
    if state.rollbacks >= cfg.max_rollbacks:
        raise UserError(f"training diverged again at step {state.step + 1} ({reason}) after {state.rollbacks} "
                        f"rollbacks; stopping. Lower the learning rate or raise warmup in the DeepSpeed "
                        f"config, or inspect the data at sample position {bad_position}.")
    tag = checkpoint.latest_tag(cfg.run_dir)
    if tag is None:
        raise UserError(f"training diverged at step {state.step + 1} ({reason}) before any checkpoint was "
                        "saved, so there is nothing to roll back to. Lower the learning rate or save earlier "
                        "(--save_every).")
    client = engine.load_checkpoint(checkpoint.checkpoint_dir(cfg.run_dir), tag)
    good = checkpoint.state_from_client(client, f"{cfg.run_dir}/checkpoints/{tag}")
    good.skip_positions = sorted(set(state.skip_positions) | {bad_position})
    good.rollbacks = state.rollbacks + 1
    tracker.log(state.step + 1, {"reason": reason, "rolled_back_to": good.step, "skipped_position": bad_position,
                                 "rollbacks": good.rollbacks}, kind="rollback")
    return good


def _log_step(engine, source, state, step_out, window, cfg, tracker, flops_per_token) -> None:
    dt = max(time.time() - window["t"], 1e-9)
    record = {k: v for k, v in step_out.items() if k not in ("tokens", "stop")}
    record.update(lr=engine.lr, tokens_per_s=window["tokens"] / dt, samples_per_s=window["samples"] / dt,
                  samples_seen=state.samples_seen, tokens_seen=state.tokens_seen,
                  epoch=source.sampler.epoch_of(state.samples_seen))
    peak = cfg.peak_tflops or device_peak_tflops(engine.device, engine.dtype)
    if flops_per_token and peak:
        record["mfu"] = record["tokens_per_s"] * flops_per_token / (peak * 1e12 * engine.world_size)
    if engine.grad_norm is not None:
        record["grad_norm"] = engine.grad_norm
    if engine.loss_scale is not None:
        record.update(loss_scale=engine.loss_scale, skipped_steps=engine.skipped_steps)
    tracker.log(state.step, record)
    done = cfg.log_every if state.step % cfg.log_every == 0 else state.step % cfg.log_every
    tracker.advance(done, {"loss": record["loss"], "tok/s": round(record["tokens_per_s"])})
    window.update(t=time.time(), tokens=0.0, samples=0)


def fit(engine: Any, source: BatchSource, state: TrainState, cfg: LoopConfig, *, total_steps: int,
        run_config: dict, evaluate: Evaluate | None = None, exporter: Any | None = None,
        tracker: Tracker | None = None, flops_per_token: float = 0.0) -> TrainState:
    """Train until `total_steps` optimizer steps, evaluating and checkpointing on the configured cadence.
    Raises Preempted after checkpointing when a stop signal arrived (the caller exits for a requeue)."""
    tracker = tracker or Tracker(cfg.run_dir, engine.rank == 0, total_steps, cfg.progress, state.step)
    engine.train(True)
    window = {"t": time.time(), "tokens": 0.0, "samples": 0}
    # A resumed run starts at a step that was just saved (and evaluated if it was the last one).
    last_saved = last_eval = state.step if state.step else -1
    with StopRequest() as stop:
        while state.step < total_steps:
            while state.samples_seen in state.skip_positions:  # batches that made training diverge
                state.samples_seen += engine.train_batch
            t0 = time.time()
            step_out = _train_step(engine, source, state, cfg.seed, stop.signum)
            # fp16's loss scaler skips overflowing steps itself; in bf16/fp32 a non-finite gradient norm means
            # the update was applied (ds_config.finalize turns DeepSpeed's bf16 overflow scan off), so roll back.
            norm = engine.grad_norm if engine.dtype != torch.float16 else None
            reason = _diverged(step_out["loss"], state, cfg, norm)
            if reason:
                state = _roll_back(engine, state, cfg, reason, tracker)
                last_saved = last_eval = state.step
                continue
            state.step += 1
            state.samples_seen += engine.train_batch
            state.tokens_seen += int(step_out["tokens"])
            state.elapsed_s += time.time() - t0
            state.recent_losses = (state.recent_losses + [step_out["loss"]])[-cfg.divergence_window:]
            window["tokens"] += step_out["tokens"]
            window["samples"] += engine.train_batch
            if state.step % cfg.log_every == 0 or state.step == total_steps:
                _log_step(engine, source, state, step_out, window, cfg, tracker, flops_per_token)
            if evaluate is not None and cfg.eval_every and state.step % cfg.eval_every == 0:
                _run_eval(engine, evaluate, state, tracker)
                last_eval = state.step
            if (cfg.save_every and state.step % cfg.save_every == 0) or step_out["stop"]:
                checkpoint.save(engine, cfg.run_dir, state, run_config, exporter, cfg.keep_last)
                last_saved = state.step
            _fault_injection(engine, state)
            if step_out["stop"]:
                tracker.log(state.step, {"signal": stop.signum or "peer"}, kind="preempted")
                tracker.close()
                raise Preempted(f"stop signal received: checkpointed {cfg.run_dir} at step {state.step}; "
                                "run the same command with --resume to continue")
    if evaluate is not None and last_eval != state.step:
        _run_eval(engine, evaluate, state, tracker)
    if last_saved != state.step:
        checkpoint.save(engine, cfg.run_dir, state, run_config, exporter, cfg.keep_last)
    tracker.close()
    return state


def _run_eval(engine: Any, evaluate: Evaluate, state: TrainState, tracker: Tracker) -> None:
    engine.train(False)
    with torch.no_grad():
        metrics = evaluate(engine, state)
    engine.train(True)
    tracker.log(state.step, metrics, kind="eval")


def _fault_injection(engine: Any, state: TrainState) -> None:
    """Crash tests: BIOBERT_FAULT_KILL_AT_STEP=N makes rank 0 SIGKILL itself after step N (and its save);
    BIOBERT_FAULT_SIGNAL_AT_STEP=N makes rank 0 send itself SIGUSR1 after step N, as Slurm would."""
    kill_at = os.environ.get("BIOBERT_FAULT_KILL_AT_STEP")
    if kill_at and state.step == int(kill_at) and engine.rank == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    signal_at = os.environ.get("BIOBERT_FAULT_SIGNAL_AT_STEP")
    if signal_at and state.step == int(signal_at) and engine.rank == 0:
        os.kill(os.getpid(), signal.SIGUSR1)
