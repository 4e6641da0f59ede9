"""Pre-training through the real DeepSpeed engine on CPU (in-process, one rank)."""

import json
import shutil

import pytest

from biobert.errors import UserError
from conftest import read_metrics, write_tiny_bert, write_vocab
from pretrain.run import main

pretrain = main.__wrapped__  # raise UserError instead of exiting, so tests can match messages

BASE = [
    "--deepspeed_config",
    "ds_configs/cpu.json",
    "--ds",
    "train_batch_size=8",
    "--ds",
    "train_micro_batch_size_per_gpu=4",
    "--ds",
    "scheduler.params.warmup_num_steps=2",
    "--progress",
    "false",
    "--log_every",
    "1",
]


def args(assets, run_dir, *extra):
    return BASE + [
        "--data_dir",
        str(assets["shards"]),
        "--init_from",
        str(assets["model"]),
        "--run_dir",
        str(run_dir),
        *extra,
    ]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)


def test_pretrain_trains_evaluates_exports_and_resumes_exactly(tiny_assets, tmp_path, monkeypatch):
    full = tmp_path / "full"
    result = pretrain(
        args(
            tiny_assets,
            full,
            "--max_steps",
            "8",
            "--save_every",
            "4",
            "--eval_every",
            "4",
            "--ds",
            "optimizer.params.lr=5e-3",
        )
    )
    assert result["step"] == 8 and result["samples_seen"] == 64 and result["tokens_seen"] > 0
    losses = {s: r["loss"] for s, r in read_metrics(full).items()}
    assert sorted(losses) == list(range(1, 9))
    assert losses[8] < losses[1]  # a high learning rate on a tiny model: the loss must move down
    evals = read_metrics(full, "eval")
    assert set(evals) == {4, 8} and evals[8]["heldout_mlm_loss"] < evals[4]["heldout_mlm_loss"]
    for r in read_metrics(full).values():
        assert 0 <= r["mlm_acc"] <= 1 and 0 <= r["nsp_acc"] <= 1 and r["tokens_per_s"] > 0

    # the export loads with transformers, with the tokenizer and provenance beside the weights
    from transformers import AutoModel, AutoTokenizer, BertForPreTraining

    hf = full / "hf"
    assert hf.resolve().parent.name == "step_00000008"
    AutoModel.from_pretrained(str(hf))
    BertForPreTraining.from_pretrained(str(hf))
    assert AutoTokenizer.from_pretrained(str(hf))("cancer cells").input_ids[0] == 2
    provenance = json.loads((hf / "biobert_run.json").read_text())
    assert provenance["train_state"]["step"] == 8 and provenance["ds_config"]["train_batch_size"] == 8

    # a second run stopped after step 4 and resumed reproduces the uninterrupted losses exactly
    part = tmp_path / "part"
    shutil.copytree(full, part, symlinks=True)
    (part / "checkpoints" / "latest").write_text("step_00000004")
    shutil.rmtree(part / "checkpoints" / "step_00000008")
    (part / "metrics.jsonl").write_text("")
    pretrain(
        args(
            tiny_assets,
            part,
            "--max_steps",
            "8",
            "--save_every",
            "4",
            "--eval_every",
            "4",
            "--ds",
            "optimizer.params.lr=5e-3",
            "--resume",
        )
    )
    resumed = {s: r["loss"] for s, r in read_metrics(part).items()}
    assert resumed == {s: losses[s] for s in range(5, 9)}


def test_bad_inputs_fail_before_compute(tiny_assets, tmp_path):
    with pytest.raises(UserError, match="no such shard directory"):
        pretrain(
            BASE
            + [
                "--data_dir",
                str(tmp_path / "nope"),
                "--init_from",
                str(tiny_assets["model"]),
                "--run_dir",
                str(tmp_path / "r"),
            ]
        )
    # a model whose vocabulary differs from the one the shards were tokenised with
    other_vocab = write_vocab(tmp_path / "vocab.txt", lowercase=True)
    other_vocab.write_text(other_vocab.read_text() + "extraword\n")
    other = write_tiny_bert(tmp_path / "other_bert", other_vocab)
    with pytest.raises(UserError, match="different vocabulary"):
        pretrain(
            BASE
            + ["--data_dir", str(tiny_assets["shards"]), "--init_from", str(other), "--run_dir", str(tmp_path / "r2")]
        )
    with pytest.raises(UserError, match="hold 64-token sequences, not --seq_len 512"):
        pretrain(args(tiny_assets, tmp_path / "r6", "--seq_len", "512"))
    with pytest.raises(UserError, match="no checkpoint"):
        pretrain(args(tiny_assets, tmp_path / "r3", "--resume"))
    bad_ds = tmp_path / "ds.json"
    bad_ds.write_text(json.dumps({"train_batch_size": 8, "zero_optimisation": {"stage": 1}}))
    with pytest.raises(UserError, match="did you mean `zero_optimization`"):
        pretrain(args(tiny_assets, tmp_path / "r4") + ["--deepspeed_config", str(bad_ds)])
    with pytest.raises(UserError, match="not a Hugging Face model directory"):
        pretrain(
            BASE
            + [
                "--data_dir",
                str(tiny_assets["shards"]),
                "--init_from",
                str(tmp_path),
                "--tokenizer",
                str(tiny_assets["vocab"]),
                "--run_dir",
                str(tmp_path / "r5"),
            ]
        )


def test_refuses_to_reuse_a_run_dir(tiny_assets, tmp_path):
    run = tmp_path / "run"
    pretrain(args(tiny_assets, run, "--max_steps", "3"))
    with pytest.raises(UserError, match="already holds a run"):
        pretrain(args(tiny_assets, run, "--max_steps", "2"))


def test_cli_prints_one_clear_error_and_exits_2(tiny_assets, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args(tiny_assets, tmp_path / "r", "--resume"))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: no checkpoint") and "Traceback" not in err


def test_whole_word_masking_run_is_recorded_and_trains(tiny_assets, tmp_path):
    run = tmp_path / "wwm"
    result = pretrain(args(tiny_assets, run, "--max_steps", "3", "--whole_word_mask", "true", "--export_hf", "false"))
    assert result["step"] == 3
    assert json.loads((run / "config.json").read_text())["run"]["whole_word_mask"] is True
    losses = [r["loss"] for r in read_metrics(run).values()]
    assert len(losses) == 3 and all(loss == loss for loss in losses)


def test_train_only_heads_leaves_the_encoder_untouched(tiny_assets, tmp_path):
    """A heads-only first phase: the encoder (and the decoder tied to its word embedding) keeps its weights
    bit for bit, the head's own weights move, the loss falls, and a second phase continues from it."""
    import torch
    from safetensors.torch import load_file

    run = tmp_path / "heads"
    pretrain(
        args(
            tiny_assets,
            run,
            "--max_steps",
            "6",
            "--train_only_heads",
            "true",
            "--eval_every",
            "6",
            "--ds",
            "optimizer.params.lr=2e-2",
        )
    )
    before = load_file(str(tiny_assets["model"] / "model.safetensors"))
    after = load_file(str(run / "hf" / "model.safetensors"))
    encoder = [k for k in before if k.startswith("bert.")]
    heads = [k for k in before if k.startswith("cls.") and k in after]
    assert encoder and heads
    assert all(torch.equal(before[k], after[k]) for k in encoder)
    moved = [k for k in heads if not torch.equal(before[k], after[k])]
    assert "cls.predictions.transform.dense.weight" in moved and "cls.predictions.bias" in moved
    losses = [r["loss"] for _, r in sorted(read_metrics(run).items())]
    assert losses[-1] < losses[0]
    assert json.loads((run / "config.json").read_text())["run"]["train_only_heads"] is True

    # phase 2 starts from the export: every parameter trains again
    full = tmp_path / "full"
    result = pretrain(
        BASE
        + [
            "--data_dir",
            str(tiny_assets["shards"]),
            "--init_from",
            str(run / "hf"),
            "--run_dir",
            str(full),
            "--max_steps",
            "4",
            "--ds",
            "optimizer.params.lr=5e-3",
        ]
    )
    assert result["step"] == 4
    moved_encoder = load_file(str(full / "hf" / "model.safetensors"))
    assert not torch.equal(
        moved_encoder["bert.encoder.layer.0.attention.self.query.weight"],
        after["bert.encoder.layer.0.attention.self.query.weight"],
    )


def test_has_mlm_head_reads_every_checkpoint_layout(tiny_assets, tmp_path):
    """reproduce.py adds a heads-only phase only for a Base without a trained MLM head: decided from the
    checkpoint's weight names, in each format Hugging Face writes."""
    import torch
    from safetensors.torch import load_file
    from transformers import BertModel

    from biobert.models import has_mlm_head

    full = tiny_assets["model"]  # BertForPreTraining: heads included
    assert has_mlm_head(full)
    encoder = tmp_path / "encoder"  # an encoder-only export, as all-MiniLM-L6-v2
    BertModel.from_pretrained(str(full)).save_pretrained(str(encoder))
    assert not has_mlm_head(encoder)
    legacy = tmp_path / "legacy"  # pytorch_model.bin
    legacy.mkdir()
    shutil.copy(full / "config.json", legacy)
    weights = load_file(full / "model.safetensors")
    torch.save(weights, legacy / "pytorch_model.bin")
    assert has_mlm_head(legacy)
    torch.save({k: v for k, v in weights.items() if not k.startswith("cls.")}, legacy / "pytorch_model.bin")
    assert not has_mlm_head(legacy)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(full / "config.json", sharded)
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: "model-00001-of-00002.safetensors" for k in weights}})
    )
    assert has_mlm_head(sharded)
    (legacy / "pytorch_model.bin").unlink()
    with pytest.raises(UserError, match="legacy: no model.safetensors or pytorch_model.bin"):
        has_mlm_head(legacy)
