"""Load and validate the DeepSpeed JSON before any compute.

DeepSpeed silently ignores unknown top-level keys, so a typo such as `"gradient_acumulation_steps"` would
train with the wrong batch. We reject unknown keys with the list of valid ones, and check the batch
arithmetic against the world size with a message that says which number to change.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from biobert.config import read_json
from biobert.ds_schema import validate_nested
from biobert.errors import UserError

# Top-level keys DeepSpeed 0.14-0.19 reads (runtime/config.py and the sub-configs it parses).
TOP_LEVEL_KEYS = frozenset(
    """
train_batch_size train_micro_batch_size_per_gpu gradient_accumulation_steps steps_per_print
dump_state optimizer scheduler gradient_clipping prescale_gradients gradient_predivide_factor
sparse_gradients fp16 bf16 bfloat16 amp torch_autocast zero_optimization zero_allow_untested_optimizer
zero_force_ds_cpu_optimizer activation_checkpointing flops_profiler tensorboard wandb csv_monitor comet
wall_clock_breakdown memory_breakdown communication_data_type seq_parallel_communication_data_type
elasticity data_efficiency curriculum_learning compression_training autotuning nebula checkpoint
data_types aio sparse_attention pipeline pld progressive_layer_drop eigenvalue quantize_training
disable_allgather dataloader_drop_last use_data_before_expert_parallelism gradient_allreduce_op
graph_harvesting compile timers hybrid_engine weight_quantization mics_shard_size
mics_hierarchical_params_gather load_universal_checkpoint use_node_local_storage expert_parallel
disable_python_gc legacy_fusion log_level vocabulary_size zenflow managed_gradient_accumulation
lower_precision_safe_modules dtype monitor_config
""".split()
)

# Fields of DeepSpeedZeroConfig in DeepSpeed 0.19.8 (tests compare this with the installed version).
ZERO_KEYS = frozenset(
    """
allgather_bucket_size allgather_partitions compute_grad_norm contiguous_gradients cpu_offload
cpu_offload_param cpu_offload_use_pin_memory elastic_checkpoint enable_sanity_checks
ignore_unused_parameters leaf_module legacy_stage1 load_from_fp32_weights log_trace_cache_warnings
memory_efficient_linear offload_optimizer offload_param overlap_comm override_module_apply
parameter_alignment pipeline_loading_checkpoint reduce_bucket_size reduce_scatter round_robin_gradients
save_muon_momentum_buffer_in_memory stage stage3_allgather_sequential
stage3_gather_16bit_weights_on_model_save stage3_gather_fp16_weights_on_model_save
stage3_max_live_parameters stage3_max_reuse_distance stage3_model_persistence_threshold
stage3_module_granularity_threshold stage3_param_persistence_threshold stage3_prefetch_bucket_size
stage3_use_all_reduce_for_fetch_params sub_group_size use_multi_rank_bucket_allreduce zenflow
zero_hpz_partition_size zero_quantized_gradients zero_quantized_nontrainable_weights
zero_quantized_weights
""".split()
)

SCHEDULERS_WITH_TOTAL = ("WarmupDecayLR", "WarmupCosineLR")


def _close_matches(key: str, valid: frozenset[str]) -> str:
    import difflib

    near = difflib.get_close_matches(key, sorted(valid), n=1)
    return f" (did you mean `{near[0]}`?)" if near else ""


def apply_overrides(cfg: dict, overrides: list[str], source: str = "--ds") -> dict:
    """`key.sub=value` overrides, value parsed as JSON when it can be (numbers, true, objects)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"{source} {item!r}: expected KEY.PATH=VALUE, e.g. optimizer.params.lr=5e-5")
        path, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = cfg
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise UserError(f"{source} {item!r}: `{k}` is not an object in the DeepSpeed config")
        if value is None:  # null removes the key (e.g. a recipe lets gradient_accumulation_steps be derived)
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return cfg


def validate(cfg: dict, source: str) -> None:
    unknown = [k for k in cfg if k not in TOP_LEVEL_KEYS]
    if unknown:
        hints = "; ".join(f"`{k}`{_close_matches(k, TOP_LEVEL_KEYS)}" for k in unknown)
        raise UserError(
            f"{source}: unknown DeepSpeed key(s): {hints}. DeepSpeed would silently ignore "
            f"them. Valid top-level keys: {', '.join(sorted(TOP_LEVEL_KEYS))}"
        )
    zero = cfg.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise UserError(f'{source}: `zero_optimization` must be an object like {{"stage": 1}}')
    bad = [k for k in zero if k not in ZERO_KEYS]
    if bad:
        hints = "; ".join(f"`{k}`{_close_matches(k, ZERO_KEYS)}" for k in bad)
        raise UserError(f"{source}: unknown key(s) in zero_optimization: {hints}")
    if zero.get("stage", 0) not in (0, 1, 2, 3, "auto"):
        raise UserError(f'{source}: zero_optimization.stage must be 0, 1, 2, 3 or "auto", got {zero.get("stage")!r}')
    validate_nested(cfg, source)
    if cfg.get("fp16", {}).get("enabled") and cfg.get("bf16", {}).get("enabled"):
        raise UserError(f"{source}: fp16 and bf16 are both enabled; enable one")
    autocast = cfg.get("torch_autocast") or {}
    if autocast.get("enabled"):
        dtype = str(autocast.get("dtype", "")).replace("torch.", "")
        if dtype not in ("bfloat16", "bf16", "float16", "fp16", "half"):
            raise UserError(
                f'{source}: torch_autocast.dtype must be "bfloat16" or "float16", got '
                f"{autocast.get('dtype')!r} (without it DeepSpeed autocasts to fp16 with no loss scaler)"
            )
        if cfg.get("fp16", {}).get("enabled") or cfg.get("bf16", {}).get("enabled"):
            raise UserError(
                f"{source}: torch_autocast with bf16/fp16 enabled: DeepSpeed would cast the weights to "
                "16 bits and wrap the optimizer anyway. Use torch_autocast alone (fp32 weights, 16-bit "
                "products) or bf16/fp16 alone."
            )


def resolve_batch(cfg: dict, world_size: int, source: str) -> tuple[int, int, int]:
    """(train_batch_size, micro_batch_per_gpu, grad_accum) checked against the world size; fills the
    missing one, as DeepSpeed would, but fails with a message saying what to change."""
    tbs = cfg.get("train_batch_size")
    mbs = cfg.get("train_micro_batch_size_per_gpu")
    gas = cfg.get("gradient_accumulation_steps")
    for name, v in (
        ("train_batch_size", tbs),
        ("train_micro_batch_size_per_gpu", mbs),
        ("gradient_accumulation_steps", gas),
    ):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise UserError(f"{source}: `{name}` must be a positive integer, got {v!r}")
    if tbs is not None and mbs is not None and gas is not None:
        if tbs != mbs * gas * world_size:
            raise UserError(
                f"{source}: train_batch_size {tbs} != micro {mbs} x accumulation {gas} x world size "
                f"{world_size} = {mbs * gas * world_size}. Set gradient_accumulation_steps to "
                f"{tbs / (mbs * world_size):g} or train_batch_size to {mbs * gas * world_size}, "
                "or remove one of the three and let it be derived."
            )
    elif tbs is not None and mbs is not None:
        if tbs % (mbs * world_size):
            raise UserError(
                f"{source}: train_batch_size {tbs} is not divisible by micro {mbs} x world size "
                f"{world_size}; change train_micro_batch_size_per_gpu or the number of ranks."
            )
        gas = tbs // (mbs * world_size)
    elif tbs is not None and gas is not None:
        if tbs % (gas * world_size):
            raise UserError(
                f"{source}: train_batch_size {tbs} is not divisible by accumulation {gas} x "
                f"world size {world_size}; change gradient_accumulation_steps."
            )
        mbs = tbs // (gas * world_size)
    elif mbs is not None:
        gas = gas or 1
        tbs = mbs * gas * world_size
    elif tbs is not None:  # DeepSpeed's rule: no accumulation, the batch split over the ranks
        if tbs % world_size:
            raise UserError(f"{source}: train_batch_size {tbs} is not divisible by the world size {world_size}")
        mbs, gas = tbs // world_size, 1
    else:
        raise UserError(f"{source}: set train_batch_size or train_micro_batch_size_per_gpu")
    return tbs, mbs, gas


def load_ds_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """Keys starting with "_" are comments (a profile's tokens per step, expected memory) and are dropped."""
    cfg = {k: v for k, v in read_json(path, "DeepSpeed config").items() if not k.startswith("_")}
    cfg = apply_overrides(cfg, overrides or [])
    validate(cfg, str(path))
    return cfg


def _resolve_peak_lr(cfg: dict, source: str) -> None:
    """DeepSpeed's warmup schedulers ignore optimizer.params.lr and use warmup_max_lr. "auto" takes the
    optimizer's lr so the peak learning rate is written once; two different numbers are an error."""
    params = (cfg.get("scheduler") or {}).get("params") or {}
    opt_lr = ((cfg.get("optimizer") or {}).get("params") or {}).get("lr")
    peak = params.get("warmup_max_lr")
    if peak == "auto":
        if opt_lr is None:
            raise UserError(f'{source}: scheduler warmup_max_lr is "auto" but optimizer.params.lr is not set')
        params["warmup_max_lr"] = opt_lr
    elif peak is not None and opt_lr is not None and float(peak) != float(opt_lr):
        raise UserError(
            f"{source}: optimizer.params.lr {opt_lr} differs from scheduler warmup_max_lr {peak}; "
            'DeepSpeed would silently use the scheduler\'s. Set warmup_max_lr to "auto".'
        )


def resolve_zero_stage(cfg: dict, world_size: int, resume_stage: int | None, source: str) -> None:
    """`"stage": "auto"`: 0 on one rank (nothing to partition: ZeRO-1 would only add its flat fp32 copies
    and bucketing, 5-30 % slower and up to 25 % more memory for BERT-base on CPU, bench/README.md), 1 on
    several. A resumed run keeps the stage its checkpoint was written with, since the optimizer state's layout
    depends on it; an explicit stage whose layout differs from the checkpoint's is refused."""
    zero = cfg.setdefault("zero_optimization", {})
    stage = zero.get("stage", 0)
    if stage == "auto":
        zero["stage"] = resume_stage if resume_stage is not None else (0 if world_size == 1 else 1)
        return
    if resume_stage is not None and ((stage == 0) != (resume_stage == 0) or (stage == 3) != (resume_stage == 3)):
        raise UserError(
            f"{source}: zero_optimization.stage {stage}, but the checkpoint being resumed was written "
            f"with stage {resume_stage}, whose optimizer state has another layout. Set the stage to "
            f'{resume_stage} or "auto" (which keeps the checkpoint\'s).'
        )


def finalize(
    cfg: dict, world_size: int, total_steps: int, on_cpu: bool, source: str, resume_stage: int | None = None
) -> dict[str, Any]:
    """The config handed to DeepSpeed: batch resolved, ZeRO stage and scheduler length filled, CPU-safe
    optimizer. `resume_stage`: the ZeRO stage of the checkpoint a resumed run loads."""
    cfg = copy.deepcopy(cfg)
    resolve_zero_stage(cfg, world_size, resume_stage, source)
    tbs, mbs, gas = resolve_batch(cfg, world_size, source)
    cfg.update(train_batch_size=tbs, train_micro_batch_size_per_gpu=mbs, gradient_accumulation_steps=gas)
    sched = cfg.get("scheduler")
    _resolve_peak_lr(cfg, source)
    if sched and sched.get("type") in SCHEDULERS_WITH_TOTAL:
        params = sched.setdefault("params", {})
        if params.get("total_num_steps") in (None, "auto"):  # the run's length is ours (max_steps/epochs)
            params["total_num_steps"] = max(1, total_steps)
        if params.get("warmup_num_steps") == "auto":  # BioBERT's warmup_proportion 0.1, as HF's "auto"
            params["warmup_num_steps"] = max(1, round(0.1 * params["total_num_steps"]))
    bf16 = cfg.get("bf16") or {}
    if bf16.get("enabled"):
        # bf16 has fp32's exponent range and no loss scale, so DeepSpeed's per-parameter overflow scan (four
        # to six small kernels per tensor, ~1,600 launches per BERT-base step) finds nothing the global
        # gradient norm does not: on one H200 it was ~30 % of a ZeRO-1 step (bench/README.md, GPU). The loop
        # rolls back a step whose gradient norm is not finite instead. An explicit setting is kept.
        bf16.setdefault("check_grad_overflow", False)
    # DeepSpeed's throughput timer (on by default) synchronises the device around every step when no
    # dataloader is handed to it, which ours never is; the loop measures tokens/s itself. Kept if set.
    timers = cfg.setdefault("timers", {})
    if isinstance(timers, dict):
        timers.setdefault("throughput", {}).setdefault("enabled", False)
    opt_type = ((cfg.get("optimizer") or {}).get("type") or "").lower()
    if opt_type == "lamb" and cfg.get("zero_optimization", {}).get("stage", 0) >= 1:
        raise UserError(
            f"{source}: Lamb with ZeRO stage {cfg['zero_optimization']['stage']}: ZeRO hands the "
            "optimizer one flattened partition, so LAMB's per-layer trust ratio becomes a single global "
            "ratio, which is not LAMB. Use zero_optimization.stage 0 with Lamb (DeepSpeed's BERT "
            "recipe) or AdamW with ZeRO."
        )
    if on_cpu:
        if cfg.get("fp16", {}).get("enabled"):
            raise UserError(
                f"{source}: fp16 is a GPU setting (dynamic loss scaling); on CPU use a profile "
                "with bf16 or fp32, e.g. ds_configs/cpu.json"
            )
        opt = cfg.get("optimizer") or {}
        if opt.get("type", "").lower() in ("adam", "adamw"):
            # DeepSpeed's CPU FusedAdam is a C++ op compiled on first use (~60 s); torch's AdamW is exact.
            params = opt.setdefault("params", {})
            if params.setdefault("torch_adam", True):
                params.setdefault("fused", True)  # torch's fused CPU AdamW: ~15% faster steps than the loop
        if opt.get("type", "").lower() == "lamb":
            raise UserError(
                f"{source}: DeepSpeed's Lamb is a CUDA kernel and cannot run on CPU; use AdamW "
                "for CPU runs (ds_configs/cpu.json)"
            )
    return cfg
