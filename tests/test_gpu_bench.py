"""bench/gpu_pretrain.py, the one-GPU benchmark, checked on CPU: a profiled configuration through the real
pre-training path, and the BioBERT projection's choice of configuration."""

import json
import sys

from conftest import REPO, subprocess_env

sys.path.insert(0, str(REPO / "bench"))
import gpu_pretrain  # noqa: E402


def _result(kind, seq, mb, tokens_per_s, compiled=False):
    return {"spec": {"kind": kind, "seq_len": seq, "micro_batch": mb, "compile": compiled},
            "tokens_per_s": tokens_per_s, "flops_per_token": 1e9}


def test_projection_uses_biobert_s_per_gpu_batch_and_reports_the_fastest():
    results = [_result("pretrain", 128, 128, 190_000.0), _result("pretrain", 128, 256, 290_000.0),
               _result("pretrain", 512, 64, 250_000.0), _result("finetune", 128, 32, 50_000.0)]
    summary = gpu_pretrain.summarize(results, peak=989.0)
    p128 = summary["biobert_projection_seq128"]
    assert p128["micro_batch"] == 128 and p128["at_biobert_batch"] is True  # 128 x 128 = 131,072 / 8
    assert p128["fastest_micro_batch"] == 256 and p128["fastest_tokens_per_s_1gpu"] == 290_000
    assert p128["hours_on_8_gpus"] == round(470_000 * 131_072 / (8 * 190_000) / 3600, 1)
    p512 = summary["biobert_projection_seq512"]  # 32 x 512 not measured: the fastest stands in, and says so
    assert p512["micro_batch"] == 64 and p512["at_biobert_batch"] is False
    assert results[0]["mfu"] == round(190_000 * 1e9 / 989e12, 4)


def test_profiled_configuration_runs_the_real_path_and_writes_its_tables(tmp_path, monkeypatch):
    vocab = gpu_pretrain.write_vocab(tmp_path / "vocab.txt", 1000)
    data = gpu_pretrain.write_synthetic_shards(tmp_path / "shards", vocab, 128, 256)
    spec = {"kind": "pretrain", "seq_len": 128, "micro_batch": 4, "name": "p", "tiny": True, "vocab_size": 1000,
            "zero": 1, "warmup": 2, "config_s": 60, "max_steps": 10**6, "log_every": 1, "tmp": str(tmp_path),
            "vocab": str(vocab), "data_dir": str(data), "profile": "torch", "profile_steps": 3,
            "ds": ["bf16.enabled=true"]}
    for key, value in subprocess_env().items():  # launch() passes this process's environment on
        monkeypatch.setenv(key, value)
    out = gpu_pretrain.launch(spec, timeout_s=240)
    assert "error" not in out, out
    assert out["steps_timed"] >= 3 and out["tokens_per_s"] > 0
    table = (tmp_path / "profile_p.txt").read_text()
    assert "torch.profiler over 3 steps" in table and "aten::" in table
    config = json.loads((tmp_path / "run_p" / "ds_config.json").read_text())
    assert config["bf16"] == {"enabled": True, "check_grad_overflow": False}
