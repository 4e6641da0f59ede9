"""Packing tokenised documents into fixed-length pre-training examples, as BERT's create_pretraining_data.

Streaming and memory-bounded: a document is packed as soon as it is tokenised; "random next" segments for
NSP come from a bounded buffer of recent documents instead of the whole corpus held in memory (which is
what the original script does and why it needs shards of ~10 files). Masking is NOT done here: the
pre-training collator masks dynamically, so there is no `dupe_factor`.

Departures from BERT, each for a reason:
* `target_len` (short_seq_prob) is redrawn per example, not per document, so short examples are spread
  evenly instead of clustering in a few documents.
* A chunk made of a single segment is split at a random token for a real-next pair instead of always
  being random-next, so the NSP labels stay balanced at 50/50.
* Documents with fewer than two segments (e.g. a lone sentence) are not packed in NSP mode: `pack` returns
  None and the caller counts them as `too_short`. In MLM mode they are packed like any other document.
* MLM mode packs ACROSS documents by default (`cross_document=True`), as RoBERTa's FULL-SENTENCES and
  Hugging Face's run_mlm `group_texts` do: the token stream of consecutive documents, one [SEP] between
  documents, is cut into examples of exactly `seq_len` tokens ([CLS] ... [SEP]); a sentence may continue
  in the next example. Without it, each document ends in a short example: on PubMed abstracts at seq 128
  that left 30 % of every batch as padding (bench/README.md). `flush()` emits the stream's last, partial
  example. `cross_document=False` keeps every example inside one document, at sentence boundaries.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from itertools import chain

NSP, MLM = "nsp", "mlm"
MODES = (NSP, MLM)


@dataclass
class Example:
    input_ids: list[int]  # [CLS] A [SEP] B [SEP] (NSP) or [CLS] A [SEP] (MLM), never padded
    sep_index: int  # position of the first [SEP]: token_type_ids are 0 up to it, 1 after
    next_sentence_label: int  # 0 = B follows A, 1 = B is random, -1 = no NSP (MLM mode)


def _segments(sentences: list[list[int]], max_len: int) -> list[list[int]]:
    # A sentence longer than the whole budget is cut into budget-sized segments rather than truncated.
    out = []
    for ids in sentences:
        if len(ids) <= max_len:
            if ids:
                out.append(ids)
        else:
            out.extend(ids[i : i + max_len] for i in range(0, len(ids), max_len))
    return out


def truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> tuple[list, list]:
    """Trim the longer segment, one token at a time from a random end, as BERT's truncate_seq_pair."""
    a0, a1, b0, b1 = 0, len(a), 0, len(b)
    while (a1 - a0) + (b1 - b0) > max_tokens:
        front = rng.random() < 0.5
        if a1 - a0 > b1 - b0:
            a0, a1 = (a0 + 1, a1) if front else (a0, a1 - 1)
        else:
            b0, b1 = (b0 + 1, b1) if front else (b0, b1 - 1)
    return a[a0:a1], b[b0:b1]


class Packer:
    """Packs one stream of documents (one split of one input file) deterministically from its seed."""

    def __init__(
        self,
        *,
        seq_len: int,
        mode: str,
        cls_id: int,
        sep_id: int,
        seed: int,
        short_seq_prob: float = 0.1,
        buffer_docs: int = 1000,
        cross_document: bool = True,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if seq_len < 8:
            raise ValueError(f"seq_len must be at least 8, got {seq_len}")
        self.seq_len, self.mode, self.cls, self.sep = seq_len, mode, cls_id, sep_id
        self.short_seq_prob = short_seq_prob
        self.rng = random.Random(seed)
        self.recent: deque[list[list[int]]] = deque(maxlen=buffer_docs)  # segments of recent documents
        self.no_random_doc = 0  # random-next wanted but no other document buffered yet
        self.cross_document = cross_document and mode == MLM
        self.stream: list[int] = []  # MLM across documents: tokens not yet in an example
        self.stream_target = 0

    @property
    def min_segments(self) -> int:
        return 2 if self.mode == NSP else 1

    def _target(self, max_tokens: int) -> int:
        if self.rng.random() < self.short_seq_prob:
            return self.rng.randint(2, max_tokens)
        return max_tokens

    def pack(self, sentences: list[list[int]]) -> list[Example] | None:
        """Examples completed by one document's tokenised sentences; None if the document has too few
        segments to be used. Across documents (MLM), a document may complete no example yet ([])."""
        budget = self.seq_len - (3 if self.mode == NSP else 2)
        segments = _segments(sentences, budget)
        if len(segments) < self.min_segments:
            return None
        if self.cross_document:
            return self._pack_stream(segments, budget)
        examples = self._pack_nsp(segments, budget) if self.mode == NSP else self._pack_mlm(segments, budget)
        if self.mode == NSP:
            self.recent.append(segments)
        return examples

    def _pack_stream(self, segments: list[list[int]], budget: int) -> list[Example]:
        stream = self.stream
        if stream:
            stream.append(self.sep)  # document boundary
        for seg in segments:
            stream.extend(seg)
        examples = []
        if not self.stream_target:
            self.stream_target = self._target(budget)
        while len(stream) >= self.stream_target:
            cut = self.stream_target
            # A document boundary never starts or ends an example: [CLS] [SEP] / [SEP] [SEP] carry nothing.
            examples.append(self._single([stream[: cut - 1 if stream[cut - 1] == self.sep else cut]]))
            del stream[:cut]
            if stream and stream[0] == self.sep:
                del stream[0]
            self.stream_target = self._target(budget)
        return examples

    def flush(self) -> list[Example]:
        """The last, partial example of a cross-document MLM stream (call once, at the end of a stream)."""
        if not self.stream:
            return []
        examples = [self._single([self.stream])]
        self.stream, self.stream_target = [], 0
        return examples

    def _pack_mlm(self, segments: list[list[int]], budget: int) -> list[Example]:
        examples, chunk, length, target = [], [], 0, self._target(budget)
        for seg in segments:
            if chunk and length + len(seg) > target:
                examples.append(self._single(chunk))
                chunk, length, target = [], 0, self._target(budget)
            chunk.append(seg)
            length += len(seg)
        if chunk:
            examples.append(self._single(chunk))
        return examples

    def _single(self, chunk: list[list[int]]) -> Example:
        ids = [self.cls, *chain.from_iterable(chunk)][: self.seq_len - 1] + [self.sep]
        return Example(ids, len(ids) - 1, -1)

    def _pack_nsp(self, segments: list[list[int]], budget: int) -> list[Example]:
        examples, chunk, length, target = [], [], 0, self._target(budget)
        i = 0
        while i < len(segments):
            chunk.append(segments[i])
            length += len(segments[i])
            if i == len(segments) - 1 or length >= target:
                example, unused = self._pair(chunk, target, budget)
                if example is not None:
                    examples.append(example)
                i -= unused  # segments not used as A go back into the stream, as in BERT
                chunk, length, target = [], 0, self._target(budget)
            i += 1
        return examples

    def _pair(self, chunk: list[list[int]], target: int, budget: int) -> tuple[Example | None, int]:
        """One A/B example from `chunk`, plus how many of its segments were not used (random-next)."""
        rng = self.rng
        coin = rng.random() < 0.5
        if coin and not self.recent:
            self.no_random_doc += 1  # first document of a stream: nothing to draw a random B from
        random_next = coin and bool(self.recent)
        unused = 0
        if len(chunk) == 1:
            # One long segment: A/B split inside it for a real pair (needs >= 2 tokens), else random B.
            seg = chunk[0]
            if len(seg) < 2:
                if not self.recent:
                    return None, 0
                random_next = True
            if random_next:
                a = seg
            else:
                cut = rng.randint(1, len(seg) - 1)
                a, b = seg[:cut], seg[cut:]
        else:
            a_end = rng.randint(1, len(chunk) - 1)
            a = list(chain.from_iterable(chunk[:a_end]))
            if random_next:
                unused = len(chunk) - a_end
            else:
                b = list(chain.from_iterable(chunk[a_end:]))
        if random_next:
            b = self._random_b(target - len(a))
        a, b = truncate_pair(a, b, budget, rng)
        return self._example(a, b, 1 if random_next else 0), unused

    def _random_b(self, target_b: int) -> list[int]:
        doc = self.recent[self.rng.randrange(len(self.recent))]
        start = self.rng.randrange(len(doc))
        b: list[int] = []
        for seg in doc[start:]:
            b.extend(seg)
            if len(b) >= target_b:
                break
        return b

    def _example(self, a: list[int], b: list[int], label: int) -> Example:
        return Example([self.cls, *a, self.sep, *b, self.sep], len(a) + 1, label)
