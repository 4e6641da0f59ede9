"""Sentence and token embeddings from a BERT encoder, streamed to a memory-mappable matrix and an Arrow index.

Pooling (over the chosen layers, concatenated or averaged):
  cls   the [CLS] vector;
  mean  the mean over the sentence's real tokens, [CLS] and [SEP] included and padding excluded (the
        attention-mask mean of sentence-transformers);
  none  one vector per WordPiece piece of the sentence, [CLS] and [SEP] excluded, with the piece's
        character span in the sentence text.
A sentence longer than `max_seq_length - 2` pieces is truncated (its first pieces are kept) and counted.

Memory stays bounded whatever the input size: sentences are read as a stream, tokenized a batch at a time
and held in a buffer of at most `BUFFER_BATCHES` batches (fewer when their vectors would exceed
`BUFFER_VALUES` floats); the buffer is run in batches sorted by length (little padding) and written in
input order. Vectors go straight into `vectors.npy` behind a header written with a placeholder row count
and rewritten with the real one at the end (numpy pads .npy headers so that the row count can grow to
21 digits without moving the data), so neither a counting pass nor a copy of the data is needed, and
stdin works. The index is an Arrow IPC file written one record batch per buffer.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
from numpy.lib import format as npy_format

from biobert.errors import UserError
from finetune.inference import length_batches
from finetune.inputs import TextUnit

POOLINGS = ("cls", "mean", "none")
BUFFER_BATCHES = 64  # batches sorted by length together: enough to group similar lengths
BUFFER_VALUES = 1 << 25  # output floats held before a flush (128 MB as float32): bounds --pooling none
PROGRESS_SECONDS = 30
POOLED_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("id", pa.string()),
        ("text", pa.string()),
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("truncated", pa.bool_()),
    ]
)
TOKEN_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("sentence_id", pa.string()),
        ("token", pa.string()),
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("sentence_start", pa.int32()),
    ]
)


@dataclass(frozen=True)
class EmbedSettings:
    pooling: str = "mean"
    layers: tuple[int, ...] = (-1,)  # indices into hidden_states: 0 the embeddings, -1 the last layer
    layer_combine: str = "concat"
    batch_size: int = 64
    max_seq_length: int = 128
    dtype: str = "float32"  # of the model's computation and of vectors.npy; pooling is done in float32

    def dim(self, hidden_size: int) -> int:
        return hidden_size * (len(self.layers) if self.layer_combine == "concat" else 1)

    def describe(self, hidden_size: int) -> dict:
        return {
            "pooling": self.pooling,
            "layers": list(self.layers),
            "layer_combine": self.layer_combine,
            "dim": self.dim(hidden_size),
            "dtype": self.dtype,
            "max_seq_length": self.max_seq_length,
        }


def parse_layers(spec: str, num_layers: int) -> tuple[int, ...]:
    """ "-1" or "-4,-3,-2,-1" -> indices into the num_layers + 1 hidden states (0 is the embeddings)."""
    try:
        layers = tuple(int(x) for x in spec.split(","))
    except ValueError:
        raise UserError(f"--layers {spec!r}: expected comma-separated integers such as -1 or -4,-3,-2,-1") from None
    bad = [i for i in layers if not -(num_layers + 1) <= i <= num_layers]
    if bad:
        raise UserError(
            f"--layers {spec}: {bad} out of range; the model has {num_layers} layers, so indices "
            f"go from -{num_layers + 1} (the embeddings) to {num_layers} (0 is the embeddings too)"
        )
    return layers


def pool(hidden_states, attention_mask, settings: EmbedSettings):
    """[batch, dim] (cls, mean) or [batch, seq, dim] (none) float32 tensor from the model's hidden states."""
    import torch

    chosen = [hidden_states[i].float() for i in settings.layers]
    h = torch.cat(chosen, dim=-1) if settings.layer_combine == "concat" else torch.stack(chosen).mean(0)
    if settings.pooling == "cls":
        return h[:, 0]
    if settings.pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return h


class NpyWriter:
    """A 2-D .npy file written row block by row block; its header gets the row count at `close()`."""

    def __init__(self, path: Path, dim: int, dtype: str):
        self.path, self.dim, self.dtype, self.rows = path, dim, np.dtype(dtype).newbyteorder("<"), 0
        self.fh = open(path, "wb")
        self.header_len = self._write_header()

    def _write_header(self) -> int:
        header = {
            "descr": npy_format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, self.dim),
        }
        npy_format.write_array_header_1_0(self.fh, header)
        return self.fh.tell()

    def write(self, block: np.ndarray) -> None:
        block.astype(self.dtype, copy=False).tofile(self.fh)
        self.rows += len(block)

    def close(self) -> None:
        if self.fh.closed:
            return
        self.fh.seek(0)
        if self._write_header() != self.header_len:  # numpy reserves room for 21 digits: cannot happen
            raise RuntimeError(f"{self.path}: the .npy header changed length; the file is unusable")
        self.fh.close()


@dataclass
class _Item:
    unit: TextUnit
    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    truncated: bool


class Embedder:
    """Streams TextUnits through the encoder into `<out>/vectors.npy` and `<out>/index.arrow`."""

    def __init__(self, model, tokenizer, settings: EmbedSettings, out_dir: Path, metadata: dict):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.dim = settings.dim(model.config.hidden_size)
        self.vectors = NpyWriter(out_dir / "vectors.npy", self.dim, settings.dtype)
        schema = TOKEN_SCHEMA if settings.pooling == "none" else POOLED_SCHEMA
        self.schema = schema.with_metadata({"biobert.embed": json.dumps(metadata)})
        self.index = pa.ipc.new_file(str(out_dir / "index.arrow"), self.schema)
        self.index_closed = False
        self.sentences = self.truncated = 0

    def run(self, units: Iterable[TextUnit]) -> None:
        """Embed every unit in input order, reporting progress on stderr at most every `PROGRESS_SECONDS`."""
        buffer: list[_Item] = []
        values = 0
        self.started = reported = time.time()
        for chunk in _chunks(iter(units), self.settings.batch_size):
            for item in self._tokenize(chunk):
                buffer.append(item)
                values += self.dim * (len(item.ids) if self.settings.pooling == "none" else 1)
            if len(buffer) >= BUFFER_BATCHES * self.settings.batch_size or values >= BUFFER_VALUES:
                self._flush(buffer)
                buffer, values = [], 0
                if time.time() - reported >= PROGRESS_SECONDS:
                    reported = time.time()
                    rate = self.sentences / (reported - self.started)
                    print(f"embed: {self.sentences:,} sentences, {rate:,.0f}/s", file=sys.stderr, flush=True)
        self._flush(buffer)
        self.finished = time.time()

    def timing(self) -> dict:
        """Seconds of the embedding pass (after the model was loaded) and its sentences per second."""
        seconds = self.finished - self.started
        return {
            "embed_seconds": round(seconds, 2),
            "sentences_per_second": round(self.sentences / seconds, 1) if seconds > 0 else None,
        }

    def close(self) -> None:
        """Finish both files (also after a failure, so that they can be removed); a second call does nothing."""
        self.vectors.close()
        if not self.index_closed:
            self.index_closed = True
            self.index.close()

    def _tokenize(self, chunk: list[TextUnit]) -> list[_Item]:
        budget = self.settings.max_seq_length - 2
        items = []
        for unit, enc in zip(
            chunk, self.tokenizer.backend.encode_batch([u.text for u in chunk], add_special_tokens=False)
        ):
            cut = len(enc.ids) > budget
            self.truncated += cut
            items.append(_Item(unit, enc.ids[:budget], enc.tokens[:budget], enc.offsets[:budget], cut))
        return items

    def _flush(self, buffer: list[_Item]) -> None:
        if not buffer:
            return
        import torch

        none = self.settings.pooling == "none"
        rows = np.array([len(it.ids) if none else 1 for it in buffer], dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(rows)[:-1]])
        out = np.empty((int(rows.sum()), self.dim), dtype=np.float32)
        device = next(self.model.parameters()).device
        tok = self.tokenizer
        with torch.inference_mode():
            for ix in length_batches([len(it.ids) for it in buffer], self.settings.batch_size):
                width = 2 + max(len(buffer[i].ids) for i in ix)
                input_ids = np.full((len(ix), width), tok.pad_id, dtype=np.int64)
                mask = np.zeros((len(ix), width), dtype=np.int64)
                for j, i in enumerate(ix):
                    n = len(buffer[i].ids)
                    input_ids[j, 0], input_ids[j, 1 : n + 1], input_ids[j, n + 1] = (
                        tok.cls_id,
                        buffer[i].ids,
                        tok.sep_id,
                    )
                    mask[j, : n + 2] = 1
                mask_t = torch.from_numpy(mask).to(device)
                output = self.model(
                    input_ids=torch.from_numpy(input_ids).to(device), attention_mask=mask_t, output_hidden_states=True
                )
                pooled = pool(output.hidden_states, mask_t, self.settings).cpu().numpy()
                for j, i in enumerate(ix):
                    if none:
                        out[first[i] : first[i] + rows[i]] = pooled[j, 1 : 1 + rows[i]]
                    else:
                        out[first[i]] = pooled[j]
        start = self.vectors.rows
        self.vectors.write(out)
        self.index.write_batch(self._index_batch(buffer, start))
        self.sentences += len(buffer)

    def _index_batch(self, buffer: list[_Item], start: int) -> pa.RecordBatch:
        if self.settings.pooling != "none":
            return pa.record_batch(
                {
                    "row": pa.array(range(start, start + len(buffer)), pa.int64()),
                    "id": [it.unit.id for it in buffer],
                    "text": [it.unit.text for it in buffer],
                    "start": pa.array([it.unit.start for it in buffer], pa.int32()),
                    "end": pa.array([it.unit.end for it in buffer], pa.int32()),
                    "truncated": [it.truncated for it in buffer],
                },
                schema=self.schema,
            )
        n = sum(len(it.ids) for it in buffer)
        return pa.record_batch(
            {
                "row": pa.array(range(start, start + n), pa.int64()),
                "sentence_id": [it.unit.id for it in buffer for _ in it.ids],
                "token": [t for it in buffer for t in it.tokens],
                "start": pa.array([s for it in buffer for s, _ in it.offsets], pa.int32()),
                "end": pa.array([e for it in buffer for _, e in it.offsets], pa.int32()),
                "sentence_start": pa.array([it.unit.start for it in buffer for _ in it.ids], pa.int32()),
            },
            schema=self.schema,
        )


def _chunks(units: Iterator[TextUnit], size: int) -> Iterator[list[TextUnit]]:
    while chunk := list(islice(units, size)):
        yield chunk
