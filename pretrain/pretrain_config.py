"""The pre-training run config (what pretrain/run.py parses, and what orchestrators and reports build) and
what defines a run for --resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from biobert.config import LoopConfig

DEFAULT_RECIPE = Path(__file__).resolve().parent / "configs" / "biobert_phase1.json"


@dataclasses.dataclass
class PretrainConfig(LoopConfig):
    data_dir: str = ""  # shards written by `python -m data_prep`
    init_from: str = ""  # Hugging Face BERT directory to continue from (weights only, new run)
    model_config: str = ""  # BERT config.json to train from scratch instead of init_from
    tokenizer: str = ""  # vocab.txt or tokenizer directory; default: init_from
    seq_len: int = 0  # expected sequence length of the shards (a check); 0 = whatever they hold
    mlm_probability: float = 0.15  # share of each sequence's tokens masked (BERT's round(15 %), 80/10/10)
    whole_word_mask: bool = False  # mask all pieces of a word together (pretrain/collator.py)
    eval_batches: int = 20  # held-out micro-batches per rank at each evaluation
    attn_implementation: str = "sdpa"  # "sdpa" (fused, the flash kernel when unpadded) or "eager"
    max_steps: int = 1000
    # Freeze the encoder (embeddings included, so the MLM decoder tied to them too) and train only the heads'
    # own weights: a first phase when init_from has no MLM head, so that the random head's early gradients
    # do not rewrite the encoder before the head can read it (bench/README.md, reproduction).
    train_only_heads: bool = False
    # Rows of the word embedding / MLM decoder padded to this multiple inside the run (30,522 -> 30,528) for the
    # GPU's matrix units; exports are sliced back to the real vocabulary. 0 or 1: no padding.
    pad_vocab_multiple: int = 64
    compile: str = "auto"  # the whole objective under torch.compile on a GPU (static shapes: one graph)


def run_identity(cfg: PretrainConfig, data: dict, global_batch: int, model) -> dict:
    """What defines a pre-training run, compared on --resume (checkpoint.check_same_run): the data, the global
    batch (the sample position is counted in it), the seed (data order, masks, dropout), the model's shape and
    the objective. Paths are not compared: a run may move to another filesystem."""
    from biobert.models import config_sha256

    return {
        "data": data,
        "train_batch_size": global_batch,
        "seed": cfg.seed,
        "model_config_sha256": config_sha256(model.config),
        "objective": {
            k: getattr(cfg, k) for k in ("mlm_probability", "whole_word_mask", "train_only_heads", "pad_vocab_multiple")
        },
    }
