"""Units of work for folders of single-article files (PMC .nxml): consecutive files are grouped so that NSP
has other documents to draw random-next segments from; grouping keeps determinism, resume and --part."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import make_sentence, write_vocab
from data_prep import units
from data_prep.cli import main
from data_prep.readers import expand_inputs
from data_prep.shards import open_shards


def _article(pmc: int, rng: random.Random) -> str:
    para = lambda: " ".join(make_sentence(rng) for _ in range(rng.randint(3, 6)))  # noqa: E731
    body = "".join(f"<p>{para()}</p>" for _ in range(rng.randint(2, 4)))
    return (
        f'<?xml version="1.0"?>\n<article article-type="research-article"><front><article-meta>'
        f'<article-id pub-id-type="pmc">{pmc}</article-id><title-group><article-title>{make_sentence(rng)}'
        f"</article-title></title-group><abstract><p>{para()}</p></abstract></article-meta></front>"
        f"<body><sec><title>Methods</title>{body}</sec></body></article>\n"
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("nxml")
    rng = random.Random(0)
    articles = root / "articles"
    articles.mkdir()
    for i in range(60):
        (articles / f"PMC{1000 + i}.nxml").write_text(_article(1000 + i, rng))
    return {"dir": articles, "vocab": write_vocab(root / "vocab.txt")}


def prep(folder, out, *extra) -> dict:
    return main(
        [
            "--input",
            str(folder["dir"]),
            "--vocab",
            str(folder["vocab"]),
            "--out",
            str(out),
            "--seq_len",
            "64",
            "--heldout_fraction",
            "0",
            "--shard_size",
            "200",
            *map(str, extra),
        ]
    )


def content(out: Path) -> list:
    shards = open_shards(out)
    batch = shards.get_batch(range(len(shards)))
    return [
        (ids.tolist(), int(s), int(lab))
        for ids, s, lab in zip(batch["input_ids"], batch["sep_index"], batch["next_sentence_label"])
    ]


def test_single_article_files_are_grouped_and_nsp_draws_from_other_documents(folder, tmp_path):
    manifest = prep(folder, tmp_path / "out")
    assert len(manifest["inputs"]) == 1 and manifest["inputs"][0]["files"] == 60
    assert manifest["inputs"][0]["first"].endswith("PMC1000.nxml") and manifest["counts"]["documents"] == 60
    examples = manifest["counts"]["examples"]
    labels = np.array([lab for _, _, lab in content(tmp_path / "out")])
    assert len(labels) == examples > 300 and 0.42 < labels.mean() < 0.58  # ~50 % random next
    # Only the first document of the unit has nothing to draw from (one file per unit: ~50 % fell back).
    assert manifest["counts"]["train"]["nsp_fallbacks"] < 0.03 * examples
    marker = json.loads((tmp_path / "out" / "done" / "PMC1000--PMC1059.json").read_text())
    assert len(marker["members"]) == 60 and all(len(m["sha256"]) == 64 for m in marker["members"])


def test_groups_are_capped_and_the_output_is_the_same_for_any_workers_parts_and_resume(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(units, "GROUP_MAX_FILES", 25)
    planned = units.plan_units(expand_inputs([str(folder["dir"])]))
    assert [len(u.paths) for u in planned] == [25, 25, 10] and planned[1].name == "PMC1025--PMC1049"
    one = prep(folder, tmp_path / "one", "--workers", 1)
    two = prep(folder, tmp_path / "two", "--workers", 2)
    assert one["splits"] == two["splits"] and content(tmp_path / "one") == content(tmp_path / "two")
    assert [i["files"] for i in one["inputs"]] == [25, 25, 10]
    # --part splits units (not files); merged, it is the same corpus
    prep(folder, tmp_path / "parts", "--part", "0/2", "--workers", 1)
    prep(folder, tmp_path / "parts", "--part", "1/2", "--workers", 1)
    merged = main(["merge", str(tmp_path / "parts")])
    assert merged["splits"] == one["splits"]
    # a crash inside the second unit: the rerun keeps the first and redoes the others
    out = tmp_path / "resume"
    monkeypatch.setenv("BIOBERT_FAULT_DATA_PREP", "crash:PMC1025--PMC1049")
    with pytest.raises(RuntimeError, match="simulated crash"):
        prep(folder, out, "--workers", 1)
    monkeypatch.delenv("BIOBERT_FAULT_DATA_PREP")
    resumed = prep(folder, out, "--workers", 1)
    assert resumed["resumed_files"] == 1 and resumed["splits"] == one["splits"]
    # a member file that changed makes its unit (only) stale
    (out / "manifest.json").unlink()
    stale = folder["dir"] / "PMC1030.nxml"
    stale.write_text(stale.read_text())  # same content, new mtime
    again = prep(folder, out, "--workers", 1)
    assert again["resumed_files"] == 2 and again["splits"] == one["splits"]


def test_a_broken_file_in_a_group_is_reported_and_the_others_are_kept(folder, tmp_path):
    broken = tmp_path / "in"
    broken.mkdir()
    for p in sorted(folder["dir"].glob("*.nxml"))[:6]:
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "PMC1002.nxml").write_text("<article><body><p>unclosed</body></article>")
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["--input", str(broken), "--vocab", str(folder["vocab"]), "--out", str(tmp_path / "out"), "--seq_len", "64"]
        )
    assert exit_info.value.code == 3
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [Path(e["file"]).name for e in manifest["errors"]] == ["PMC1002.nxml"]
    assert manifest["skipped"]["file_error"] == 1 and manifest["counts"]["documents"] == 5
