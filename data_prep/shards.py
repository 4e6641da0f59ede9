"""THE shard format: written by data_prep, read by pre-training. Both sides live here and nowhere else.

Layout of a prepared directory:

    <out>/train/<input>/shard_00000.arrow    Arrow IPC *stream* files (what `datasets.Dataset.from_file`
    <out>/heldout/<input>/shard_00000.arrow  reads), one folder per input file; memory-mapped by the reader,
                                             so RAM use is independent of corpus size
    <out>/manifest.json                      written last and atomically: its presence means the data is
                                             complete; it lists every shard, in order, relative to <out>

Only the manifest's `splits.<split>.shards[].file` paths matter to the reader, so the folder layout may
change without a format version change (v1 wrote `train/shard_00000.arrow` directly).

Columns: input_ids list<uint16> (uint32 if the vocabulary exceeds 65,535 ids), sep_index int16,
next_sentence_label int8. Examples are unpadded; padding/masking happen in the pre-training collator.
"""

from __future__ import annotations

import hashlib
import os
from bisect import bisect_right
from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa

from biobert.config import read_json
from biobert.errors import UserError
from biobert.files import file_sha256, write_json  # noqa: F401  (file_sha256: re-exported)

FORMAT = "biobert-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "heldout")
MANIFEST = "manifest.json"


def ids_type(vocab_size: int) -> pa.DataType:
    return pa.uint16() if vocab_size <= 65535 else pa.uint32()


def schema(vocab_size: int) -> pa.Schema:
    return pa.schema(
        [("input_ids", pa.list_(ids_type(vocab_size))), ("sep_index", pa.int16()), ("next_sentence_label", pa.int8())],
        metadata={"format": FORMAT},
    )


def is_heldout(doc_id: str, fraction: float) -> bool:
    """Stable across runs, machines and worker counts (unlike `hash()`), and decided per document so no
    document contributes to both splits."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.arrow"


class ShardWriter:
    """Appends examples of one split, rolling over to a new shard file every `shard_size` rows.

    Files are written under a `.tmp` name and renamed when complete, so a crash never leaves a
    plausible-looking partial shard.
    """

    def __init__(
        self,
        split_dir: Path,
        vocab_size: int,
        shard_size: int = 100_000,
        batch_rows: int = 1000,
        root: Path | None = None,
    ):
        self.dir = Path(split_dir)
        self.root = Path(root) if root is not None else self.dir.parent  # manifest paths are relative to it
        self.dir.mkdir(parents=True, exist_ok=True)
        self.schema = schema(vocab_size)
        self.np_ids = np.uint16 if ids_type(vocab_size) == pa.uint16() else np.uint32
        self.shard_size, self.batch_rows = shard_size, batch_rows
        self.shards: list[dict] = []
        self._writer = None
        self._rows_in_shard = 0
        # The pending record batch, flat: token ids of all its rows, and each row's length, sep, label.
        self._values: list[int] = []
        self._lengths: list[int] = []
        self._sep: list[int] = []
        self._label: list[int] = []

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.shards) + self._rows_in_shard + len(self._lengths)

    def _room(self) -> int:
        """Rows the pending record batch takes before it is written (its size decides the file's bytes)."""
        return min(self.batch_rows, self.shard_size - self._rows_in_shard) - len(self._lengths)

    def write(self, input_ids: list[int], sep_index: int, next_sentence_label: int) -> None:
        self._values.extend(input_ids)
        self._lengths.append(len(input_ids))
        self._sep.append(sep_index)
        self._label.append(next_sentence_label)
        if self._room() <= 0:
            self._flush()

    def write_examples(self, examples: Sequence) -> int:
        """Append `Example`s (packing.py); the same files as `write` one at a time. Returns their tokens."""
        tokens, start = 0, 0
        while start < len(examples):
            part = examples[start : start + max(self._room(), 1)]
            start += len(part)
            lengths = [len(ex.input_ids) for ex in part]
            self._values.extend(chain.from_iterable([ex.input_ids for ex in part]))
            self._lengths += lengths
            self._sep += [ex.sep_index for ex in part]
            self._label += [ex.next_sentence_label for ex in part]
            tokens += sum(lengths)
            if self._room() <= 0:
                self._flush()
        return tokens

    def _flush(self) -> None:
        if not self._lengths:
            return
        if self._writer is None:
            tmp = self.dir / (shard_name(len(self.shards)) + ".tmp")
            self._sink = pa.OSFile(str(tmp), "wb")
            self._writer = pa.ipc.new_stream(self._sink, self.schema)
        rows = len(self._lengths)
        offsets = np.zeros(rows + 1, dtype=np.int32)
        np.cumsum(self._lengths, out=offsets[1:])
        values = np.array(self._values, dtype=self.np_ids)
        # Built from buffers: pa.array() on NumPy data imports pandas (~0.5 s and ~40 MB per process).
        value_type = self.schema.field("input_ids").type.value_type
        ids = pa.Array.from_buffers(
            self.schema.field("input_ids").type,
            rows,
            [None, pa.py_buffer(offsets)],
            children=[pa.Array.from_buffers(value_type, len(values), [None, pa.py_buffer(values)])],
        )
        sep = pa.Array.from_buffers(pa.int16(), rows, [None, pa.py_buffer(np.array(self._sep, np.int16))])
        label = pa.Array.from_buffers(pa.int8(), rows, [None, pa.py_buffer(np.array(self._label, np.int8))])
        self._writer.write_batch(pa.record_batch([ids, sep, label], schema=self.schema))
        self._rows_in_shard += rows
        self._values, self._lengths, self._sep, self._label = [], [], [], []
        if self._rows_in_shard >= self.shard_size:
            self._close_shard()

    def _close_shard(self) -> None:
        self._writer.close()
        self._sink.close()
        name = shard_name(len(self.shards))
        tmp = self.dir / (name + ".tmp")
        with open(tmp, "rb") as f:  # durable before a done marker can claim it exists
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / name)
        self.shards.append(
            {
                "file": (self.dir / name).relative_to(self.root).as_posix(),
                "rows": self._rows_in_shard,
                "sha256": file_sha256(self.dir / name),
            }
        )
        self._writer, self._rows_in_shard = None, 0

    def close(self) -> list[dict]:
        """Finish the last shard; returns the manifest entries of all shards of this split."""
        self._flush()
        if self._writer is not None:
            self._close_shard()
        return self.shards


def write_json_atomic(path: Path, content: dict) -> None:
    """Key order as built (manifests read top-down); biobert.files.write_json: tmp + fsync + rename."""
    write_json(path, content, sort_keys=False)


def write_manifest(out_dir: Path, manifest: dict, name: str = MANIFEST) -> None:
    """Atomic (tmp + rename): readers either see a complete manifest or none."""
    write_json_atomic(Path(out_dir) / name, manifest)


def read_manifest(data_dir: str | Path) -> dict:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(
            f"{data_dir}: no such shard directory; run `python -m data_prep --input ... "
            f"--vocab ... --out {data_dir}` first, or point --data_dir (or BIOBERT_HOME, the folder "
            "holding the recipes' shards/) at prepared shards"
        )
    path = data_dir / MANIFEST
    if not path.is_file():
        raise UserError(
            f"{path}: missing; either the data preparation into {data_dir} did not finish "
            "(rerun `python -m data_prep ... --overwrite`) or this is not a shard directory"
        )
    manifest = read_json(path, "shard manifest (rerun the data preparation)")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}"
            f", this code reads {FORMAT!r} version {FORMAT_VERSION}; rerun the data preparation "
            "with this version of data_prep"
        )
    return manifest


class ShardSet:
    """Random access to the examples of one split across all its shards, memory-mapped.

    Global index i maps to (record batch, row) through the cumulative batch start offsets; each batch's
    offsets/values are zero-copy NumPy views of the mapped file, so a lookup copies only the one example.
    """

    def __init__(self, data_dir: Path, split: str, manifest: dict):
        self.manifest, self.split = manifest, split
        self.seq_len: int = manifest["seq_len"]
        self._offsets: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._sep: list[np.ndarray] = []
        self._label: list[np.ndarray] = []
        self._starts: list[int] = []
        total = 0
        for entry in manifest["splits"][split]["shards"]:
            rows = self._map_shard(Path(data_dir) / entry["file"], total)
            if rows != entry["rows"]:
                raise UserError(
                    f"{Path(data_dir) / entry['file']}: has {rows} rows, manifest says "
                    f"{entry['rows']}; the shard is damaged, rerun the data preparation"
                )
            total += rows
        self._len = total

    def _map_shard(self, path: Path, start: int) -> int:
        if not path.is_file():
            raise UserError(
                f"{path}: listed in {MANIFEST} but missing; the shard directory is incomplete, "
                "rerun the data preparation"
            )
        try:
            reader = pa.ipc.open_stream(pa.memory_map(str(path), "r"))
            batches = list(reader)
        except (pa.ArrowInvalid, OSError) as e:
            raise UserError(f"{path}: not a readable Arrow stream ({e}); rerun the data preparation") from e
        rows = 0
        for batch in batches:
            ids = batch.column(0)
            self._starts.append(start + rows)
            self._offsets.append(ids.offsets.to_numpy())
            self._values.append(ids.values.to_numpy())
            self._sep.append(batch.column(1).to_numpy())
            self._label.append(batch.column(2).to_numpy())
            rows += batch.num_rows
        return rows

    def __len__(self) -> int:
        return self._len

    def get_batch(self, indices: Sequence[int]) -> dict[str, list | np.ndarray]:
        """Examples at the given global indices, in order: ids as int64 arrays (unpadded)."""
        ids, sep, label = [], np.empty(len(indices), np.int64), np.empty(len(indices), np.int64)
        for k, i in enumerate(indices):
            i = int(i)
            if not 0 <= i < self._len:
                raise IndexError(f"example index {i} out of range for {self._len} examples ({self.split})")
            b = bisect_right(self._starts, i) - 1
            r = i - self._starts[b]
            off = self._offsets[b]
            ids.append(self._values[b][off[r] : off[r + 1]].astype(np.int64))
            sep[k], label[k] = self._sep[b][r], self._label[b][r]
        return {"input_ids": ids, "sep_index": sep, "next_sentence_label": label}


def open_shards(data_dir: str | Path, split: str = "train") -> ShardSet:
    """Open one split of a prepared shard directory (validated against its manifest)."""
    manifest = read_manifest(data_dir)
    if split not in manifest.get("splits", {}):
        raise UserError(
            f"{Path(data_dir) / MANIFEST}: no split {split!r}; available: {sorted(manifest.get('splits', {}))}"
        )
    return ShardSet(Path(data_dir), split, manifest)
