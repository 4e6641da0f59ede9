"""The evaluation protocols end to end on a tiny NER corpus: grid selection, seeds, CV, train_dev, resume; by the
command line (main parses into a ProtocolConfig) and by the Python API (run(cfg))."""

import json
import statistics

import pytest
from test_finetune import write_ner_split

from biobert.errors import UserError
from conftest import write_tiny_bert, write_vocab
from finetune import protocol, protocol_data, run_task

run_protocol = protocol.main.__wrapped__


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert")
    return write_tiny_bert(root / "bert", write_vocab(root / "vocab.txt"))


@pytest.fixture(scope="module")
def ner_dirs(tmp_path_factory):
    """NCBI-disease with a devel split, and one without (selected by cross-validation)."""
    root = tmp_path_factory.mktemp("ner")
    for name, devel in (("with_devel", True), ("no_devel", False)):
        folder = root / name / "NCBI-disease"
        folder.mkdir(parents=True)
        write_ner_split(folder / "train.tsv", 32, 1)
        write_ner_split(folder / "test.tsv", 8, 3)
        if devel:
            write_ner_split(folder / "devel.tsv", 8, 2)
    return {"devel": root / "with_devel", "no_devel": root / "no_devel"}


def args(tiny_bert, data_dir, run_dir, *extra):
    return [
        "--task",
        "ncbi_disease",
        "--data_dir",
        str(data_dir),
        "--init_from",
        str(tiny_bert),
        "--run_dir",
        str(run_dir),
        "--progress",
        "false",
        "--max_seq_length",
        "24",
        "--doc_stride",
        "4",
        "--eval_batch_size",
        "64",
        "--ds",
        "optimizer.params.lr=1e-3",
        "--log_every",
        "1000",
        *extra,
    ]


def test_paper_grid_seeds_and_resume(tiny_bert, ner_dirs, tmp_path, capsys):
    run = tmp_path / "ncbi"
    argv = args(tiny_bert, ner_dirs["devel"], run, "--batch_sizes", "8,16", "--epoch_grid", "1,2", "--seeds", "1,2")
    out = run_protocol(argv)
    sel = out["selection"]
    assert sel["method"] == "devel" and sel["metric"] == "devel_f1"
    assert {(s["train_batch_size"], s["epochs"]) for s in sel["scores"]} == {(8, 1), (8, 2), (16, 1), (16, 2)}
    # one 2-epoch run per batch size; its epoch-1 and epoch-2 devel F1 come from metrics.jsonl
    assert sorted(p.name for p in (run / "select").iterdir()) == ["bs16", "bs8"]
    evals = [json.loads(x) for x in (run / "select" / "bs8" / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["kind"] == "eval"]
    assert [s["score"] for s in sel["scores"] if s["train_batch_size"] == 8] == [e["devel_f1"] for e in evals]
    assert not (run / "select" / "bs8" / "checkpoints").exists() and not (run / "select" / "bs8" / "hf").exists()
    best = max(sel["scores"], key=lambda s: s["score"])
    assert out["setting"] == {"train_batch_size": best["train_batch_size"], "epochs": best["epochs"]}
    # the final runs: chosen setting, one per seed, train -> test, mean and sample std over seeds
    for seed in (1, 2):
        res = json.loads((run / f"seed_{seed}" / "results.json").read_text())
        assert res["train_batch_size"] == best["train_batch_size"] and set(res["scores"]) == {"test"}
        assert out["runs"][str(seed)]["f1"] == res["scores"]["test"]["f1"]
    f1s = [out["runs"][s]["f1"] for s in ("1", "2")]
    assert out["mean"]["f1"] == pytest.approx(statistics.fmean(f1s))
    assert out["std"]["f1"] == pytest.approx(statistics.stdev(f1s))
    assert out["kind"] == "ner" and out["protocol"] == "paper" and out["headline"][:3] == ["precision", "recall", "f1"]
    assert json.loads((run / "results.json").read_text())["mean"] == out["mean"]
    # a second invocation re-uses every sub-run and gives the same numbers
    capsys.readouterr()
    again = run_protocol(argv)
    log = capsys.readouterr().out
    assert log.count("reused") == 4 and "training" not in log
    assert again["mean"] == out["mean"] and again["selection"] == out["selection"]
    # ... but not with other settings
    with pytest.raises(UserError, match="holds a protocol run"):
        run_protocol(args(tiny_bert, ner_dirs["devel"], run, "--batch_sizes", "8", "--epoch_grid", "1,2"))


def tiny_job(tiny_bert, data_dir, *ds) -> run_task.Job:
    """A run_task job built in Python (no recipe, no flags): what a caller of protocol.run passes."""
    cfg = run_task.FinetuneConfig(
        task="ncbi_disease",
        data_dir=str(data_dir),
        init_from=str(tiny_bert),
        progress=False,
        max_seq_length=24,
        doc_stride=4,
        eval_batch_size=64,
        log_every=1000,
    )
    return run_task.Job(cfg, ds=["optimizer.params.lr=1e-3", *ds])


def test_cv_selection_without_devel(tiny_bert, ner_dirs, tmp_path):
    """The Python API: a ProtocolConfig in, results out; keep_checkpoints=False drops the seed runs' weights."""
    run = tmp_path / "cv"
    cfg = protocol.ProtocolConfig(
        task="ncbi_disease",
        run_dir=str(run),
        job=tiny_job(tiny_bert, ner_dirs["no_devel"]),
        batch_sizes=[16],
        epoch_grid=[2, 1],
        cv_folds=2,
        keep_checkpoints=False,
    )
    out = protocol.run(cfg)
    assert out["grid"] == {"batch_sizes": [16], "epochs": [1, 2]}
    assert (run / "seed_42" / "results.json").is_file() and not list(run.rglob("checkpoints"))
    sel = out["selection"]
    assert sel["method"] == "2-fold cross-validation on train" and sel["metric"] == "cv_f1"
    # the folds partition the training sentences
    train = protocol_data.records(ner_dirs["no_devel"] / "NCBI-disease" / "train.tsv", "ner")[1]
    held = [
        protocol_data.records(run / "cv_data" / f"fold_0{k}" / "NCBI-disease" / "devel.tsv", "ner")[1] for k in (1, 2)
    ]
    fold1_train = protocol_data.records(run / "cv_data" / "fold_01" / "NCBI-disease" / "train.tsv", "ner")[1]
    assert sorted(held[0] + held[1]) == sorted(train) and not set(held[0]) & set(held[1])
    assert sorted(fold1_train) == sorted(held[1])
    for s in sel["scores"]:
        folds = [next(x["score"] for x in sel["per_fold"][k] if x["epochs"] == s["epochs"]) for k in ("1", "2")]
        assert s["score"] == pytest.approx(statistics.fmean(folds))
    assert out["std"]["f1"] is None and set(out["runs"]) == {"42"}


def test_gad_runs_the_protocol_per_fold(tiny_bert, tmp_path):
    """`--task gad`: selection by CV inside each fold's own training data, then the mean over folds."""
    from conftest import REPO

    run = tmp_path / "gad"
    out = run_protocol(
        [
            "--task",
            "gad",
            "--folds",
            "1",
            "--data_dir",
            str(REPO / "tests" / "fixtures" / "re"),
            "--init_from",
            str(tiny_bert),
            "--run_dir",
            str(run),
            "--progress",
            "false",
            "--max_seq_length",
            "48",
            "--log_every",
            "1000",
            "--cv_folds",
            "2",
            "--batch_sizes",
            "16",
            "--epoch_grid",
            "1",
        ]
    )
    fold = json.loads((run / "fold_01" / "results.json").read_text())
    assert fold["task"] == "gad_1" and fold["selection"]["method"] == "2-fold cross-validation on train"
    assert (run / "fold_01" / "cv_data" / "fold_02" / "GAD" / "1" / "devel.tsv").is_file()
    assert out["task"] == "gad" and out["kind"] == "re" and out["folds_run"] == [1] and not out["complete"]
    assert out["mean"]["f1"] == fold["mean"]["f1"] and out["std_over"] == "folds"


def test_biobert_code_builds_train_dev(tiny_bert, ner_dirs, tmp_path):
    run = tmp_path / "code"
    out = run_protocol(
        args(
            tiny_bert,
            ner_dirs["devel"],
            run,
            "--protocol",
            "biobert-code",
            "--epochs",
            "1",
            "--ds",
            "train_batch_size=16",
        )
    )
    built = run / "train_dev_data" / "NCBI-disease" / "train.tsv"
    assert out["selection"] is None and out["setting"]["epochs"] == 1.0
    assert "concatenated" in out["setting"]["train_data"] and out["setting"]["train_batch_size"] == 16
    config = json.loads((run / "seed_42" / "config.json").read_text())
    assert config["data"]["train"]["path"] == str(built) and config["data"]["train"]["sentences"] == 40
    # a bundle with train_dev.tsv is used as it is
    folder = ner_dirs["devel"] / "NCBI-disease"
    files = {"train_dev": folder / "train_dev.tsv", "train": folder / "train.tsv"}
    task = protocol.get_task("ncbi_disease")
    assert protocol_data.train_dev_data(task, files, "d", run)[:2] == ("d", "train_dev")


def test_records_round_trip_and_bad_flags(tmp_path, tiny_bert, ner_dirs):
    src = tmp_path / "train.tsv"
    src.write_text("sentence\tlabel\r\nA @GENE$ b @DISEASE$.\t1\r\nC @GENE$ d @DISEASE$.\t0\r\n")
    header, rows = protocol_data.records(src, "re")
    assert header == "sentence\tlabel\r\n" and len(rows) == 2
    protocol_data.write_records(tmp_path / "copy.tsv", header, rows, "re")
    assert protocol_data.records(tmp_path / "copy.tsv", "re") == (header, rows)
    assert protocol.mean_std([{"f1": 1.0, "n": 3, "x": "s"}, {"f1": 3.0, "n": 5}]) == (
        {"f1": 2.0, "n": 4.0},
        {"f1": pytest.approx(2**0.5), "n": pytest.approx(2**0.5)},
    )
    with pytest.raises(UserError, match="--seed is set by protocol.py"):
        run_protocol(args(tiny_bert, ner_dirs["devel"], tmp_path / "r", "--seed", "3"))
    with pytest.raises(UserError, match="picks the epochs"):
        run_protocol(args(tiny_bert, ner_dirs["devel"], tmp_path / "r3", "--epochs", "3"))
    assert not (tmp_path / "r3").exists()  # nothing written that would refuse the corrected command
    with pytest.raises(UserError, match="picks the batch"):
        run_protocol(args(tiny_bert, ner_dirs["devel"], tmp_path / "r2", "--ds", "train_batch_size=16"))
    # the same refusal by the Python API: the user's overrides are the job's, the task recipe's excepted
    job = tiny_job(tiny_bert, ner_dirs["devel"], "train_batch_size=16")
    with pytest.raises(UserError, match="picks the batch"):
        protocol.run(protocol.ProtocolConfig(task="ncbi_disease", run_dir=str(tmp_path / "r4"), job=job))
    recipe_job = run_task.job_from_args(["--task", "ncbi_disease", "--data_dir", "d", "--init_from", "m"])
    assert "train_batch_size" in protocol.ds_overrides(recipe_job.ds)  # BioBERT's 32, from the recipe ...
    assert protocol.chosen_overrides(protocol.get_task("ncbi_disease"), recipe_job) == {}  # ... not the user's
    assert protocol.chosen_overrides(protocol.get_task("ncbi_disease"), job) == {
        "optimizer.params.lr": "1e-3",
        "train_batch_size": "16",
    }
    with pytest.raises(UserError, match="--folds"):
        protocol.run(protocol.ProtocolConfig(task="gad", run_dir=str(tmp_path / "r5"), job=job, folds=[11]))
    assert not (tmp_path / "r4").exists() and not (tmp_path / "r5").exists()


def test_main_parses_into_a_config_and_calls_run(monkeypatch, tiny_bert, ner_dirs, tmp_path):
    """main(argv) only parses: the protocol flags into ProtocolConfig's fields, every other flag into its job."""
    calls = []
    monkeypatch.setattr(protocol, "run", lambda cfg: calls.append(cfg) or {"called": True})
    argv = args(tiny_bert, ner_dirs["devel"], tmp_path / "p", "--seeds", "3,1", "--epoch_grid", "2,1")
    assert run_protocol([*argv, "--keep_checkpoints", "false", "--protocol", "biobert-code"]) == {"called": True}
    (cfg,) = calls
    assert isinstance(cfg, protocol.ProtocolConfig) and isinstance(cfg.job, run_task.Job)
    assert (cfg.task, cfg.protocol, cfg.seeds, cfg.epoch_grid) == ("ncbi_disease", "biobert-code", [3, 1], [2, 1])
    assert cfg.keep_checkpoints is False and cfg.run_dir == str(tmp_path / "p")
    assert cfg.job.cfg.max_seq_length == 24 and cfg.job.cfg.progress is False
    assert cfg.data_dir == str(ner_dirs["devel"]) and cfg.init_from == str(tiny_bert)
    assert cfg.job.ds[-1] == "optimizer.params.lr=1e-3"  # the user's, after the recipe's
