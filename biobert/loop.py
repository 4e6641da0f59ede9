"""The one training loop. Pre-training and every fine-tuning task call this `fit()`.

A training module's forward returns either an object with `.loss` (any Hugging Face model) or a dict
`{"loss": tensor, "metrics": {name: (numerator, denominator)}}`; ratio metrics are summed over
micro-batches and ranks before dividing, so e.g. masked-LM accuracy is exact, not a mean of means.
"""

from __future__ import annotations

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
from biobert.sampler import BatchSource
from biobert.tracking import Tracker

Evaluate = Callable[[Any, TrainState], dict[str, float]]


def _unpack(out: Any) -> tuple[torch.Tensor, dict[str, tuple[Any, Any]]]:
    if isinstance(out, dict) and "loss" in out:
        return out["loss"], out.get("metrics", {})
    return out.loss, {}


def _tokens(batch: dict[str, Any]) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def _train_step(engine: Any, source: BatchSource, state: TrainState, seed: int) -> dict[str, float]:
    """One optimizer step: all micro-batches of this rank, then one all-reduce of the step's numbers."""
    seed_everything(derived_seed(seed, "step", state.step, engine.rank))
    micro_batches = source.micro_batches(state.samples_seen)
    loss_sum = torch.zeros((), dtype=torch.float64)
    tokens = 0
    sums: dict[str, list[float]] = {}
    for batch in micro_batches:
        loss, metrics = _unpack(engine(batch))
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
    flat = [float(loss_sum), float(len(micro_batches)), float(tokens)]
    flat += [v for n in names for v in sums[n]]
    reduced = engine.all_reduce_sum(flat)
    out = {"loss": reduced[0] / max(reduced[1], 1.0), "tokens": reduced[2]}
    for i, n in enumerate(names):
        num, den = reduced[3 + 2 * i], reduced[4 + 2 * i]
        out[n] = num / den if den else float("nan")
    return out


def fit(engine: Any, source: BatchSource, state: TrainState, cfg: LoopConfig, *, total_steps: int,
        run_config: dict, evaluate: Evaluate | None = None, exporter: Any | None = None,
        tracker: Tracker | None = None) -> TrainState:
    """Train until `total_steps` optimizer steps, evaluating and checkpointing on the configured cadence."""
    tracker = tracker or Tracker(cfg.run_dir, engine.rank == 0, total_steps, cfg.progress, state.step)
    engine.train(True)
    window_t, window_tokens, window_samples = time.time(), 0.0, 0
    # A resumed run starts at a step that was just saved (and evaluated if it was the last one).
    last_saved = last_eval = state.step if state.step else -1
    while state.step < total_steps:
        t0 = time.time()
        step_out = _train_step(engine, source, state, cfg.seed)
        state.step += 1
        state.samples_seen += engine.train_batch
        state.tokens_seen += int(step_out["tokens"])
        state.elapsed_s += time.time() - t0
        window_tokens += step_out["tokens"]
        window_samples += engine.train_batch
        if state.step % cfg.log_every == 0 or state.step == total_steps:
            dt = max(time.time() - window_t, 1e-9)
            record = {k: v for k, v in step_out.items() if k != "tokens"}
            record.update(lr=engine.lr, tokens_per_s=window_tokens / dt, samples_per_s=window_samples / dt,
                          samples_seen=state.samples_seen, tokens_seen=state.tokens_seen,
                          epoch=source.sampler.epoch_of(state.samples_seen))
            if engine.grad_norm is not None:
                record["grad_norm"] = engine.grad_norm
            if engine.loss_scale is not None:
                record.update(loss_scale=engine.loss_scale, skipped_steps=engine.skipped_steps)
            tracker.log(state.step, record)
            tracker.advance(cfg.log_every if state.step % cfg.log_every == 0 else state.step % cfg.log_every,
                            {"loss": record["loss"], "tok/s": round(record["tokens_per_s"])})
            window_t, window_tokens, window_samples = time.time(), 0.0, 0
        if evaluate is not None and cfg.eval_every and state.step % cfg.eval_every == 0:
            _run_eval(engine, evaluate, state, tracker)
            last_eval = state.step
        if cfg.save_every and state.step % cfg.save_every == 0:
            checkpoint.save(engine, cfg.run_dir, state, run_config, exporter)
            last_saved = state.step
        _fault_injection(engine, state)
    if evaluate is not None and last_eval != state.step:
        _run_eval(engine, evaluate, state, tracker)
    if last_saved != state.step:
        checkpoint.save(engine, cfg.run_dir, state, run_config, exporter)
    tracker.close()
    return state


def _run_eval(engine: Any, evaluate: Evaluate, state: TrainState, tracker: Tracker) -> None:
    engine.train(False)
    with torch.no_grad():
        metrics = evaluate(engine, state)
    engine.train(True)
    tracker.log(state.step, metrics, kind="eval")


def _fault_injection(engine: Any, state: TrainState) -> None:
    """Crash tests: BIOBERT_FAULT_KILL_AT_STEP=N makes rank 0 SIGKILL itself after step N (and its save)."""
    kill_at = os.environ.get("BIOBERT_FAULT_KILL_AT_STEP")
    if kill_at and state.step == int(kill_at) and engine.rank == 0:
        os.kill(os.getpid(), signal.SIGKILL)
