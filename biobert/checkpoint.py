"""Training state, DeepSpeed checkpoints with exact resume, and Hugging Face export at every save.

Layout of a run directory:

    run_dir/config.json, ds_config.json     resolved configs (written at start)
    run_dir/metrics.jsonl, tensorboard/     metrics
    run_dir/checkpoints/latest              tag of the newest complete checkpoint (DeepSpeed's pointer)
    run_dir/checkpoints/step_00000100/      DeepSpeed shards + train_state.json + run_config.json
    run_dir/checkpoints/step_00000100/hf/   Hugging Face export (config.json, weights, tokenizer files)
    run_dir/hf -> checkpoints/<newest>/hf   what `from_pretrained` / `--init_from` should point at

Randomness needs no stored generator state: the loop derives every step's seed from (run seed, step,
rank), so a resumed run draws the same dropout and masking as the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from biobert import integrity
from biobert.config import read_json, write_json
from biobert.errors import UserError
from biobert.faults import NO_FAULTS, Faults
from biobert.files import file_sha256, git_sha

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class TrainState:
    """All mutable training progress; saved with every checkpoint and restored by --resume."""

    step: int = 0  # optimizer steps completed
    micro_step: int = 0  # micro-batches completed on each rank
    samples_seen: int = 0  # examples consumed, all ranks together: the data position
    tokens_seen: int = 0  # non-padding tokens consumed, all ranks together
    elapsed_s: float = 0.0  # training wall time, summed over resumes
    best_metric: float | None = None
    best_step: int | None = None
    skip_positions: list[int] = dataclasses.field(default_factory=list)  # global batches that diverged
    rollbacks: int = 0
    recent_losses: list[float] = dataclasses.field(default_factory=list)  # the divergence guard's window
    world_size: int = 1  # ranks that wrote the latest checkpoint (a different count resumes via universal)


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_tag(run_dir: str | Path) -> str | None:
    pointer = checkpoint_dir(run_dir) / "latest"
    return pointer.read_text().strip() if pointer.is_file() else None


def run_done(run_dir: str | Path, done: str | Callable[[Path], bool] = "results.json") -> bool:
    """Whether the run in `run_dir` is finished: `done` names the file it writes last (results.json for
    fine-tuning, result.json for pre-training), or is a test of the folder (e.g. "result.json says step N")."""
    run_dir = Path(run_dir)
    return done(run_dir) if callable(done) else (run_dir / done).is_file()


def run_or_resume(run_dir: str | Path, done: str | Callable[[Path], bool] = "results.json") -> str:
    """The one skip / resume / restart policy for a run an orchestrator owns (protocol, cross-validation, the
    reproduction's pre-training): "done" when `run_done(run_dir, done)` (read it back, never re-run); "resume"
    when a checkpoint exists (continue it exactly); else the run starts from nothing: "restart" when a run
    stopped before its first checkpoint left a folder (nothing in it can be continued, so it is cleared), or
    "fresh" when there was none. A stage's "is it finished?" test uses run_done with the same `done`, so
    the two agree."""
    run_dir = Path(run_dir)
    if run_done(run_dir, done):
        return "done"
    if latest_tag(run_dir) is not None:
        return "resume"
    if run_dir.exists():
        shutil.rmtree(run_dir)
        return "restart"
    return "fresh"


def check_fresh_run_dir(run_dir: str | Path) -> None:
    """Refuse to start a new run on top of an old one: its checkpoints and metrics would be mixed."""
    if latest_tag(run_dir) is not None or (Path(run_dir) / "metrics.jsonl").exists():
        raise UserError(
            f"{run_dir}: already holds a run. Pass --resume to continue it, or choose a new "
            "--run_dir (nothing was overwritten)."
        )


def resume_tag(run_dir: str | Path, tag: str = "") -> str:
    """The checkpoint --resume loads: `latest`, or `tag` (--resume_from: a tag or a step number)."""
    if tag:
        tag = f"step_{int(tag):08d}" if str(tag).isdigit() else str(tag)
        if not (checkpoint_dir(run_dir) / tag).is_dir():
            have = sorted(p.name for p in checkpoint_dir(run_dir).glob("step_*"))
            raise UserError(
                f"--resume_from {tag}: no such checkpoint in {checkpoint_dir(run_dir)} "
                f"(there: {', '.join(have) or 'none'})"
            )
    else:
        tag = latest_tag(run_dir)
    if tag is None:
        raise UserError(
            f"--resume: no checkpoint in {checkpoint_dir(run_dir)} (no `latest` file). "
            "Remove --resume to start a new run there."
        )
    tag_dir = checkpoint_dir(run_dir) / tag
    if not (tag_dir / "train_state.json").is_file():
        raise UserError(
            f"--resume: checkpoint {tag_dir} is incomplete (no train_state.json); it was "
            "probably interrupted while saving. Resume from an older one with --resume_from TAG."
        )
    return tag


@dataclasses.dataclass
class ResumePlan:
    tag: str  # what Engine.load_checkpoint loads (a tag, or `<tag>/universal`)
    universal: bool  # load as DeepSpeed's universal checkpoint
    zero_stage: int | None  # the stage the checkpoint was written with (None: not recorded)
    tag_dir: Path | None = None  # the step's directory (its run_config.json: what defines the run)


def prepare_resume(run_dir: str | Path, world_size: int, tag: str = "", trust: bool = False) -> ResumePlan:
    """How --resume loads its checkpoint, after verifying it (biobert/integrity.py). One written by a different
    number of ranks with partitioned optimizer state (ZeRO >= 1, or bf16's partitioned optimizer) is converted
    once to DeepSpeed's universal format (`<tag>/universal`), which any world size loads. An unpartitioned one
    (ZeRO-0: the whole optimizer state in the model-states file) loads on any number of ranks as it is."""
    tag = resume_tag(run_dir, tag)
    tag_dir = checkpoint_dir(run_dir) / tag
    integrity.verify(tag_dir, trust)
    saved = read_json(tag_dir / "train_state.json", "train state").get("world_size", 1)
    ds_path = tag_dir / "ds_config.json"
    stage = (
        read_json(ds_path, "DeepSpeed config").get("zero_optimization", {}).get("stage", 0)
        if ds_path.is_file()
        else None
    )
    if saved == world_size or not any(tag_dir.glob("*optim_states.pt")):
        return ResumePlan(tag, False, stage, tag_dir)
    from biobert.engine import convert_to_universal

    convert_to_universal(tag_dir, tag_dir / "universal")
    if not trust:  # made here from the verified step, but a folder left from an earlier resume is read as it is
        integrity.check_pickles(sorted((tag_dir / "universal").rglob("*.pt")))
    return ResumePlan(f"{tag}/universal", True, stage, tag_dir)


# What may differ between a run and the checkpoint it resumes (docs/reliability.md).
MAY_CHANGE = (
    "the number of ranks (same global batch), the learning rate and schedule (--ds), max_steps, the "
    "log/eval/save cadence, keep_last, the divergence guard"
)


def check_same_run(plan: ResumePlan, identity: dict) -> None:
    """Refuse to resume a checkpoint of another run: `identity` (what defines this run: data, global batch,
    seed, model, objective) must equal the one saved in the checkpoint's run_config.json."""
    saved = read_json(plan.tag_dir / "run_config.json", "run config").get("identity")
    if saved is None:  # written before checkpoints recorded it: nothing to compare
        return
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r}, now {identity.get(k)!r}"
        for k in sorted(set(saved) | set(identity))
        if saved.get(k) != identity.get(k)
    ]
    if diffs:
        raise UserError(
            f"--resume: {plan.tag_dir} belongs to another run; what defines a run differs: "
            f"{'; '.join(diffs)}. Resume with the checkpoint's settings, or start a new --run_dir. "
            f"What may change on resume: {MAY_CHANGE}."
        )


def state_from_client(client: dict, source: str) -> TrainState:
    data = client.get("train_state")
    if not isinstance(data, dict):
        raise UserError(f"{source}: checkpoint has no train_state; was it written by this project?")
    return TrainState(**{f.name: data[f.name] for f in dataclasses.fields(TrainState) if f.name in data})


def _write_pointer(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prune(ckpt: Path, keep_last: int, current: str) -> None:
    tags = sorted(p.name for p in ckpt.glob("step_*") if p.is_dir())
    for tag in tags[:-keep_last] if keep_last > 0 else []:
        if tag != current:
            shutil.rmtree(ckpt / tag, ignore_errors=True)


def save(
    engine: Any,
    run_dir: str | Path,
    state: TrainState,
    run_config: dict,
    exporter: Any | None = None,
    keep_last: int = 0,
    faults: Faults = NO_FAULTS,
) -> Path:
    """Collective and atomic: DeepSpeed shards, our JSON and the HF export are written first; only then do
    `latest` and `run_dir/hf` move (rank 0, atomic renames), so a crash mid-save leaves the previous
    checkpoint as the one --resume uses. Older checkpoints beyond `keep_last` are removed afterwards."""
    ckpt = checkpoint_dir(run_dir)
    tag = f"step_{state.step:08d}"
    state.world_size = engine.world_size
    if engine.rank == 0 and (ckpt / tag).exists():  # left by a run resumed --resume_from an earlier step
        shutil.rmtree(ckpt / tag)
    engine.barrier()
    client = {"train_state": dataclasses.asdict(state), "run_config": run_config, "git_sha": git_sha()}
    engine.save_checkpoint(ckpt, tag, client)
    faults.in_save(tag, engine.rank)  # crash-in-save tests
    tag_dir = ckpt / tag
    if engine.rank == 0:
        write_json(tag_dir / "run_config.json", run_config)
        write_json(tag_dir / "ds_config.json", engine.config)
        write_json(tag_dir / "train_state.json", {**dataclasses.asdict(state), "git_sha": client["git_sha"]})
    if exporter is not None:
        exporter(
            engine,
            tag_dir / "hf",
            {
                "run_config": run_config,
                "ds_config": engine.config,
                "train_state": dataclasses.asdict(state),
                "git_sha": client["git_sha"],
            },
        )
    engine.barrier()  # every rank's shards are on disk before the pointer moves
    if engine.rank == 0:
        integrity.write_record(tag_dir)
        _write_pointer(ckpt / "latest", tag)
        if exporter is not None:
            tmp = Path(run_dir) / ".hf.tmp"
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(os.path.relpath(tag_dir / "hf", run_dir), tmp)
            tmp.replace(Path(run_dir) / "hf")
        _prune(ckpt, keep_last, tag)
    engine.barrier()
    return tag_dir


def export_hf_model(
    engine: Any,
    out_dir: Path,
    provenance: dict,
    prefix: str,
    hf_model: Any,
    tokenizer: Any,
    extra_files: dict[str, dict] | None = None,
    vocab_size: int = 0,
    labels: list[str] | None = None,
) -> None:
    """Write `hf_model`'s config with the engine's current weights (collected from key `prefix`).
    `vocab_size`: the real vocabulary of a model trained with a padded one (models.pad_vocab): the export
    is sliced back to it, so it loads with the original vocab.txt. `labels`: the class names the export's
    id2label/label2id carry instead of the ones the model trains with (an NER tagger's typed B-Disease for the
    corpus's B), which is what Hugging Face pipelines report. The tokenizer's model_max_length is the model's
    position limit, so a pipeline never feeds a longer sequence."""
    state = engine.full_state_dict()  # collective under ZeRO-3
    if engine.rank != 0:
        return
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    padded = hf_model.config.vocab_size
    if vocab_size and vocab_size != padded:
        from biobert.models import unpad_vocab

        weights = unpad_vocab(weights, vocab_size)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    config = hf_model.config
    kept = (config.vocab_size, config.id2label, config.label2id)
    config.vocab_size = vocab_size or padded
    if labels is not None:
        if len(labels) != len(config.id2label):
            raise ValueError(f"export labels {labels}: the model has {len(config.id2label)} classes")
        config.id2label, config.label2id = dict(enumerate(labels)), {x: i for i, x in enumerate(labels)}
    try:
        hf_model.save_pretrained(str(tmp), state_dict=weights, safe_serialization=True)
    finally:
        config.vocab_size, config.id2label, config.label2id = kept
    tokenizer.save(tmp)
    tok_config = read_json(tmp / "tokenizer_config.json", "tokenizer config")
    tok_config["model_max_length"] = min(tok_config.get("model_max_length", 512), config.max_position_embeddings)
    write_json(tmp / "tokenizer_config.json", tok_config)
    write_json(tmp / "biobert_run.json", provenance)
    for name, data in (extra_files or {}).items():
        write_json(tmp / name, data)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)


def read_provenance(hf_dir: str | Path) -> dict:
    path = Path(hf_dir) / "biobert_run.json"
    return read_json(path, "provenance") if path.is_file() else {}


def rewrite_export_file(hf_dir: str | Path, name: str, text: str) -> Path:
    """Replace a text file of an export after its save (a model card that now has the run's test scores). The
    step's integrity record is updated for that one file, so --resume still verifies every other byte."""
    hf_dir = Path(hf_dir).resolve()  # run_dir/hf is a link into checkpoints/<tag>/hf
    path = hf_dir / name
    tmp = path.with_name(f"{name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    record = hf_dir.parent / integrity.RECORD
    rel = str(path.relative_to(hf_dir.parent))
    if record.is_file():
        data = read_json(record, "checkpoint integrity record")
        if rel in data.get("files", {}):
            data["files"][rel] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
            write_json(record, data)
    return path
