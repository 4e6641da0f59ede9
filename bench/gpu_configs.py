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
    write_manifest(
        out,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "seq_len": seq_len,
            "mode": "nsp",
            "vocab_size": tok.vocab_size,
            "tokenizer_hash": tok.vocab_hash,
            "lowercase": tok.lowercase,
            "config_hash": "synthetic",
            "special_ids": {"pad": tok.pad_id, "cls": tok.cls_id, "sep": tok.sep_id, "mask": tok.mask_id},
            "splits": {"train": {"shards": shards}},
            "counts": {"examples": n, "tokens": n * seq_len, "padding_fraction": 0.0},
        },
    )
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
            text = [
                f"torch.profiler over {steps} steps (times are totals over those steps)\n",
                events.table(sort_by="self_cpu_time_total", row_limit=45),
                events.table(sort_by="self_device_time_total", row_limit=25) if torch.cuda.is_available() else "",
            ]
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


def load_probe():
    """This tree's biobert/probe.py by path: it also counts around a baseline tree's library, which has none."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_probe", ROOT / "biobert" / "probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    return probe


class _Counts:
    """After the timed steps, one log period (`log_every` steps, its log step included) is counted: host reads
    of tensors and dispatched ATen ops (biobert/probe.py, this tree's, also around a baseline tree's code), and
    on a GPU the kernel launches and synchronisations torch.profiler sees."""

    LAUNCH = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx", "cudaGraphLaunch")
    SYNC = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")

    def __init__(self) -> None:
        self.probe = load_probe()
        self.first_step = None
        self.result: dict = {}

    def start(self, step: int) -> None:
        import torch

        self.first_step = step
        self.syncs, self.ops = self.probe.SyncCounter().__enter__(), self.probe.OpCounter().__enter__()
        self.syncs.active = self.ops.active = True
        self.prof = None
        if torch.cuda.is_available():
            acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            self.prof = torch.profiler.profile(activities=acts)
            self.prof.__enter__()

    def stop(self, step: int) -> None:
        import torch

        n = max(step - self.first_step, 1)
        self.syncs.active = self.ops.active = False
        self.ops.__exit__(None, None, None)
        self.syncs.__exit__(None, None, None)
        self.result = {
            "steps_counted": n,
            "host_reads_per_step": self.syncs.count / n,
            "aten_ops_per_step": self.ops.count / n,
            "host_read_sites": dict(self.syncs.where.most_common(6)),
        }
        if self.prof is not None:
            torch.cuda.synchronize()
            self.prof.__exit__(None, None, None)
            events = self.prof.key_averages()
            count = {e.key: e.count for e in events}
            self.result["kernel_launches_per_step"] = sum(c for k, c in count.items() if k in self.LAUNCH) / n
            self.result["cuda_syncs_per_step"] = {k: c / n for k, c in count.items() if k.startswith(self.SYNC) and c}


def _timed_tracker(base, spec: dict, record: list, counts: _Counts | None = None):
    profiler = (
        _Profiler(spec["profile"], Path(spec["tmp"]) / f"profile_{spec['name']}.txt") if spec.get("profile") else None
    )

    class Timed(base):
        def log(self, step, metrics, kind="train"):
            super().log(step, metrics, kind)
            if kind != "train":
                return
            record.append(
                (
                    time.perf_counter(),
                    int(metrics["tokens_seen"]),
                    step,
                    metrics.get("loss"),
                    metrics.get("loss_scale"),
                    metrics.get("skipped_steps"),
                )
            )
            t0 = next((r[0] for r in record if r[2] >= spec["warmup"]), None)
            if profiler is not None and t0 is not None:
                if profiler.prof is None:
                    profiler.start(step)
                elif step - profiler.first_step >= spec.get("profile_steps", 10):
                    profiler.stop(step)
                    raise _Done
                return
            if counts is not None and counts.first_step is not None:
                counts.stop(step)
                raise _Done
            if t0 is not None and (time.perf_counter() - t0 >= spec["config_s"] or step >= spec["max_steps"]):
                if counts is None:
                    raise _Done
                counts.start(step)

    return Timed


def _bert_config(spec: dict):
    from transformers import BertConfig

    size = spec.get("size") or (TINY if spec["tiny"] else BERT_BASE)  # "size": BertConfig fields
    return BertConfig(vocab_size=spec["vocab_size"], max_position_embeddings=512, type_vocab_size=2, **size)


# What each variant changes against the new default (ds_configs/h100x8.json: torch_autocast bf16, ZeRO 0, torch
# fused AdamW, the objective under torch.compile on a GPU). "before" is the baseline tree's own path.
COMPILE = {"new": "auto", "eager": "", "fp16": "", "cudagraphs": "reduce-overhead", "fusedadam": "auto"}


def _ds_config(spec: dict) -> Path:
    """The DeepSpeed JSON of a variant; "fusedadam": h100x8.json with DeepSpeed's FusedAdam (a CUDA op JIT-built
    on first use) instead of torch's fused AdamW."""
    variant = spec.get("variant", "new")
    if variant == "before":
        return Path(spec["src"]) / "ds_configs" / "h100x8.json"
    if variant == "fp16":
        return ROOT / "ds_configs" / "v100x8.json"
    if variant != "fusedadam":
        return ROOT / "ds_configs" / "h100x8.json"
    import json

    cfg = json.loads((ROOT / "ds_configs" / "h100x8.json").read_text())
    for key in ("torch_adam", "fused"):
        cfg["optimizer"]["params"].pop(key, None)
    path = Path(spec["tmp"]) / f"ds_{spec['name']}.json"
    path.write_text(json.dumps(cfg))
    return path


def pretrain_argv(spec: dict) -> list[str]:
    cfg_path = Path(spec["tmp"]) / f"bert_{spec['name']}.json"
    _bert_config(spec).to_json_file(str(cfg_path))
    mb = spec["micro_batch"]
    argv = [
        "--deepspeed_config",
        str(_ds_config(spec)),
        "--ds",
        f"train_batch_size={mb}",
        "--ds",
        f"train_micro_batch_size_per_gpu={mb}",
        "--ds",
        "gradient_accumulation_steps=1",
        "--ds",
        "scheduler.params.warmup_num_steps=100",
        "--data_dir",
        spec["data_dir"],
        "--model_config",
        str(cfg_path),
        "--tokenizer",
        spec["vocab"],
        "--run_dir",
        str(Path(spec["tmp"]) / f"run_{spec['name']}"),
        "--max_steps",
        "100000",
        "--log_every",
        str(spec["log_every"]),
        "--progress",
        "false",
        "--eval_batches",
        "0",
        "--export_hf",
        "false",
        "--seed",
        "42",
    ]
    if spec.get("variant", "new") == "before":
        argv += ["--ds", f"zero_optimization.stage={spec.get('zero', 1)}"]
    else:
        argv += ["--compile", COMPILE[spec.get("variant", "new")], "--compile_backend", spec.get("backend", "inductor")]
    for override in spec.get("ds", []):
        argv += ["--ds", override]
    return argv


def run_pretrain(spec: dict, record: list, counts: _Counts | None = None) -> dict:
    import biobert.loop as loop

    loop.Tracker = _timed_tracker(loop.Tracker, spec, record, counts)
    from pretrain.run import main

    try:
        main(pretrain_argv(spec))
    except _Done:
        pass
    from biobert.flops import bert_flops_per_token

    return {"flops_per_token": bert_flops_per_token(_bert_config(spec), spec["seq_len"], 0.15)}


def run_parity(spec: dict) -> dict:
    """fp16 (the V100 profile's torch_autocast + GradScaler) against bf16 over the same steps from the same
    weights and data, eager, one micro-batch per step; then fp16 again with NaN gradients forced at step 10:
    that step must be skipped and the loss scale halved, without a rollback."""
    import biobert.loop as loop
    from biobert.faults import Faults
    from pretrain.run import main

    steps, out, base = spec.get("parity_steps", 40), {}, loop.Tracker
    for name, variant, fault in (("bf16", "eager", None), ("fp16", "fp16", None), ("fp16_overflow", "fp16", 9)):
        record: list = []
        loop.Tracker = _timed_tracker(base, {**spec, "config_s": 1e9, "max_steps": steps}, record)
        one = {**spec, "variant": variant, "name": f"{spec['name']}_{name}", "log_every": 1}
        faults = Faults(nan_grad_at_sample=fault * spec["micro_batch"]) if fault is not None else None  # step 10
        try:
            main(pretrain_argv(one) + ["--max_steps", str(steps)], faults=faults)
        except _Done:
            pass
        out[name] = {
            "loss": [r[3] for r in record],
            "loss_scale": [r[4] for r in record],
            "skipped_steps": [r[5] for r in record],
        }
    bf16, fp16 = out["bf16"]["loss"], out["fp16"]["loss"]
    rel = [abs(a - b) / abs(a) for a, b in zip(bf16, fp16)]
    over = out["fp16_overflow"]
    out["summary"] = {
        "steps": len(rel),
        "max_rel_loss_diff_fp16_vs_bf16": max(rel) if rel else None,
        "mean_rel_loss_diff_last_10": sum(rel[-10:]) / max(len(rel[-10:]), 1),
        "tolerance": "fp16 within 2 % of bf16 at every step (two 16-bit formats, same fp32 master weights)",
        "within_tolerance": bool(rel) and max(rel) <= 0.02,
        "overflow_step_skipped": over["skipped_steps"][9:10] == [1] and (over["skipped_steps"][8:9] == [0]),
        "scale_before_after": over["loss_scale"][8:10],
    }
    return out


def run_finetune(spec: dict, record: list, counts: _Counts | None = None) -> dict:
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
    before = spec.get("variant", "new") == "before"
    precision = ["bf16.enabled=true"] if before else ["torch_autocast.enabled=true", "torch_autocast.dtype=bfloat16"]
    kwargs = (
        {}
        if before
        else {"compile_mode": COMPILE[spec.get("variant", "new")], "compile_backend": spec.get("backend", "inductor")}
    )
    ds_dir = Path(spec["src"]) if before else ROOT
    engine = Engine(
        model,
        ds_dir / "ds_configs" / "finetune.json",
        total_steps=100000,
        overrides=[
            f"train_batch_size={mb}",
            *precision,
            "optimizer.params.torch_adam=true",
            "optimizer.params.fused=true",
            *spec.get("ds", []),
        ],
        **kwargs,
    )
    gen = torch.Generator().manual_seed(0)

    def fetch(ix):  # synthetic full-length sentences; first-sub-token labels, -100 at [CLS]/[SEP]
        ids = torch.randint(104, config.vocab_size, (len(ix), seq), generator=gen)
        labels = torch.randint(0, 3, (len(ix), seq), generator=gen)
        labels[:, 0] = labels[:, -1] = -100
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids),
            "labels": labels,
        }

    layout = BatchLayout(engine.train_batch, engine.micro_batch, engine.grad_accum, engine.world_size, engine.rank)
    source = BatchSource(EpochSampler(100_000, engine.train_batch, 42), layout, fetch)
    cfg = LoopConfig(
        run_dir=str(Path(spec["tmp"]) / f"run_{spec['name']}"),
        log_every=spec["log_every"],
        progress=False,
        export_hf=False,
        max_steps=100000,
    )
    tracker = _timed_tracker(loop.Tracker, spec, record, counts)(cfg.run_dir, True, 100000, False)
    try:
        loop.fit(engine, source, loop.TrainState(), cfg, total_steps=100000, run_config={}, tracker=tracker)
    except _Done:
        pass
    return {"flops_per_token": bert_flops_per_token(config, seq, 0.0)}  # no MLM head; ~3 labels


def run_one(spec: dict) -> dict:
    import torch

    record: list = []
    out: dict = {"spec": {k: v for k, v in spec.items() if k not in ("tmp", "vocab", "data_dir", "src")}}
    counts = None if spec.get("profile") else _Counts()
    try:
        if spec["kind"] == "parity":
            out["parity"] = run_parity(spec)
        else:
            extra = (run_pretrain if spec["kind"] == "pretrain" else run_finetune)(spec, record, counts)
            out.update(extra)
    except torch.cuda.OutOfMemoryError as e:
        out["error"] = f"out of memory: {str(e).splitlines()[0]}"
    except SystemExit as e:
        out["error"] = f"exited with {e.code}"
    except Exception as e:  # noqa: BLE001  (recorded: one config failing must not stop the rest)
        import traceback

        traceback.print_exc()
        out["error"] = f"{type(e).__name__}: {e}"
    if counts is not None and counts.result:
        out["counts"] = counts.result
    steady = [r for r in record if r[2] >= spec["warmup"]]
    if spec["kind"] != "parity" and len(steady) >= 2:
        (t0, k0, s0), (t1, k1, s1) = steady[0][:3], steady[-1][:3]
        if counts is not None and counts.result:  # the counted period is not timed (the counters cost time)
            (t1, k1, s1) = next(r for r in reversed(steady) if r[2] <= counts.first_step)[:3]
        if s1 > s0:
            out.update(steps_timed=s1 - s0, s_per_step=(t1 - t0) / (s1 - s0), tokens_per_s=(k1 - k0) / (t1 - t0))
            out["samples_per_s"] = out["tokens_per_s"] / spec["seq_len"]
    if spec["kind"] != "parity" and "tokens_per_s" not in out and "error" not in out:
        out["error"] = f"too few timed steps ({len(record)} logs); raise --config_s"
    if torch.cuda.is_available():
        out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out
