"""One configuration of bench/gpu_pretrain.py, run in its own process: synthetic data, the timed (or
profiled) run through our real pre-training / fine-tuning path, and its result.

`gpu_pretrain.py` (the driver) writes the data once, then starts `gpu_pretrain.py --_one SPEC` per
configuration, which calls `run_one(spec)` here. A spec is a plain dict (JSON), so everything a
configuration depends on, the model size included, travels in it.
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256)


class _Done(Exception):
    """Raised from the tracker once a configuration has been timed long enough."""


# ---------------------------------------------------------------------------------------------- data
def write_vocab(path: Path, size: int) -> Path:
    """BERT-uncased layout of the special ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103)."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [f"w{i}" for i in range(size - len(tokens))]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def write_synthetic_shards(out: Path, vocab: Path, seq_len: int, n: int, seed: int = 0) -> Path:
    """Full-length [CLS] A [SEP] B [SEP] examples (no padding), 50 % random-next labels, in our format."""
    import numpy as np

    from biobert.tokenizer import load_tokenizer
    from data_prep.shards import FORMAT, FORMAT_VERSION, ShardWriter, write_manifest

    tok = load_tokenizer(vocab)
    rng = np.random.default_rng(seed)
    writer = ShardWriter(out / "train", tok.vocab_size, root=out)
    for _ in range(n):
        a = int(rng.integers(8, seq_len - 10))
        ids = rng.integers(104, tok.vocab_size, seq_len).tolist()
        ids[0], ids[a + 1], ids[-1] = tok.cls_id, tok.sep_id, tok.sep_id
        writer.write(ids, a + 1, int(rng.integers(0, 2)))
    shards = writer.close()
    write_manifest(out, {"format": FORMAT, "format_version": FORMAT_VERSION, "seq_len": seq_len, "mode": "nsp",
                         "vocab_size": tok.vocab_size, "tokenizer_hash": tok.vocab_hash,
                         "lowercase": tok.lowercase, "config_hash": "synthetic",
                         "special_ids": {"pad": tok.pad_id, "cls": tok.cls_id, "sep": tok.sep_id,
                                         "mask": tok.mask_id},
                         "splits": {"train": {"shards": shards}},
                         "counts": {"examples": n, "tokens": n * seq_len, "padding_fraction": 0.0}})
    return out


# ---------------------------------------------------------------------------------------------- one config
class _Profiler:
    """--profile: torch.profiler (per-op CPU and CUDA time) or cProfile (Python functions) over the steps
    after warm-up; the tables go to profile_<config>.txt next to the per-config logs."""

    def __init__(self, kind: str, path: Path):
        self.kind, self.path, self.prof, self.first_step = kind, path, None, 0

    def start(self, step: int) -> None:
        self.first_step = step
        if self.kind == "torch":
            import torch

            acts = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=acts)
            self.prof.__enter__()
        else:
            import cProfile

            self.prof = cProfile.Profile()
            self.prof.enable()

    def stop(self, step: int) -> None:
        steps = step - self.first_step
        if self.kind == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.prof.__exit__(None, None, None)
            events = self.prof.key_averages()
            text = [f"torch.profiler over {steps} steps (times are totals over those steps)\n",
                    events.table(sort_by="self_cpu_time_total", row_limit=45),
                    events.table(sort_by="self_device_time_total", row_limit=25) if torch.cuda.is_available()
                    else ""]
        else:
            import io
            import pstats

            self.prof.disable()
            buf = io.StringIO()
            stats = pstats.Stats(self.prof, stream=buf)
            pattern = r"deepspeed|biobert|pretrain|data_prep|torch/(optim|nn/utils)"
            stats.sort_stats("cumulative").print_stats(pattern, 60)
            stats.sort_stats("tottime").print_stats(30)
            text = [f"cProfile over {steps} steps\n", buf.getvalue()]
        self.path.write_text("\n".join(text))


def _timed_tracker(base, spec: dict, record: list):
    profiler = _Profiler(spec["profile"], Path(spec["tmp"]) / f"profile_{spec['name']}.txt") \
        if spec.get("profile") else None

    class Timed(base):
        def log(self, step, metrics, kind="train"):
            super().log(step, metrics, kind)
            if kind != "train":
                return
            record.append((time.perf_counter(), int(metrics["tokens_seen"]), step))
            t0 = next((t for t, _, s in record if s >= spec["warmup"]), None)
            if profiler is not None and t0 is not None:
                if profiler.prof is None:
                    profiler.start(step)
                elif step - profiler.first_step >= spec.get("profile_steps", 10):
                    profiler.stop(step)
                    raise _Done
                return
            if t0 is not None and (time.perf_counter() - t0 >= spec["config_s"] or step >= spec["max_steps"]):
                raise _Done

    return Timed


def _bert_config(spec: dict):
    from transformers import BertConfig

    size = spec.get("size") or (TINY if spec["tiny"] else BERT_BASE)  # "size": BertConfig fields
    return BertConfig(vocab_size=spec["vocab_size"], max_position_embeddings=512, type_vocab_size=2, **size)


def run_pretrain(spec: dict, record: list) -> dict:
    import biobert.loop as loop
    import biobert.models as models

    loop.Tracker = _timed_tracker(loop.Tracker, spec, record)
    if spec.get("compile"):
        load = models.load_pretraining_model

        def compiled(*args, **kwargs):
            model = load(*args, **kwargs)
            model.bert.compile()  # in place: parameter names unchanged
            return model

        models.load_pretraining_model = compiled
    cfg_path = Path(spec["tmp"]) / f"bert_{spec['name']}.json"
    _bert_config(spec).to_json_file(str(cfg_path))
    from pretrain.run import main

    mb = spec["micro_batch"]
    argv = ["--deepspeed_config", str(ROOT / "ds_configs" / "h100x8.json"),
            "--ds", f"train_batch_size={mb}", "--ds", f"train_micro_batch_size_per_gpu={mb}",
            "--ds", "gradient_accumulation_steps=1", "--ds", f"zero_optimization.stage={spec['zero']}",
            "--ds", "scheduler.params.warmup_num_steps=100",
            "--data_dir", spec["data_dir"], "--model_config", str(cfg_path), "--tokenizer", spec["vocab"],
            "--run_dir", str(Path(spec["tmp"]) / f"run_{spec['name']}"), "--max_steps", "100000",
            "--log_every", str(spec["log_every"]), "--progress", "false", "--eval_batches", "0",
            "--export_hf", "false"]
    for override in spec.get("ds", []):
        argv += ["--ds", override]
    try:
        main(argv)
    except _Done:
        pass
    from biobert.flops import bert_flops_per_token

    return {"flops_per_token": bert_flops_per_token(_bert_config(spec), spec["seq_len"], 0.15)}


def run_finetune(spec: dict, record: list) -> dict:
    import torch
    from transformers import BertForTokenClassification

    from biobert import loop
    from biobert.config import LoopConfig
    from biobert.dist import derived_seed, seed_everything
    from biobert.engine import Engine
    from biobert.flops import bert_flops_per_token
    from biobert.sampler import BatchLayout, BatchSource, EpochSampler

    seed_everything(derived_seed(42, "init"))
    config = _bert_config(spec)
    config.num_labels = 3  # B / I / O, as BioBERT's NER
    model = BertForTokenClassification._from_config(config, attn_implementation="sdpa")
    mb, seq = spec["micro_batch"], spec["seq_len"]
    engine = Engine(model, ROOT / "ds_configs" / "finetune.json", total_steps=100000,
                    overrides=[f"train_batch_size={mb}", "bf16.enabled=true", "optimizer.params.torch_adam=true",
                               "optimizer.params.fused=true", *spec.get("ds", [])])
    gen = torch.Generator().manual_seed(0)

    def fetch(ix):  # synthetic full-length sentences; first-sub-token labels, -100 at [CLS]/[SEP]
        ids = torch.randint(104, config.vocab_size, (len(ix), seq), generator=gen)
        labels = torch.randint(0, 3, (len(ix), seq), generator=gen)
        labels[:, 0] = labels[:, -1] = -100
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
                "labels": labels}

    layout = BatchLayout(engine.train_batch, engine.micro_batch, engine.grad_accum, engine.world_size, engine.rank)
    source = BatchSource(EpochSampler(100_000, engine.train_batch, 42), layout, fetch)
    cfg = LoopConfig(run_dir=str(Path(spec["tmp"]) / f"run_{spec['name']}"), log_every=spec["log_every"],
                     progress=False, export_hf=False, max_steps=100000)
    tracker = _timed_tracker(loop.Tracker, spec, record)(cfg.run_dir, True, 100000, False)
    try:
        loop.fit(engine, source, loop.TrainState(), cfg, total_steps=100000, run_config={}, tracker=tracker)
    except _Done:
        pass
    return {"flops_per_token": bert_flops_per_token(config, seq, 0.0)}  # no MLM head; ~3 labels


def run_one(spec: dict) -> dict:
    import torch

    record: list = []
    out: dict = {"spec": {k: v for k, v in spec.items() if k not in ("tmp", "vocab", "data_dir")}}
    try:
        extra = (run_pretrain if spec["kind"] == "pretrain" else run_finetune)(spec, record)
        out.update(extra)
    except torch.cuda.OutOfMemoryError as e:
        out["error"] = f"out of memory: {str(e).splitlines()[0]}"
    except SystemExit as e:
        out["error"] = f"exited with {e.code}"
    except Exception as e:  # noqa: BLE001  (recorded: one config failing must not stop the rest)
        import traceback

        traceback.print_exc()
        out["error"] = f"{type(e).__name__}: {e}"
    steady = [r for r in record if r[2] >= spec["warmup"]]
    if len(steady) >= 2:
        (t0, k0, s0), (t1, k1, s1) = steady[0], steady[-1]
        out.update(steps_timed=s1 - s0, s_per_step=(t1 - t0) / (s1 - s0), tokens_per_s=(k1 - k0) / (t1 - t0))
        out["samples_per_s"] = out["tokens_per_s"] / spec["seq_len"]
    elif "error" not in out:
        out["error"] = f"too few timed steps ({len(record)} logs); raise --config_s"
    if torch.cuda.is_available():
        out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out
