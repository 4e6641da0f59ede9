"""bench/reproduce.py's learning-curve mode: the dry runs (CPU and one-GPU plans), the curve run on this
reproduction's Bio, a second pre-training budget joining the curve and the held-out MLM plot, and the report
rewritten from an earlier results/reproduce.json on a machine without the work dir."""

import json
import shutil
import sys
from pathlib import Path

import pytest
from test_reproduce import path_flags, write_data

from biobert.errors import UserError
from conftest import REPO


def _tiny_flags(root, *extra):
    return [
        *path_flags(root),
        "--curve_datasets",
        "ncbi_disease,gad_1",
        "--curve_dir",
        str(root / "curve"),
        *extra,
    ]


def test_learning_curve_and_gpu_dry_runs_print_both_plans(tmp_path, capsys, monkeypatch):
    """--learning_curve --dry_run and --device cuda --dry_run on CPU: reproduce's plan, then the curve's runs and
    estimate (and the one-GPU plan with its assumed speeds); nothing is written. --device cuda without a GPU and
    without --dry_run is a user error."""
    sys.path.insert(0, str(REPO / "bench"))
    import reproduce
    import reproduce_plan
    import reproduce_stages

    write_data(tmp_path)
    plan = reproduce.main.__wrapped__(_tiny_flags(tmp_path, "--learning_curve", "--dry_run"))
    out = capsys.readouterr().out
    assert plan["groups"] == [] and plan["learning_curve"]["bios"] == {"bio_2.0M": plan["bio_model"]}
    assert plan["curve"]["runs"] == (4 + 2) * 5 * 2 and plan["curve"]["gpu"] is None  # fractions x seeds x models
    assert "fine-tuning: the learning curve below" in out and "60 of 60 runs left" in out and "CPU-hours" in out
    assert plan["nproc"] == 2 and plan["ds_pretrain"].endswith("cpu.json") and plan["ds_overrides"] == []

    plan = reproduce.main.__wrapped__(_tiny_flags(tmp_path, "--device", "cuda", "--dry_run"))
    out = capsys.readouterr().out
    assert plan["pretrain_tokens"] >= 100 * 2_002_944 and plan["tokens_per_step"] == 131_072
    assert plan["nproc"] == 1 and plan["train_batch_size"] == 1024 and plan["ds_pretrain"].endswith("h100x8.json")
    assert plan["ds_overrides"] == reproduce_plan.GPU_DS and plan["work_dir"] == str(tmp_path / "work")
    gpu = plan["curve"]["gpu"]
    assert gpu["pretrain_tokens"] == plan["pretrain_tokens"] and gpu["workers"] >= 1
    assert "One-GPU plan (speeds" in out and f"{plan['pretrain_tokens']:,} tokens" in out and "in all" in out
    assert not list(tmp_path.glob("work/**/plan.json"))  # a dry run writes nothing
    # pre-training gets the one-GPU batch arithmetic and a warmup within its steps
    cmds = []
    monkeypatch.setattr(reproduce_stages, "run_child", lambda cmd, *a, **k: cmds.append(cmd))
    reproduce_stages.launch_pretrain(plan, tmp_path / "run", plan["base_model"], 1000, 100)
    flags = " ".join(cmds[0])
    assert "--num_gpus 1" in flags and "--ds gradient_accumulation_steps=4" in flags
    assert flags.endswith("--ds scheduler.params.warmup_num_steps=20")

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        reproduce.main(_tiny_flags(tmp_path, "--device", "cuda"))
    assert stop.value.code == 2 and "no CUDA device here" in capsys.readouterr().err


def test_learning_curve_mode_runs_the_curve_on_this_bio_and_reports_it(tmp_path, monkeypatch):
    """After the data-prep and pre-training stages (not run here), learning_curve.run gets a CurveConfig with
    the plan's Base, Bio export and data root; reproduce.md includes the curve's section."""
    sys.path.insert(0, str(REPO / "bench"))
    import learning_curve
    import reproduce
    import reproduce_curve as rc
    import reproduce_stages

    write_data(tmp_path)
    calls = []

    def fake_run(cfg):
        calls.append(cfg)
        Path(cfg.report_dir, "learning_curve.md").write_text("## Learning curve: Bio − Base\n\nplanted row\n")
        return {}

    monkeypatch.setattr(learning_curve, "run", fake_run)
    monkeypatch.setattr(reproduce.Progress, "run", lambda self: None)
    monkeypatch.setattr(reproduce_stages, "run_child", lambda *a, **k: pytest.fail(f"a stage was started: {a}"))
    (tmp_path / "report").mkdir()
    reproduce.main.__wrapped__(_tiny_flags(tmp_path, "--learning_curve", "--ds_pretrain", str(tmp_path / "ds.json")))
    plan = json.loads((tmp_path / "work" / "plan.json").read_text())
    (cfg,) = calls
    assert isinstance(cfg, learning_curve.CurveConfig) and not cfg.dry_run
    assert cfg.bios == {rc.budget_name(plan["pretrain_tokens"]): plan["bio_model"]}
    assert plan["bio_model"] == str(tmp_path / "work" / "pretrain" / "hf")
    assert (cfg.base_model, cfg.data_root) == (plan["base_model"], plan["data_root"])
    assert cfg.work_dir == str(tmp_path / "curve") and cfg.device == "cpu"
    assert cfg.seeds == learning_curve.CurveConfig().seeds and cfg.datasets == ("ncbi_disease", "gad_1")
    md = (tmp_path / "report" / "reproduce.md").read_text()
    assert "## Learning curve: Bio − Base" in md and "planted row" in md


def test_a_second_budget_joins_the_curve_and_the_mlm_plot(tmp_path, monkeypatch):
    """A reproduction of another budget on the same --curve_dir adds its Bio beside the first one's (one Base);
    the report plots both budgets' held-out curves on one plot, and says when a held-out set differs."""
    sys.path.insert(0, str(REPO / "bench"))
    import learning_curve
    import reproduce
    import reproduce_curve as rc
    import reproduce_mlm

    assert rc.budget_name(2_002_944) == "bio_2.0M" and rc.budget_name(10_014_720) == "bio_10.0M"
    write_data(tmp_path)
    first = tmp_path / "first"  # a 10M-token reproduction: its hf/ links its last checkpoint's export
    (first / "pretrain" / "checkpoints" / "step_00000009" / "hf").mkdir(parents=True)
    (first / "pretrain" / "hf").symlink_to("checkpoints/step_00000009/hf")
    first_hf = str(first / "pretrain" / "checkpoints" / "step_00000009" / "hf")  # as the curve records it
    (first / "plan.json").write_text(
        json.dumps(
            {
                "work_dir": str(first),
                "bio_model": str(first / "pretrain" / "hf"),
                "pretrain_tokens": 10_014_720,
                "pmc": [],
                "tokens_per_step": 4096,
            }
        )
    )
    (first / "pretrain" / "metrics.jsonl").write_text(
        json.dumps({"kind": "eval", "step": 10, "heldout_mlm_loss": 5.0, "heldout_mlm_acc": 0.2}) + "\n"
    )
    (tmp_path / "curve").mkdir()
    curve_plan = {  # an earlier budget's curve, its runs not begun
        "config": {"seeds": [1], "epochs": 2, "min_steps": 100, "n_boot": 10, "work_dir": str(tmp_path / "curve")},
        "base_model": "b",
        "bio_model": first_hf,
        "models": {"base": "b", "bio_10.0M": first_hf},
        "datasets": [],
        "runs": [],
    }
    (tmp_path / "curve" / "plan.json").write_text(json.dumps(curve_plan))
    calls = []
    monkeypatch.setattr(learning_curve, "run", lambda cfg: calls.append(cfg) or {})
    monkeypatch.setattr(reproduce.Progress, "run", lambda self: None)
    (tmp_path / "report").mkdir()
    reproduce.main.__wrapped__(_tiny_flags(tmp_path, "--learning_curve", "--ds_pretrain", str(tmp_path / "ds.json")))
    (cfg,) = calls
    plan = json.loads((tmp_path / "work" / "plan.json").read_text())
    mine = rc.budget_name(plan["pretrain_tokens"])
    assert cfg.bios == {"bio_10.0M": first_hf, mine: plan["bio_model"]} and mine != "bio_10.0M"
    (tmp_path / "curve" / "plan.json").write_text(json.dumps({**curve_plan, "models": {"base": "b", **cfg.bios}}))
    curves = reproduce_mlm.budget_curves(plan)
    assert list(curves)[1] == "10.0M tokens" and len(curves) == 2  # smallest budget first; the same held-out set
    assert curves["10.0M tokens"][0]["heldout_mlm_loss"] == 5.0
    again = rc.curve_bios(cfg, plan)  # run again: the same Bios, not a second name for this one
    assert again == cfg.bios
    (tmp_path / "work" / "pretrain" / "checkpoints" / "step_00000002" / "hf").mkdir(parents=True)
    (tmp_path / "work" / "pretrain" / "hf").symlink_to("checkpoints/step_00000002/hf")
    resolved = {**cfg.bios, mine: str((tmp_path / "work" / "pretrain" / "hf").resolve())}
    (tmp_path / "curve" / "plan.json").write_text(json.dumps({**curve_plan, "models": {"base": "b", **resolved}}))
    assert rc.curve_bios(cfg, plan) == resolved  # the recorded, resolved path is this reproduction's Bio too
    other = {**plan, "work_dir": str(tmp_path / "pubmed_only"), "bio_model": str(tmp_path / "pubmed_only" / "hf")}
    assert rc.curve_bios(cfg, other)[f"{mine}_pubmed_only"] == other["bio_model"]
    assert json.loads((tmp_path / "report" / "results" / "reproduce.json").read_text())["heldout_mlm_budgets"]
    assert (tmp_path / "report" / "learning_curve.md").is_file()  # the curve's section, rewritten by the report
    md = (tmp_path / "report" / "reproduce.md").read_text()  # the curve alone: no protocol tables, no delta plot
    assert "## Pre-training" in md and "## Fine-tuning (test sets)" not in md and "> Bio = Base (base) + " in md
    reproduce_mlm.plot_mlm(curves, tmp_path / "two.png")
    assert (tmp_path / "two.png").stat().st_size > 1000
    # on a new machine the work dirs are gone: the report is rewritten from the reproduce.json it wrote (the
    # pre-training part) and the curve's runs (restored there from its ledger)
    saved_path = tmp_path / "report" / "results" / "reproduce.json"
    saved = json.loads(saved_path.read_text())
    shutil.rmtree(tmp_path / "work")
    flags = ["--report_only", "--from_results", str(saved_path), "--curve_dir", str(tmp_path / "curve")]
    flags += ["--work_dir", str(tmp_path / "work"), "--report_dir", str(tmp_path / "report2")]
    again = reproduce.main.__wrapped__(flags)
    assert again["heldout_mlm_budgets"] == saved["heldout_mlm_budgets"] and again["measured"] == saved["measured"]
    assert again["pretraining_from"] == saved["date"] and again["readme"].startswith("Bio = Base (base) + ")
    assert f"from the report of {saved['date']}" in (tmp_path / "report2" / "reproduce.md").read_text()
    # rewritten again from that rewrite (the next machine): still the pre-training's own report, not the last rewrite
    rewrite = tmp_path / "report2" / "results" / "reproduce.json"
    rewrite.write_text(json.dumps({**json.loads(rewrite.read_text()), "date": "2099-01-01T00:00:00"}))
    third = ["--report_only", "--from_results", str(rewrite), "--curve_dir", str(tmp_path / "curve")]
    third += ["--work_dir", str(tmp_path / "work"), "--report_dir", str(tmp_path / "r3")]
    assert reproduce.main.__wrapped__(third)["pretraining_from"] == saved["date"]
    assert f"from the report of {saved['date']}" in (tmp_path / "r3" / "reproduce.md").read_text()
    with pytest.raises(UserError, match="curve2/plan.json not found; run the curve there first"):
        reproduce.main.__wrapped__([*flags[:4], str(tmp_path / "curve2"), *flags[5:]])
    with pytest.raises(UserError, match="no such file"):
        reproduce.main.__wrapped__(["--report_only", "--from_results", str(tmp_path / "nope.json")])
