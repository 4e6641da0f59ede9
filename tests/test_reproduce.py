"""bench/reproduce.py end to end on fixture data: data_prep with decontamination, Base's step-0 held-out loss,
pre-training under the deepspeed launcher, Base and Bio fine-tuned on a tiny NER set and a 2-fold GAD set
with 2 seeds, the report; then a second invocation that only skips, and --report_only."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_finetune import write_ner_split

from biobert.errors import UserError
from conftest import REPO, subprocess_env, write_pubmed_xml, write_tiny_bert, write_vocab

PLANTED = (
    "patients with the mutation were treated with the inhibitor and the tumor response was "
    "significantly increased compared with control"
).split()


def write_data(root):
    """ner/NCBI-disease (one test sentence planted in a PubMed abstract), re/GAD folds 1-2, pubmed/."""
    ner = root / "data" / "ner" / "NCBI-disease"
    ner.mkdir(parents=True)
    write_ner_split(ner / "train.tsv", 40, 1)
    write_ner_split(ner / "devel.tsv", 8, 2)
    write_ner_split(ner / "test.tsv", 8, 3)
    with open(ner / "test.tsv", "a") as f:
        f.write("\n".join(f"{w}\tO" for w in PLANTED) + "\n\n")
    for fold in ("1", "2"):
        shutil.copytree(REPO / "tests" / "fixtures" / "re" / "GAD" / fold, root / "data" / "re" / "GAD" / fold)
    pubmed = root / "data" / "pubmed"
    pubmed.mkdir()
    write_pubmed_xml(pubmed / "pubmed26n0001.xml.gz", 120, seed=1, first_pmid=1000)
    planted = write_pubmed_xml(pubmed / "pubmed26n0002.xml", 120, seed=2, first_pmid=5000)
    text = planted.read_text().replace("<AbstractText>", "<AbstractText>" + " ".join(PLANTED).capitalize() + ". ", 1)
    planted.write_text(text)
    ds = json.loads((REPO / "ds_configs" / "cpu.json").read_text())
    ds.update(train_batch_size=8, train_micro_batch_size_per_gpu=4)
    ds["optimizer"]["params"]["lr"] = 1e-3
    ds["scheduler"]["params"]["warmup_num_steps"] = 1  # so that Bio moves away from Base in 3 steps
    (root / "ds.json").write_text(json.dumps(ds))
    return write_tiny_bert(root / "base", write_vocab(root / "vocab.txt"))


def path_flags(root) -> list[str]:
    """The fixture's Base, data, work dir and report dir under root, as reproduce.py flags."""
    return [
        f"--{flag}={root / name}"
        for flag, name in (
            ("base_model", "base"),
            ("data_root", "data"),
            ("work_dir", "work"),
            ("report_dir", "report"),
        )
    ]


def reproduce(root, *extra):
    cmd = [
        sys.executable,
        "bench/reproduce.py",
        "--quick",
        *path_flags(root),
        "--ds_pretrain",
        str(root / "ds.json"),
        "--pretrain_tokens",
        "3072",
        "--nproc",
        "1",
        "--eval_batches",
        "2",
        "--seeds",
        "1,2",
        "--epochs",
        "2",
        "--prep_args",
        "--heldout_fraction 0.1",
        *extra,
    ]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, time.time() - t0


def test_reproduce_end_to_end_resume_and_report_only(tmp_path):
    write_data(tmp_path)
    out, _ = reproduce(tmp_path, "--head_tokens", "2048")
    work, report = tmp_path / "work", tmp_path / "report"
    # the plan: data_prep, Base's held-out loss, pre-training, then NER before RE, Base and Bio side by side
    starts = [line.split("] start ")[1].split(" |")[0] for line in out.splitlines() if "] start " in line]
    assert starts == [
        "data_prep",
        "base_heldout",
        "pretrain_heads",
        "pretrain",
        "ner ncbi_disease base (2 runs)",
        "ner ncbi_disease bio (2 runs)",
        "re gad base (4 runs)",
        "re gad bio (4 runs)",
    ]
    assert out.count("] done ") == 8 and "ETA" in out and "3 steps x 1,024 tokens" in out
    assert "heads-only phase of 2 steps (2,048 tokens" in out
    leaves = sorted(work.glob("finetune/*/*/seed_*/results.json")) + sorted(
        work.glob("finetune/*/*/fold_*/seed_*/results.json")
    )
    assert len(leaves) == 2 * 2 + 2 * 2 * 2  # (NER 2 seeds + GAD 2 folds x 2 seeds) x 2 models
    assert not list(work.glob("finetune/**/checkpoints"))  # scored runs keep results, not weights
    data = json.loads((report / "results" / "reproduce.json").read_text())
    assert data["complete"] and data["runs_finished"] == data["runs_planned"] == 12
    for task in ("ncbi_disease", "gad"):
        delta = data["results"][task]["delta"]
        assert delta["n"] == 2 and set(delta["per_seed"]) == {"1", "2"}
        per_seed = [delta["per_seed"][s]["f1"] for s in ("1", "2")]
        assert abs(delta["mean"]["f1"] - sum(per_seed) / 2) < 1e-9
        assert abs(delta["std"]["f1"] - abs(per_seed[0] - per_seed[1]) / 2**0.5) < 1e-9
        base, bio = (data["results"][task]["models"][m]["per_seed"] for m in ("base", "bio"))
        assert abs(per_seed[0] - (bio["1"]["f1"] - base["1"]["f1"])) < 1e-9
    fold1 = json.loads((work / "finetune" / "bio" / "gad" / "fold_01" / "seed_2" / "results.json").read_text())
    fold2 = json.loads((work / "finetune" / "bio" / "gad" / "fold_02" / "seed_2" / "results.json").read_text())
    mean_f1 = (fold1["scores"]["test"]["f1"] + fold2["scores"]["test"]["f1"]) / 2
    assert abs(data["results"]["gad"]["models"]["bio"]["per_seed"]["2"]["f1"] - mean_f1) < 1e-9
    assert data["decontamination"]["dropped"].get("ngram", 0) >= 1  # the planted test sentence
    curve = data["heldout_mlm"]
    assert [p["step"] for p in curve] == [0, 1, 2, 3, 4, 5]
    assert [p.get("phase") for p in curve] == [None, "heads", "heads", "full", "full", "full"]
    assert curve[-1]["heldout_mlm_loss"] != curve[0]["heldout_mlm_loss"]
    # step 0 is measured with pre-training's own evaluator: the first step runs at learning rate 0 (warmup
    # from 0), so the run's step-1 evaluation must give exactly the same number
    assert curve[0]["heldout_mlm_loss"] == curve[1]["heldout_mlm_loss"]
    # the heads-only phase left the encoder as Base had it; the full phase continued from its export
    from safetensors.torch import load_file

    base_w, heads_w = (
        load_file(str(d / "model.safetensors")) for d in (tmp_path / "base", work / "pretrain_heads" / "hf")
    )
    assert all((base_w[k] == heads_w[k]).all() for k in base_w if k.startswith("bert."))
    assert json.loads((work / "pretrain" / "config.json").read_text())["run"]["init_from"] == str(
        work / "pretrain_heads" / "hf"
    )
    assert "trained only the new masked-LM head" in (report / "reproduce.md").read_text()
    assert data["measured"]["cpu_hours"]["pretrain"] > 0 and data["plan"]["pretrain_tokens"] == 3072
    md = (report / "reproduce.md").read_text()
    assert "| Dataset | Metric | Base | Bio | Bio − Base |" in md and "| NCBI disease | F |" in md
    assert "| GAD | F |" in md and "What the numbers say" in md
    for png in ("reproduce_delta.png", "reproduce_mlm_loss.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second invocation skips every stage and re-trains nothing
    mtimes = {p: p.stat().st_mtime_ns for p in work.rglob("results.json")}
    mtimes[work / "pretrain" / "metrics.jsonl"] = (work / "pretrain" / "metrics.jsonl").stat().st_mtime_ns
    again, seconds = reproduce(tmp_path, "--head_tokens", "2048")
    assert again.count("] skip ") == 8 and "] start " not in again, again
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert seconds < 60, seconds  # imports and the report only
    # the same work dir without the heads-only phase would be another Bio model: refused before any work
    cmd = [
        sys.executable,
        "bench/reproduce.py",
        "--quick",
        "--base_model",
        str(tmp_path / "base"),
        "--data_root",
        str(tmp_path / "data"),
        "--work_dir",
        str(work),
        "--ds_pretrain",
        str(tmp_path / "ds.json"),
        "--pretrain_tokens",
        "3072",
        "--nproc",
        "1",
        "--eval_batches",
        "2",
        "--prep_args",
        "--heldout_fraction 0.1",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "other pre-training settings (head_steps, head_lr" in proc.stderr, proc.stderr

    # --report_only rebuilds the report from the finished runs
    for name in ("reproduce.md", "reproduce_delta.png", "reproduce_mlm_loss.png", "results/reproduce.json"):
        (report / name).unlink()
    reproduce(tmp_path, "--report_only")
    rebuilt = json.loads((report / "results" / "reproduce.json").read_text())
    assert rebuilt["results"] == data["results"] and (report / "reproduce_delta.png").is_file()
    assert (report / "reproduce.md").read_text().split("## What")[1] == md.split("## What")[1]


def test_two_invocations_side_by_side_keep_both_timings(tmp_path):
    """Base and Bio side by side in one work dir: each invocation adds its finished stage to timings.json as
    the file is on disk, so neither overwrites the other's (the ETA's arithmetic itself is not pinned here:
    it is an estimate, and a test restating its formula would only detect that it changed)."""
    sys.path.insert(0, str(REPO / "bench"))
    import reproduce_progress as r

    side = {"work_dir": str(tmp_path), "nproc": 1, "gpus": 0, "tokens_per_step": 1}
    first, second = r.Progress(side, []), r.Progress(side, [])  # both read the file before either wrote
    first.record("re gad base (30 runs)", {"kind": "re", "units": 1.0, "wall_s": 1.0})
    second.record("re gad bio (30 runs)", {"kind": "re", "units": 1.0, "wall_s": 2.0})
    assert set(json.loads((tmp_path / "timings.json").read_text())) == {"re gad base (30 runs)", "re gad bio (30 runs)"}
    assert not list(tmp_path.glob("*.tmp"))


def test_report_names_a_constant_classifier(tmp_path):
    """EU-ADR at a small budget: every run answers "related" for every sentence; the F1 (the positive rate's)
    must not pass for a comparison."""
    sys.path.insert(0, str(REPO / "bench"))
    import reproduce_tables as rr

    def leaf(model, fold, seed, tp, fp, tn, fn):
        d = tmp_path / model / f"fold_{fold:02d}" / f"seed_{seed}"
        d.mkdir(parents=True)
        p, r = tp / max(1, tp + fp), tp / max(1, tp + fn)
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        (d / "results.json").write_text(
            json.dumps(
                {
                    "scores": {
                        "test": {
                            "precision": 100 * p,
                            "recall": 100 * r,
                            "f1": 100 * f1,
                            "tp": tp,
                            "fp": fp,
                            "tn": tn,
                            "fn": fn,
                        }
                    }
                }
            )
        )

    for seed in (1, 2):
        for fold in (1, 2):
            leaf("base", fold, seed, 27, 10, 0, 0)  # all positive
            leaf("bio", fold, seed, *((27, 10, 0, 0) if seed == 1 else (20, 4, 6, 7)))
    groups = [
        {"task": "euadr", "kind": "re", "folds": [1, 2], "model": m, "run_dir": str(tmp_path / m)}
        for m in ("base", "bio")
    ]
    results, finished, planned = rr.collect({"groups": groups, "seeds": [1, 2]})
    assert (finished, planned) == (8, 8)
    assert results["euadr"]["models"]["base"]["constant_runs"] == {"runs": 4, "positive": 4, "negative": 0}
    assert results["euadr"]["models"]["bio"]["constant_runs"] == {"runs": 4, "positive": 2, "negative": 0}
    (note,) = rr.constant_notes(results)
    assert "Base in 4 of 4 runs; Bio in 2 of 4 runs" in note and "says nothing" not in note
    for fold in (1, 2):  # Bio constant everywhere too: no comparison at all
        shutil.rmtree(tmp_path / "bio" / f"fold_{fold:02d}" / "seed_2")
        leaf("bio", fold, 2, 0, 0, 10, 27)  # all negative
    (note,) = rr.constant_notes(rr.collect({"groups": groups, "seeds": [1, 2]})[0])
    assert "Bio in 4 of 4 runs" in note and "says nothing at this budget" in note


def test_pmc_joins_the_corpus_and_an_older_plan_without_it_still_matches(tmp_path):
    """--pmc adds PMC full text to data_prep's inputs (DATA_ROOT/pmc when given alone); without it the plan
    is the PubMed-only one that work dirs made before the flag existed recorded."""
    sys.path.insert(0, str(REPO / "bench"))
    import reproduce
    import reproduce_plan
    import reproduce_stages

    write_data(tmp_path)
    pmc = tmp_path / "data" / "pmc"
    pmc.mkdir()
    for name in ("PMC1000001.nxml", "PMC1000003.nxml"):
        shutil.copy(REPO / "tests" / "fixtures" / "data_prep" / "pmc" / name, pmc / name)
    flags = [
        "--quick",
        "--base_model",
        str(tmp_path / "base"),
        "--data_root",
        str(tmp_path / "data"),
        "--work_dir",
        str(tmp_path / "work"),
        "--ds_pretrain",
        str(tmp_path / "ds.json"),
        "--nproc",
        "1",
    ]
    plain = reproduce_plan.build_plan(reproduce.parse_args(flags))
    assert plain["pmc"] == []
    older = {k: v for k, v in plain.items() if k != "pmc"}  # written before --pmc existed
    assert reproduce_plan.pretrain_settings(older) == reproduce_plan.pretrain_settings(plain)

    plan = reproduce_plan.build_plan(reproduce.parse_args([*flags, "--pmc"]))
    assert plan["pmc"] == [str(pmc)]
    assert reproduce_plan.pretrain_settings(plan) != reproduce_plan.pretrain_settings(plain)  # another Bio model
    stage = reproduce_stages.data_prep_stage(plan)
    pubmed_only = reproduce_stages.data_prep_stage(plain)["units"]
    assert stage["units"] > pubmed_only  # the articles count in the ETA's bytes
    stage["run"]()
    manifest = json.loads((tmp_path / "work" / "shards" / "manifest.json").read_text())
    paths = [i["path"] for i in manifest["inputs"]]
    assert any("pubmed26n0001" in p for p in paths) and str(pmc) in paths, paths
    from_pmc = sum(i["documents"] for i in manifest["inputs"] if i["path"] == str(pmc))
    assert from_pmc == 1, manifest["inputs"]  # PMC1000003 has no body text: counted as skipped, not lost
    assert manifest["skipped"].get("no_text") == 1, manifest["skipped"]
    assert "PubMed + PMC" in __import__("reproduce_mlm").corpus_name(plan)


def test_a_preempted_stage_keeps_its_time_and_the_steps_it_covers(tmp_path):
    """A pre-training stage stopped by preemption records its time so far as "<name> (unfinished)"; the
    invocation that finishes it adds its own and replaces that record. Steps run before any timed attempt (a
    checkpoint an untimed process wrote) are not in `units_measured`, so the rate per step stays right, and the
    report says how many steps the time covers."""
    sys.path.insert(0, str(REPO / "bench"))
    import reproduce_mlm
    import reproduce_progress as r

    plan = {"work_dir": str(tmp_path), "nproc": 1, "gpus": 0, "tokens_per_step": 1, "pretrain_steps": 1000}
    plan["est_pretrain_cpu_h"] = 1.0
    step = {"now": 300}  # an untimed invocation reached step 300

    def preempted():
        step["now"] = 700
        raise UserError("pre-training failed (exit status 75)")

    def finish():
        step["now"] = 1000

    stage = {"name": "pretrain", "kind": "pretrain", "units": 1000, "done": lambda: step["now"] == 1000}
    stage["progress"] = lambda: step["now"]
    with pytest.raises(UserError):
        r.Progress(plan, [{**stage, "run": preempted}]).run()
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert set(timings) == {"pretrain (unfinished)"}
    first = timings["pretrain (unfinished)"]
    assert (first["units_measured"], first["attempts"]) == (400, 1)
    assert (
        reproduce_mlm.pretrain_timed(timings)["steps_measured"] == 400
        and not reproduce_mlm.pretrain_timed(timings)["finished"]
    )
    r.Progress(plan, [{**stage, "run": finish}]).run()
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert set(timings) == {"pretrain"}
    done = timings["pretrain"]
    assert (done["units"], done["units_measured"], done["attempts"]) == (1000, 700, 2)
    assert done["wall_s"] >= first["wall_s"] and done["cpu_s"] >= first["cpu_s"]
    timed = reproduce_mlm.pretrain_timed(timings)
    assert timed["finished"] and timed["cpu_s_per_step"] == pytest.approx(done["cpu_s"] / 700)
    assert r.Progress(plan, [stage]).measured("pretrain") == [(done["wall_s"], 700)]
    said = reproduce_mlm.untimed_steps({"pretrain_timed": timed})
    assert "timed over 700 of its 1,000 full steps" in said
    assert reproduce_mlm.untimed_steps({"pretrain_timed": {**timed, "steps_measured": 1000}}) == ""


def test_report_names_the_next_budget_from_the_second_half_of_the_curve():
    """The last stretch of a linearly decayed run is flat whatever the budget: the judgement uses the second
    half of the full phase, and prices the next budget at the run's measured CPU rate."""
    sys.path.insert(0, str(REPO / "bench"))
    import reproduce_mlm

    plan = {"pretrain_tokens": 2_000_000, "tokens_per_step": 4_000}
    measured = {"pretrain_timed": {"cpu_s_per_step": 0.5 * 3600 / 500}}  # 0.5 CPU-hours for its 500 steps

    def curve(losses):
        return [
            {"step": 0, "tokens": 0, "heldout_mlm_loss": 11.0},
            {"step": 1, "tokens": 1, "heldout_mlm_loss": 9.0, "phase": "heads"},
        ] + [
            {"step": 10 * i, "tokens": 400_000 * i, "heldout_mlm_loss": v, "phase": "full"}
            for i, v in enumerate(losses, 1)
        ]

    falling = reproduce_mlm.next_budget(plan, curve([6.0, 5.5, 5.2, 5.0, 4.99]), measured)  # flat only at the very end
    assert "still falling" in falling and "`--pretrain_tokens 10,000,000`" in falling
    assert "about 2.5 CPU-hours" in falling and "5.200 -> 4.990" in falling
    flat = reproduce_mlm.next_budget(plan, curve([6.0, 5.0, 4.99, 4.985, 4.98]), measured)
    assert "flat in the second half" in flat and "--pretrain_tokens" not in flat
    assert reproduce_mlm.next_budget(plan, curve([6.0, 5.0]), measured) == ""  # too few points to judge


def test_summary_judges_a_difference_as_printed():
    """GAD's Bio − Base of +0.004 prints as +0.00: it must not be counted as a positive dataset."""
    sys.path.insert(0, str(REPO / "bench"))
    import reproduce_report as rr

    def row(name, d, s):
        return {"name": name, "kind": "re", "models": {}, "delta": {"mean": {"f1": d}, "std": {"f1": s}, "n": 3}}

    plan = {
        "pretrain_tokens": 1000,
        "pretrain_steps": 1,
        "tokens_per_step": 1000,
        "est_pretrain_cpu_h": 0.1,
        "base_config": {"num_hidden_layers": 6, "hidden_size": 384},
        "work_dir": "/nonexistent",
        "paper": {"tokens": 6.16e10, "steps": 470000, "tokens_per_step": 131072, "hardware": "8 x V100"},
    }
    measured = {"cpu_hours_total": 1.0, "cpu_hours": {"pretrain": 0.1}}
    text = rr.summary(plan, {"gad": row("GAD", 0.0044, 0.51), "chemprot": row("CHEMPROT", 0.41, 0.39)}, [], measured)[0]
    assert "positive on 1 of 2 datasets (CHEMPROT +0.41 ± 0.39)" in text, text
    assert "**not positive on 1** (GAD +0.00 ± 0.51)" in text, text


def test_finetuning_calls_the_protocol_in_process_with_a_config(tmp_path, monkeypatch):
    """Each task x model is finetune.protocol.run(ProtocolConfig) in this process (no entry script, no argv to
    a child); --ft_args are run_task flags parsed once into the config's job, when the plan is made."""
    sys.path.insert(0, str(REPO / "bench"))
    import reproduce
    import reproduce_plan
    import reproduce_stages

    from finetune import protocol

    write_data(tmp_path)
    flags = [
        "--quick",
        "--base_model",
        str(tmp_path / "base"),
        "--data_root",
        str(tmp_path / "data"),
        "--work_dir",
        str(tmp_path / "work"),
        "--ds_pretrain",
        str(tmp_path / "ds.json"),
        "--nproc",
        "1",
        "--seeds",
        "1,2",
        "--ft_args",
        "--max_seq_length 24 --ds optimizer.params.lr=1e-3",
        "--models",
        "base",
    ]
    plan = reproduce_plan.build_plan(reproduce.parse_args(flags))
    calls = []
    monkeypatch.setattr(protocol, "run", lambda cfg: calls.append(cfg) or {})
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"a child process was started: {a}"))
    ner, gad = (reproduce_stages.finetune_stage(plan, g) for g in plan["groups"])
    assert not ner["done"]()
    ner["run"](), gad["run"]()
    (ner_cfg, gad_cfg) = calls
    assert isinstance(ner_cfg, protocol.ProtocolConfig) and ner_cfg.task == "ncbi_disease"
    assert (ner_cfg.protocol, ner_cfg.seeds, ner_cfg.epochs) == ("biobert-code", [1, 2], 0.05)
    assert ner_cfg.keep_checkpoints is False and ner_cfg.init_from == plan["base_model"]
    job = ner_cfg.job
    assert job.deepspeed_config == plan["ds_finetune"] and job.cfg.max_seq_length == 24 and not job.cfg.progress
    assert job.ds[-1] == "optimizer.params.lr=1e-3" and ner_cfg.run_dir == plan["groups"][0]["run_dir"]
    assert gad_cfg.task == "gad" and gad_cfg.folds == [1, 2]
    # finished when the protocol's results.json holds every seed of the plan
    results = Path(ner_cfg.run_dir) / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"seeds": [1]}))
    assert not ner["done"]()
    results.write_text(json.dumps({"seeds": [1, 2]}))
    assert ner["done"]()
    # a run_task flag the protocol sets for each sub-run is refused when the plan is made
    with pytest.raises(UserError, match="--seed is set by reproduce.py"):
        reproduce_stages.finetune_stage({**plan, "ft_args": "--seed 3"}, plan["groups"][0])


def test_readme_summary_is_the_reports_paragraph():
    """The README's result paragraph is the committed report's own `readme` text, not a hand-edited copy."""
    data = json.loads((REPO / "bench" / "results" / "reproduce.json").read_text())
    assert data["readme"] and data["readme"] in (REPO / "README.md").read_text()
    assert data["readme"] in (REPO / "bench" / "reproduce.md").read_text()
