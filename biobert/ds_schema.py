"""The keys DeepSpeed 0.19 reads below the top level, and the types it needs, so a typo is an error here.

DeepSpeed ignores an unknown key in `scheduler.params` (a misspelt `warmup_num_steps` trains on its default
schedule) and answers a wrong type deep inside pydantic or an optimizer's constructor with a traceback. The
tables are the installed version's constructor arguments and config models (tests/test_ds_config.py checks
them against it), so the check stays in step with the DeepSpeed the project pins.
"""

from __future__ import annotations

import difflib
import numbers

from biobert.errors import UserError

_ADAM = frozenset(
    """lr betas eps weight_decay amsgrad maximize foreach capturable differentiable fused
decoupled_weight_decay bias_correction adam_w_mode set_grad_none torch_adam fp32_optimizer_states""".split()
)
OPTIMIZER_PARAMS = {  # types whose params are checked; other types (torch.optim's own, DeepSpeed's rarer) pass
    "adam": _ADAM,
    "adamw": _ADAM,
    "lamb": frozenset(
        """lr bias_correction betas eps eps_inside_sqrt weight_decay max_grad_norm max_coeff
                         min_coeff amsgrad""".split()
    ),
}
DEEPSPEED_OPTIMIZERS = frozenset(
    "adagrad adam adamw lamb muadam muadamw musgd lion muon onebitadam zerooneadam onebitlamb".split()
)
SCHEDULER_PARAMS = {
    "LRRangeTest": frozenset(
        "lr_range_test_min_lr lr_range_test_step_size lr_range_test_step_rate "
        "lr_range_test_staircase last_batch_iteration".split()
    ),
    "OneCycle": frozenset(
        """cycle_min_lr cycle_max_lr decay_lr_rate cycle_first_step_size cycle_second_step_size
        cycle_first_stair_count cycle_second_stair_count decay_step_size cycle_momentum cycle_min_mom cycle_max_mom
        decay_mom_rate last_batch_iteration""".split()
    ),
    "WarmupLR": frozenset("warmup_min_lr warmup_max_lr warmup_num_steps warmup_type last_batch_iteration".split()),
    "WarmupDecayLR": frozenset(
        "total_num_steps warmup_min_lr warmup_max_lr warmup_num_steps warmup_type last_batch_iteration".split()
    ),
    "WarmupCosineLR": frozenset(
        "total_num_steps warmup_min_ratio warmup_num_steps cos_min_ratio warmup_type last_batch_iteration".split()
    ),
}
SECTION_KEYS = {
    "bf16": frozenset(
        "enabled immediate_grad_update check_grad_overflow bf16_master_weights_and_grads bf16_optimizer_states".split()
    ),
    "fp16": frozenset(
        "enabled auto_cast loss_scale initial_scale_power loss_scale_window hysteresis "
        "consecutive_hysteresis min_loss_scale fp16_master_weights_and_grads".split()
    ),
    "torch_autocast": frozenset("enabled dtype lower_precision_safe_modules".split()),
}
# Values that must be numbers ("auto" where ds_config.finalize fills them in).
NUMBERS = frozenset(
    """lr eps weight_decay max_grad_norm max_coeff min_coeff warmup_min_lr warmup_max_lr
warmup_num_steps total_num_steps warmup_min_ratio cos_min_ratio cycle_min_lr cycle_max_lr decay_lr_rate
lr_range_test_min_lr lr_range_test_step_size lr_range_test_step_rate loss_scale initial_scale_power
loss_scale_window hysteresis min_loss_scale""".split()
)
AUTO = frozenset({"warmup_max_lr", "warmup_num_steps", "total_num_steps"})
BOOLEANS = frozenset(
    """enabled torch_adam fused foreach amsgrad adam_w_mode bias_correction check_grad_overflow
immediate_grad_update consecutive_hysteresis auto_cast""".split()
)


def _unknown(where: str, keys, valid: frozenset, source: str) -> None:
    bad = [k for k in keys if k not in valid]
    if bad:
        hints = "; ".join(
            f"`{k}`" + (f" (did you mean `{m[0]}`?)" if (m := difflib.get_close_matches(k, sorted(valid), n=1)) else "")
            for k in bad
        )
        raise UserError(
            f"{source}: unknown key(s) in {where}: {hints}. DeepSpeed would ignore them silently. "
            f"Valid: {', '.join(sorted(valid))}"
        )


def _types(where: str, params: dict, source: str) -> None:
    for key, value in params.items():
        if (
            key in NUMBERS
            and not (isinstance(value, numbers.Real) and not isinstance(value, bool))
            and not (key in AUTO and value == "auto")
        ):
            auto = ' or "auto"' if key in AUTO else ""
            raise UserError(f"{source}: {where}.{key} must be a number{auto}, got {value!r}")
        if key in BOOLEANS and not isinstance(value, bool):
            raise UserError(f"{source}: {where}.{key} must be true or false, got {value!r}")
        if key == "betas" and not (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in value)
        ):
            raise UserError(f"{source}: {where}.betas must be two numbers like [0.9, 0.999], got {value!r}")


def _section(cfg: dict, name: str, source: str) -> dict:
    value = cfg.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{source}: `{name}` must be an object, got {value!r}")
    return value


def validate_nested(cfg: dict, source: str) -> None:
    """The optimizer and scheduler (type and params), and the precision sections."""
    import torch

    opt = _section(cfg, "optimizer", source)
    if opt:
        _unknown("optimizer", opt, frozenset({"type", "params"}), source)
        kind = str(opt.get("type", ""))
        torch_names = {n.lower(): n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)}
        if kind.lower() not in DEEPSPEED_OPTIMIZERS and kind.lower() not in torch_names:
            near = difflib.get_close_matches(kind, ["AdamW", "Adam", "Lamb", "Lion", "Adagrad"], n=1)
            raise UserError(
                f"{source}: optimizer.type {kind!r} is neither a DeepSpeed optimizer nor a torch.optim "
                f"class{f' (did you mean `{near[0]}`?)' if near else ''}"
            )
        params = _section(opt, "params", source)
        if kind.lower() in OPTIMIZER_PARAMS:
            _unknown(f"optimizer.params ({kind})", params, OPTIMIZER_PARAMS[kind.lower()], source)
        _types("optimizer.params", params, source)
    sched = _section(cfg, "scheduler", source)
    if sched:
        _unknown("scheduler", sched, frozenset({"type", "params"}), source)
        kind = sched.get("type")
        if kind not in SCHEDULER_PARAMS:
            near = difflib.get_close_matches(str(kind), sorted(SCHEDULER_PARAMS), n=1)
            raise UserError(
                f"{source}: scheduler.type {kind!r} is not a DeepSpeed schedule"
                f"{f' (did you mean `{near[0]}`?)' if near else ''}; valid: {', '.join(SCHEDULER_PARAMS)}"
            )
        params = _section(sched, "params", source)
        _unknown(f"scheduler.params ({kind})", params, SCHEDULER_PARAMS[kind], source)
        _types("scheduler.params", params, source)
    for name, valid in SECTION_KEYS.items():
        section = _section(cfg, name, source)
        _unknown(name, section, valid, source)
        _types(name, {k: v for k, v in section.items() if k != "loss_scale" or v != 0}, source)
