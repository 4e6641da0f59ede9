"""The one-GPU plan: continued pre-training at ≥ 100x the CPU budget and the full learning curve, sized to
finish within one 10-minute run.

Speeds are measured on the GPU when one is present (a few seconds of MiniLM-sized steps, bf16 autocast);
on a CPU-only machine (the dry run in the tests) the plan uses ASSUMED below. Pre-training comes first (the
curve needs Bio), then the curve's runs, several at once on the one GPU: a MiniLM fine-tuning step is
host-bound (Python and DeepSpeed's per-tensor work, not GPU kernels), so concurrent processes on separate
cores add throughput until the cores run out.

The pre-training itself is bench/reproduce.py's stage: this plan gives it `pretrain_tokens` (its
--pretrain_tokens) and the learning curve's worker count; learning_curve.py runs the curve.
"""

from __future__ import annotations

import math
import os
import time

# bench/reproduce.py's CPU budget: DEFAULT_TOKENS (2,000,000) rounded up to whole steps of cpu.json's
# 32 x 128 tokens = 489 steps x 4,096 tokens.
CPU_PRETRAIN_TOKENS = 489 * 4096
MIN_FACTOR = 100  # the GPU's pre-training budget is at least this multiple of the CPU one
GPU_TOKENS_PER_STEP = 131_072  # BioBERT's tokens per optimizer step (8 x V100), kept on one GPU
FIXED_S = 60.0  # process start, data loading, the launcher and the report, within the 10 minutes
TARGET = 0.9  # of the budget planned, the rest a margin for the estimate's error
CONTENTION = 1.3  # concurrent runs on one GPU and one host slow each other down by about this much
# Assumed on one H200 when no GPU is present to measure (documented guesses, not measurements):
#  pretrain: BERT-base reached 498,742 tokens/s at seq 128 x 512 on the H200 (bench/results/
#    gpu_NVIDIA_H200.json, host-bound at 27.7% MFU); all-MiniLM-L6-v2 has 1/8 of its encoder FLOPs per token
#    but the same per-step host work, so 2x, not 8x;
#  finetune: a batch-32 MiniLM step is ~1 ms of kernels and ~20 ms of host work (H200 profile: half of each
#    step was host overhead) -> 40 steps/s per process;
#  eval: forward only, 64 sequences a batch -> 2e6 WordPieces/s; run_overhead: model load and engine set-up.
ASSUMED = {
    "pretrain_tokens_per_s": 1.0e6,
    "finetune_steps_per_s": 40.0,
    "eval_wordpieces_per_s": 2.0e6,
    "run_overhead_s": 3.0,
    "cores": 16,
}
ENGINE_EFFICIENCY = 0.5  # measured raw torch steps -> DeepSpeed engine steps (its host work per step)


def measure(model_dir: str, steps: int = 20) -> dict:
    """Speeds of the Base model on this GPU: raw bf16 masked-LM and token-classification training steps and
    forward passes, scaled by ENGINE_EFFICIENCY. A few seconds."""
    import torch
    from transformers import BertForMaskedLM, BertForTokenClassification

    dev = torch.device("cuda")

    def timed(model, batch: torch.Tensor, train: bool) -> float:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5) if train else None
        for i in range(steps + 3):
            if i == 3:
                torch.cuda.synchronize()
                t = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16), torch.set_grad_enabled(train):
                out = model(input_ids=batch, labels=batch if train and batch.shape[1] == 128 else None)
                loss = out.loss if out.loss is not None else out.logits.float().mean()
            if train:
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / steps

    mlm = BertForMaskedLM.from_pretrained(model_dir).to(dev)
    vocab = mlm.config.vocab_size
    pre = timed(mlm, torch.randint(1000, vocab, (256, 128), device=dev), True)
    del mlm
    tagger = BertForTokenClassification.from_pretrained(model_dir, num_labels=3).to(dev)
    ft = timed(tagger, torch.randint(1000, vocab, (32, 48), device=dev), True)
    ev = timed(tagger.eval(), torch.randint(1000, vocab, (64, 64), device=dev), False)
    return {
        "pretrain_tokens_per_s": ENGINE_EFFICIENCY * 256 * 128 / pre,
        "finetune_steps_per_s": ENGINE_EFFICIENCY / ft,
        "eval_wordpieces_per_s": ENGINE_EFFICIENCY * 64 * 64 / ev,
        "run_overhead_s": ASSUMED["run_overhead_s"],
        "cores": os.cpu_count() or 1,
    }


def gpu_plan(plan: dict, cfg, budget_s: float = 600.0, speeds: dict | None = None) -> dict:
    """Pre-training tokens (≥ MIN_FACTOR x the CPU budget, more when time is left) and concurrent workers so
    that pre-training plus the learning curve fit in budget_s."""
    if speeds is None:
        import torch

        measured = torch.cuda.is_available()
        speeds = measure(cfg.base_model) if measured else dict(ASSUMED)
        source = "measured on " + torch.cuda.get_device_name(0) if measured else "assumed (no GPU here)"
    else:
        source = "given"
    serial = sum(
        speeds["run_overhead_s"]
        + r["steps"] / speeds["finetune_steps_per_s"]
        + r["test_wordpieces"] / speeds["eval_wordpieces_per_s"]
        for r in plan["runs"]
    )
    min_steps = math.ceil(MIN_FACTOR * CPU_PRETRAIN_TOKENS / GPU_TOKENS_PER_STEP)
    min_pretrain_s = min_steps * GPU_TOKENS_PER_STEP / speeds["pretrain_tokens_per_s"]
    max_workers = max(1, int(speeds["cores"]) // 2)
    room = TARGET * budget_s - FIXED_S - min_pretrain_s
    workers = max_workers if room <= 0 else min(max_workers, max(1, math.ceil(serial * CONTENTION / room)))
    curve_s = serial * CONTENTION / workers if workers > 1 else serial
    spare_s = TARGET * budget_s - FIXED_S - curve_s
    steps = max(min_steps, int(spare_s * speeds["pretrain_tokens_per_s"] // GPU_TOKENS_PER_STEP))
    pretrain_s = steps * GPU_TOKENS_PER_STEP / speeds["pretrain_tokens_per_s"]
    total = FIXED_S + pretrain_s + curve_s
    return {
        "speeds": speeds,
        "speeds_source": source,
        "budget_s": budget_s,
        "pretrain_steps": steps,
        "pretrain_tokens": steps * GPU_TOKENS_PER_STEP,
        "tokens_per_step": GPU_TOKENS_PER_STEP,
        "x_cpu_budget": steps * GPU_TOKENS_PER_STEP / CPU_PRETRAIN_TOKENS,
        "est_pretrain_s": pretrain_s,
        "curve_runs": len(plan["runs"]),
        "est_curve_serial_s": serial,
        "workers": workers,
        "est_curve_s": curve_s,
        "est_total_s": total,
        "fits": total <= budget_s,
    }


def print_gpu_plan(g: dict) -> None:
    print(
        f"One-GPU plan (speeds {g['speeds_source']}): pre-training {g['pretrain_steps']:,} steps x "
        f"{g['tokens_per_step']:,} = {g['pretrain_tokens']:,} tokens ({g['x_cpu_budget']:.0f}x the CPU budget of "
        f"{CPU_PRETRAIN_TOKENS:,}), about {g['est_pretrain_s']:.0f} s; learning curve {g['curve_runs']} runs, "
        f"{g['workers']} at once, about {g['est_curve_s']:.0f} s; with {FIXED_S:.0f} s fixed: about "
        f"{g['est_total_s']:.0f} s of the {g['budget_s']:.0f} s run"
        + ("" if g["fits"] else " -- DOES NOT FIT: use fewer --seeds or a smaller --min_steps"),
        flush=True,
    )
