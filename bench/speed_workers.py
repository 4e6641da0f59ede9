"""One side of the pre-training speed benchmark, run in its own process (so its peak RSS is its own).

    python bench/speed_workers.py SPEC_JSON CTL_IN_FD CTL_OUT_FD

Started by bench/pretrain_speed.py. After every optimizer step the worker reports
`{"step", "wall_s", "cpu_s", "tokens", "rss_mb"}` on CTL_OUT_FD and blocks until the orchestrator writes
"go" on CTL_IN_FD. The orchestrator releases one worker at a time, round-robin, so ours, the peer and the
variants take turns step by step and share whatever else the machine is doing equally; the time spent
blocked is outside every measured step.

Sides:
* ours: the real entry point, `pretrain.run.main([...])` (DeepSpeed Engine, our fit(), MaskingCollator,
  PretrainingObjective with the masked-only vocabulary projection, SDPA). The benchmark only hooks the
  Tracker (to pace and time steps) and, for lever variants, swaps one piece (objective, compile, collator).
* peer: Hugging Face `Trainer` set up as transformers' examples/pytorch/language-modeling/run_mlm.py does:
  BertForMaskedLM, texts tokenised with [CLS]/[SEP] per line, concatenated and cut into 128-token blocks
  (`group_texts`), DataCollatorForLanguageModeling(mlm_probability=0.15), AdamW (Trainer default:
  adamw_torch_fused), fp32.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Pacer:
    """Reports each finished step and waits for permission to run the next one."""

    def __init__(self, fd_in: int, fd_out: int):
        self._in = os.fdopen(fd_in, "r")
        self._out = os.fdopen(fd_out, "w")
        self._t0, self._c0, self._tokens = time.perf_counter(), _cpu_s(), 0

    def send(self, record: dict) -> None:
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()

    def step_done(self, step: int, tokens_total: int) -> None:
        t, c = time.perf_counter(), _cpu_s()
        self.send(
            {
                "step": step,
                "wall_s": t - self._t0,
                "cpu_s": c - self._c0,
                "tokens": tokens_total - self._tokens,
                "rss_mb": _rss_mb(),
            }
        )
        if self._in.readline().strip() != "go":  # orchestrator gone: stop quietly
            os._exit(2)
        self._t0, self._c0, self._tokens = time.perf_counter(), _cpu_s(), tokens_total


# ---------------------------------------------------------------------------------------------- ours
def _full_projection_objective():
    """The lever "masked-only projection" measured by its absence: logits for every position, as
    BertForMaskedLM computes them, the masked rows picked from them afterwards."""
    import torch.nn.functional as F

    from pretrain.objective import PretrainingObjective

    class FullProjectionObjective(PretrainingObjective):
        # PretrainingObjective.forward with one change: the vocabulary projection runs on every position (as
        # BertForMaskedLM's does) and the masked rows are picked from its output, not before it
        def forward(
            self, input_ids, token_type_ids, masked_index, masked_labels, next_sentence_label, attention_mask=None
        ) -> dict:
            sequence, pooled = self.model.bert(
                input_ids=input_ids,
                attention_mask=self._mask(attention_mask),
                token_type_ids=token_type_ids,
                return_dict=False,
            )[:2]
            every = self.model.cls.predictions(sequence)
            logits = every.reshape(-1, every.shape[-1]).index_select(0, masked_index)[:, : self.vocab_size].float()
            n_masked = (masked_labels >= 0).sum()
            mlm_sum = F.cross_entropy(logits, masked_labels, ignore_index=-100, reduction="sum")
            nsp_logits = self.model.cls.seq_relationship(pooled).float()
            n_nsp = (next_sentence_label >= 0).sum()
            nsp_sum = F.cross_entropy(nsp_logits, next_sentence_label, ignore_index=-1, reduction="sum")
            metrics = {
                "mlm_loss": (mlm_sum.detach(), n_masked),
                "mlm_acc": ((logits.argmax(-1) == masked_labels).sum(), n_masked),
                "nsp_loss": (nsp_sum.detach(), n_nsp),
                "nsp_acc": ((nsp_logits.argmax(-1) == next_sentence_label).sum(), n_nsp),
            }
            return {"loss": mlm_sum / n_masked.clamp(min=1) + nsp_sum / n_nsp.clamp(min=1), "metrics": metrics}

    return FullProjectionObjective


def run_ours(spec: dict, pacer: Pacer) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    import biobert.loop as loop
    import biobert.models as models
    import pretrain.collator as collator
    import pretrain.objective as objective

    class PacedTracker(loop.Tracker):
        def log(self, step, metrics, kind="train"):
            super().log(step, metrics, kind)
            if kind == "train":
                pacer.step_done(step, int(metrics["tokens_seen"]))

    loop.Tracker = PacedTracker
    if spec.get("full_projection"):
        objective.PretrainingObjective = _full_projection_objective()
    if spec.get("compile"):
        load = models.load_pretraining_model

        def compiled(*args, **kwargs):
            model = load(*args, **kwargs)
            t = time.perf_counter()
            model.bert.compile()  # in place: parameter names (checkpoints, export) are unchanged
            pacer.send({"event": "compile_wrapped", "s": time.perf_counter() - t})
            return model

        models.load_pretraining_model = compiled
    if spec.get("pad_to"):  # static shapes for the compiled encoder (one compilation, no recompiles)
        collator.MaskingCollator = functools.partial(collator.MaskingCollator, pad_to=spec["pad_to"])

    from pretrain.run import main

    b = spec["batch"]
    argv = [
        "--deepspeed_config",
        str(ROOT / "ds_configs" / "cpu.json"),
        "--ds",
        f"train_batch_size={b}",
        "--ds",
        f"train_micro_batch_size_per_gpu={b}",
        "--ds",
        f"zero_optimization.stage={spec.get('zero', 'auto')}",
        "--ds",
        f"bf16.enabled={'true' if spec.get('bf16') else 'false'}",
        "--data_dir",
        spec["data_dir"],
        "--run_dir",
        spec["run_dir"],
        "--max_steps",
        str(spec["steps"]),
        "--log_every",
        "1",
        "--progress",
        "false",
        "--eval_batches",
        "0",
        "--export_hf",
        "false",
        "--seed",
        "42",
        "--whole_word_mask",
        "true" if spec.get("wwm") else "false",
    ]
    if spec.get("init_from"):
        argv += ["--init_from", spec["init_from"]]
    else:
        argv += ["--model_config", spec["model_config"], "--tokenizer", spec["tokenizer"]]
    result = main(argv)
    return {"result": result}


# ---------------------------------------------------------------------------------------------- peer
def _group_texts_dataset(data_dir: str, block_size: int):
    """run_mlm.py's pipeline on the same tokenised PubMed text: each shard example is one tokenised
    "line" ([CLS] text [SEP], as `tokenizer(line)` returns it); lines are concatenated and cut into
    `block_size` blocks by run_mlm's own `group_texts`, through `datasets.Dataset.map(batched=True)`."""
    from itertools import chain

    from datasets import Dataset

    from data_prep.shards import open_shards

    shards = open_shards(data_dir, "train")
    ids = [x.tolist() for x in shards.get_batch(range(len(shards)))["input_ids"]]
    special = [[1] + [0] * (len(x) - 2) + [1] for x in ids]
    raw = Dataset.from_dict(
        {
            "input_ids": ids,
            "token_type_ids": [[0] * len(x) for x in ids],
            "attention_mask": [[1] * len(x) for x in ids],
            "special_tokens_mask": special,
        }
    )

    def group_texts(examples):  # verbatim logic of run_mlm.py
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total_length = len(concatenated[next(iter(examples))])
        total_length = (total_length // block_size) * block_size
        return {k: [t[i : i + block_size] for i in range(0, total_length, block_size)] for k, t in concatenated.items()}

    return raw.map(group_texts, batched=True)


def run_peer(spec: dict, pacer: Pacer) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    set_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    if spec.get("init_from"):
        model = BertForMaskedLM.from_pretrained(spec["init_from"], attn_implementation="sdpa")
    else:
        config = BertConfig.from_json_file(spec["model_config"])
        model = BertForMaskedLM._from_config(config, attn_implementation="sdpa")  # random init, as ours
    train = _group_texts_dataset(spec["data_dir"], spec["seq_len"])
    counted = {"tokens": 0}

    def count_tokens(_module, _args, kwargs):  # real (attended) tokens that reach the model
        if torch.is_grad_enabled() and kwargs.get("attention_mask") is not None:
            counted["tokens"] += int(kwargs["attention_mask"].sum())

    model.register_forward_pre_hook(count_tokens, with_kwargs=True)

    class Paced(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            pacer.step_done(state.global_step, counted["tokens"])

    args = TrainingArguments(
        output_dir=spec["run_dir"],
        per_device_train_batch_size=spec["batch"],
        max_steps=spec["steps"],
        learning_rate=1e-4,
        weight_decay=0.01,
        adam_epsilon=1e-6,
        warmup_steps=min(10, spec["steps"]),
        max_grad_norm=1.0,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=42,
        dataloader_num_workers=0,
        logging_steps=500,
    )
    collate = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=0.15)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collate, callbacks=[Paced()])
    out = trainer.train()
    return {"result": {"train_loss": out.training_loss, "optim": str(args.optim), "blocks": len(train)}}


def main() -> None:
    spec = json.loads(sys.argv[1])
    pacer = Pacer(int(sys.argv[2]), int(sys.argv[3]))
    try:
        out = (run_ours if spec["side"] == "ours" else run_peer)(spec, pacer)
        pacer.send({"event": "exit", "ok": True, "rss_mb": _rss_mb(), **out})
    except BaseException as e:  # noqa: BLE001  (reported to the orchestrator, which records the failure)
        import traceback

        traceback.print_exc()
        pacer.send({"event": "exit", "ok": False, "error": f"{type(e).__name__}: {e}", "rss_mb": _rss_mb()})
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
