"""Masked-LM + next-sentence-prediction objective around a Hugging Face BertForPreTraining."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from biobert.models import bert_attention_mask


class PretrainingObjective(nn.Module):
    """Computes the vocabulary projection only at masked positions (about 7x fewer logits at 15%)
    and returns ratio metrics the loop can sum exactly across micro-batches and ranks.

    Nothing here reads device data on the host: the masked index has a fixed number of slots (unused ones
    carry label -100), next-sentence labels of -1 are ignored through `ignore_index`, and every metric is a
    device tensor. So the whole objective (encoder, masked-only head, losses) compiles to one graph.
    `vocab_size`: the tokenizer's vocabulary when the model's embedding is padded to a multiple of 64 for the
    GPU's matrix units (pretrain/run.py); the padded logits are sliced off before the softmax.
    """

    def __init__(self, model: nn.Module, vocab_size: int | None = None):
        super().__init__()
        self.model = model  # BertForPreTraining; exported as-is (prefix "model.")
        self.vocab_size = vocab_size or model.config.vocab_size

    def forward(
        self, input_ids, token_type_ids, masked_index, masked_labels, next_sentence_label, attention_mask=None
    ) -> dict:
        sequence, pooled = self.model.bert(
            input_ids=input_ids,
            attention_mask=self._mask(attention_mask),
            token_type_ids=token_type_ids,
            return_dict=False,
        )[:2]
        hidden = sequence.reshape(-1, sequence.shape[-1]).index_select(0, masked_index)
        logits = self.model.cls.predictions(hidden)
        if logits.shape[-1] != self.vocab_size:
            logits = logits[:, : self.vocab_size]
        logits = logits.float()
        n_masked = (masked_labels >= 0).sum()
        mlm_sum = F.cross_entropy(logits, masked_labels, ignore_index=-100, reduction="sum")
        mlm_loss = mlm_sum / n_masked.clamp(min=1)
        mlm_correct = (logits.argmax(-1) == masked_labels).sum()  # a -100 label never equals an argmax
        nsp_logits = self.model.cls.seq_relationship(pooled).float()
        n_nsp = (next_sentence_label >= 0).sum()
        nsp_sum = F.cross_entropy(nsp_logits, next_sentence_label, ignore_index=-1, reduction="sum")
        nsp_loss = nsp_sum / n_nsp.clamp(min=1)  # 0 when no example has a next-sentence label
        nsp_correct = (nsp_logits.argmax(-1) == next_sentence_label).sum()
        metrics = {
            "mlm_loss": (mlm_sum.detach(), n_masked),
            "mlm_acc": (mlm_correct, n_masked),
            "nsp_loss": (nsp_sum.detach(), n_nsp),
            "nsp_acc": (nsp_correct, n_nsp),
        }
        return {"loss": mlm_loss + nsp_loss, "metrics": metrics}

    def _mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """None: no padding in this batch (SDPA's flash kernel)."""
        if attention_mask is None:
            return None
        return bert_attention_mask(attention_mask, self.model.config._attn_implementation, self.model.dtype)


@torch.no_grad()
def heldout_metrics(engine, batches: list[dict]) -> dict[str, float]:
    """Exact held-out MLM loss/accuracy and NSP accuracy over this rank's batches, reduced over ranks."""
    names = ("mlm_loss", "mlm_acc", "nsp_loss", "nsp_acc")
    sums = None
    for batch in batches:
        metrics = engine(batch)["metrics"]
        values = torch.stack([torch.stack([metrics[n][0], metrics[n][1]]).double() for n in names]).flatten()
        sums = values if sums is None else sums + values
    total = engine.all_reduce_sum(sums)
    return {f"heldout_{n}": total[2 * i] / total[2 * i + 1] for i, n in enumerate(names) if total[2 * i + 1]}


def heldout_evaluator(cfg, engine, collate, metrics=None):
    """evaluate(engine, state) over this rank's share of the held-out split (the same masks at every
    evaluation), or None when the shards hold no usable held-out split. `cfg`: a PretrainConfig."""
    import sys

    from biobert.dist import derived_seed, seed_everything
    from biobert.errors import UserError
    from data_prep.shards import open_shards

    try:
        heldout = open_shards(cfg.data_dir, "heldout")
    except UserError:
        return None
    if len(heldout) == 0 or cfg.eval_batches < 1:
        return None
    mb, world, rank = engine.micro_batch, engine.world_size, engine.rank
    per_rank = min(cfg.eval_batches, len(heldout) // (mb * world))
    if per_rank == 0:
        if rank == 0:
            print(
                f"warning: {cfg.data_dir}: {len(heldout)} held-out sequences, fewer than one micro-batch "
                f"({mb}) per rank ({world}): no held-out evaluation. Prepare with a larger "
                "--heldout_fraction.",
                file=sys.stderr,
            )
        return None

    def evaluate(eng, state):
        seed_everything(derived_seed(cfg.seed, "heldout"))  # the same masks at every evaluation
        batches = [
            collate(heldout.get_batch(list(range((b * world + rank) * mb, (b * world + rank + 1) * mb))))
            for b in range(per_rank)
        ]
        return (metrics or heldout_metrics)(eng, batches)

    return evaluate
