"""Continue pre-training a BERT (masked LM + next-sentence prediction) on prepared shards.

    deepspeed --num_gpus 8 pretrain/run.py --deepspeed_config ds_configs/v100x8.json    # BioBERT's phase 1
    deepspeed --num_gpus 8 pretrain/run.py --deepspeed_config ds_configs/v100x8.json \
        --config pretrain/configs/biobert_phase2.json                                    # ... and phase 2
    deepspeed --num_gpus 8 pretrain/run.py --deepspeed_config ds_configs/v100x8.json \
        --data_dir shards/pubmed_128 --init_from models/bert-base-cased --run_dir runs/biobert --max_steps 200000

With neither --config nor --data_dir the run is pretrain/configs/biobert_phase1.json (shards/, models/ and
runs/ relative to BIOBERT_HOME or the current directory).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biobert import checkpoint, dist  # noqa: E402
from biobert.config import add_config_args, config_dict, config_from_args, write_json  # noqa: E402
from biobert.errors import UserError, exit_on_user_error  # noqa: E402
from pretrain.pretrain_config import DEFAULT_RECIPE, PretrainConfig, run_identity  # noqa: E402, F401


def parse_args(argv: list[str] | None) -> tuple[PretrainConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deepspeed_config", required=True, help="DeepSpeed JSON (ds_configs/<profile>.json)")
    parser.add_argument(
        "--ds",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a DeepSpeed JSON value, e.g. --ds optimizer.params.lr=5e-5",
    )
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    add_config_args(parser, PretrainConfig, f"; with neither --config nor --data_dir: {DEFAULT_RECIPE.name}")
    args = parser.parse_args(argv)
    if not args.config and not hasattr(args, "data_dir"):  # the bare command: BioBERT's phase 1
        args.config = str(DEFAULT_RECIPE)
    return config_from_args(PretrainConfig, args), args


def check_compatible(manifest: dict, tokenizer, model, data_dir: str, tok_source: str, expected_len: int = 0) -> None:
    """Shards, tokenizer and model must agree before any compute is spent."""
    if manifest["tokenizer_hash"] != tokenizer.vocab_hash:
        raise UserError(
            f"{data_dir}: shards were tokenised with a different vocabulary "
            f"(hash {manifest['tokenizer_hash']}, lowercase={manifest.get('lowercase')}) than "
            f"{tok_source} (hash {tokenizer.vocab_hash}, lowercase={tokenizer.lowercase}). "
            "Re-run data_prep with the model's vocab.txt."
        )
    if tokenizer.vocab_size > model.config.vocab_size:
        raise UserError(
            f"{tok_source}: vocabulary has {tokenizer.vocab_size} entries but the model's "
            f"embedding has {model.config.vocab_size}; use the model's own vocab.txt"
        )
    if expected_len and manifest["seq_len"] != expected_len:
        raise UserError(
            f"{data_dir}: shards hold {manifest['seq_len']}-token sequences, not --seq_len "
            f"{expected_len}; prepare shards with `python -m data_prep ... --seq_len {expected_len}`"
        )
    if manifest["seq_len"] > model.config.max_position_embeddings:
        raise UserError(
            f"{data_dir}: sequences of {manifest['seq_len']} tokens exceed the model's "
            f"max_position_embeddings {model.config.max_position_embeddings}"
        )


@exit_on_user_error
def main(argv: list[str] | None = None, faults=None) -> dict:
    """`faults`: a biobert.faults.Faults for in-process callers (benchmarks, tests); default: the environment's."""
    cfg, args = parse_args(argv)
    return run(cfg, args.deepspeed_config, args.ds, faults)


def run(cfg: PretrainConfig, deepspeed_config: str, ds: list[str] | None = None, faults=None) -> dict:
    """Pre-train as `cfg` says, on the DeepSpeed profile `deepspeed_config` with `ds` overrides; returns what
    result.json holds. The Python API: orchestrators build a PretrainConfig and call this."""
    from biobert.faults import Faults

    ds = list(ds or [])
    faults = faults or Faults.from_env()  # test hooks, read once
    from biobert.dist import derived_seed, seed_everything
    from biobert.engine import Engine
    from biobert.flops import bert_flops_per_token
    from biobert.loop import fit
    from biobert.models import load_pretraining_model, pad_vocab
    from biobert.sampler import BatchLayout, BatchSource, EpochSampler
    from biobert.tokenizer import load_tokenizer
    from data_prep.shards import open_shards
    from pretrain.collator import MaskingCollator
    from pretrain.objective import PretrainingObjective, heldout_evaluator

    if not cfg.data_dir:
        raise UserError(
            "--data_dir is required: a directory written by `python -m data_prep` (or run with no "
            f"--config and no --data_dir for BioBERT's recipe, {DEFAULT_RECIPE.name})"
        )
    if cfg.max_steps < 1:
        raise UserError("--max_steps must be at least 1 for pre-training")
    if not cfg.resume:
        checkpoint.check_fresh_run_dir(cfg.run_dir)
    else:
        checkpoint.resume_tag(cfg.run_dir, cfg.resume_from)  # fail before building anything if nothing to resume
    train = open_shards(cfg.data_dir, "train")
    tok_source = cfg.tokenizer or cfg.init_from
    if not tok_source:
        raise UserError("--tokenizer is required with --model_config (the vocab.txt the shards used)")
    tokenizer = load_tokenizer(tok_source)
    seed_everything(derived_seed(cfg.seed, "init"))  # new heads (e.g. MLM on an encoder-only model)
    model = load_pretraining_model(cfg.init_from, cfg.model_config, cfg.attn_implementation)
    check_compatible(train.manifest, tokenizer, model, cfg.data_dir, tok_source, cfg.seq_len)
    flops = bert_flops_per_token(model.config, train.seq_len, cfg.mlm_probability)  # the real vocabulary's
    vocab = pad_vocab(model, cfg.pad_vocab_multiple)
    if cfg.train_only_heads:
        freeze_encoder(model)
    dist.setup_env()
    plan = (
        checkpoint.prepare_resume(cfg.run_dir, dist.world_size(), cfg.resume_from, cfg.trust_checkpoint)
        if cfg.resume
        else None
    )
    engine = Engine(
        PretrainingObjective(model, vocab),
        deepspeed_config,
        total_steps=cfg.max_steps,
        overrides=ds,
        compile_mode=cfg.compile,
        compile_backend=cfg.compile_backend,
        load_universal=bool(plan and plan.universal),
        resume_stage=plan.zero_stage if plan else None,
    )
    data = {k: train.manifest.get(k) for k in ("config_hash", "tokenizer_hash", "seq_len", "mode", "counts")}
    identity = run_identity(cfg, data, engine.train_batch, model)
    if plan is not None:  # before anything is written: a different run is refused, its config.json kept
        checkpoint.check_same_run(plan, identity)
    run_config = {"run": config_dict(cfg), "deepspeed_overrides": ds, "data_manifest": data, "identity": identity}
    if engine.rank == 0:
        write_json(Path(cfg.run_dir) / "config.json", run_config)
        write_json(Path(cfg.run_dir) / "ds_config.json", engine.config)
        print(
            f"pre-training: world {engine.world_size}, micro {engine.micro_batch} x accum "
            f"{engine.grad_accum} x ranks {engine.world_size} = {engine.train_batch} sequences x "
            f"{train.seq_len} tokens = {engine.train_batch * train.seq_len:,} tokens per optimizer step; "
            f"{len(train):,} training sequences; {cfg.max_steps} steps",
            file=sys.stderr,
            flush=True,
        )
    collate = MaskingCollator(
        vocab,
        tokenizer.pad_id,
        tokenizer.cls_id,
        tokenizer.sep_id,
        tokenizer.mask_id,
        cfg.mlm_probability,
        pad_to=train.seq_len,
        static=True,
        whole_word=cfg.whole_word_mask,
        continuation_ids=tokenizer.continuation_ids() if cfg.whole_word_mask else (),
    )
    layout = BatchLayout(engine.train_batch, engine.micro_batch, engine.grad_accum, engine.world_size, engine.rank)
    source = BatchSource(
        EpochSampler(len(train), engine.train_batch, cfg.seed),
        layout,
        lambda ix, generator: collate(train.get_batch(ix), generator),
        seed=cfg.seed,
        pin=not engine.on_cpu,
    )
    evaluate = heldout_evaluator(cfg, engine, collate)
    state = checkpoint.TrainState()
    if cfg.resume:
        client = engine.load_checkpoint(checkpoint.checkpoint_dir(cfg.run_dir), plan.tag)
        state = checkpoint.state_from_client(client, f"{cfg.run_dir}/checkpoints/{plan.tag}")
        if engine.rank == 0:
            print(f"resumed {cfg.run_dir} at step {state.step} ({state.samples_seen:,} samples seen)", file=sys.stderr)

    def exporter(eng, out_dir, provenance):
        checkpoint.export_hf_model(eng, out_dir, provenance, "model.", model, tokenizer, vocab_size=vocab)

    state = fit(
        engine,
        source,
        state,
        cfg,
        total_steps=cfg.max_steps,
        run_config=run_config,
        evaluate=evaluate,
        exporter=exporter if cfg.export_hf else None,
        flops_per_token=flops,
        faults=faults,
    )
    result = {
        "run_dir": cfg.run_dir,
        "step": state.step,
        "samples_seen": state.samples_seen,
        "tokens_seen": state.tokens_seen,
        "elapsed_s": round(state.elapsed_s, 2),
        "tokens_per_s": round(state.tokens_seen / max(state.elapsed_s, 1e-9), 1),
        "hf_export": str(Path(cfg.run_dir) / "hf"),
    }
    if engine.rank == 0:
        write_json(Path(cfg.run_dir) / "result.json", result)
        print(f"done: {result}", file=sys.stderr)
    return result


def freeze_encoder(model) -> None:
    """Only the pre-training heads' own weights train; the tied decoder stays the (frozen) word embedding."""
    for p in model.bert.parameters():
        p.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == 0:
        raise UserError("--train_only_heads: the model has no head weights of its own to train")
    if dist.rank() == 0:
        total = sum(p.numel() for p in model.parameters())
        print(
            f"--train_only_heads: training {trainable:,} of {total:,} parameters (the MLM/NSP heads)", file=sys.stderr
        )


if __name__ == "__main__":
    main()
