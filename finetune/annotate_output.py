"""The annotation output directory: one Parquet file per input unit, done markers, and the manifest (last).

    <out>/run.json                        identity of the run (models, options, inputs)
    <out>/<unit>.parquet                  one row per document (SCHEMA), written as <unit>.parquet.tmp and renamed
    <out>/done/<unit>.json                the unit's marker, written after the rename: its counts and skips
    <out>/manifest.part-<i>-of-<N>.json   with --part: the part's manifest
    <out>/manifest.json                   once every unit is done (by the run, or the last part to finish)
    <out>/pubmed_index/<hash>/            PubMed supersession decisions (data_prep.supersede)

The Parquet content depends only on the input, the models and the options: no timestamps, row groups of one
chunk of documents in input order, so a unit redone after a kill is byte-identical. Manifests are assembled
from markers only, so every part that finds all units done writes the same manifest.json.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from biobert.errors import UserError
from biobert.files import file_sha256
from data_prep.outdir import DONE_DIR, marker_path, read_marker, write_marker  # noqa: F401  (the one marker format)
from data_prep.shards import write_json_atomic

FORMAT, FORMAT_VERSION = "biobert-annotations", 1
RUN_FILE, MANIFEST = "run.json", "manifest.json"

ENTITY = pa.struct(
    [
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("text", pa.string()),
        ("type", pa.string()),
        ("score", pa.float32()),
        ("model", pa.string()),
    ]
)
RELATION = pa.struct(
    [
        ("head", pa.int32()),  # index into the row's entities
        ("tail", pa.int32()),
        ("label", pa.string()),
        ("score", pa.float32()),
        ("probabilities", pa.list_(pa.struct([("label", pa.string()), ("p", pa.float32())]))),
    ]
)
SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("entities", pa.list_(ENTITY)), ("relations", pa.list_(RELATION))]
)


class UnitWriter:
    """Row groups into `<unit>.parquet.tmp`; `close()` renames it into place and returns its facts."""

    def __init__(self, out: Path, unit: str):
        self.path = out / f"{unit}.parquet"
        self.tmp = out / f"{unit}.parquet.tmp"
        self.tmp.unlink(missing_ok=True)
        self.writer = pq.ParquetWriter(self.tmp, SCHEMA, compression="zstd")
        self.rows = 0

    def write(self, rows: list[dict]) -> None:
        if rows:
            self.writer.write_table(pa.Table.from_pylist(rows, schema=SCHEMA))
            self.rows += len(rows)

    def close(self) -> dict:
        self.writer.close()
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        size = self.path.stat().st_size
        return {"file": self.path.name, "rows": self.rows, "bytes": size, "sha256": file_sha256(self.path)}

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def is_current(out: Path, marker: dict | None, expect: dict) -> bool:
    """Done by a run with the same identity and input file(s), and its Parquet file still there, whole."""
    if marker is None or any(marker.get(k) != v for k, v in expect.items()):
        return False
    path = out / marker["output"]["file"]
    return path.is_file() and path.stat().st_size == marker["output"]["bytes"]


def claim(out: Path, identity: dict, overwrite: bool, units: list[str] | None) -> None:
    """Refuse an output directory of another run (other models, options or inputs) unless --overwrite.

    --overwrite clears the run's files; with --part (`units` given) only this part's units and manifests, so
    parts running at the same time never delete each other's work.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    run_file = out / RUN_FILE
    previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else None
    if previous is not None and previous != identity:
        if not overwrite:
            changed = sorted(k for k in identity if previous.get(k) != identity[k])
            raise UserError(
                f"{out}: holds annotations of another run (different {', '.join(changed)}); rerun with its "
                "own models and options to finish it, pass --overwrite to replace it, or choose another --out"
            )
    if overwrite:
        mine = [out / MANIFEST, *out.glob("manifest.part-*.json")] if units is None else [out / MANIFEST]
        for u in units if units is not None else [p.stem for p in out.glob(f"{DONE_DIR}/*.json")]:
            mine += [marker_path(out, u), out / f"{u}.parquet", out / f"{u}.parquet.tmp"]
        for p in mine:
            p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_file, identity)


def assemble(head: dict, markers: list[dict]) -> dict:
    """The manifest: models, options, totals, every unit's output and every skipped record, in unit order."""
    totals: Counter = Counter()
    skipped: Counter = Counter()
    by_type: Counter = Counter()
    by_label: Counter = Counter()
    records, errors = [], []
    for m in markers:
        totals.update(m["counts"])
        skipped.update(m["skipped"])
        by_type.update(m["entities_by_type"])
        by_label.update(m["relations_by_label"])
        records += [{"unit": m["unit"], **r} for r in m["skipped_records"]]
        if m["error"]:
            errors.append({"unit": m["unit"], "message": m["error"]})
    counts = dict(sorted(totals.items())) | {
        "entities_by_type": dict(sorted(by_type.items())),
        "relations_by_label": dict(sorted(by_label.items())),
    }
    units = [
        {k: m[k] for k in ("unit", "input", "output", "counts", "skipped", "error", "seconds", "peak_rss_mb")}
        for m in markers
    ]
    return head | {
        "counts": counts,
        "skipped": dict(sorted(skipped.items())),
        "skipped_records": records,
        "errors": errors,
        "units": units,
    }
