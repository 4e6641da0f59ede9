"""Dynamic masking for masked-LM + next-sentence prediction, applied when a batch is drawn.

Masks are drawn from the generator the batch source hands over, seeded from (seed, step, rank), so masking
is new every epoch yet identical after a resume, and the collator can run ahead in a background thread
without touching the training thread's random state. Only masked positions are returned (flat indices into
batch x sequence), so the vocabulary projection is computed for ~15% of the tokens instead of all of them.

Static shapes for the GPU (`static=True`, pre-training's default): every batch is padded to `pad_to`
tokens and its masked index to a fixed number of slots (the most BERT's rule can choose: round(15 %) of
every sequence's candidates), the unused slots pointing at position 0 with label -100, so a compiled
objective (or a CUDA graph) sees one shape. A batch without padding carries no attention mask at all:
SDPA then takes its fastest (flash) kernel and nothing has to inspect the mask on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class MaskingCollator:
    vocab_size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    mlm_probability: float = 0.15
    pad_to: int | None = None  # None: pad to the longest sequence in the batch
    whole_word: bool = False  # mask every piece of a word together (needs `continuation_ids`)
    continuation_ids: tuple[int, ...] = ()  # WordPiece "##" pieces: they continue the word before them
    static: bool = False  # fixed masked-slot count (needs pad_to) and no attention mask when nothing is padded

    def __post_init__(self) -> None:
        if self.whole_word and not self.continuation_ids:
            raise ValueError("whole-word masking needs the vocabulary's continuation (##) piece ids")
        size = max(self.vocab_size, max(self.continuation_ids, default=-1) + 1)
        self._is_continuation = torch.zeros(size, dtype=torch.bool)
        self._is_continuation[list(self.continuation_ids)] = True

    def __call__(self, examples: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """`generator`: where the masks are drawn from (None: torch's global generator)."""
        seqs = examples["input_ids"]
        length = self.pad_to or max(len(s) for s in seqs)
        batch = len(seqs)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            input_ids[i, : len(s)] = torch.from_numpy(np.asarray(s, dtype=np.int64))
        attention_mask = (input_ids != self.pad_id).long()
        positions = torch.arange(length).unsqueeze(0)
        sep_index = torch.as_tensor(np.asarray(examples["sep_index"], dtype=np.int64)).unsqueeze(1)
        token_type_ids = ((positions > sep_index) & attention_mask.bool()).long()
        mask = self._mask_words if self.whole_word else self._mask
        masked_index, masked_labels = mask(input_ids, attention_mask, generator)
        out = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "masked_index": masked_index,
            "masked_labels": masked_labels,
            "next_sentence_label": torch.as_tensor(np.asarray(examples["next_sentence_label"], dtype=np.int64)),
        }
        if self.static:
            out["masked_index"], out["masked_labels"] = self._pad_slots(masked_index, masked_labels, batch, length)
            if bool(attention_mask.all()):  # host data: no device sync
                del out["attention_mask"]
        return out

    def slots(self, batch: int, length: int) -> int:
        """Masked positions a batch can hold: round(p x candidates) per sequence at most, candidates <= length - 2
        ([CLS] and one [SEP]), rounded up to a multiple of 8."""
        per_seq = max(1, round((length - 2) * self.mlm_probability))
        return -(-batch * per_seq // 8) * 8

    def _pad_slots(
        self, index: torch.Tensor, labels: torch.Tensor, batch: int, length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        slots = self.slots(batch, length)
        if len(index) > slots:  # whole-word masking can exceed the budget by one long word: a new shape, rarely
            slots = -(-len(index) // 64) * 64
        pad = slots - len(index)
        return (torch.cat([index, index.new_zeros(pad)]), torch.cat([labels, labels.new_full((pad,), -100)]))

    def _mask(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's rule: round(15% of each sequence's real tokens) positions, at least one; of those 80%
        become [MASK], 10% a random token, 10% stay unchanged. Mutates `input_ids` in place."""
        candidates = attention_mask.bool() & (input_ids != self.cls_id) & (input_ids != self.sep_id)
        n_cand = candidates.sum(1)
        n_mask = torch.clamp(torch.round(n_cand.float() * self.mlm_probability).long(), min=1)
        n_mask = torch.minimum(n_mask, n_cand)
        scores = torch.rand(input_ids.shape, generator=gen)
        scores[~candidates] = 2.0  # never chosen
        ranks = scores.argsort(dim=1).argsort(dim=1)
        chosen = ranks < n_mask.unsqueeze(1)
        flat = chosen.flatten().nonzero().squeeze(1)
        labels = input_ids.flatten()[flat].clone()
        action = torch.rand(flat.shape, generator=gen)
        ids = input_ids.view(-1)
        ids[flat[action < 0.8]] = self.mask_id
        rand_pos = flat[(action >= 0.8) & (action < 0.9)]
        ids[rand_pos] = torch.randint(self.vocab_size, rand_pos.shape, generator=gen)
        return flat, labels

    def _mask_words(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole-word masking (BERT's later releases, PubMedBERT): a word is a piece plus the "##" pieces that
        follow it. The budget stays round(15% of the real tokens) in TOKENS: words are taken in random order
        and a word that would overflow the budget is skipped for a shorter one, as Google's
        create_pretraining_data does (so a batch may mask a few tokens under budget; if the first word drawn
        is longer than the whole budget it is masked anyway, so every sequence has a target). 80/10/10 is
        drawn once per WORD: all its pieces become [MASK], or all random tokens, or all stay."""
        candidates = attention_mask.bool() & (input_ids != self.cls_id) & (input_ids != self.sep_id)
        batch, length = input_ids.shape
        continues = self._is_continuation[input_ids] & candidates
        prev = torch.zeros_like(candidates)
        prev[:, 1:] = candidates[:, :-1]
        starts = candidates & ~(continues & prev)  # a "##" piece after [CLS]/[SEP] starts a (cut) word
        n_words = starts.sum(1)
        width = int(n_words.max()) if batch else 0
        word = torch.where(candidates, starts.long().cumsum(1) - 1, torch.full_like(input_ids, width))
        lengths = torch.zeros(batch, width + 1, dtype=torch.long).scatter_add_(1, word, candidates.long())[:, :width]
        n_cand = candidates.sum(1)
        budget = torch.minimum(torch.clamp(torch.round(n_cand.float() * self.mlm_probability).long(), min=1), n_cand)
        scores = torch.rand(batch, width, generator=gen)
        scores[torch.arange(width).unsqueeze(0) >= n_words.unsqueeze(1)] = 2.0  # no such word: last
        order = scores.argsort(dim=1)
        ordered_len = lengths.gather(1, order)
        take = torch.zeros(batch, width, dtype=torch.bool)
        taken = torch.zeros(batch, dtype=torch.long)
        for k in range(width):  # skip-and-continue, every sequence at once
            fits = (ordered_len[:, k] > 0) & (taken + ordered_len[:, k] <= budget)
            take[:, k] = fits
            taken += ordered_len[:, k] * fits
            if bool((taken >= budget).all()):
                break
        take[:, 0] |= (taken == 0) & (n_words > 0)
        selected = torch.zeros(batch, width + 1, dtype=torch.bool)
        selected[:, :width].scatter_(1, order, take)
        chosen = selected.gather(1, word) & candidates
        action = torch.rand(batch, width + 1, generator=gen).gather(1, word)  # one draw per word, for all its pieces
        flat = chosen.flatten().nonzero().squeeze(1)
        labels = input_ids.flatten()[flat].clone()
        act = action.flatten()[flat]
        ids = input_ids.view(-1)
        ids[flat[act < 0.8]] = self.mask_id
        rand_pos = flat[(act >= 0.8) & (act < 0.9)]
        ids[rand_pos] = torch.randint(self.vocab_size, rand_pos.shape, generator=gen)
        return flat, labels
