"""A run never continues on a checkpoint or weights it cannot vouch for: damaged files, another run's
checkpoint, pickles that would run code, weights that did not load, a disk that filled up mid-save."""

import json
import pickle
import shutil

import pytest
import torch

from biobert.errors import UserError
from conftest import REPO, read_metrics
from pretrain.run import main

pretrain = main.__wrapped__
BATCH4 = ["--ds", "train_batch_size=4", "--ds", "train_micro_batch_size_per_gpu=4"]  # one micro-batch of 4


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


def args(assets, run_dir, *extra, shards=None):
    return [
        "--deepspeed_config",
        "ds_configs/cpu.json",
        *BATCH4,
        "--ds",
        "optimizer.params.lr=5e-3",
        "--data_dir",
        str(shards or assets["shards"]),
        "--init_from",
        str(assets["model"]),
        "--run_dir",
        str(run_dir),
        "--progress",
        "false",
        "--log_every",
        "1",
        "--max_steps",
        "4",
        "--save_every",
        "2",
        "--eval_batches",
        "0",
        *extra,
    ]


@pytest.fixture(scope="module")
def finished(tiny_assets, tmp_path_factory):
    run = tmp_path_factory.mktemp("trust") / "run"
    pretrain(args(tiny_assets, run))
    return run


def copy_run(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    return run


def test_every_checkpoint_carries_an_integrity_record(finished):
    for tag in ("step_00000002", "step_00000004"):
        record = json.loads((finished / "checkpoints" / tag / "integrity.json").read_text())["files"]
        assert "mp_rank_00_model_states.pt" in record and "hf/model.safetensors" in record
        assert all(len(meta["sha256"]) == 64 and meta["bytes"] > 0 for meta in record.values())


def test_a_damaged_checkpoint_is_refused_and_an_earlier_one_resumes(tiny_assets, finished, tmp_path):
    run = copy_run(finished, tmp_path)
    shard = run / "checkpoints" / "step_00000004" / "mp_rank_00_model_states.pt"
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(b ^ 0xFF for b in data[middle : middle + 4096])  # 4 KB flipped
    shard.write_bytes(bytes(data))
    config_before = (run / "config.json").read_bytes()
    with pytest.raises(
        UserError,
        match=r"mp_rank_00_model_states.pt: differs from what was saved.*"
        r"--resume_from step_00000002",
    ):
        pretrain(args(tiny_assets, run, "--resume"))
    assert (run / "config.json").read_bytes() == config_before
    (run / "metrics.jsonl").write_text("")
    pretrain(args(tiny_assets, run, "--resume_from", "2"))
    resumed = {s: r["loss"] for s, r in read_metrics(run).items()}
    original = {s: r["loss"] for s, r in read_metrics(finished).items()}
    assert resumed == {3: original[3], 4: original[4]}  # steps 3-4 again, exactly
    assert json.loads((run / "checkpoints" / "step_00000004" / "integrity.json").read_text())  # rewritten


def test_a_checkpoint_without_its_weights_is_refused_even_with_trust(tiny_assets, finished, tmp_path):
    # a step folder moved while it was being saved: the JSON files and the record, no model-states file
    run = copy_run(finished, tmp_path)
    step = run / "checkpoints" / "step_00000004"
    record = json.loads((step / "integrity.json").read_text())
    record["files"] = {k: v for k, v in record["files"].items() if "model_states" not in k}
    (step / "integrity.json").write_text(json.dumps(record))
    (step / "mp_rank_00_model_states.pt").unlink()
    for trust in ("false", "true"):
        with pytest.raises(UserError, match=r"step_00000004: holds no model weights.*--resume_from step_00000002"):
            pretrain(args(tiny_assets, run, "--resume", "--max_steps", "5", "--trust_checkpoint", trust))


def test_a_save_that_wrote_no_weights_is_not_recorded(tmp_path):
    from biobert import integrity

    step = tmp_path / "checkpoints" / "step_00000002"
    step.mkdir(parents=True)
    (step / "train_state.json").write_text("{}")
    with pytest.raises(UserError, match="holds no model weights.*`latest` still points to the previous one"):
        integrity.write_record(step)
    assert not (step / "integrity.json").exists()
    (step / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"x")  # ZeRO >= 1's name
    integrity.write_record(step)
    assert (step / "integrity.json").is_file()


def test_a_checkpoint_without_a_record_needs_trust(tiny_assets, finished, tmp_path):
    run = copy_run(finished, tmp_path)
    (run / "checkpoints" / "step_00000004" / "integrity.json").unlink()
    with pytest.raises(UserError, match="no integrity.json.*--trust_checkpoint"):
        pretrain(args(tiny_assets, run, "--resume", "--max_steps", "5"))
    pretrain(args(tiny_assets, run, "--resume", "--max_steps", "5", "--trust_checkpoint", "true"))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # creates the marker file when unpickled


def test_a_pickle_that_would_run_code_is_refused_before_loading(tiny_assets, finished, tmp_path):
    """Even with a forged integrity record: the pickle's globals are listed without running anything."""
    from biobert.files import file_sha256

    run = copy_run(finished, tmp_path)
    tag_dir = run / "checkpoints" / "step_00000004"
    marker = tmp_path / "code_ran"
    shard = tag_dir / "mp_rank_00_model_states.pt"
    state = torch.load(shard, weights_only=False)
    state["payload"] = _RunsCode(marker)
    for protocol, refusal in (
        (2, r"references io.open.*Refused"),  # torch.save's default protocol
        (pickle.HIGHEST_PROTOCOL, r"cannot be inspected without running it. Refused"),
    ):
        torch.save(state, shard, pickle_protocol=protocol)
        record = json.loads((tag_dir / "integrity.json").read_text())
        record["files"]["mp_rank_00_model_states.pt"] = {"sha256": file_sha256(shard), "bytes": shard.stat().st_size}
        (tag_dir / "integrity.json").write_text(json.dumps(record))
        with pytest.raises(UserError, match=refusal):
            pretrain(args(tiny_assets, run, "--resume", "--max_steps", "5"))
        assert not marker.exists()


@pytest.mark.parametrize(
    "change,differs",
    [
        (["--seed", "7"], "seed: checkpoint 42, now 7"),
        (["--ds", "train_batch_size=8", "--ds", "train_micro_batch_size_per_gpu=8"], "train_batch_size"),
        (["--mlm_probability", "0.2"], "objective"),
    ],
)
def test_resuming_another_run_is_refused_with_what_differs(tiny_assets, finished, tmp_path, change, differs):
    run = copy_run(finished, tmp_path)
    config_before = (run / "config.json").read_bytes()
    with pytest.raises(UserError, match=f"belongs to another run.*{differs}.*What may change on resume"):
        pretrain(args(tiny_assets, run, "--resume", "--max_steps", "6", *change))
    assert (run / "config.json").read_bytes() == config_before  # nothing overwritten


def test_resuming_on_other_shards_is_refused(tiny_assets, finished, tmp_path):
    from data_prep.cli import main as data_prep

    other = tmp_path / "shards32"
    data_prep(
        [
            "--input",
            str(tiny_assets["pubmed"]),
            "--vocab",
            str(tiny_assets["vocab"]),
            "--out",
            str(other),
            "--seq_len",
            "32",
            "--heldout_fraction",
            "0.05",
        ]
    )
    run = copy_run(finished, tmp_path)
    with pytest.raises(UserError, match="belongs to another run.*data: checkpoint"):
        pretrain(args(tiny_assets, run, "--resume", "--max_steps", "6", shards=other))


def test_what_may_change_on_resume_does(tiny_assets, finished, tmp_path):
    run = copy_run(finished, tmp_path)
    pretrain(args(tiny_assets, run, "--resume", "--max_steps", "6", "--ds", "optimizer.params.lr=1e-3"))
    assert max(read_metrics(run)) == 6


def test_a_disk_that_fills_up_mid_save_says_so_and_keeps_latest(tiny_assets, tmp_path, monkeypatch):
    import deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine as engine_mod

    run = tmp_path / "run"
    real_save, calls = torch.save, []

    def failing_save(obj, path, *a, **k):
        calls.append(path)
        if "step_00000004" in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4202304 vs 4202196")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(engine_mod.torch, "save", failing_save)
    with pytest.raises(
        UserError,
        match=r"step_00000004: writing the checkpoint failed.*GiB free.*"
        r"The previous checkpoint \(`latest`\) is intact",
    ):
        pretrain(args(tiny_assets, run))
    assert (run / "checkpoints" / "latest").read_text() == "step_00000002"


def test_weights_that_do_not_load_are_refused(tiny_assets, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import BertForTokenClassification

    from biobert.models import load_pretraining_model, load_task_model

    wrapped = tmp_path / "wrapped"
    shutil.copytree(tiny_assets["model"], wrapped)
    weights = load_file(str(wrapped / "model.safetensors"))
    save_file({f"module.{k}": v for k, v in weights.items()}, str(wrapped / "model.safetensors"))
    with pytest.raises(UserError, match="encoder weights are missing.*start with 'module.'"):
        load_task_model(BertForTokenClassification, wrapped, "ncbi_disease", ["B", "I", "O"])
    with pytest.raises(UserError, match="encoder weights are missing"):
        load_pretraining_model(wrapped)
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_assets["model"], truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"truncated: cannot read the weights \(SafetensorError.*damaged, truncated"):
        load_task_model(BertForTokenClassification, truncated, "ncbi_disease", ["B", "I", "O"])
    with pytest.raises(UserError, match="cannot read the weights"):
        load_pretraining_model(truncated)
    load_task_model(BertForTokenClassification, tiny_assets["model"], "ncbi_disease", ["B", "I", "O"])  # fine


def test_fp16_loss_scale_survives_a_resume(tiny_assets, tmp_path, monkeypatch):
    """DeepSpeed does not save torch's GradScaler: the Engine does, so a resumed fp16 run keeps its lowered
    scale and skipped-step count and reproduces the uninterrupted losses."""
    fp16 = ["--ds", "torch_autocast.enabled=true", "--ds", "torch_autocast.dtype=float16"]
    monkeypatch.setenv("BIOBERT_FAULT_NAN_GRAD_AT_SAMPLE", "4")  # step 2's batch: skipped, scale halved
    full = tmp_path / "full"
    pretrain(args(tiny_assets, full, *fp16))
    part = tmp_path / "part"
    shutil.copytree(full, part, symlinks=True)
    (part / "checkpoints" / "latest").write_text("step_00000002")
    shutil.rmtree(part / "checkpoints" / "step_00000004")
    (part / "metrics.jsonl").write_text("")
    pretrain(args(tiny_assets, part, *fp16, "--resume"))
    want, got = read_metrics(full), read_metrics(part)
    assert [got[s]["loss"] for s in (3, 4)] == [want[s]["loss"] for s in (3, 4)]
    assert got[3]["loss_scale"] == want[3]["loss_scale"] == 32768.0 and got[4]["skipped_steps"] == 1


def test_a_universal_folder_left_from_an_earlier_resume_is_checked_too(tiny_assets, tmp_path):
    """A resume on another number of ranks converts the verified step into `<tag>/universal` once; a later resume
    reads that folder as it is, so its pickles are checked before DeepSpeed loads them."""
    from biobert.checkpoint import prepare_resume

    run = tmp_path / "z1"
    pretrain(args(tiny_assets, run, "--ds", "zero_optimization.stage=1", "--max_steps", "2"))
    plan = prepare_resume(run, world_size=2)  # written by 1 rank, resumed by 2: converted
    assert plan.universal and (run / "checkpoints" / "step_00000002" / "universal" / ".complete").is_file()
    torch.save({"x": _RunsCode(tmp_path / "ran")}, run / "checkpoints" / "step_00000002" / "universal" / "extra.pt")
    with pytest.raises(UserError, match=r"extra.pt: the pickle references io.open.*Refused"):
        prepare_resume(run, world_size=2)
    assert not (tmp_path / "ran").exists()
