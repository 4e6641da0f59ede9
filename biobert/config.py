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
from biobert.files import write_json  # noqa: F401  (the one atomic JSON writer, re-exported)

C = TypeVar("C")


@dataclasses.dataclass
class LoopConfig:
    """What the one training loop needs; pre-training and fine-tuning configs extend it."""

    run_dir: str = "runs/default"  # where checkpoints, metrics, exports and results go
    seed: int = 42  # data order, masks, dropout and new heads all derive from it
    max_steps: int = 0  # optimizer steps; 0 = derive from `epochs` where the task allows
    log_every: int = 10  # optimizer steps between metric records (and the only steps that read the device)
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
    elif (tp is dict or typing.get_origin(tp) is dict) and isinstance(value, (dict, str)):
        if isinstance(value, dict):
            return dict(value)
        pairs = [item.partition("=") for item in value.split(",") if item]  # CLI: key=value,key=value
        if all(sep for _, sep, _ in pairs):
            return {k.strip(): _json_or_text(v) for k, _, v in pairs}
    elif typing.get_origin(tp) is list and isinstance(value, (list, str)):
        items = value.split(",") if isinstance(value, str) else value
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
        return [inner(v) for v in items if v != ""]
    raise UserError(f"{source}: `{key}` expects {getattr(tp, '__name__', tp)}, got {value!r}")


def _json_or_text(text: str) -> Any:
    """A CLI value as JSON when it parses (20, 0.5, true), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _check_keys(cls: type, data: dict, source: str) -> None:
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise UserError(
            f"{source}: unknown key(s) {unknown}. Valid keys: {sorted(valid)}. "
            "DeepSpeed settings (batch, precision, ZeRO, optimizer, scheduler) belong in the "
            "--deepspeed_config JSON instead."
        )


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


def build_config(
    cls: type[C], file_values: dict | None = None, cli_values: dict | None = None, file_source: str = "config file"
) -> C:
    """Resolve default < file < CLI into an instance of `cls`."""
    merged: dict[str, Any] = {}
    for values, source in ((file_values or {}, file_source), (cli_values or {}, "command line")):
        _check_keys(cls, values, source)
        merged.update({k: _coerce(cls, k, v, source) for k, v in values.items()})
    return cls(**merged)


def field_help(cls: type) -> dict[str, str]:
    """Each field's trailing `# comment` in the dataclass source (and its bases'): the flag's --help line, so
    the one description of a setting lives beside its default."""
    import inspect
    import re

    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        above: list[str] = []  # a comment block right above a field describes it when it has none of its own
        for line in source.splitlines():
            field = re.match(r"^\s+(\w+): [^=]+=[^#]*(?:#\s*(.+))?$", line)
            if field:
                text = field.group(2) or " ".join(above)
                if text:
                    out[field.group(1)] = text.strip()
            comment = re.match(r"^\s+#\s*(.+)$", line)
            above = [*above, comment.group(1)] if comment else []
    return out


def add_config_args(parser: argparse.ArgumentParser, cls: type, recipe_note: str = "") -> None:
    """One `--name` flag per field; flags not given stay absent, so the file's value wins over the default."""
    parser.add_argument(
        "--config",
        default=None,
        help=f'JSON file with values for the flags below (and a "deepspeed" object of --ds overrides){recipe_note}',
    )
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _base_type(_field_types(cls)[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{helps.get(f.name, '')} (default: {default!r})".strip().replace("%", "%%")  # argparse
        if tp is bool:
            parser.add_argument(
                f"--{f.name}", nargs="?", const="true", default=argparse.SUPPRESS, metavar="BOOL", help=help_text
            )
        else:
            parser.add_argument(f"--{f.name}", default=argparse.SUPPRESS, help=help_text)


PATH_FIELDS = ("data_dir", "init_from", "run_dir", "tokenizer", "model_config")


def layout_root() -> Path | None:
    """BIOBERT_HOME: the folder holding the documented layout (datasets/, models/, shards/, runs/); relative
    paths in recipe and --config files are taken from it. Unset: the current directory."""
    home = os.environ.get("BIOBERT_HOME")
    return Path(home) if home else None


def layout_path(rel: str) -> Path:
    """A path of the documented layout (e.g. runs/ncbi_disease), under BIOBERT_HOME when it is set."""
    root = layout_root()
    return root / rel if root is not None and not Path(rel).is_absolute() else Path(rel)


def read_config_file(path: str | Path, what: str = "config") -> tuple[dict, list[str]]:
    """A run-config file: its values (relative paths resolved against BIOBERT_HOME) and its "deepspeed"
    object as --ds overrides ({"optimizer.params.lr": 2e-5} -> "optimizer.params.lr=2e-05"; null removes
    a key, e.g. to let gradient_accumulation_steps be derived)."""
    data = read_json(path, what)
    ds = data.pop("deepspeed", {}) or {}
    if not isinstance(ds, dict):
        raise UserError(
            f'{path}: "deepspeed" must be an object of DeepSpeed overrides, e.g. {{"optimizer.params.lr": 2e-5}}'
        )
    data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_note" keys are comments
    for key in PATH_FIELDS:
        if isinstance(data.get(key), str) and data[key]:
            data[key] = str(layout_path(data[key]))
    return data, [f"{k}={json.dumps(v)}" for k, v in ds.items()]


def config_from_args(cls: type[C], args: argparse.Namespace, recipe: str | Path | None = None) -> C:
    """default < `recipe` (a project recipe file, e.g. finetune/configs/<task>.json) < --config < flags. The
    files' "deepspeed" objects go before --ds in `args.ds` (the DeepSpeed JSON < recipe < --config < --ds)."""
    names = {f.name for f in dataclasses.fields(cls)}
    cli = {k: v for k, v in vars(args).items() if k in names}
    values: dict = {}
    ds: list[str] = []
    for path in (recipe, getattr(args, "config", None)):
        if path:
            file_values, file_ds = read_config_file(path)
            _check_keys(cls, file_values, str(path))
            values.update(file_values)
            ds += file_ds
    if hasattr(args, "ds"):
        args.ds = ds + list(args.ds or [])
    sources = [str(p) for p in (recipe, getattr(args, "config", None)) if p]
    return build_config(cls, values, cli, file_source=" + ".join(sources) or "config file")


def config_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
