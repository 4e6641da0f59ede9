"""Run configuration: dataclass default < JSON file < CLI flag, unknown keys are an error.

DeepSpeed owns everything its JSON can hold (batch arithmetic, precision, ZeRO, optimizer, scheduler,
clipping); these dataclasses hold the rest and never repeat a DeepSpeed key, so each number lives in one
place. Every resolved config is written next to the run's outputs and into each checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from biobert.errors import UserError

C = TypeVar("C")


@dataclasses.dataclass
class LoopConfig:
    """What the one training loop needs; pre-training and fine-tuning configs extend it."""

    run_dir: str = "runs/default"
    seed: int = 42
    max_steps: int = 0  # optimizer steps; 0 = derive from `epochs` where the task allows
    log_every: int = 10
    eval_every: int = 0  # optimizer steps between evaluations; 0 = only at the end
    save_every: int = 0  # optimizer steps between checkpoints; 0 = only at the end
    resume: bool = False  # continue this run_dir's latest checkpoint (exact state); error if none
    resume_from: str = ""  # continue from this checkpoint tag or step instead of `latest` (implies --resume)
    trust_checkpoint: bool = False  # load a checkpoint without an integrity record or with foreign pickled types
    progress: bool = True  # progress bar on rank 0
    export_hf: bool = True  # export a Hugging Face directory at every checkpoint
    keep_last: int = 0  # checkpoints to keep (the newest K); 0 keeps all
    divergence_factor: float = 0.0  # roll back when the loss exceeds this x its recent mean; 0 = off
    divergence_window: int = 20  # optimizer steps in that recent mean
    max_rollbacks: int = 3  # then stop with an error (non-finite losses always roll back)
    peak_tflops: float = 0.0  # the device's peak for MFU; 0 = from the GPU table (none on CPU)
    # torch.compile the training module (engine.compile): "" off, "auto" (on a GPU only), "default",
    # "max-autotune", or "reduce-overhead" (CUDA graphs too; refused with gradient accumulation, pytorch#169545)
    compile: str = ""
    compile_backend: str = "inductor"  # torch.compile backend ("aot_eager": tests, no code generation)

    def __post_init__(self) -> None:
        if self.resume_from:
            self.resume = True


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _base_type(tp: Any) -> tuple[type, bool]:
    """(scalar type, optional?) for annotations like `int`, `str | None`, `Optional[float]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _coerce(cls: type, key: str, value: Any, source: str) -> Any:
    tp, optional = _base_type(_field_types(cls)[key])
    if value is None:
        if optional:
            return None
        raise UserError(f"{source}: `{key}` may not be null")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
    elif tp is int and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return int(value)
        except ValueError:
            pass
    elif tp is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    elif tp is str and isinstance(value, (str, int, float)):
        return str(value)
    elif typing.get_origin(tp) is list and isinstance(value, (list, str)):
        items = value.split(",") if isinstance(value, str) else value
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
        return [inner(v) for v in items if v != ""]
    raise UserError(f"{source}: `{key}` expects {getattr(tp, '__name__', tp)}, got {value!r}")


def _check_keys(cls: type, data: dict, source: str) -> None:
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise UserError(f"{source}: unknown key(s) {unknown}. Valid keys: {sorted(valid)}. "
                        "DeepSpeed settings (batch, precision, ZeRO, optimizer, scheduler) belong in the "
                        "--deepspeed_config JSON instead.")


def read_json(path: str | Path, what: str = "config") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}:{e.colno}: malformed JSON in {what}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {e.start}): {e.reason}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: {what} must be a JSON object, got {type(data).__name__}")
    return data


def build_config(cls: type[C], file_values: dict | None = None, cli_values: dict | None = None,
                 file_source: str = "config file") -> C:
    """Resolve default < file < CLI into an instance of `cls`."""
    merged: dict[str, Any] = {}
    for values, source in ((file_values or {}, file_source), (cli_values or {}, "command line")):
        _check_keys(cls, values, source)
        merged.update({k: _coerce(cls, k, v, source) for k, v in values.items()})
    return cls(**merged)


def add_config_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--name` flag per field; flags not given stay absent, so the file's value wins over the default."""
    parser.add_argument("--config", default=None, help="JSON file with values for the flags below")
    for f in dataclasses.fields(cls):
        tp, _ = _base_type(_field_types(cls)[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"(default: {default!r})"
        if tp is bool:
            parser.add_argument(f"--{f.name}", nargs="?", const="true", default=argparse.SUPPRESS,
                                metavar="BOOL", help=help_text)
        else:
            parser.add_argument(f"--{f.name}", default=argparse.SUPPRESS, help=help_text)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    names = {f.name for f in dataclasses.fields(cls)}
    cli = {k: v for k, v in vars(args).items() if k in names}
    file_values = read_json(args.config) if getattr(args, "config", None) else None
    return build_config(cls, file_values, cli, file_source=str(getattr(args, "config", None)))


def config_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def write_json(path: str | Path, data: dict) -> None:
    """Write atomically so a reader never sees half a file (a temporary file per process, so two writers
    never share one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
