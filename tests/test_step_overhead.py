"""The device-bound step, checked on CPU (GUIDE rule 12): no host reads of device data in a steady-state
step, a third of the dispatched ops or fewer, one graph for the compiled objective, and the same losses as
the path before it (recorded in tests/fixtures/pretrain_losses_534785f.json)."""

import json
import shutil
import sys

import pytest
import torch

from biobert.engine import Engine
from biobert.probe import StepWindow
from conftest import REPO, read_metrics
from pretrain.run import main

pretrain = main.__wrapped__
BATCH4 = ["--ds", "train_batch_size=4", "--ds", "train_micro_batch_size_per_gpu=4"]  # one micro-batch of 4
# Dispatched ATen ops per optimizer step of the path before this change (commit 534785f), measured by
# bench/step_counts.py (bench/results/step_counts.json) on the configuration of test_dispatched_ops: tiny BERT,
# seq 64, batch 4, ds_configs/cpu.json, steady-state steps 13-16.
OPS_BEFORE = 854


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="module")
def no_dropout_model(tiny_assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("nodrop") / "bert"
    shutil.copytree(tiny_assets["model"], out)
    config = json.loads((out / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(config))
    return out


def run(assets, model, run_dir, *extra):
    return pretrain(
        [
            "--deepspeed_config",
            "ds_configs/cpu.json",
            "--data_dir",
            str(assets["shards"]),
            "--init_from",
            str(model),
            "--run_dir",
            str(run_dir),
            "--progress",
            "false",
            "--export_hf",
            "false",
            "--eval_batches",
            "0",
            *extra,
        ]
    )


@pytest.mark.parametrize(
    "name,extra",
    [
        ("fp32_accum2", ["--ds", "train_batch_size=8", "--ds", "train_micro_batch_size_per_gpu=4"]),
        (
            "fp32_wwm",
            ["--ds", "train_batch_size=8", "--ds", "train_micro_batch_size_per_gpu=8", "--whole_word_mask", "true"],
        ),
    ],
)
def test_losses_equal_the_path_before_within_1e_5(tiny_assets, no_dropout_model, tmp_path, name, extra):
    """Static shapes, padded vocabulary (150 -> 192 rows), ignore_index NSP, device-side metrics, prefetched
    batches and torch's foreach clip compute what the old path computed (dropout off: its random stream now
    starts at the step seed instead of after the masking draws)."""
    before = json.loads((REPO / "tests/fixtures/pretrain_losses_534785f.json").read_text())[name]
    run(
        tiny_assets,
        no_dropout_model,
        tmp_path / name,
        *extra,
        "--ds",
        "optimizer.params.lr=5e-3",
        "--ds",
        "scheduler.params.warmup_num_steps=2",
        "--max_steps",
        "20",
        "--log_every",
        "1",
    )
    metrics = read_metrics(tmp_path / name)
    losses = [metrics[s]["loss"] for s in sorted(metrics)]
    assert len(losses) == 20
    for step, (old, new) in enumerate(zip(before["loss"], losses), 1):
        assert abs(new - old) <= 1e-5 * abs(old), (step, old, new)
    assert [metrics[s]["mlm_acc"] for s in sorted(metrics)] == pytest.approx(before["mlm_acc"], abs=1e-12)


STEADY = {
    "fp32": [],
    "bf16_autocast": ["--ds", "torch_autocast.enabled=true", "--ds", "torch_autocast.dtype=bfloat16"],
    "fp16_autocast_accum2": [
        "--ds",
        "torch_autocast.enabled=true",
        "--ds",
        "torch_autocast.dtype=float16",
        "--ds",
        "train_micro_batch_size_per_gpu=2",
    ],  # the last --ds wins
}


@pytest.mark.parametrize("name", sorted(STEADY))
def test_steady_state_steps_read_nothing_from_the_device(tiny_assets, tmp_path, name):
    accum = 2 if "accum2" in name else 1
    with StepWindow(Engine, first=3, n=4, grad_accum=accum) as window:
        run(
            tiny_assets,
            tiny_assets["model"],
            tmp_path / "r",
            *BATCH4,
            "--max_steps",
            "9",
            "--log_every",
            "100",
            *STEADY[name],
        )
    assert window.syncs.count == 0, dict(window.syncs.where)
    assert window.ops.count > 0  # the window did see the steps


def test_the_counter_sees_deepspeed_s_own_host_reads(tiny_assets, tmp_path):
    """The counter is not blind: DeepSpeed's bf16 ZeRO-1 optimizer reads its gradient norm on the host every
    step (`is_invalid_grad_norm`), which is why the GPU profiles use torch_autocast at ZeRO 0 instead."""
    with StepWindow(Engine, first=3, n=2) as window:
        run(
            tiny_assets,
            tiny_assets["model"],
            tmp_path / "r",
            *BATCH4,
            "--max_steps",
            "6",
            "--log_every",
            "100",
            "--ds",
            "bf16.enabled=true",
            "--ds",
            "zero_optimization.stage=1",
        )
    assert window.syncs.count >= 2 and any("is_invalid_grad_norm" in w for w in window.syncs.where)


def test_dispatched_ops_per_step_are_at_most_a_third_of_before(tiny_assets, tmp_path):
    """The ATen ops a step dispatches (kernel launches on a GPU): the compiled objective (inductor generates C++
    here), torch's foreach clip and fused AdamW, no collation in the training thread."""
    with StepWindow(Engine, first=12, n=4) as window:
        run(
            tiny_assets,
            tiny_assets["model"],
            tmp_path / "r",
            *BATCH4,
            "--max_steps",
            "17",
            "--log_every",
            "100",
            "--compile",
            "default",
        )
    per_step = window.ops.count / 4
    assert window.compiled_in_window == 0  # steady state: the padded and the unpadded graph exist by now
    assert window.syncs.count == 0, dict(window.syncs.where)
    assert per_step <= OPS_BEFORE / 3, (per_step, window.ops.by_op.most_common(15))


def test_compiled_objective_is_one_graph_without_breaks_or_recompiles(tiny_assets):
    import torch._dynamo

    from biobert.models import load_pretraining_model, pad_vocab
    from biobert.tokenizer import load_tokenizer
    from data_prep.shards import open_shards
    from pretrain.collator import MaskingCollator
    from pretrain.objective import PretrainingObjective

    tok = load_tokenizer(tiny_assets["vocab"])
    model = load_pretraining_model(tiny_assets["model"])
    vocab = pad_vocab(model, 64)
    objective = PretrainingObjective(model, vocab)
    train = open_shards(tiny_assets["shards"], "train")
    collate = MaskingCollator(vocab, tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, pad_to=train.seq_len, static=True)
    gen = torch.Generator().manual_seed(0)
    batches = [collate(train.get_batch(list(range(i, i + 4))), gen) for i in range(0, 40, 4)]
    padded = [b for b in batches if "attention_mask" in b]
    assert len(padded) >= 3 and all(b["masked_index"].shape == batches[0]["masked_index"].shape for b in batches)
    explained = torch._dynamo.explain(objective)(**padded[0])
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons

    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(objective, backend=counting_backend, dynamic=False)
    eager = [objective(**b)["loss"] for b in padded[:3]]
    for b, ref in zip(padded[:3], eager):
        out = compiled(**b)
        out["loss"].backward()
        assert torch.allclose(out["loss"], ref)
    assert len(graphs) == 1  # three padded batches of one shape: one graph, no recompile
    full = [b for b in batches if "attention_mask" not in b]
    if full:
        compiled(**full[0])
        assert len(graphs) == 2  # an unpadded batch (no mask, the flash path) is the one other graph


def test_fp16_overflow_skips_the_step_and_halves_the_scale(tiny_assets, tmp_path, monkeypatch):
    """fp16 (the V100 profile's torch_autocast + GradScaler): NaN gradients at the batch of step 3 make the
    fused AdamW skip that update on the device; the loop logs the lower scale and the skipped step and does
    not roll back."""
    monkeypatch.setenv("BIOBERT_FAULT_NAN_GRAD_AT_SAMPLE", "8")  # the global batch of step 3
    fp16 = ["--ds", "torch_autocast.enabled=true", "--ds", "torch_autocast.dtype=float16"]
    run(
        tiny_assets,
        tiny_assets["model"],
        tmp_path / "r",
        *BATCH4,
        "--max_steps",
        "6",
        "--log_every",
        "1",
        *fp16,
    )
    records = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in records if r["kind"] == "rollback"]
    steps = {r["step"]: r for r in records if r["kind"] == "train"}
    assert [steps[s]["skipped_steps"] for s in range(1, 7)] == [0, 0, 1, 1, 1, 1]
    assert steps[2]["loss_scale"] == 65536.0 and steps[3]["loss_scale"] == 32768.0
    assert all(steps[s]["loss"] == steps[s]["loss"] for s in steps)


def test_cuda_graphs_with_accumulation_are_refused(tiny_assets, tmp_path):
    from biobert.errors import UserError

    with pytest.raises(UserError, match="pytorch#169545"):
        run(
            tiny_assets,
            tiny_assets["model"],
            tmp_path / "r",
            "--ds",
            "train_batch_size=8",
            "--ds",
            "train_micro_batch_size_per_gpu=4",
            "--max_steps",
            "2",
            "--compile",
            "reduce-overhead",
        )


def test_padded_vocabulary_is_sliced_off_in_every_export(tiny_assets, tmp_path):
    from safetensors.torch import load_file
    from transformers import BertForPreTraining

    from biobert.tokenizer import load_tokenizer

    vocab = load_tokenizer(tiny_assets["vocab"]).vocab_size
    assert vocab % 64  # the fixture's vocabulary is padded inside the run
    pretrain(
        [
            "--deepspeed_config",
            "ds_configs/cpu.json",
            "--data_dir",
            str(tiny_assets["shards"]),
            "--init_from",
            str(tiny_assets["model"]),
            "--run_dir",
            str(tmp_path / "r"),
            "--progress",
            "false",
            *BATCH4,
            "--max_steps",
            "2",
        ]
    )
    hf = tmp_path / "r" / "hf"
    assert json.loads((hf / "config.json").read_text())["vocab_size"] == vocab
    weights = load_file(str(hf / "model.safetensors"))
    assert weights["bert.embeddings.word_embeddings.weight"].shape[0] == vocab
    assert weights["cls.predictions.bias"].shape == (vocab,)
    BertForPreTraining.from_pretrained(str(hf))  # loads with the original vocabulary, no size mismatch
    ds = json.loads((tmp_path / "r" / "checkpoints" / "step_00000002" / "run_config.json").read_text())
    assert ds["run"]["pad_vocab_multiple"] == 64


def test_the_full_projection_lever_computes_the_objectives_loss_the_slow_way(tiny_assets):
    """bench/speed_workers.py's ours_full_projection (the masked-only projection measured by its absence) must
    be the same objective, so that its time is the lever's price: same loss and metrics on padded and packed
    batches, whatever the objective's signature becomes."""
    sys.path.insert(0, str(REPO / "bench"))
    from speed_workers import _full_projection_objective

    from biobert.models import load_pretraining_model, pad_vocab
    from biobert.tokenizer import load_tokenizer
    from data_prep.shards import open_shards
    from pretrain.collator import MaskingCollator
    from pretrain.objective import PretrainingObjective

    tok = load_tokenizer(tiny_assets["vocab"])
    model = load_pretraining_model(tiny_assets["model"])
    vocab = pad_vocab(model, 64)
    ours, lever = PretrainingObjective(model, vocab), _full_projection_objective()(model, vocab)
    train = open_shards(tiny_assets["shards"], "train")
    collate = MaskingCollator(vocab, tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, pad_to=train.seq_len, static=True)
    gen = torch.Generator().manual_seed(0)
    padded = [collate(train.get_batch(list(range(i, i + 4))), gen) for i in range(0, 16, 4)]
    packed = [{k: v for k, v in b.items() if k != "attention_mask"} for b in padded]  # the no-mask path
    assert all("attention_mask" in b for b in padded)
    for b in padded + packed:
        a, z = ours(**b), lever(**b)
        assert torch.allclose(a["loss"], z["loss"], atol=1e-5)
        for k, (num, den) in a["metrics"].items():
            assert torch.allclose(num.float(), z["metrics"][k][0].float(), atol=1e-4) and den == z["metrics"][k][1]
