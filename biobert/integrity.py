"""What a checkpoint must prove before a run loads it: its bytes are the ones written, and its pickles hold
nothing but data.

Every save ends by writing `integrity.json` (the sha256 and size of every file of the step, DeepSpeed's shards
and the Hugging Face export included) before `latest` moves to it. Every load (--resume, --resume_from, a
divergence rollback) checks it first, so a flipped block, a truncated copy or a half-synced directory stops
the run with the file that differs instead of resuming on garbage.

DeepSpeed reads its shards with `torch.load(weights_only=False)`, which runs whatever a pickle names. So
before DeepSpeed sees a file we list the globals its pickle references (`get_unsafe_globals_in_checkpoint`
reads them without executing anything) and refuse any outside the few DeepSpeed types its checkpoints hold.
The trust model: a checkpoint from someone else is data, never code; `--trust_checkpoint` lifts both checks
for a checkpoint you wrote with an older version (no integrity record) or whose extra types you have vetted.
"""

from __future__ import annotations

from pathlib import Path

from biobert.config import read_json, write_json
from biobert.errors import UserError
from biobert.files import file_sha256

RECORD = "integrity.json"
# Globals DeepSpeed 0.19's checkpoints pickle beyond torch's own safe set (ZeRO 1-3, bf16 and fp16 optimizers).
ALLOWED_GLOBALS = frozenset(
    {
        "deepspeed.runtime.zero.config.ZeroStageEnum",
        "deepspeed.runtime.fp16.loss_scaler.LossScaler",
        "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
        "deepspeed.utils.tensor_fragment.fragment_address",
    }
)
MODEL_STATES = "*model_states.pt"  # DeepSpeed's weights file(s) of a step: mp_rank_00_*, zero_pp_rank_*_mp_rank_00_*
_DERIVED = ("universal",)  # made from a verified step at resume time, not part of the step as written


def _files(tag_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in tag_dir.rglob("*")
        if p.is_file()
        and p.name != RECORD
        and p.relative_to(tag_dir).parts[0] not in _DERIVED
        and not p.name.endswith(".tmp")
    )


def _check_weights(tag_dir: Path, names: list[str], when: str) -> None:
    """A step without DeepSpeed's model-states file has no weights to load: a save cut short, or a folder moved
    while it was being written. Named here rather than left to DeepSpeed's bare `assert len(ckpt_list) > 0`."""
    if not any(Path(n).match(MODEL_STATES) for n in names):
        raise UserError(
            f"{tag_dir}: holds no model weights (no {MODEL_STATES} file{when}); the checkpoint is incomplete, "
            f"cut short while saving or moved while it was written. {_earlier(tag_dir)}"
        )


def write_record(tag_dir: Path) -> None:
    """Rank 0, after every rank's files are on disk and before `latest` points here."""
    files = {
        str(p.relative_to(tag_dir)): {"sha256": file_sha256(p), "bytes": p.stat().st_size} for p in _files(tag_dir)
    }
    _check_weights(tag_dir, list(files), " was written; `latest` still points to the previous one")
    write_json(tag_dir / RECORD, {"algorithm": "sha256", "files": files})


def verify(tag_dir: Path, trust: bool = False) -> None:
    """Raise UserError unless the step holds model weights (checked even with `trust`), every recorded file is
    present and unchanged, no unrecorded tensor file has appeared, and no pickle names a global outside
    ALLOWED_GLOBALS (`trust`: skip those last checks)."""
    _check_weights(tag_dir, [p.name for p in tag_dir.glob(MODEL_STATES)], "")
    if trust:
        return
    record_path = tag_dir / RECORD
    if not record_path.is_file():
        raise UserError(
            f"{tag_dir}: no {RECORD}, so nothing vouches for this checkpoint's bytes (it was written "
            "before checkpoints carried one, or copied without it). If you wrote it yourself, pass "
            "--trust_checkpoint true to load it anyway; checkpoints from others should come with it."
        )
    recorded = read_json(record_path, "checkpoint integrity record").get("files", {})
    for rel, meta in recorded.items():
        path = tag_dir / rel
        if not path.is_file():
            raise UserError(
                f"{path}: missing from the checkpoint (listed in {RECORD}); the copy is incomplete. {_earlier(tag_dir)}"
            )
        size = path.stat().st_size
        if size != meta["bytes"] or file_sha256(path) != meta["sha256"]:
            what = f"{size:,} bytes, {meta['bytes']:,} written" if size != meta["bytes"] else "same size, other bytes"
            raise UserError(
                f"{path}: differs from what was saved ({what}; sha256 mismatch): the checkpoint is "
                f"damaged. {_earlier(tag_dir)}"
            )
    extra = [p for p in _files(tag_dir) if str(p.relative_to(tag_dir)) not in recorded and p.suffix == ".pt"]
    if extra:
        raise UserError(
            f"{extra[0]}: a tensor file that was not part of the checkpoint when it was saved; remove "
            "it or resume from another checkpoint."
        )
    check_pickles([tag_dir / rel for rel in recorded if rel.endswith(".pt")])


def check_pickles(paths: list[Path]) -> None:
    import torch

    for path in paths:
        try:
            names = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception as e:  # noqa: BLE001  (any unreadable archive is a refusal, with its reason)
            raise UserError(
                f"{path}: not a torch checkpoint this project writes ({type(e).__name__}: {e}); its "
                "pickle cannot be inspected without running it. Refused."
            ) from None
        foreign = sorted(names - ALLOWED_GLOBALS)
        if foreign:
            raise UserError(
                f"{path}: the pickle references {', '.join(foreign[:5])}, which no checkpoint of this "
                "project holds; loading it would run code it names. Refused. Pass --trust_checkpoint "
                "true only if you wrote it yourself."
            )


def _earlier(tag_dir: Path) -> str:
    others = sorted(
        p.name for p in tag_dir.parent.glob("step_*") if p.is_dir() and p.name < tag_dir.name and (p / RECORD).is_file()
    )
    if not others:
        return "No earlier checkpoint with an integrity record is in this run; start a new --run_dir."
    return f"Resume from an earlier one with --resume_from {others[-1]} (earlier ones: {', '.join(others)})."
