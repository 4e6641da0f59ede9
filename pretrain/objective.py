"""Masked-LM + next-sentence-prediction objective around a Hugging Face BertForPreTraining."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PretrainingObjective(nn.Module):
    """Computes the vocabulary projection only at masked positions (about 7x fewer logits at 15%)
    and returns ratio metrics the loop can sum exactly across micro-batches and ranks."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # BertForPreTraining; exported as-is (prefix "model.")

    def forward(self, input_ids, attention_mask, token_type_ids, masked_index, masked_labels,
                next_sentence_label) -> dict:
        sequence, pooled = self.model.bert(input_ids=input_ids, attention_mask=attention_mask,
                                           token_type_ids=token_type_ids, return_dict=False)[:2]
        hidden = sequence.reshape(-1, sequence.shape[-1]).index_select(0, masked_index)
        logits = self.model.cls.predictions(hidden).float()
        n_masked = masked_labels.numel()
        mlm_loss = F.cross_entropy(logits, masked_labels)
        mlm_correct = (logits.argmax(-1) == masked_labels).sum()
        nsp_valid = next_sentence_label >= 0
        n_nsp = nsp_valid.sum()
        metrics = {"mlm_loss": (mlm_loss.detach() * n_masked, n_masked), "mlm_acc": (mlm_correct, n_masked)}
        loss = mlm_loss
        if bool(nsp_valid.any()):
            nsp_logits = self.model.cls.seq_relationship(pooled).float()
            nsp_loss = F.cross_entropy(nsp_logits[nsp_valid], next_sentence_label[nsp_valid])
            loss = loss + nsp_loss
            metrics["nsp_loss"] = (nsp_loss.detach() * n_nsp, n_nsp)
            metrics["nsp_acc"] = ((nsp_logits.argmax(-1) == next_sentence_label)[nsp_valid].sum(), n_nsp)
        return {"loss": loss, "metrics": metrics}


@torch.no_grad()
def heldout_metrics(engine, batches: list[dict]) -> dict[str, float]:
    """Exact held-out MLM loss/accuracy and NSP accuracy over this rank's batches, reduced over ranks."""
    names = ("mlm_loss", "mlm_acc", "nsp_loss", "nsp_acc")
    sums = [0.0] * (2 * len(names))
    for batch in batches:
        metrics = engine(batch)["metrics"]
        for i, n in enumerate(names):
            if n in metrics:
                sums[2 * i] += float(metrics[n][0])
                sums[2 * i + 1] += float(metrics[n][1])
    total = engine.all_reduce_sum(sums)
    return {f"heldout_{n}": total[2 * i] / total[2 * i + 1] for i, n in enumerate(names) if total[2 * i + 1]}
