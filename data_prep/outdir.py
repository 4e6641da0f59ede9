"""The prepared directory's bookkeeping: run identity, per-file done markers, manifests, and `merge`.

    <out>/run.json                        identity of the run in progress (config, tokenizer and inputs hashes)
    <out>/done/<unit>.json                one per finished unit (an input file, or a group of single-article
                                          files, see parallel.py), written atomically and LAST for it
    <out>/manifest.part-<i>-of-<N>.json   with --part: the part's manifest, written when the part is done
    <out>/manifest.json                   written last (by the run, or by `merge` from the parts)

A done marker holds everything the manifest says about its file (input identity and sha256, counts,
skips, error, shards with rows and sha256), so manifests are assembled from markers only, and a resumed
run, a part and `merge` all produce the same manifest from the same markers.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

from biobert.errors import UserError
from data_prep.pipeline import SplitStats
from data_prep.shards import MANIFEST, SPLITS, write_json_atomic, write_manifest
from data_prep.supersede import INDEX_DIR

RUN_FILE = "run.json"
DONE_DIR = "done"
_PART_FILE = re.compile(r"manifest\.part-(\d+)-of-(\d+)\.json")
_IDENTITY_KEYS = ("config_hash", "tokenizer_hash", "inputs_hash")


def part_manifest_name(index: int, count: int) -> str:
    return f"manifest.part-{index}-of-{count}.json"


def marker_path(out: Path, unit: str) -> Path:
    return out / DONE_DIR / f"{unit}.json"


def clear_unit(out: Path, unit: str) -> None:
    """Remove a file's marker (first: it must never outlive its shards) and its partial shards."""
    marker_path(out, unit).unlink(missing_ok=True)
    for split in SPLITS:
        shutil.rmtree(out / split / unit, ignore_errors=True)


def read_marker(out: Path, unit: str) -> dict | None:
    try:
        return json.loads(marker_path(out, unit).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_marker(out: Path, unit: str, marker: dict) -> None:
    (out / DONE_DIR).mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker_path(out, unit), marker)


def marker_is_current(out: Path, marker: dict | None, expect: dict) -> bool:
    """Same input (size, mtime), same config, tokenizer and supersession index, and its shards all there."""
    if marker is None:
        return False
    if any(marker.get(k) != v for k, v in expect.items() if k != "input"):
        return False
    if any(marker["input"].get(k) != v for k, v in expect["input"].items()):
        return False
    return all((out / s["file"]).is_file() for split in SPLITS for s in marker["shards"][split])


def _finished_manifests(out: Path, part: tuple[int, int] | None) -> list[Path]:
    names = [MANIFEST] + ([part_manifest_name(*part)] if part else [])
    return [out / n for n in names if (out / n).exists()]


def claim(out: Path, identity: dict, units: list[str], part: tuple[int, int] | None, overwrite: bool) -> None:
    """Check `out` against the run about to start: refuse finished or foreign output, clear on --overwrite.

    Without --overwrite an unfinished run with the same identity is resumed (its done markers are kept).
    With --part, only this part's files, its part manifest and the merged manifest are cleared, so parts
    running at the same time never delete each other's work.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    finished = _finished_manifests(out, part)
    previous = json.loads((out / RUN_FILE).read_text(encoding="utf-8")) if (out / RUN_FILE).is_file() else None
    if not overwrite:
        if finished:
            raise UserError(
                f"{out}: already holds prepared shards ({finished[0].name}); pass --overwrite to "
                "replace them or choose another --out"
            )
        changed = [k for k in _IDENTITY_KEYS if previous is not None and previous.get(k) != identity[k]]
        if changed:
            raise UserError(
                f"{out}: holds an unfinished run with different {', '.join(changed)} "
                f"({', '.join(f'{previous.get(k)} -> {identity[k]}' for k in changed)}); rerun it with "
                "its own options to finish it, pass --overwrite to discard it, or choose another --out"
            )
    else:
        for path in finished + ([] if part else list(out.glob("manifest.part-*.json"))):
            path.unlink()  # first, so an interrupted rerun never looks finished
        if part is None:
            for name in (DONE_DIR, *SPLITS, INDEX_DIR):
                shutil.rmtree(out / name, ignore_errors=True)
        else:
            for unit in units:
                clear_unit(out, unit)
    for split in SPLITS:  # partial shards of a v1 (single-folder) run
        for stale in (out / split).glob("shard_*.arrow*"):
            stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RUN_FILE, identity)


def header(resolved: dict, tokenizer, config_hash: str, inputs_hash: str) -> dict:
    from data_prep.shards import FORMAT, FORMAT_VERSION

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "seq_len": resolved["seq_len"],
        "mode": resolved["mode"],
        "vocab_size": tokenizer.vocab_size,
        "tokenizer_hash": tokenizer.vocab_hash,
        "lowercase": tokenizer.lowercase,
        "special_ids": tokenizer.special_ids(),
        "tokenizer_dir": "tokenizer",
        "config": resolved,
        "config_hash": config_hash,
        "inputs_hash": inputs_hash,
    }


def _input_entry(marker: dict) -> dict:
    stats = {s: SplitStats(**marker["stats"][s]) for s in SPLITS}
    total = SplitStats()
    for s in stats.values():
        total.add(s)
    return (
        marker["input"]
        | marker["report"]
        | {
            "documents": total.documents,
            "examples": total.examples,
            "train_examples": stats["train"].examples,
            "heldout_examples": stats["heldout"].examples,
            "skipped": marker["skipped"],
            "error": marker["error"],
        }
    )


def assemble(head: dict, markers: list[dict], decontamination: dict | None = None) -> dict:
    """The manifest of `markers` (in input order): counts summed, shards concatenated per split."""
    seq_len = head["seq_len"]
    stats = {s: SplitStats() for s in SPLITS}
    skipped, decontaminated, errors = Counter(), Counter(), []
    for m in markers:
        for s in SPLITS:
            stats[s].add(SplitStats(**m["stats"][s]))
        skipped.update(m["skipped"])
        decontaminated.update(m.get("decontaminated", {}))
        failed = m.get("file_errors", [{"file": m["input"]["path"], "message": m["error"]}] if m["error"] else [])
        errors += failed  # a group of single-article files lists each of its failed files
        skipped["file_error"] += len(failed)
    total = SplitStats()
    for s in stats.values():
        total.add(s)
    manifest = head | {
        "inputs": [_input_entry(m) for m in markers],
        "counts": total.as_dict(seq_len) | {s: stats[s].as_dict(seq_len) for s in SPLITS},
        "splits": {
            s: {"examples": stats[s].examples, "shards": [x for m in markers for x in m["shards"][s]]} for s in SPLITS
        },
        "skipped": {k: v for k, v in sorted(skipped.items()) if v},
        "errors": errors,
    }
    if decontamination is not None:
        key = "dropped" if decontamination["action"] == "drop" else "flagged"
        manifest["decontamination"] = decontamination | {key: dict(sorted(decontaminated.items()))}
    rss = [m["peak_rss_mb"] for m in markers if m.get("peak_rss_mb")]
    manifest["worker_peak_rss_mb"] = max(rss) if rss else None
    return manifest


def _load_parts(out: Path) -> list[dict]:
    found: dict[int, set[int]] = {}
    for path in out.glob("manifest.part-*-of-*.json"):
        m = _PART_FILE.fullmatch(path.name)
        if m:
            found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    if not found:
        raise UserError(
            f"{out}: no manifest.part-<i>-of-<N>.json found; run `python -m data_prep ... --out {out} "
            "--part i/N` for every i first"
        )
    if len(found) > 1:
        raise UserError(
            f"{out}: part manifests of different splits ({', '.join(f'of-{n}' for n in sorted(found))}"
            "); delete the stale ones"
        )
    ((count, present),) = found.items()
    missing = sorted(set(range(count)) - present)
    if missing:
        raise UserError(
            f"{out}: parts {', '.join(map(str, missing))} of {count} have not finished (no "
            f"{part_manifest_name(missing[0], count)}); run them (`--part {missing[0]}/{count}`, ...) "
            "and merge again"
        )
    return [json.loads((out / part_manifest_name(i, count)).read_text(encoding="utf-8")) for i in range(count)]


def merge(out: str | Path) -> dict:
    """Check that all parts are present, complete and consistent; write manifest.json from their markers."""
    out = Path(out)
    parts = _load_parts(out)
    for key in ("format_version", "config_hash", "tokenizer_hash", "inputs_hash", "seq_len", "mode"):
        values = {json.dumps(p.get(key)) for p in parts}
        if len(values) > 1:
            raise UserError(
                f"{out}: the parts disagree on {key} ({', '.join(sorted(values))}); they come from "
                "different runs: rerun the odd ones with the same options (--overwrite)"
            )
    markers = []
    for p in parts:
        for position, unit in p["part"]["units"]:
            marker = read_marker(out, unit)
            if marker is None or marker.get("config_hash") != p["config_hash"] or marker["position"] != position:
                raise UserError(
                    f"{marker_path(out, unit)}: missing or from another run, but part "
                    f"{p['part']['index']} lists it; rerun that part"
                )
            markers.append(marker)
    markers.sort(key=lambda m: m["position"])
    if [m["position"] for m in markers] != list(range(parts[0]["part"]["inputs_total"])):
        raise UserError(f"{out}: the parts do not cover every input file exactly once; rerun with the same --input")
    head = {
        k: parts[0][k]
        for k in (
            "format",
            "format_version",
            "seq_len",
            "mode",
            "vocab_size",
            "tokenizer_hash",
            "lowercase",
            "special_ids",
            "tokenizer_dir",
            "config",
            "config_hash",
            "inputs_hash",
        )
    }
    head["config"] = head["config"] | {"part": None, "workers": sum(p["workers"] for p in parts)}
    manifest = assemble(head, markers, parts[0].get("decontamination"))
    for key in ("supersession", "tool_version"):
        if key in parts[0]:
            manifest[key] = parts[0][key]
    manifest |= {
        "parts": [
            {k: p.get(k) for k in ("created", "elapsed_s", "workers")} | {"index": p["part"]["index"]} for p in parts
        ],
        "workers": sum(p["workers"] for p in parts),
        "created": min(p["created"] for p in parts),
        "elapsed_s": max(p["elapsed_s"] for p in parts),
    }
    write_manifest(out, manifest)
    return manifest
