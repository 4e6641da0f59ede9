import json
import re
from pathlib import Path

import pytest

from biobert.ds_config import ZERO_KEYS, finalize, load_ds_config, resolve_batch, validate
from biobert.errors import UserError


def test_unknown_top_level_key_suggests_the_right_one():
    with pytest.raises(UserError, match="gradient_acumulation_steps.*did you mean `gradient_accumulation_steps`"):
        validate({"gradient_acumulation_steps": 4}, "x.json")


def test_unknown_zero_key():
    with pytest.raises(UserError, match="zero_optimization.*stag"):
        validate({"zero_optimization": {"stag": 1}}, "x.json")


def test_zero_key_table_matches_installed_deepspeed():
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    installed = {f.alias or n for n, f in DeepSpeedZeroConfig.model_fields.items()}
    assert installed <= ZERO_KEYS


@pytest.mark.parametrize(
    "cfg,world,expected",
    [
        ({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4}, 2, (32, 4, 4)),
        ({"train_batch_size": 32, "gradient_accumulation_steps": 2}, 2, (32, 8, 2)),
        ({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2}, 8, (64, 4, 2)),
        (
            {"train_batch_size": 256, "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 4},
            8,
            (256, 8, 4),
        ),
    ],
)
def test_batch_arithmetic(cfg, world, expected):
    assert resolve_batch(cfg, world, "x") == expected


def test_batch_arithmetic_error_says_what_to_change():
    cfg = {"train_batch_size": 256, "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 4}
    with pytest.raises(
        UserError,
        match=r"256 != micro 8 x accumulation 4 x world size 2 = 64.*"
        r"gradient_accumulation_steps to 16",
    ):
        resolve_batch(cfg, 2, "x")
    with pytest.raises(UserError, match="not divisible"):
        resolve_batch({"train_batch_size": 30, "train_micro_batch_size_per_gpu": 4}, 2, "x")


def test_finalize_fills_schedule_and_cpu_optimizer():
    cfg = {
        "train_batch_size": 8,
        "train_micro_batch_size_per_gpu": 4,
        "optimizer": {"type": "AdamW", "params": {"lr": 3e-5}},
        "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_num_steps": "auto", "warmup_max_lr": "auto"}},
    }
    out = finalize(cfg, 1, 200, on_cpu=True, source="x")
    params = out["scheduler"]["params"]
    assert (params["total_num_steps"], params["warmup_num_steps"], params["warmup_max_lr"]) == (200, 20, 3e-5)
    assert out["optimizer"]["params"]["torch_adam"] is True
    assert out["gradient_accumulation_steps"] == 2
    assert "total_num_steps" not in cfg["scheduler"]["params"]  # the input is not mutated


def test_bf16_overflow_scan_is_off_unless_set():
    base = {"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}}
    out = finalize({**base, "bf16": {"enabled": True}}, 1, 10, False, "x")
    assert out["bf16"]["check_grad_overflow"] is False  # the loop checks the gradient norm instead
    kept = finalize({**base, "bf16": {"enabled": True, "check_grad_overflow": True}}, 1, 10, False, "x")
    assert kept["bf16"]["check_grad_overflow"] is True
    assert "check_grad_overflow" not in finalize({**base, "bf16": {"enabled": False}}, 1, 10, False, "x")["bf16"]


def test_conflicting_peak_lr_and_cpu_fp16_are_errors():
    base = {"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}}
    with pytest.raises(UserError, match="warmup_max_lr"):
        finalize({**base, "scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": 5e-5}}}, 1, 10, True, "x")
    with pytest.raises(UserError, match="fp16 is a GPU setting"):
        finalize({**base, "fp16": {"enabled": True}}, 1, 10, True, "x")


def test_shipped_profiles_are_valid():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "ds_configs").glob("*.json")):
        cfg = load_ds_config(path)
        finalize(
            cfg,
            cfg.get("train_batch_size", 8)
            // cfg.get("train_micro_batch_size_per_gpu", 1)
            // cfg.get("gradient_accumulation_steps", 1)
            or 1,
            1000,
            on_cpu=False,
            source=str(path),
        )


def test_malformed_ds_json(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text("{ not json")
    with pytest.raises(UserError, match=r"ds.json:1:\d+: malformed JSON in DeepSpeed config"):
        load_ds_config(path)
    path.write_text(json.dumps({"train_batch_size": 8, "optimizer": {"type": "AdamW"}}))
    assert load_ds_config(path, ["optimizer.params.lr=2e-5"])["optimizer"]["params"]["lr"] == 2e-5
    path.write_text(json.dumps({"train_batch_size": 8}))
    with pytest.raises(UserError, match="optimizer.type '' is neither"):  # params without an optimizer
        load_ds_config(path, ["optimizer.params.lr=2e-5"])


def test_lamb_under_zero_is_refused_with_the_reason():
    cfg = {
        "train_batch_size": 8,
        "optimizer": {"type": "Lamb", "params": {"lr": 1e-3}},
        "zero_optimization": {"stage": 1},
    }
    with pytest.raises(UserError, match="not LAMB"):
        finalize(cfg, 1, 10, on_cpu=False, source="x")
    finalize({**cfg, "zero_optimization": {"stage": 0}}, 1, 10, on_cpu=False, source="x")


def test_zero_stage_auto_is_0_on_one_rank_1_on_several_and_keeps_a_resumed_checkpoints():
    cfg = {"train_batch_size": 8, "zero_optimization": {"stage": "auto"}}
    validate(cfg, "x")
    stage = lambda out: out["zero_optimization"]["stage"]  # noqa: E731
    assert stage(finalize(cfg, 1, 10, on_cpu=True, source="x")) == 0
    assert stage(finalize(cfg, 2, 10, on_cpu=True, source="x")) == 1
    assert stage(finalize(cfg, 1, 10, on_cpu=True, source="x", resume_stage=1)) == 1
    assert stage(finalize(cfg, 2, 10, on_cpu=True, source="x", resume_stage=0)) == 0
    assert cfg["zero_optimization"]["stage"] == "auto"  # the caller's dict is not modified
    lamb = {**cfg, "optimizer": {"type": "Lamb", "params": {"lr": 1e-3}}}
    assert stage(finalize(lamb, 1, 10, on_cpu=False, source="x")) == 0  # LAMB stays LAMB on one GPU
    with pytest.raises(UserError, match="not LAMB"):
        finalize(lamb, 8, 10, on_cpu=False, source="x")


def test_explicit_zero_stage_with_another_layout_than_the_checkpoint_is_refused():
    cfg = {"train_batch_size": 8, "zero_optimization": {"stage": 1}}
    assert finalize(cfg, 1, 10, on_cpu=True, source="x", resume_stage=2)["zero_optimization"]["stage"] == 1
    with pytest.raises(UserError, match=r"checkpoint being resumed was written with stage 0.*\"auto\""):
        finalize(cfg, 1, 10, on_cpu=True, source="x", resume_stage=0)
    with pytest.raises(UserError, match="must be 0, 1, 2, 3 or"):
        validate({"train_batch_size": 8, "zero_optimization": {"stage": "two"}}, "x")


@pytest.mark.parametrize(
    "override,message",
    [
        ("scheduler.params.warmup_num_step=10", "did you mean `warmup_num_steps`"),
        ("scheduler.parms={}", "did you mean `params`"),
        ("optimizer.params.weight_decya=0.1", "did you mean `weight_decay`"),
        ("bf16.enabeld=true", "did you mean `enabled`"),
        ("optimizer.type=AdamWW", "neither a DeepSpeed optimizer nor a torch.optim class"),
        ("optimizer.params.lr=abc", "optimizer.params.lr must be a number, got 'abc'"),
        ("optimizer.params.betas=0.9", "betas must be two numbers"),
        ("scheduler.type=WarmupDecay", "did you mean `WarmupDecayLR`"),
        ("fp16.enabled=yes", "fp16.enabled must be true or false"),
    ],
)
def test_nested_deepspeed_keys_and_types_are_checked(override, message):
    """DeepSpeed ignores unknown nested keys (a misspelt scheduler key trains on its default schedule) and
    answers bad types with tracebacks from deep inside: every level it reads is checked here first."""
    from biobert.ds_config import load_ds_config

    with pytest.raises(UserError, match=re.escape(message)):
        load_ds_config(Path(__file__).resolve().parents[1] / "ds_configs" / "cpu.json", [override])


def test_nested_key_tables_match_the_installed_deepspeed():
    import inspect

    import torch
    from deepspeed.ops.adam import FusedAdam
    from deepspeed.ops.lamb import FusedLamb
    from deepspeed.runtime import lr_schedules
    from deepspeed.runtime.config import DEEPSPEED_OPTIMIZERS
    from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config

    from biobert import ds_schema

    def args(cls):
        return set(list(inspect.signature(cls.__init__).parameters)[2:])

    assert args(torch.optim.AdamW) | args(torch.optim.Adam) | args(FusedAdam) <= ds_schema.OPTIMIZER_PARAMS["adamw"]
    assert args(FusedLamb) == ds_schema.OPTIMIZER_PARAMS["lamb"]
    for name in lr_schedules.VALID_LR_SCHEDULES:
        assert args(getattr(lr_schedules, name)) == ds_schema.SCHEDULER_PARAMS[name], name
    assert set(DeepSpeedBF16Config.model_fields) == ds_schema.SECTION_KEYS["bf16"]
    assert set(DeepSpeedFP16Config.model_fields) == ds_schema.SECTION_KEYS["fp16"]
    assert set(DEEPSPEED_OPTIMIZERS) <= ds_schema.DEEPSPEED_OPTIMIZERS
