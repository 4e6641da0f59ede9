"""Model builders: BERT from a Hugging Face directory (ours, Google's BERT, BioBERT) or from a config."""

from __future__ import annotations

from pathlib import Path

import torch

from biobert.errors import UserError


def check_model_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(
            f"{path}: not a Hugging Face model directory (no config.json). Pass --init_from with "
            "the directory of an exported checkpoint (run_dir/hf) or of a downloaded BERT/BioBERT model "
            "(fine-tuning recipes default to runs/biobert_phase2/hf, the pre-training recipe's export, "
            "under BIOBERT_HOME when it is set)."
        )
    return path


def load_bert_config(path: str | Path):
    from transformers import BertConfig

    path = Path(path)
    config_file = path / "config.json" if path.is_dir() else path
    try:
        config = BertConfig.from_json_file(str(config_file))
    except (OSError, ValueError) as e:
        raise UserError(f"{config_file}: cannot read a BERT config ({e})") from None
    if config.model_type != "bert":
        raise UserError(f"{config_file}: model_type is {config.model_type!r}; this project trains BERT models")
    return config


MLM_HEAD_KEY = "cls.predictions.transform.dense.weight"


def checkpoint_weight_names(path: str | Path) -> set[str]:
    """Parameter names stored in a Hugging Face checkpoint directory, read without loading the weights
    (safetensors headers, a sharded index, or a memory-mapped pytorch_model.bin)."""
    path = check_model_dir(path)
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).is_file():
            import json

            return set(json.loads((path / index).read_text())["weight_map"])
    if (path / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(path / "model.safetensors"), framework="pt") as f:
            return set(f.keys())
    if (path / "pytorch_model.bin").is_file():
        return set(torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=True))
    raise UserError(f"{path}: no model.safetensors or pytorch_model.bin (a Hugging Face BERT directory is needed)")


def has_mlm_head(path: str | Path) -> bool:
    """Whether the checkpoint carries a trained masked-LM head (bert-base-cased does; encoder-only exports such
    as all-MiniLM-L6-v2 do not, and pre-training starts with a random one)."""
    return any(k.endswith(MLM_HEAD_KEY) for k in checkpoint_weight_names(path))


def load_pretraining_model(
    init_from: str | Path | None, model_config: str | Path | None = None, attn_implementation: str = "sdpa"
) -> torch.nn.Module:
    """BertForPreTraining from pretrained weights (missing MLM/NSP heads are freshly initialised, as for
    an encoder-only checkpoint), or randomly initialised from a config file for training from scratch."""
    from transformers import BertForPreTraining

    if init_from:
        path = check_model_dir(init_from)
        model, missing = _load_checked(
            BertForPreTraining, path, load_bert_config(path), attn_implementation, head_prefixes=("cls.",)
        )
        model.biobert_new_heads = missing
        return model
    if model_config:
        config = load_bert_config(model_config)
        return BertForPreTraining._from_config(config, attn_implementation=attn_implementation)
    raise UserError(
        "set --init_from (a Hugging Face BERT directory) or --model_config (a BERT config.json to train from scratch)"
    )


def config_sha256(config) -> str:
    """A model's shape (its config without version stamps and paths), for comparing runs on --resume."""
    import hashlib
    import json

    shape = {k: v for k, v in config.to_dict().items() if k not in ("transformers_version", "_name_or_path")}
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]


def bert_attention_mask(attention_mask: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """BERT's 2-D padding mask as the 4-D mask transformers passes to attention as it is. Given the 2-D one,
    transformers' mask helper first asks whether anything is padded (`mask.all()`): a host read of device
    data, a GPU sync every forward. True = attend for SDPA; an additive mask for eager attention."""
    keep = attention_mask[:, None, None, :].bool()
    if attn_implementation == "sdpa":
        return keep
    return (~keep).to(dtype) * torch.finfo(dtype).min


def pad_vocab(model: torch.nn.Module, multiple: int) -> int:
    """Pad the word embedding (and the MLM decoder tied to it) to a multiple of `multiple` rows, for the GPU's
    matrix units (30,522 -> 30,528; 28,996 -> 29,056); returns the real vocabulary size. The new rows are
    zero, are never looked up, and their logits are sliced off before the softmax (PretrainingObjective),
    so training is unchanged; every export slices them off again (checkpoint.export_hf_model)."""
    vocab = model.config.vocab_size
    padded = -(-vocab // multiple) * multiple if multiple > 1 else vocab
    if padded != vocab:
        model.resize_token_embeddings(padded, mean_resizing=False)
        with torch.no_grad():
            model.get_input_embeddings().weight[vocab:].zero_()
    return vocab


def unpad_vocab(weights: dict[str, torch.Tensor], vocab: int) -> dict[str, torch.Tensor]:
    """Export side of pad_vocab: every tensor indexed by the vocabulary back to `vocab` rows."""
    names = ("word_embeddings.weight", "predictions.bias", "predictions.decoder.weight", "predictions.decoder.bias")
    return {k: v[:vocab].clone() if k.endswith(names) and v.shape[0] > vocab else v for k, v in weights.items()}


def load_task_model(
    model_cls: type,
    init_from: str | Path,
    task: str,
    labels: list[str] | None,
    attn_implementation: str = "sdpa",
    **config_updates,
) -> torch.nn.Module:
    """A task head (token/sequence classification, QA) on a pre-trained or fine-tuned BERT directory.

    A checkpoint already fine-tuned with the same head must carry the same label list (by name), so a
    model trained on another label set is never silently re-mapped. Dropped pre-training heads and a new
    randomly initialised head are expected here; a missing encoder weight is refused (_load_checked).
    """
    config = load_bert_config(init_from)
    if labels is not None:
        if config.architectures and model_cls.__name__ in config.architectures:
            theirs = [config.id2label[i] for i in sorted(config.id2label)]
            if theirs != labels:
                raise UserError(
                    f"{init_from}: a {model_cls.__name__} with labels {theirs}, but {task} has "
                    f"{labels}. Start from a pre-trained (not fine-tuned) checkpoint or from one "
                    "fine-tuned on the same label set."
                )
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    for key, value in config_updates.items():
        setattr(config, key, value)
    return _load_checked(
        model_cls,
        Path(init_from),
        config,
        attn_implementation,
        head_prefixes=("classifier.", "qa_outputs.", "cls.", "bert.pooler."),
    )[0]


def _load_checked(
    model_cls: type, path: Path, config, attn_implementation: str, head_prefixes: tuple[str, ...]
) -> tuple[torch.nn.Module, list[str]]:
    """from_pretrained, refusing what did not load: every encoder weight must come from the checkpoint (only
    the heads in `head_prefixes` may be new), so a renamed or damaged checkpoint never trains a random encoder.
    Returns the model and the new (randomly initialised) head weights."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new-head report is expected; what matters is checked below
    try:
        model, info = model_cls.from_pretrained(
            str(path), config=config, output_loading_info=True, attn_implementation=attn_implementation
        )
    except Exception as e:  # noqa: BLE001  (safetensors, torch and transformers each raise their own type)
        if isinstance(e, UserError):
            raise
        raise UserError(
            f"{path}: cannot read the weights ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "the weight file is damaged, truncated or not a Hugging Face checkpoint. Re-download or "
            "re-export it."
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys", []))
    lost = [k for k in missing if not k.startswith(head_prefixes)]
    if lost:
        unexpected = sorted(info.get("unexpected_keys", []))
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected[:20]):
            hint = (
                " Its weight names start with 'module.' (saved from a wrapped model): strip that prefix from "
                "every key, or export the model with save_pretrained."
            )
        elif unexpected:
            hint = f" It holds other names instead, e.g. {unexpected[:3]}."
        raise UserError(
            f"{path}: {len(lost)} encoder weights are missing from the checkpoint (e.g. {lost[:3]}), so "
            f"they would be random.{hint} Is this a BERT checkpoint?"
        )
    return model, [k for k in missing if k.startswith(head_prefixes)]
