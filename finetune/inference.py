"""Model loading and batching for the inference commands (predict.py, embed.py): plain torch, no DeepSpeed.

Inputs are sorted by length before batching so that a batch pads to about its own length (most biomedical
sentences are short, a few are long); results are returned or written in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from biobert.errors import UserError

HEADS = {"BertForTokenClassification": "ner", "BertForSequenceClassification": "re"}


def resolve_device(device: str) -> str:
    """`--device`: "auto" is CUDA when available, else CPU; anything else is passed to torch."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: this torch build or machine has no CUDA device; use --device cpu")
    return device


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices into `lengths`, sorted by length (stable), cut into batches of `batch_size`."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def load_model(model_dir: str, device: str):
    """(kind, model, tokenizer, labels, provenance) of a fine-tuned NER or RE export; a directory without
    a trained head is refused."""
    from transformers import BertForSequenceClassification, BertForTokenClassification

    from biobert.checkpoint import read_provenance
    from biobert.models import load_bert_config
    from biobert.tokenizer import load_tokenizer

    if not (Path(model_dir) / "config.json").is_file():
        raise UserError(
            f"{model_dir}: no config.json; pass the Hugging Face export of a fine-tuned run "
            "(run_dir/hf of finetune/run_task.py)"
        )
    config = load_bert_config(model_dir)
    found = [a for a in (config.architectures or []) if a in HEADS]
    if not found:
        raise UserError(
            f"{model_dir}: architectures {config.architectures} has no token-classification "
            "(NER) or sequence-classification (RE) head; a pre-trained or QA model cannot "
            "predict entities or relations. Pass run_dir/hf of an NER or RE run_task.py run."
        )
    kind = HEADS[found[0]]
    cls = BertForTokenClassification if kind == "ner" else BertForSequenceClassification
    model = cls.from_pretrained(model_dir, config=config)
    model.to(resolve_device(device)).eval()
    labels = [config.id2label[i] for i in sorted(config.id2label)]
    return kind, model, load_tokenizer(model_dir), labels, read_provenance(model_dir)


def run_model(model, task, features: list, pad_id: int, batch_size: int) -> list:
    """`task.outputs` per feature (logits as numpy), batched by length, returned in input order."""
    import torch

    device = next(model.parameters()).device
    out: list = [None] * len(features)
    with torch.no_grad():
        for ix in length_batches([len(f.input_ids) for f in features], batch_size):
            batch = task.collate([features[i] for i in ix], pad_id)
            batch.pop("labels")
            batch = {k: v.to(device) for k, v in batch.items()}
            for i, row in zip(ix, task.outputs(model(**batch), batch)):
                out[i] = row
    return out


def load_encoder(model_dir: str, device: str, dtype: str = "float32"):
    """(BertModel, tokenizer) from any BERT directory: a pre-training export, BERT/BioBERT, or a fine-tuned
    run's export; the task or pre-training heads are left out and the encoder weights must all be there."""
    import torch
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    from biobert.models import load_bert_config
    from biobert.tokenizer import load_tokenizer

    if not (Path(model_dir) / "config.json").is_file():
        raise UserError(
            f"{model_dir}: no config.json; pass a Hugging Face BERT directory (run_dir/hf, a "
            "pre-training export, or a downloaded BERT/BioBERT model)"
        )
    config = load_bert_config(model_dir)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # dropped heads are expected: the report would only alarm
    hf_logging.disable_progress_bar()
    try:
        model, info = BertModel.from_pretrained(
            model_dir, config=config, add_pooling_layer=False, attn_implementation="sdpa", output_loading_info=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if info.get("missing_keys"):
        raise UserError(
            f"{model_dir}: encoder weights missing from the checkpoint: "
            f"{sorted(info['missing_keys'])[:5]}...; is this a BERT checkpoint?"
        )
    device = resolve_device(device)
    if dtype == "float16" and device == "cpu":
        raise UserError("--dtype float16 needs a CUDA device (--device cuda); use float32 on CPU")
    model.to(device=device, dtype=getattr(torch, dtype)).eval()
    return model, load_tokenizer(model_dir)
