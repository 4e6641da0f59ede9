"""bench/learning_curve.py: which runs a curve keeps, refuses and restores: a failed run named at the end
while the others finish, failures in a row stopping it, two Bios sharing Base's runs, a re-trained Bio or
changed settings refused, and the committed ledger that carries finished runs to a new machine."""

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest

from biobert.errors import UserError
from conftest import REPO, write_tiny_bert

sys.path.insert(0, str(REPO / "bench"))

import learning_curve as lc  # noqa: E402
import learning_curve_exec as lce  # noqa: E402
import learning_curve_ledger as lcl  # noqa: E402
import learning_curve_plan as lcp  # noqa: E402
import learning_curve_report as lcr  # noqa: E402
import learning_curve_subsets as lcs  # noqa: E402
from test_learning_curve import tiny_curve  # noqa: E402


def test_a_failed_run_does_not_stop_the_others_and_is_named_at_the_end(tmp_path, ner_root):
    """One run's failure (here a checkpoint step folder without its weights, as a folder moved mid-save leaves)
    is recorded with its traceback and the other runs finish; the report is written, then the curve exits with
    the failed run named; once the cause is removed the same command finishes it."""
    cfg = tiny_curve(tmp_path, ner_root, seeds=(1,), min_steps=2, n_boot=50)
    cfg.bio_model = str(write_tiny_bert(tmp_path / "bio", tmp_path / "vocab.txt", layers=1))
    plan = lc.build_plan(cfg)
    broken = Path(lce.run_order(plan)[1]["run_dir"])
    (broken / "checkpoints" / "step_00000001").mkdir(parents=True)
    (broken / "checkpoints" / "latest").write_text("step_00000001")
    (broken / "checkpoints" / "step_00000001" / "train_state.json").write_text("{}")
    with pytest.raises(UserError, match=r"1 of 4 runs failed, e\.g\. .*holds no model weights.*failures\.jsonl"):
        lc.run(cfg)
    done = [r for r in plan["runs"] if (Path(r["run_dir"]) / "results.json").is_file()]
    assert len(done) == 3 and str(broken) not in {r["run_dir"] for r in done}  # the others finished
    assert (tmp_path / "report" / "learning_curve.md").is_file()
    failed = [json.loads(x) for x in (tmp_path / "work" / "failures.jsonl").read_text().splitlines()]
    assert [f["failed"] for f in failed] == [str(broken)] and "Traceback" in failed[0]["traceback"]
    shutil.rmtree(broken / "checkpoints")
    assert lc.run(cfg)["runs_finished"] == 4


def test_failures_in_a_row_stop_the_curve(tmp_path):
    failures = lce.Failures(tmp_path / "failures.jsonl")
    bad = {"failed": "runs/x", "error": "UserError: no model", "traceback": "Traceback ..."}
    failures.add(bad)
    failures.add({})  # a run skipped as finished: no evidence either way
    failures.add(bad)
    failures.add({"run_dir": "runs/y", "cpu_s": 1.0})  # one finished between: not a common cause
    failures.add(bad)
    failures.add(bad)
    with pytest.raises(UserError, match="3 runs in a row failed, the last runs/x: UserError: no model"):
        failures.add(bad)
    assert len((tmp_path / "failures.jsonl").read_text().splitlines()) == 5
    with pytest.raises(UserError, match="5 of 9 runs failed"):
        failures.check(9)
    lce.Failures(tmp_path / "none.jsonl").check(9)  # nothing failed: nothing to say


def test_two_bios_share_the_base_runs_and_a_changed_bio_is_refused(tmp_path, ner_root):
    """Two named Bios (two pre-training budgets): one set of Base runs, each Bio paired with it in the report;
    the runs go cheapest point first; a Bio re-trained under the same name is refused, not mixed in."""
    cfg = tiny_curve(tmp_path, ner_root, seeds=(1,), min_steps=2, n_boot=50)
    vocab = tmp_path / "vocab.txt"
    small = write_tiny_bert(tmp_path / "bio_small", vocab, layers=1)
    one = lc.run(dataclasses.replace(cfg, bios={"bio_1M": str(small)}, workers=2))  # two runs at once
    assert one["runs_finished"] == 4
    base_result = tmp_path / "work" / "runs" / "ncbi_disease" / "f1" / "seed_1" / "base" / "results.json"
    stamp = base_result.stat().st_mtime_ns
    big = write_tiny_bert(tmp_path / "bio_big", vocab, layers=2)
    two = lc.run(dataclasses.replace(cfg, bios={"bio_1M": str(small), "bio_5M": str(big)}))
    assert two["runs_finished"] == 6 and base_result.stat().st_mtime_ns == stamp  # Base's runs were not redone
    res = two["results"]["ncbi_disease"]
    assert set(res["verdict"]) == set(res["fractions"]["1"]["bootstrap"]) == {"bio_1M", "bio_5M"}
    md = (tmp_path / "report" / "learning_curve.md").read_text()
    assert "### Bio 1M" in md and "### Bio 5M" in md and "Bio 5M − Base" in md
    assert res["budgets"]["bio_5M-bio_1M"]["pooled"]["n"] == 1  # the larger budget paired with the smaller
    assert "### Bio 5M − Bio 1M: more pre-training" in md and "**More pre-training, Bio 5M − Bio 1M**" in md
    plan = json.loads((tmp_path / "work" / "plan.json").read_text())
    order = [(r["fraction"], r["model"]) for r in lce.run_order(plan)]
    assert order[:3] == [(0.25, "base"), (0.25, "bio_1M"), (0.25, "bio_5M")] and order[-1] == (1.0, "bio_5M")
    retrained = write_tiny_bert(tmp_path / "bio_big2", vocab, layers=3)
    with pytest.raises(UserError, match="bio_5M.*other weights"):
        lc.run(dataclasses.replace(cfg, bios={"bio_1M": str(small), "bio_5M": str(retrained)}))
    both = {"bio_1M": str(small), "bio_5M": str(big)}
    with pytest.raises(
        UserError, match=r"3 run.*other epochs.*f0.25/seed_1/base \(2 steps of 1 epochs, planned 4 of 2\)"
    ):  # not mixed in
        lc.run(dataclasses.replace(cfg, bios=both, min_steps=3))
    # an interrupted run whose checkpoint was written under other epochs is refused too, not resumed
    plan = lc.build_plan(dataclasses.replace(cfg, bios=both))
    run = plan["runs"][0]
    result = Path(run["run_dir"]) / "results.json"
    # at the planned epochs a run may take more steps than planned (its long sentences split into windows): kept
    kept = result.read_text()
    result.write_text(json.dumps({**json.loads(kept), "steps": run["steps"] + 2}))
    lcp.check_runs(plan)
    results = lcr.collect(plan, n_boot=10)
    point = results[run["task"]]["fractions"][f"{run['fraction']:g}"]
    assert (point["steps"], point["steps_taken"]) == (run["steps"], [run["steps"], run["steps"] + 2])
    assert f"| {run['steps']}–{run['steps'] + 2} |" in "\n".join(lcr.markdown(plan, results, "curve.png"))
    result.write_text(kept)
    result.rename(result.with_suffix(".aside"))  # as if it had stopped after its first checkpoint
    step = Path(run["run_dir"]) / "checkpoints" / "step_00000001"
    step.mkdir(parents=True)
    (step.parent / "latest").write_text("step_00000001")
    (step / "run_config.json").write_text(json.dumps({"run": {"epochs": run["epochs"] + 3}}))
    with pytest.raises(UserError, match=r"1 run.*step_00000001 \(an interrupted run of \d+ epochs, planned"):
        lcp.check_runs(plan)
    (step / "run_config.json").write_text(json.dumps({"run": {"epochs": run["epochs"]}}))
    lcp.check_runs(plan)  # same epochs: it resumes
    shutil.rmtree(step.parent)
    result.with_suffix(".aside").rename(result)
    with pytest.raises(UserError, match="other settings.*ft_args"):
        lc.run(dataclasses.replace(cfg, bios=both, ft_args=(*cfg.ft_args, "--max_seq_length", "20")))
    # a dataset's own minimum moves only its runs: here NCBI's 25% (10 sentences, 2 steps an epoch) to 6 steps
    own = lc.build_plan(dataclasses.replace(cfg, bios=both, task_min_steps={"ncbi_disease": 6, "chemprot": 500}))
    assert {(r["fraction"], r["steps"], r["epochs"]) for r in own["runs"]} == {(0.25, 6, 3.0), (1.0, 10, 2.0)}
    assert lc.parse_args(["--task_min_steps", "chemprot=400,gad_1=200"]).task_min_steps == {
        "chemprot": 400,
        "gad_1": 200,
    }
    assert lc.parse_args(["--task_min_steps", ""]).task_min_steps == {}
    assert lc.parse_args([]).task_min_steps == lc.TASK_MIN_STEPS
    assert (
        plan["dtype"] == lc.resolve_dtype(cfg)
        and lc.resolve_dtype(dataclasses.replace(cfg, device="cuda")) == "bfloat16"
    )
    with pytest.raises(UserError, match="NAME=PATH"):
        lc.parse_args(["--bio", "nopath"])
    assert lc.parse_args(["--bio", "a=x", "--bio", "b=y"]).bios == {"a": "x", "b": "y"}


def test_the_ledger_carries_a_curve_to_a_new_work_dir_and_only_exact_runs_are_restored(tmp_path, ner_root, capsys):
    """A curve's finished runs go to its committed ledger; on a new machine (a new work dir) the same plan restores
    them instead of training (scores, bootstrap and verdicts equal), a Bio of other weights runs again (named),
    and a damaged ledger line is an error naming the file and line."""
    cfg = tiny_curve(tmp_path, ner_root, seeds=(1, 2), min_steps=3, n_boot=100)
    cfg.bio_model = str(write_tiny_bert(tmp_path / "bio", tmp_path / "vocab.txt", layers=1))
    first = lc.run(cfg)
    ledger = tmp_path / "report" / "results" / lcl.LEDGER_NAME
    entries = lcl.read(ledger)
    assert len(entries) == 8 and all(e["timing"]["cpu_s"] > 0 for e in entries.values())
    full = [e for e in entries.values() if e["key"]["fraction"] == 1.0]
    assert len(full) == 4 and all(lcl.dense(e["counts"]).shape == (12, 3) for e in full)  # 12 test sentences

    moved = dataclasses.replace(cfg, work_dir=str(tmp_path / "elsewhere"))
    capsys.readouterr()
    again = lc.run(moved)
    assert "restored 8 finished run(s)" in capsys.readouterr().out
    assert again["results"] == first["results"] and again["runs_finished"] == 8
    plan = json.loads((tmp_path / "elsewhere" / "plan.json").read_text())
    assert not any((Path(r["run_dir"]) / "metrics.jsonl").exists() for r in plan["runs"])  # nothing trained
    assert again["measured"]["ner"]["runs"] == 8  # their measured time comes with them

    # a Bio whose weights are not on this machine, given by their sha256: its runs come from the ledger alone
    by_sha = {"bio": "sha256:" + lcp.weights_sha256(cfg.bio_model)}
    assert lc.run(dataclasses.replace(cfg, bios=by_sha, work_dir=str(tmp_path / "sha")))["results"] == first["results"]
    gone = {"bio": "sha256:" + "0" * 64}  # no entry of those weights: its runs wait, named; Base's are restored
    waiting = lc.run(dataclasses.replace(cfg, bios=gone, work_dir=str(tmp_path / "gone")))
    assert waiting["runs_finished"] == 4 and "its 4 unfinished run(s) wait" in capsys.readouterr().out
    with pytest.raises(UserError, match="64 hex digits"):
        lc.run(dataclasses.replace(cfg, bios={"bio": "sha256:abc"}, work_dir=str(tmp_path / "bad")))
    other = write_tiny_bert(tmp_path / "bio_again", tmp_path / "vocab.txt", layers=3)  # "pre-trained again"
    third = lc.run(dataclasses.replace(cfg, bio_model=str(other), work_dir=str(tmp_path / "third")))
    out = capsys.readouterr().out
    assert "restored 4 finished run(s)" in out and "4 run(s) of bio (" in out and "other weights" in out, out
    assert third["runs_finished"] == 8 and len(lcl.read(ledger)) == 12  # the new Bio's runs join the ledger

    # a report snapshot from before the ledger: its per-seed F1 below 100% become entries
    fresh = lc.build_plan(dataclasses.replace(cfg, work_dir=str(tmp_path / "imp")))
    lcs.prepare_subsets(fresh, cfg.data_root, tmp_path / "imp")
    imported = lcl.import_report(first, fresh)
    assert len(imported) == 4 and {e["results"]["scores"]["test"]["f1"] for e in imported.values()} == {
        first["results"]["ncbi_disease"]["fractions"]["0.25"]["scores"][e["model"]][e["key"]["seed"]]
        for e in imported.values()
    }
    snapshot = tmp_path / "snapshot.jsonl"
    lcl.write(snapshot, imported)
    from_snapshot = lc.run(dataclasses.replace(cfg, work_dir=str(tmp_path / "imp"), ledger=str(snapshot)))
    assert (
        from_snapshot["results"]["ncbi_disease"]["fractions"]["0.25"]["scores"]
        == first["results"]["ncbi_disease"]["fractions"]["0.25"]["scores"]
    )
    # the snapshot kept no run's time: those runs are priced at the measured rates, named as such
    assert from_snapshot["cost"]["runs_finished_untimed"] == 4 and from_snapshot["measured"]["ner"]["runs"] == 4
    assert from_snapshot["cost"]["cpu_h_finished_untimed_estimate"] > 0
    lines = ledger.read_text().splitlines()
    ledger.write_text("\n".join([*lines[:3], "{not json", *lines[3:]]) + "\n")
    with pytest.raises(UserError, match=r"learning_curve_runs\.jsonl:4: not a ledger entry"):
        lc.run(dataclasses.replace(cfg, work_dir=str(tmp_path / "fourth")))


def test_each_finished_run_joins_the_ledger_at_once(tmp_path, ner_root, monkeypatch):
    """A curve stopped before its report (a session that ends, a machine taken back) has every run it finished in
    the ledger already."""
    cfg = tiny_curve(tmp_path, ner_root, seeds=(1,), min_steps=2, n_boot=50)
    cfg.bio_model = str(write_tiny_bert(tmp_path / "bio", tmp_path / "vocab.txt", layers=1))

    def stopped(*a, **k):
        raise RuntimeError("stopped before the report")

    monkeypatch.setattr(lcr, "write_report", stopped)
    with pytest.raises(RuntimeError, match="stopped before the report"):
        lc.run(cfg)
    entries = lcl.read(tmp_path / "report" / "results" / lcl.LEDGER_NAME)
    assert len(entries) == 4 and all(e["timing"]["cpu_s"] > 0 for e in entries.values())


def test_a_resumed_run_is_kept_but_its_partial_time_is_no_rate(tmp_path, ner_root):
    """A run resumed from its checkpoint (a machine taken back mid-run) timed only its last part: its timing record
    names the checkpoint, and that time is neither a rate nor a ledger timing; the run is priced as untimed."""
    cfg = tiny_curve(tmp_path, ner_root, seeds=(1,), min_steps=2, n_boot=50, keep_checkpoints=True)
    cfg.bio_model = str(write_tiny_bert(tmp_path / "bio", tmp_path / "vocab.txt", layers=1))
    lc.run(cfg)
    plan = json.loads((tmp_path / "work" / "plan.json").read_text())
    run = lce.run_order(plan)[0]
    # as if stopped after its last checkpoint, before its results and its time were written
    (Path(run["run_dir"]) / "results.json").unlink()
    path = tmp_path / "work" / "timings.jsonl"
    kept = [x for x in path.read_text().splitlines() if json.loads(x)["run_dir"] != run["run_dir"]]
    path.write_text("".join(x + "\n" for x in kept))
    again = lc.run(cfg)
    timings = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(timings) == 4 and timings[-1]["run_dir"] == run["run_dir"]
    assert timings[-1]["resumed_from"].startswith("step_") and all("resumed_from" not in t for t in timings[:3])
    assert again["runs_finished"] == 4 and again["measured"]["ner"]["runs"] == 3  # the other three's times
    assert again["cost"]["runs_finished_untimed"] == 1 and again["cost"]["cpu_h_finished_untimed_estimate"] > 0
    entries = lcl.read(tmp_path / "report" / "results" / lcl.LEDGER_NAME)
    mine = [e for e in entries.values() if (e["key"]["fraction"], e["model"]) == (run["fraction"], run["model"])]
    assert len(entries) == 4 and len(mine) == 1 and "timing" not in mine[0]
    assert sum("timing" in e for e in entries.values()) == 3


def test_counts_packed_and_older_rows_read(tmp_path):
    """The ledger packs per-sentence counts; an entry in the older JSON-rows form reads the same and is packed
    when written again."""
    import numpy as np

    counts = np.array([[1, 2, 1], [0, 0, 0], [0, 0, 3], [12, 12, 13]], dtype=np.int64)
    rows = {"n": 4, "rows": [[0, 1, 2, 1], [2, 0, 0, 3], [3, 12, 12, 13]]}
    assert np.array_equal(lcl.dense(rows), counts) and np.array_equal(lcl.dense(lcl._pack(counts)), counts)
    key = {f: 1 for f in lcl.KEY_FIELDS}
    path = tmp_path / lcl.LEDGER_NAME
    lcl.write(path, {"a": {"key": key, "counts": rows}})
    (entry,) = lcl.read(path).values()
    assert "rows" not in entry["counts"] and np.array_equal(lcl.dense(entry["counts"]), counts)
