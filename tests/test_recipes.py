"""The user's own commands run as written on the documented layout: `python finetune/run_task.py --task
ncbi_disease` and `pretrain/run.py --deepspeed_config ds_configs/v100x8.json`, with their recipes
(finetune/configs/<task>.json, pretrain/configs/biobert_phase1.json) and BIOBERT_HOME holding datasets/,
models/, shards/ and runs/. Only the run's length is cut for CI."""

import json
import shutil
import subprocess
import sys

import pytest
from test_finetune import write_ner_split

from conftest import REPO, read_metrics, subprocess_env


@pytest.fixture(scope="module")
def home(tiny_assets, tmp_path_factory):
    from data_prep.cli import main as data_prep

    root = tmp_path_factory.mktemp("home")
    ner = root / "datasets" / "NER" / "NCBI-disease"  # as BioBERT's download script lays it out
    ner.mkdir(parents=True)
    write_ner_split(ner / "train.tsv", 40, 1)
    write_ner_split(ner / "devel.tsv", 8, 2)
    write_ner_split(ner / "test.tsv", 8, 3)
    shutil.copytree(tiny_assets["model"], root / "runs" / "biobert_phase2" / "hf")  # the recipe's export
    shutil.copytree(tiny_assets["model"], root / "models" / "bert-base-cased")
    data_prep(
        [
            "--input",
            str(tiny_assets["pubmed"]),
            "--vocab",
            str(tiny_assets["vocab"]),
            "--out",
            str(root / "shards" / "pubmed_pmc_128"),
            "--seq_len",
            "128",
            "--heldout_fraction",
            "0.05",
        ]
    )
    return root


def command(home, *argv, timeout=600):
    env = subprocess_env(BIOBERT_HOME=str(home))
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_finetune_task_alone_runs_the_recipe(home):
    proc = command(home, "finetune/run_task.py", "--task", "ncbi_disease", "--max_steps", "4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = home / "runs" / "ncbi_disease"
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["data_dir"] == str(home / "datasets") and config["run"]["epochs"] == 10.0
    assert config["deepspeed_overrides"][:2] == ["train_batch_size=32", "optimizer.params.lr=5e-05"]
    ds = json.loads((run / "ds_config.json").read_text())
    assert ds["train_batch_size"] == 32 and ds["optimizer"]["params"]["lr"] == 5e-5
    assert json.loads((run / "results.json").read_text())["scores"]["test"]["f1"] >= 0


def test_pretrain_profile_alone_runs_biobert_phase_1(home):
    proc = command(
        home,
        "pretrain/run.py",
        "--deepspeed_config",
        "ds_configs/v100x8.json",
        "--max_steps",
        "2",
        "--ds",
        "train_batch_size=64",
        "--save_every",
        "0",
        "--eval_every",
        "0",
        "--export_hf",
        "false",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = home / "runs" / "biobert_phase1"
    config = json.loads((run / "config.json").read_text())["run"]
    assert config["data_dir"] == str(home / "shards" / "pubmed_pmc_128") and config["seq_len"] == 128
    ds = json.loads((run / "ds_config.json").read_text())
    assert ds["train_batch_size"] == 64 and ds["gradient_accumulation_steps"] == 8  # derived: 64 / micro 8
    assert ds["torch_autocast"]["dtype"] == "float16" and sorted(read_metrics(run)) == [2]


def test_missing_layout_names_the_path_and_what_moves_it(tmp_path):
    proc = command(tmp_path, "finetune/run_task.py", "--task", "chemprot")
    assert proc.returncode == 2 and f"{tmp_path}/runs/biobert_phase2/hf: not a Hugging Face model" in proc.stderr
    assert "--init_from" in proc.stderr and "BIOBERT_HOME" in proc.stderr
    proc = command(tmp_path, "pretrain/run.py", "--deepspeed_config", "ds_configs/v100x8.json")
    assert proc.returncode == 2 and f"{tmp_path}/shards/pubmed_pmc_128: no such shard directory" in proc.stderr
    assert "--data_dir" in proc.stderr and "BIOBERT_HOME" in proc.stderr


def test_help_lists_every_task_and_says_what_each_flag_does():
    out = subprocess.run(
        [sys.executable, "finetune/run_task.py", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=subprocess_env(),
    ).stdout
    from finetune.tasks.registry import task_names

    assert all(name in out for names in task_names().values() for name in names)
    assert "--max_seq_length MAX_SEQ_LENGTH\n                        WordPieces per window" in out
    out = subprocess.run(
        [sys.executable, "pretrain/run.py", "--help"], cwd=REPO, capture_output=True, text=True, env=subprocess_env()
    ).stdout
    assert "share of each sequence's tokens masked" in out and "biobert_phase1.json" in out


def test_every_task_has_a_recipe_that_loads():
    from biobert.config import build_config, read_config_file
    from biobert.ds_config import load_ds_config
    from finetune.run_task import RECIPES, FinetuneConfig
    from finetune.tasks.registry import get_task, task_names

    for names in task_names().values():
        for name in names:
            values, ds = read_config_file(RECIPES / f"{get_task(name).recipe}.json")
            build_config(FinetuneConfig, values)
            load_ds_config(REPO / "ds_configs" / "finetune.json", ds)
