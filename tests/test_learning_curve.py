"""bench/learning_curve.py: seeded nested subsets shared by both models, epochs scaling, the paired
statistics against hand-computed values, verdicts, the one-GPU dry run, and a tiny end to end."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from biobert.errors import UserError
from conftest import REPO, SHARED_DATA, write_tiny_bert, write_vocab

sys.path.insert(0, str(REPO / "bench"))

import learning_curve as lc  # noqa: E402
import learning_curve_gpu as lcg  # noqa: E402
import learning_curve_plan as lcp  # noqa: E402
import learning_curve_report as lcr  # noqa: E402
import learning_curve_stats as st  # noqa: E402
import learning_curve_subsets as lcs  # noqa: E402
import learning_curve_text as lct  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"


def test_subsets_are_seeded_nested_and_sized():
    a = lcs.sample_indices(1000, 0.05, "ncbi_disease", 3)
    assert a == lcs.sample_indices(1000, 0.05, "ncbi_disease", 3)  # the same for Base and Bio, every time
    assert a != lcs.sample_indices(1000, 0.05, "ncbi_disease", 4)
    assert a != lcs.sample_indices(1000, 0.05, "s800", 3)
    sizes = {f: lcs.sample_indices(1000, f, "ncbi_disease", 3) for f in (0.01, 0.05, 0.2, 1.0)}
    assert [len(v) for v in sizes.values()] == [10, 50, 200, 1000]
    assert set(sizes[0.01]) <= set(sizes[0.05]) <= set(sizes[0.2])
    assert sizes[0.2] == sorted(sizes[0.2]) and len(lcs.sample_indices(10, 0.01, "x", 1)) == 1


def test_subset_files_keep_the_tasks_format(tmp_path, ner_root):
    from finetune.tasks.registry import get_task

    idx = lcs.sample_indices(40, 0.25, "ncbi_disease", 1)
    rec = lcs.write_subset("ncbi_disease", ner_root / "ner", tmp_path / "ner_sub", idx)
    task = get_task("ncbi_disease")
    files = task.splits(tmp_path / "ner_sub")
    full = task.read(ner_root / "ner" / "NCBI-disease" / "train.tsv")
    assert [s.words for s in task.read(files["train"])] == [full[i].words for i in idx]
    assert rec["train_examples"] == 10 and rec["of"] == 40 and files["test"].resolve().parent.name == "NCBI-disease"
    for name, n in (("gad_1", 40), ("chemprot", 60)):  # RE: rows, the header kept, the fold layout kept
        t = get_task(name)
        _, blocks, _, _ = lcs.train_blocks(name, FIXTURES / "re")
        assert len(blocks) == n
        idx = lcs.sample_indices(n, 0.2, name, 2)
        lcs.write_subset(name, FIXTURES / "re", tmp_path / name, idx)
        got = t.read(t.splits(tmp_path / name)["train"])
        full = t.read(t.splits(FIXTURES / "re")["train"])
        assert [(e.sentence, e.label) for e in got] == [(full[i].sentence, full[i].label) for i in idx]


def test_epochs_scale_to_a_minimum_of_steps():
    assert lc.steps_and_epochs(54, 32, 2.0, 100) == (50.0, 2, 100)
    assert lc.steps_and_epochs(5424, 32, 2.0, 100) == (2.0, 170, 340)
    assert lc.steps_and_epochs(1085, 32, 2.0, 100) == (3.0, 34, 102)


def test_paired_t_interval_against_hand_computed():
    assert st.t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-5)
    assert st.t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-3)
    # differences 1..5: mean 3, sd sqrt(2.5), half-width 2.776445 * 1.581139 / sqrt(5) = 1.963243
    ci = st.paired({s: 10.0 for s in range(1, 6)}, {s: 10.0 + s for s in range(1, 6)})
    assert ci["mean"] == pytest.approx(3.0) and ci["sd"] == pytest.approx(2.5**0.5)
    assert (ci["lo"], ci["hi"]) == (pytest.approx(1.036757, abs=1e-5), pytest.approx(4.963243, abs=1e-5))
    # pooled: seed means of the per-fraction differences (seed 1: (1+3)/2 = 2, seed 2: (2+6)/2 = 4)
    pool = st.pooled({0.1: ({1: 0, 2: 0}, {1: 1, 2: 2}), 1.0: ({1: 0, 2: 0}, {1: 3, 2: 6})})
    assert pool["mean"] == pytest.approx(3.0) and pool["n"] == 2
    assert pool["hi"] - pool["mean"] == pytest.approx(12.7062 * 2**0.5 / 2**0.5, abs=1e-3)
    # an unfinished curve: 1% has 3 seeds, 5% only seed 1; pooled over 1% alone (every seed averages the same
    # fractions), not seed 1's mean of two fractions beside the others' one
    part = st.pooled({0.01: ({1: 0, 2: 0, 3: 0}, {1: 1, 2: 2, 3: 3}), 0.05: ({1: 0}, {1: 100})})
    assert part["fractions"] == [0.01] and part["seeds"] == [1, 2, 3] and part["mean"] == pytest.approx(2.0)


def test_verdicts():
    assert st.verdict({"lo": 0.1, "hi": 2.0}) == "shown"
    assert st.verdict({"lo": -2.0, "hi": -0.1}) == "reversed"
    assert st.verdict({"lo": -0.1, "hi": 2.0}) == "not shown"
    assert st.verdict({"lo": None, "hi": None}) == st.PENDING == "pending"  # one seed: no interval, no verdict yet


def test_paired_bootstrap_over_sentences():
    base = np.array([[1, 1, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]])  # (correct, predicted, gold) per sentence
    bio = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]])
    assert st.f1_from_counts(base.sum(0)) == pytest.approx(200 * 2 / 7)
    out = st.paired_bootstrap([base], [bio], n_boot=500)
    assert out["mean"] == pytest.approx(100 - 200 * 2 / 7) and out["lo"] <= out["mean"] <= out["hi"]
    same = st.paired_bootstrap([base, base], [base, base], n_boot=50)
    assert same["lo"] == same["hi"] == same["mean"] == 0


def test_ner_counts_add_up_to_conlleval(tmp_path):
    from finetune.conlleval import conlleval

    gold = [["B", "I", "O"], ["O", "B"], ["B", "O", "B"]]
    pred = [["B", "I", "O"], ["B", "O"], ["O", "O", "B"]]
    text = "".join("".join(f"w\t{g}\t{p}\n" for g, p in zip(gs, ps)) + "\n" for gs, ps in zip(gold, pred))
    (tmp_path / "p.txt").write_text(text)
    counts = st.ner_counts(tmp_path / "p.txt")
    whole = conlleval(gold, pred)
    assert counts.shape == (3, 3)
    assert tuple(counts.sum(0)) == (whole["correct_chunks"], whole["pred_chunks"], whole["true_chunks"])
    assert st.f1_from_counts(counts.sum(0)) == pytest.approx(100 * whole["f1"])


@pytest.mark.skipif(not (SHARED_DATA / "ner").is_dir(), reason="the shared task data is not here")
@pytest.mark.skipif(not (SHARED_DATA / "vocab").is_dir(), reason="needs the real datasets (BIOBERT_SHARED_DATA)")
def test_gpu_dry_run_on_cpu(tmp_path, capsys):
    try:  # the default Base (all-MiniLM-L6-v2) is a bench requirement, not the suite's
        minilm = lc.default_base_model()
    except UserError:
        minilm = ""
    # without it a tiny BERT on MiniLM's vocabulary (the real one in the shared data) stands in: the same token
    # counts, but the estimate is then a tiny model's
    base = minilm or str(write_tiny_bert(tmp_path / "base", SHARED_DATA / "vocab" / "bert-base-uncased-vocab.txt"))
    cfg = lc.CurveConfig(
        base_model=base, data_root=str(SHARED_DATA), work_dir=str(tmp_path), device="cuda", dry_run=True
    )
    plan = lc.run(cfg)
    g = plan["gpu"]
    assert len(plan["runs"]) == 200 and g["curve_runs"] == 200
    assert g["pretrain_tokens"] >= 100 * 2_002_944 and g["x_cpu_budget"] >= 100
    assert g["fits"] and g["est_total_s"] <= 600 and g["workers"] >= 1
    out = capsys.readouterr().out
    assert "CPU-hours on this machine" in out and "One-GPU plan" in out
    # the estimate is compared with the budget, and a plan over it says so
    assert (plan["estimate"]["cpu_h"] > 1.25 * cfg.budget_cpu_h) == ("over its budget" in out)
    assert plan["estimate"]["cpu_h"] > 0 and plan["estimate"]["wall_s"] > 0
    assert not (tmp_path / "plan.json").exists()  # a dry run writes nothing
    slow = lcg.gpu_plan(plan, None, speeds={**lcg.ASSUMED, "finetune_steps_per_s": 1.0})
    assert not slow["fits"] and slow["pretrain_tokens"] >= 100 * lcg.CPU_PRETRAIN_TOKENS


def tiny_curve(tmp_path, ner_root, **kw) -> lc.CurveConfig:
    """A curve of tiny BERTs on the NER fixture: NCBI at 25% and 100%, a few steps a run."""
    return lc.CurveConfig(
        base_model=str(write_tiny_bert(tmp_path / "base", write_vocab(tmp_path / "vocab.txt"))),
        data_root=str(ner_root),
        work_dir=str(tmp_path / "work"),
        report_dir=str(tmp_path / "report"),
        datasets=("ncbi_disease",),
        ner_fractions=(0.25, 1.0),
        epochs=1.0,
        ft_args=("--max_seq_length", "24", "--doc_stride", "4", "--ds", "train_batch_size=8"),
        **kw,
    )


def test_tiny_end_to_end(tmp_path, ner_root):
    cfg = tiny_curve(tmp_path, ner_root, seeds=(1, 2), min_steps=3, n_boot=100)
    cfg.bio_model = str(write_tiny_bert(tmp_path / "bio", tmp_path / "vocab.txt", layers=1))
    cfg.ft_args += ("--ds", "optimizer.params.lr=1e-3")
    before = lcp.estimate_cpu(lc.build_plan(cfg), cfg.work_dir)  # where the CPU would go, point by point
    assert set(before["cpu_h_by_point"]) == {"ncbi_disease 0.25", "ncbi_disease 1"}
    assert sum(before["cpu_h_by_point"].values()) == pytest.approx(before["cpu_h"])
    assert before["cpu_h_by_point"]["ncbi_disease 1"] > before["cpu_h_by_point"]["ncbi_disease 0.25"]
    data = lc.run(cfg)
    runs = json.loads((tmp_path / "work" / "plan.json").read_text())["runs"]
    assert len(runs) == 8 and data["runs_finished"] == 8
    # the plan's cost at the measured rates: every run finished, nothing left to estimate
    assert data["cost"]["runs_left"] == 0 and data["cost"]["cpu_h_remaining_estimate"] == 0
    assert data["cost"]["cpu_h_left_by_point"] == {}
    assert data["cost"]["cpu_h_plan_estimate"] == data["cost"]["cpu_h_finished_runs"] > 0
    assert data["measured"]["ner"]["runs"] == 8
    small = [r for r in runs if r["fraction"] == 0.25]
    assert {r["n_train"] for r in small} == {10} and {r["steps"] for r in small} == {4}
    for seed in (1, 2):  # both models read the same subset folder
        assert len({r["data_dir"] for r in small if r["seed"] == seed}) == 1
    res = data["results"]["ncbi_disease"]
    assert set(res["fractions"]) == {"0.25", "1"} and "bio" in res["fractions"]["1"]["bootstrap"]
    assert res["verdict"]["bio"] in st.VERDICTS and res["pooled"]["bio"]["n"] == 2
    for r in runs:  # the fine-tuned weights are not kept
        assert (Path(r["run_dir"]) / "results.json").is_file() and not (Path(r["run_dir"]) / "checkpoints").exists()
    md = (tmp_path / "report" / "learning_curve.md").read_text()
    assert "NCBI disease: effect" in md and "learning_curve.png" in md
    assert (tmp_path / "report" / "learning_curve.png").stat().st_size > 1000
    assert (tmp_path / "report" / "results" / "learning_curve.json").is_file()
    again = lc.run(cfg)  # every run finished: nothing is trained again
    assert again["results"] == data["results"]
    # a timed run the plan no longer has (set aside when its steps changed): its CPU is kept apart from the plan's
    plan = json.loads((tmp_path / "work" / "plan.json").read_text())
    # in the folder of a run of the plan, under other steps (so other units): ChemProt's 104-step runs
    set_aside = {"run_dir": runs[0]["run_dir"], "kind": "ner", "units": 1000.0, "wall_s": 9.0, "cpu_s": 7200.0}
    with open(tmp_path / "work" / "timings.jsonl", "a") as f:
        f.write(json.dumps(set_aside) + "\n")
    ours = lcp.measured(tmp_path / "work", plan)["ner"]  # the rate per unit still learns from every timed run
    assert {k: ours[k] for k in ("runs", "cpu_s", "wall_s")} == {
        k: data["measured"]["ner"][k] for k in ("runs", "cpu_s", "wall_s")
    }
    assert lcp.measured(tmp_path / "work")["ner"]["runs"] == 9
    cost = lcr.cost(plan, data["measured"])
    assert (cost["runs_outside_plan"], cost["cpu_h_outside_plan"]) == (1, 2.0)
    assert cost["cpu_h_finished_runs"] == data["cost"]["cpu_h_finished_runs"]


def test_budgets_compare_consecutive_pre_training_budgets_of_one_corpus():
    """Bio 10.0M − Bio 2.0M, paired over seeds and pooled over fractions as Bio − Base is; a Bio of another
    corpus (bio_2.0M_pubmed_only) is not a budget of this one."""

    plan = {"models": {"base": "b", "bio_10.0M": "x", "bio_2.0M": "y", "bio_2.0M_pubmed_only": "z"}}
    assert lct.budget_pairs(plan) == [("bio_2.0M", "bio_10.0M")]
    small = {1: 40.0, 2: 42.0, 3: 41.0}
    fractions = {
        "0.01": {"scores": {"bio_2.0M": small, "bio_10.0M": {1: 43.0, 2: 44.0, 3: 45.0}}},
        "0.05": {"scores": {"bio_2.0M": small, "bio_10.0M": {1: 42.0, 2: 45.0}}},  # seed 3 not finished
    }
    got = lcr._budgets(plan, fractions)["bio_10.0M-bio_2.0M"]
    assert got["pair"] == ["bio_2.0M", "bio_10.0M"]
    assert got["fractions"]["0.01"]["mean"] == pytest.approx(3.0) and got["fractions"]["0.05"]["n"] == 2
    # pooled over the fractions every seed finished: only 1 % has all three seeds
    assert got["pooled"]["fractions"] == [0.01] and got["pooled"]["n"] == 3
    expected = st.t_interval([3.0, 2.0, 4.0])
    assert got["pooled"]["lo"] == pytest.approx(expected["lo"]) and got["verdict"] == "shown"
    results = {"ncbi_disease": {"name": "NCBI disease", "budgets": {"bio_10.0M-bio_2.0M": got}}}
    text = lct._budget_summary(("bio_2.0M", "bio_10.0M"), results)
    assert text.startswith("**More pre-training, Bio 10.0M − Bio 2.0M** (the same corpus, 5x the tokens)")
    assert "shown on 1 of 1 datasets** (NCBI disease +3.00" in text


def test_constant_classifier_points_have_no_verdict_and_are_left_out_of_the_pool():
    """A point where every paired run of both models predicted one class says nothing about the encoders: no
    verdict there, left out of the dataset's pooled difference (its 0 would pull it toward no effect), and the
    dataset has no verdict when only such points have runs. The summary names it apart from the verdicts."""

    base, bio = {1: 50.0, 2: 51.0, 3: 52.0}, {1: 53.0, 2: 54.0, 3: 56.0}
    zero = {1: 0.0, 2: 0.0, 3: 0.0}
    constant = {"base": dict.fromkeys(zero, "class False for every example"), "bio": dict.fromkeys(zero, "x")}
    pair = st.paired(zero, zero)
    assert lcr._point_verdict(pair, constant, "base", "bio") == st.CONSTANT
    assert lcr._point_verdict(pair, {"base": constant["base"]}, "base", "bio") == "not shown"  # Bio varied
    pooled, verdict = lcr._pool({0.05: (zero, zero, True), 0.2: (base, bio, False)})
    assert pooled["fractions"] == [0.2] and pooled["mean"] == pytest.approx(10 / 3) and verdict == "shown"
    pooled, verdict = lcr._pool({0.05: (zero, zero, True), 0.2: ({}, {}, False)})
    assert not pooled["seeds"] and verdict == st.CONSTANT
    said = {v: [] for v in lct.GROUPS}
    said["shown"].append("NCBI disease +3.33 [+0.46, +6.20] at 20% over 3 seeds")
    said[st.CONSTANT].append("CHEMPROT")
    said[st.PENDING].append("GAD (fold 1) +1.00 (one seed: no interval) at 5% over 1 seed")
    text = lct._verdicts(said)
    assert text.startswith("**shown on 1 of 1 datasets** (NCBI disease")  # ChemProt and GAD are not counted
    assert "No verdict on CHEMPROT: every paired run of both models predicted one class." in text
    assert "One seed so far, no interval: GAD (fold 1)" in text


def test_relation_classes_never_predicted_at_a_point_are_named_and_means_are_over_the_paired_seeds(tmp_path):
    """A multi-class RE point whose runs together predicted only some classes gets a note naming them (its
    micro-F1 is that of the classes learnt); the table's F1 columns average the seeds the difference is over."""

    def run(name, predicted):
        run_dir = tmp_path / name
        run_dir.mkdir()
        per_class = {c: {"predicted": n, "f1": 0.0} for c, n in zip(("CPR:3", "CPR:4", "CPR:9"), predicted)}
        (run_dir / "results.json").write_text(json.dumps({"scores": {"test": {"f1": 20.0, "per_class": per_class}}}))
        return {"run_dir": str(run_dir), "kind": "re"}

    runs = [run("a", (0, 40, 0)), run("b", (0, 12, 3))]
    assert lcr.predicted_classes(runs[0]) == (["CPR:4"], ["CPR:3", "CPR:4", "CPR:9"])
    note = lcr._classes_note("ChemProt", "0.05", runs)
    assert note.startswith("- **ChemProt at 5%: the 2 runs predicted 2 of the 3 relation classes** (CPR:4, CPR:9;")
    assert "never CPR:3)" in note
    assert lcr._classes_note("ChemProt", "0.05", [*runs, run("c", (1, 0, 0))]) is None  # every class somewhere
    binary = tmp_path / "gad"
    binary.mkdir()
    (binary / "results.json").write_text(json.dumps({"scores": {"test": {"f1": 70.0}}}))
    assert lcr._classes_note("GAD", "0.05", [{"run_dir": str(binary), "kind": "re"}]) is None
    # Base has a 4th seed its partner has not finished: not in the mean the difference is over
    assert lct._mean({1: 29.0, 2: 28.0, 3: 30.0, 4: 10.0}, [1, 2, 3]) == "29.00"
    assert lct._mean({"1": 29.0}, [1]) == "29.00" and lct._mean({4: 10.0}, []) == "–"  # keys read from JSON


def test_min_steps_bench_runs_the_curves_subset_and_names_constant_classifiers(tmp_path, ner_root):
    """bench/min_steps.py: the curve's subset at a fraction, one run per minimum step count, steps as the curve
    plans them, a seeded test sample, F1 and the constant-classifier check in its record."""
    import min_steps

    model = write_tiny_bert(tmp_path / "base", write_vocab(tmp_path / "vocab.txt"), layers=1)
    out = tmp_path / "min_steps.json"
    data = min_steps.main(
        ["--task", "ncbi_disease", "--fractions", "0.5", "--min_steps", "2,12", "--test_sample", "5"]
        + ["--model", str(model), "--data_root", str(ner_root), "--out", str(out)]
        + ["--ft_args", "--max_seq_length 24 --doc_stride 4 --ds train_batch_size=8"]
    )
    assert json.loads(out.read_text()) == data and data["test_sample"] == 5
    first, second = data["runs"]
    # 20 sentences, batch 8: 3 steps an epoch; at least 2 epochs (the curve's --epochs), else the minimum
    assert (first["n_train"], first["steps"], first["epochs"]) == (20, 6, 2.0)
    assert (second["min_steps"], second["steps"], second["epochs"]) == (12, 12, 4.0)
    for r in data["runs"]:
        assert 0 <= r["f1"] <= 100 and r["constant"] in (None, "no entity predicted")
        assert r["cpu_s"] > 0 and r["wall_s"] > 0
