"""finetune/annotate.py: the test set's text gives run_task.py's test F1; several NER models over one
tokenisation with their types; RE pairs anonymised as in training; Parquet loadable; exact resume after
kill -9; --part and the manifest; the benchmark's dry run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_predict import ner_run  # noqa: F401  (the module-scoped fixture: a tiny model fine-tuned on NER)

from biobert.errors import UserError
from conftest import REPO, subprocess_env, write_pubmed_xml
from finetune import packed_linear
from finetune.annotate import main as annotate_main
from finetune.annotate_core import Doc, candidate_pairs
from finetune.annotate_models import LoadedModel, re_roles
from finetune.conlleval import conlleval

annotate = annotate_main.__wrapped__


def _copy_model(src: Path, dst: Path, task: str, id2label: dict[int, str] | None = None) -> Path:
    """The same weights under another task (untyped labels take its corpus' type) or with other labels."""
    shutil.copytree(src, dst)
    prov = json.loads((dst / "biobert_run.json").read_text())
    prov["run_config"]["run"]["task"] = task
    (dst / "biobert_run.json").write_text(json.dumps(prov))
    if id2label:
        config = json.loads((dst / "config.json").read_text())
        config["id2label"] = {str(k): v for k, v in id2label.items()}
        config["label2id"] = {v: k for k, v in id2label.items()}
        (dst / "config.json").write_text(json.dumps(config))
    return dst


def _re_model(tiny_assets, dst: Path) -> Path:
    """An (untrained) ChemProt classifier on the tiny BERT: enough to test pairs, markers and the schema."""
    from transformers import BertForSequenceClassification

    from biobert.tokenizer import load_tokenizer
    from finetune.tasks.re_task import CHEMPROT_LABELS

    labels = dict(enumerate(CHEMPROT_LABELS))
    model = BertForSequenceClassification.from_pretrained(
        str(tiny_assets["model"]), num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    model.save_pretrained(str(dst))
    load_tokenizer(tiny_assets["model"]).save(dst)
    provenance = {"run_config": {"run": {"task": "chemprot", "max_seq_length": 48}}}
    (dst / "biobert_run.json").write_text(json.dumps(provenance))
    return dst


def _sentences(path: Path) -> list[tuple[list[str], list[str]]]:
    blocks = [b for b in path.read_text().split("\n\n") if b.strip()]
    return [tuple(map(list, zip(*(x.split("\t") for x in b.splitlines())))) for b in blocks]


def test_annotating_the_test_text_gives_run_task_test_f1(ner_run, tmp_path):  # noqa: F811
    """Each test sentence's words joined by spaces, one document per sentence (the sentence-per-line format:
    no re-splitting), annotated; entity spans mapped back to word-level BIO and scored by conlleval.

    The fixture's words are single BERT pre-tokens (checked), so each word is labelled exactly as evaluation
    labels it. A word that BERT's pre-tokenizer splits (`IL-2`, `Ca2+`) would be labelled per pre-token here
    but once per word in evaluation; such a word then counts as tagged if its first pre-token is."""
    from biobert.tokenizer import load_tokenizer

    sentences = _sentences(ner_run["test"])
    pre = load_tokenizer(ner_run["hf"]).backend.pre_tokenizer
    assert all(len(pre.pre_tokenize_str(w)) == 1 for words, _ in sentences for w in words)
    src = tmp_path / "test_text.txt"
    src.write_text("".join(" ".join(words) + "\n\n" for words, _ in sentences))
    out = tmp_path / "ann"
    manifest = annotate(["--input", str(src), "--ner", str(ner_run["hf"]), "--out", str(out), "--batch_size", "3"])
    table = pq.read_table(out / "test_text.parquet").to_pylist()
    assert len(table) == len(sentences) == manifest["counts"]["documents"]
    predicted = []
    for row, (words, _) in zip(table, sentences):
        assert row["text"] == " ".join(words)
        starts = [sum(len(w) + 1 for w in words[:i]) for i in range(len(words))]
        labels = ["O"] * len(words)
        for e in row["entities"]:
            assert row["text"][e["start"] : e["end"]] == e["text"] and e["type"] == "Disease"
            first = max(i for i, s in enumerate(starts) if s <= e["start"])
            last = max(i for i, s in enumerate(starts) if s < e["end"])
            labels[first : last + 1] = ["B"] + ["I"] * (last - first)
        predicted.append(labels)
    ours = 100 * conlleval([gold for _, gold in sentences], predicted)["f1"]
    theirs = json.loads((ner_run["run"] / "results.json").read_text())["scores"]["test"]["f1"]
    assert ours == pytest.approx(theirs, abs=0.01) and theirs > 0
    assert manifest["counts"]["split_sentences"] > 0  # the long sentences went through several windows


def test_models_types_relations_and_parquet(ner_run, tiny_assets, tmp_path, capsys):  # noqa: F811
    hf = ner_run["hf"]
    untyped = {0: "O", 1: "B", 2: "I"}  # as exports were before typed labels: BC5CDR-chem's type is Chemical
    chem = _copy_model(hf, tmp_path / "chem", "bc5cdr_chem", untyped)
    gene = _copy_model(hf, tmp_path / "gene", "bc2gm", {0: "B-Gene", 1: "O", 2: "I-Gene"})  # typed, other spans
    re_dir = _re_model(tiny_assets, tmp_path / "chemprot")
    xml = write_pubmed_xml(tmp_path / "pubmed26n0009.xml", 12, seed=5, first_pmid=300)
    out = tmp_path / "ann"
    manifest = annotate(
        ["--input", str(xml), "--ner", str(hf), str(chem), str(gene), "--re", str(re_dir), "--out", str(out)]
    )
    table = pq.read_table(out / "pubmed26n0009.parquet")
    assert table.column_names == ["id", "text", "entities", "relations"]
    assert table.column("id").to_pylist() == [f"pmid:{300 + i}" for i in range(12)]
    try:  # pandas is the bench requirements' (not the suite's): where it is installed, it reads the file as is
        import pandas as pd
    except ImportError:
        pd = None
    if pd is not None:
        assert list(pd.read_parquet(out / "pubmed26n0009.parquet")["id"]) == table.column("id").to_pylist()
    rows = table.to_pylist()
    types = Counter((e["type"], e["model"]) for r in rows for e in r["entities"])
    assert {t for t, _ in types} == {"Disease", "Chemical", "Gene"}
    assert types[("Disease", "ncbi_disease")] == types[("Chemical", "bc5cdr_chem")] > 0  # same weights, both kept
    for r in rows:
        for e in r["entities"]:
            assert r["text"][e["start"] : e["end"]] == e["text"]
        for x in r["relations"]:
            head, tail = r["entities"][x["head"]], r["entities"][x["tail"]]
            assert head["type"] == "Chemical" and tail["type"] == "Gene"
            assert head["end"] <= tail["start"] or tail["end"] <= head["start"]
            assert [p["label"] for p in x["probabilities"]][:2] == ["False", "CPR:3"]
    c = manifest["counts"]
    assert c["relations"] == c["candidate_pairs"] == sum(len(r["relations"]) for r in rows) > 0
    names = [m["name"] for m in manifest["models"]["ner"]]
    assert manifest["complete"] and names == ["ncbi_disease", "bc5cdr_chem", "bc2gm"]
    assert manifest["models"]["ner"][0]["provenance"]["run_config"]["run"]["task"] == "ncbi_disease"
    assert manifest["models"]["re"]["needs"] == ["chemical", "gene"] and not manifest["warnings"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    # an RE model without the NER types it pairs: said once, counted, no relations
    capsys.readouterr()
    again = annotate(["--input", str(xml), "--ner", str(hf), "--re", str(re_dir), "--out", str(tmp_path / "b")])
    assert capsys.readouterr().err.count("no --ner model provides chemical, gene") == 1
    assert again["warnings"] and again["counts"]["documents_without_re_entity_types"] == 12
    assert again["counts"]["relations"] == 0


def test_candidate_pairs_are_anonymised_as_in_training():
    text = "Aspirin inhibits COX-1 and COX-2 in cells."
    doc = Doc("d", text, [(0, len(text))])
    ents = [
        {"start": 0, "end": 7, "type": "Chemical", "_sentence": 0},
        {"start": 0, "end": 7, "type": "Chemical", "_sentence": 0},  # a second model: the same mention
        {"start": 17, "end": 22, "type": "Gene", "_sentence": 0},
        {"start": 27, "end": 32, "type": "protein", "_sentence": 0},
        {"start": 36, "end": 41, "type": "Disease", "_sentence": 0},
    ]
    chemprot = LoadedModel("c", "", "re", None, None, [], {}, "chemprot", "", roles=re_roles("chemprot"))
    assert candidate_pairs(doc, ents, chemprot) == [
        (0, 2, "BC6ENTC inhibits BC6ENTG and BC6OTHER in cells."),
        (0, 3, "BC6ENTC inhibits BC6OTHER and BC6ENTG in cells."),
    ]
    gad = LoadedModel("g", "", "re", None, None, [], {}, "gad_1", "", roles=re_roles("gad_1"))
    assert candidate_pairs(doc, ents, gad) == [
        (2, 4, "Aspirin inhibits @GENE$ and COX-2 in @DISEASE$."),
        (3, 4, "Aspirin inhibits COX-1 and @GENE$ in @DISEASE$."),
    ]


def test_different_vocabularies_are_refused(ner_run, tmp_path):  # noqa: F811
    other = _copy_model(ner_run["hf"], tmp_path / "other", "bc2gm")
    with open(other / "vocab.txt", "a") as fh:
        fh.write("extraword\n")
    src = tmp_path / "t.jsonl"
    src.write_text('{"id": "a", "text": "The cancer."}\n')
    with pytest.raises(UserError, match="another vocabulary"):
        annotate(["--input", str(src), "--ner", str(ner_run["hf"]), str(other), "--out", str(tmp_path / "o")])


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.parquet"))}


def test_kill_resume_and_parts_give_the_same_bytes(ner_run, tiny_assets, tmp_path):  # noqa: F811
    """kill -9 inside the second unit (a partial temp file on disk), rerun: the first unit is kept, the second
    redone, every byte as in an uninterrupted run; two --part runs make the same files and manifest."""
    args = ["--input", str(tiny_assets["pubmed"]), "--ner", str(ner_run["hf"]), "--chunk_docs", "50"]
    ref = annotate([*args, "--out", str(tmp_path / "ref")])
    assert ref["counts"]["documents"] == 240 and len(ref["units"]) == 2
    out = tmp_path / "killed"
    env = subprocess_env(BIOBERT_FAULT_DATA_PREP="hang:pubmed26n0002")
    cmd = [sys.executable, "-m", "finetune.annotate", *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "pubmed26n0002.parquet.tmp").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "done" / "pubmed26n0001.json").exists() and not (out / "done" / "pubmed26n0002.json").exists()
    first = (out / "done" / "pubmed26n0001.json").stat().st_mtime_ns
    resumed = annotate([*args, "--out", str(out)])
    assert (out / "done" / "pubmed26n0001.json").stat().st_mtime_ns == first  # kept, not redone
    assert _files(out) == _files(tmp_path / "ref") and not list(out.glob("*.tmp"))
    assert [u["output"] for u in resumed["units"]] == [u["output"] for u in ref["units"]]
    parts = tmp_path / "parts"
    p0 = annotate([*args, "--out", str(parts), "--part", "0/2"])
    assert "complete" not in p0 and not (parts / "manifest.json").exists()
    annotate([*args, "--out", str(parts), "--part", "1/2"])
    merged = json.loads((parts / "manifest.json").read_text())
    assert _files(parts) == _files(tmp_path / "ref")
    assert merged["counts"] == ref["counts"] and merged["units"][0]["output"] == ref["units"][0]["output"]
    assert sorted(p.name for p in parts.glob("manifest.part-*")) == [f"manifest.part-{i}-of-2.json" for i in (0, 1)]


def test_benchmark_dry_run(ner_run, tiny_assets, tmp_path):  # noqa: F811
    result = tmp_path / "speed.json"
    proc = subprocess.run(
        [
            sys.executable,
            "bench/annotate_speed.py",
            "--dry_run",
            "--model",
            str(ner_run["hf"]),
            "--input",
            str(tiny_assets["pubmed"] / "pubmed26n0001.xml.gz"),
            "--out",
            str(result),
            "--sides",
            "ours,peer,peer_first",  # the compiled sides would add two compilations (minutes on 2 cores)
        ],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(result.read_text())
    for side in ("ours", "peer"):
        assert data[side]["sentences_per_s"] > 0 and data[side]["peak_rss_mb"] > 0
    assert data["ratio_to_peer"]["ours"] > 0 and "projection" in data
    # the peer grouping word pieces by their first piece finds what ours finds (the fixture's words are whole)
    first = data["entities"]["ours_vs_peer_first"]
    assert first["same"] > 0 and first["only_ours"] == first["only_peer"] == 0, first


def test_max_docs_annotates_the_first_documents_of_each_unit(ner_run, tiny_assets, tmp_path):  # noqa: F811
    out = tmp_path / "ann"
    args = ["--input", str(tiny_assets["pubmed"]), "--ner", str(ner_run["hf"]), "--out", str(out)]
    manifest = annotate([*args, "--max_docs", "5"])
    assert manifest["counts"]["documents"] == 10 and manifest["settings"]["max_docs"] == 5  # two units x 5
    for f in sorted(out.glob("*.parquet")):
        assert pq.read_table(f).num_rows == 5
    with pytest.raises(UserError):  # a whole-corpus run over the partial one's folder is another run
        annotate(args)
    with pytest.raises(UserError, match="--max_docs 0"):
        annotate([*args, "--max_docs", "0", "--overwrite"])


def test_dtype_and_compile_are_recorded_and_compile_keeps_the_entities(ner_run, tiny_assets, tmp_path):  # noqa: F811
    """--compile (inductor, frozen weights) and --linear torch (aten's kernels) find the same entities as the
    default (oneDNN packed linear layers); --dtype bfloat16 runs on CPU autocast; each is part of the run's
    identity, so a resume never mixes them."""
    unit = tmp_path / "in"
    unit.mkdir()
    shutil.copy(next(Path(tiny_assets["pubmed"]).glob("*.xml.gz")), unit)
    args = ["--input", str(unit), "--ner", str(ner_run["hf"]), "--max_docs", "30"]
    eager = annotate([*args, "--out", str(tmp_path / "eager")])
    assert eager["settings"]["dtype"] == "float32" and eager["settings"]["batch_size"] == 16  # CPU defaults
    assert eager["settings"]["linear"] == ("onednn" if packed_linear.available() else "torch")
    aten = annotate([*args, "--out", str(tmp_path / "aten"), "--linear", "torch"])
    assert aten["settings"]["linear"] == "torch" and aten["identity"] != eager["identity"]
    compiled = annotate([*args, "--out", str(tmp_path / "compiled"), "--compile"])
    assert compiled["settings"]["linear"] == "torch"  # inductor packs the weights itself
    rows = {k: pq.read_table(next((tmp_path / k).glob("*.parquet"))).to_pylist() for k in ("eager", "aten", "compiled")}
    spans = {k: [[(e["start"], e["end"], e["type"]) for e in r["entities"]] for r in v] for k, v in rows.items()}
    assert spans["eager"] == spans["aten"] == spans["compiled"] and eager["counts"]["entities"] > 0
    assert compiled["counts"]["entities"] == eager["counts"]["entities"] == aten["counts"]["entities"]
    scores = {k: [e["score"] for r in v for e in r["entities"]] for k, v in rows.items()}
    assert scores["eager"] == pytest.approx(scores["aten"], abs=1e-4)  # oneDNN: the last bits differ at most
    with pytest.raises(UserError):  # aten's kernels over oneDNN's finished run: another run
        annotate([*args, "--out", str(tmp_path / "eager"), "--linear", "torch"])
    bf16 = annotate([*args, "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16"])
    assert bf16["settings"]["dtype"] == "bfloat16" and bf16["counts"]["documents"] == 30
    with pytest.raises(UserError):  # another dtype over a finished run's folder is another run
        annotate([*args, "--out", str(tmp_path / "eager"), "--dtype", "bfloat16"])
