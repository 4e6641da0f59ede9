"""Dynamic masking for masked-LM + next-sentence prediction, applied when a batch is drawn.

Masks are drawn from torch's global generator, which the loop reseeds from (seed, step, rank) before
each step, so masking is new every epoch yet identical after a resume. Only masked positions are
returned (flat indices into batch x sequence), so the vocabulary projection is computed for ~15% of
the tokens instead of all of them.
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

    def __call__(self, examples: dict) -> dict[str, torch.Tensor]:
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
        masked_index, masked_labels = self._mask(input_ids, attention_mask)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                "masked_index": masked_index, "masked_labels": masked_labels,
                "next_sentence_label": torch.as_tensor(np.asarray(examples["next_sentence_label"],
                                                                  dtype=np.int64))}

    def _mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's rule: round(15% of each sequence's real tokens) positions, at least one; of those 80%
        become [MASK], 10% a random token, 10% stay unchanged. Mutates `input_ids` in place."""
        candidates = attention_mask.bool() & (input_ids != self.cls_id) & (input_ids != self.sep_id)
        n_cand = candidates.sum(1)
        n_mask = torch.clamp(torch.round(n_cand.float() * self.mlm_probability).long(), min=1)
        n_mask = torch.minimum(n_mask, n_cand)
        scores = torch.rand(input_ids.shape)
        scores[~candidates] = 2.0  # never chosen
        ranks = scores.argsort(dim=1).argsort(dim=1)
        chosen = ranks < n_mask.unsqueeze(1)
        flat = chosen.flatten().nonzero().squeeze(1)
        labels = input_ids.flatten()[flat].clone()
        action = torch.rand(flat.shape)
        ids = input_ids.view(-1)
        ids[flat[action < 0.8]] = self.mask_id
        rand_pos = flat[(action >= 0.8) & (action < 0.9)]
        ids[rand_pos] = torch.randint(self.vocab_size, rand_pos.shape)
        return flat, labels
