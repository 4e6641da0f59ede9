"""Model builders: BERT from a Hugging Face directory (ours, Google's BERT, BioBERT) or from a config."""

from __future__ import annotations

from pathlib import Path

import torch

from biobert.errors import UserError


def _check_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: not a Hugging Face model directory (no config.json). Pass the directory "
                        "of an exported checkpoint (run_dir/hf) or of a downloaded BERT/BioBERT model.")
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


def load_pretraining_model(init_from: str | Path | None, model_config: str | Path | None = None,
                           attn_implementation: str = "sdpa") -> torch.nn.Module:
    """BertForPreTraining from pretrained weights (missing MLM/NSP heads are freshly initialised, as for
    an encoder-only checkpoint), or randomly initialised from a config file for training from scratch."""
    from transformers import BertForPreTraining
    from transformers.utils import logging as hf_logging

    if init_from:
        path = _check_dir(init_from)
        config = load_bert_config(path)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the missing-head report is expected for encoder-only weights
        try:
            model, info = BertForPreTraining.from_pretrained(str(path), config=config, output_loading_info=True,
                                                             attn_implementation=attn_implementation)
        finally:
            hf_logging.set_verbosity(verbosity)
        new = sorted(k for k in info.get("missing_keys", []) if not k.startswith("cls."))
        if new:
            raise UserError(f"{path}: encoder weights missing from the checkpoint: {new[:5]}... "
                            "Is this a BERT checkpoint?")
        model.biobert_new_heads = sorted(k for k in info.get("missing_keys", []) if k.startswith("cls."))
        return model
    if model_config:
        config = load_bert_config(model_config)
        return BertForPreTraining._from_config(config, attn_implementation=attn_implementation)
    raise UserError("set --init_from (a Hugging Face BERT directory) or --model_config (a BERT config.json "
                    "to train from scratch)")
